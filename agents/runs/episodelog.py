"""The curves of a train-then-evaluate run (`agents.runs.protocol`): one point per episode.

`EpisodeLog` writes them to TensorBoard (`tb/` in the run folder) and to the run's
experiment tracker (`agents.runs.tracking`), each against its episode:

- the learning curve: `train/return`, `train/val_ppl` (the episode's last validation
  perplexity), `train/trainable_fraction`, `train/decisions` of every training episode
  (step: the episode, 1 to N), logged as each episode ends;
- the evaluation: `eval/return`, `eval/final_val_ppl`, `eval/final_test_ppl`,
  `eval/trainable_fraction` of every held-out episode of the frozen agent (step: 1 to K);
- `best_test_ppl` beside both when the environment evaluates the test split
  (`test_eval_every > 0`);
- at the end, `FINAL_METRICS` (the means over the evaluation episodes, as in
  `result.json`) at step K, shown in TensorBoard's HPARAMS tab beside the run's parameters
  (`agents.runs.tracking.run_params`, plus `train_episodes` and `eval_episodes`), which
  the tracker gets as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.runs import tracking
from agents.runs.runlog import add_hparams, end_hparams, scalar_tags
from tying_env.files import write_failed

TRAIN_KEYS = ("return", "val_ppl", "trainable_fraction", "decisions", "best_test_ppl")
EVAL_KEYS = ("return", "final_val_ppl", "final_test_ppl", "trainable_fraction",
             "best_test_ppl")
FINAL_METRICS = ("final/val_ppl", "final/test_ppl", "final/trainable_fraction", "final/return")


class EpisodeLog:
    """Per-episode curves of one train-then-evaluate run in `folder` (see the module doc).

    `tracker`: an experiment tracker's name (None: TensorBoard only), opened here, with
    `group` and the run's name `run_name`. Call `close` when the run ends.
    """

    def __init__(self, folder: str | Path, run_name: str, *, tracker: str | None = None,
                 group: str | None = None, tensorboard: bool = True):
        tracking.check(tracker)
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            try:
                self._writer = SummaryWriter(log_dir=str(Path(folder) / "tb"))
            except OSError as e:
                raise write_failed(Path(folder) / "tb", e) from e
        self._tracker = tracking.open_tracker(tracker, folder, run_name, group=group)
        self._params_logged = False

    def log_params(self, params: Mapping[str, tracking.Param]) -> None:
        """The run's parameters: TensorBoard's HPARAMS tab and the tracker (the first call
        only)."""
        if self._params_logged:
            return
        self._params_logged = True
        if self._writer is not None:
            add_hparams(self._writer, dict(params), FINAL_METRICS)
        if self._tracker is not None:
            self._tracker.log_params(params)

    def train_episode(self, episode: int, record: Mapping[str, Any]) -> None:
        """Training episode `episode` (1-based) ended with `record` (its summary)."""
        self._log("train/", TRAIN_KEYS, record, episode)

    def eval_episode(self, episode: int, record: Mapping[str, Any]) -> None:
        """Evaluation episode `episode` (1-based) of the frozen agent ended with `record`."""
        self._log("eval/", EVAL_KEYS, record, episode)

    def final(self, metrics: Mapping[str, Any], step: int) -> None:
        """The run's final metrics (`FINAL_METRICS` names; None or non-finite: left out)."""
        self._scalars(scalar_tags(dict(metrics)), step)

    def close(self, finished: bool) -> None:
        """Close TensorBoard and the tracker; `finished`: the run ran to its end."""
        if self._writer is not None:
            if finished and self._params_logged:
                end_hparams(self._writer)
            self._writer.close()
            self._writer = None
        if self._tracker is not None:
            tracker, self._tracker = self._tracker, None
            tracker.close(finished=finished)

    def _log(self, prefix: str, keys: tuple[str, ...], record: Mapping[str, Any],
             step: int) -> None:
        numbers = scalar_tags({key: record[key] for key in keys if key in record})
        self._scalars({prefix + key: value for key, value in numbers.items()}, step)

    def _scalars(self, scalars: dict[str, float], step: int) -> None:
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, global_step=step)
            self._writer.flush()
        if self._tracker is not None and scalars:
            self._tracker.log_metrics(scalars, step)
