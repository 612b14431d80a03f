"""Recording one episode of a layer-tying environment, whatever agent drives it.

`RunLog` is a `gym.Wrapper` meant to sit between the environment and
the `OneEpisode` guard, so every agent (SB3 ones included)
is recorded the same way. Per decision it writes one JSON line to
`log.jsonl`, adds TensorBoard scalars under `tb/` (and the same metrics to an
experiment tracker, `agents.runs.tracking`, when one is chosen), and advances a tqdm bar.

TensorBoard (`tb/`) gets:

- per decision (step = decision; step 0 is the state at reset): every number of the
  `log.jsonl` line under its key (`reward`, `val_ppl`, `trainable_fraction`, ...;
  `memory_bytes/<part>`, `tie_map/layer_<i>`), never a boolean (`terminated`,
  `truncated`, `diverged`, `changed` are left out), plus the agent's internals under
  `agent/<name>` (`Agent.metrics()`, read when the decision is recorded, so after the
  agent learned from the decision before; set `RunLog.agent` once the agent is made);
- once, in the HPARAMS tab: the run's parameters (`agents.runs.tracking.run_params`:
  `env.<setting>`, `agent`, `seed`, `agent.<hyperparameter>`, booleans as
  `"true"`/`"false"`), written at the first decision, when every agent has built what
  it runs with; and, when the episode ends, the metrics `FINAL_METRICS` (also scalars at
  the last decision) and how it ended, as the text `episode/end`.

A recording can be continued after a crash: `RunLog.position` says how
far `log.jsonl` is written (bytes, lines, sha256 of those bytes), and
`RunLog.resume` cuts the file back to such a position and goes on from
there (TensorBoard events after it are purged, the bar starts where it was).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from tqdm.auto import tqdm

from agents.runs import tracking
from tying_env.files import to_jsonable, write_failed

if TYPE_CHECKING:
    from agents.base import Agent

SCALAR_TYPES = (bool, int, float, str, np.bool_, np.integer, np.floating)
TIMING_KEYS = ("wall_s", "timestamp")  # the only log fields that differ between identical runs
# the metrics of a finished episode, shown beside the parameters in TensorBoard's HPARAMS tab:
# the last decision's validation perplexity (the evaluation subset; result.json has the
# full-split one), trainable fraction, mean trainable fraction, and the sum of the rewards
FINAL_METRICS = ("final/val_ppl", "final/trainable_fraction", "final/mean_trainable_fraction",
                 "final/return")


def action_value(action: Any, space: spaces.Space) -> int | list[int]:
    """The action as plain JSON: an int for `Discrete`, a list of ints otherwise."""
    arr = np.asarray(action)
    if isinstance(space, spaces.Discrete):
        return int(arr.reshape(-1)[0]) if arr.size == 1 else arr.astype(int).tolist()
    return arr.astype(int).tolist()


class RunLog(gym.Wrapper):
    """Log every decision of one episode to `out_dir` (`log.jsonl`, `tb/`) and a bar.

    One line of `log.jsonl` per `step`:

    - `decision` (1-based count), `sweep` and `layer` *of the decision made*
      (`layer` is `None` in vector mode), `action`, `reward`,
      `terminated`, `truncated`, `wall_s` (seconds since `reset`, not
      counting time the run was stopped), `timestamp` (Unix time);
    - every scalar key of `info` after the step (`val_ppl`, `train_loss`,
      `trainable_fraction`, `train_steps`, `diverged`, ...; non-finite
      numbers are written as `null`), plus `tie_map` and `memory_bytes`.

    `records` keeps the same dicts in memory; `start` is the reset `info`.
    Call `finish` to flush and close the files without closing the
    environment (whose model the caller may still want to evaluate).

    `agent`: set it once the agent is made (it is made on top of this wrapper) to log
    its `metrics()`. `tracker`: an experiment tracker's name (`agents.runs.tracking`;
    None: TensorBoard only), checked here (a `SettingError` if it is unknown or not
    installed), opened when the episode starts; `tracker_group` gathers runs there.
    """

    def __init__(self, env: gym.Env, out_dir: str | Path, *, progress: bool = True,
                 tensorboard: bool = True, desc: str | None = None,
                 tracker: str | None = None, tracker_group: str | None = None):
        super().__init__(env)
        tracking.check(tracker)
        self.agent: Agent | None = None
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out_dir / "log.jsonl"
        self.records: list[dict[str, Any]] = []
        self.start: dict[str, Any] | None = None
        self._progress = progress
        self._tensorboard = tensorboard
        self._desc = desc
        self._file: IO[bytes] | None = None
        self._writer: Any = None
        self._tracker_name = tracker
        self._tracker_group = tracker_group
        self._tracker: tracking.Tracker | None = None
        self._params_pending = False  # the run's parameters are due at the next decision
        self._params_to_tb = False  # ... to TensorBoard too (not after a resume)
        self._bar: tqdm | None = None
        self._t0 = 0.0
        self._prev: dict[str, Any] = {}
        self._hash = hashlib.sha256()
        self._bytes = 0

    # ------------------------------------------------------------------ gym API
    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self.finish()
        self.records = []
        self.start = _scalars(info)
        self._prev = info
        self._t0 = time.perf_counter()
        self._file = self._open_log("wb")
        self._hash, self._bytes = hashlib.sha256(), 0
        self._open_outputs(info)
        self._params_pending = self._params_to_tb = True
        self._log_scalars(scalar_tags(self.start), step=0)
        return obs, info

    def resume(self, position: dict[str, Any], start: dict[str, Any], info: dict[str, Any],
               wall_s: float) -> None:
        """Continue a recording stopped at `position` (see `position`).

        `log.jsonl` is cut back to `position` (check it first with
        `check_position`), `records` are read back from it, `start` is the
        reset info, `info` that of the last recorded decision, `wall_s` the
        recorded time so far. TensorBoard events after the position are purged; a tracker
        continues its run (see `agents.runs.tracking`).
        """
        self.finish()
        data = self.log_path.read_bytes()[: position["bytes"]]
        with self.log_path.open("r+b") as f:
            f.truncate(position["bytes"])
        self.records = [json.loads(line) for line in data.decode("utf-8").splitlines()]
        self.start = start
        self._prev = info
        self._t0 = time.perf_counter() - wall_s
        self._hash, self._bytes = hashlib.sha256(data), len(data)
        self._file = self._open_log("ab")
        self._open_outputs(info, purge_step=len(self.records) + 1)
        # written when the run started, unless the tracker could not continue its run there
        self._params_pending = self._tracker is not None and not self._tracker.resumed
        self._params_to_tb = False

    def position(self) -> dict[str, Any]:
        """How far `log.jsonl` is written: `bytes`, `lines` and the bytes' `sha256`."""
        return {"bytes": self._bytes, "lines": len(self.records),
                "sha256": self._hash.hexdigest()}

    def _open_log(self, mode: str) -> IO[bytes]:
        try:
            return self.log_path.open(mode)
        except OSError as e:
            raise write_failed(self.log_path, e) from e

    def _open_outputs(self, info: dict[str, Any], purge_step: int | None = None) -> None:
        if self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            try:
                self._writer = SummaryWriter(log_dir=str(self.out_dir / "tb"),
                                             purge_step=purge_step)
            except OSError as e:
                raise write_failed(self.out_dir / "tb", e) from e
        self._tracker = tracking.open_tracker(self._tracker_name, self.out_dir,
                                              run_name=self._desc or self.out_dir.name,
                                              resume=purge_step is not None,
                                              group=self._tracker_group)
        total = getattr(self.env.unwrapped, "budget", None)
        self._bar = tqdm(total=total, initial=len(self.records), desc=self._desc,
                         unit="decision", disable=not self._progress, dynamic_ncols=True)
        self._bar.set_postfix(self._postfix(info), refresh=False)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        layer_mode = isinstance(self.env.action_space, spaces.Discrete)
        record: dict[str, Any] = {
            "decision": int(info.get("decision", len(self.records) + 1)),
            "sweep": self._prev.get("sweep"),
            "layer": self._prev.get("layer") if layer_mode else None,
            "action": action_value(action, self.env.action_space),
            "reward": float(reward),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "wall_s": time.perf_counter() - self._t0,
            "timestamp": time.time(),
        }
        for key, value in _scalars(info).items():
            record.setdefault(key, value)
        record = to_jsonable(record)
        self.records.append(record)
        self._prev = info
        if self._file is not None:
            line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as e:
                raise write_failed(self.log_path, e) from e
            self._hash.update(line)
            self._bytes += len(line)
        scalars = scalar_tags(record)
        if self.agent is not None:
            scalars.update(agent_metrics(self.agent))
        if self._params_pending:
            self._log_params()
            self._params_pending = False
        self._log_scalars(scalars, step=record["decision"])
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(info), refresh=False)
            self._bar.update(1)
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()

    def close(self) -> None:
        self.finish()
        super().close()

    def finish(self) -> None:
        """Close the log file, the TensorBoard writer, the tracker and the bar (not the
        environment); after an episode that ended, first log its final metrics."""
        ended = self.ended
        if ended:
            self._log_final()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tracker is not None:
            tracker, self._tracker = self._tracker, None
            tracker.close(finished=ended)
        if self._file is not None:
            self._file.close()
            self._file = None

    # ------------------------------------------------------------------ helpers
    @property
    def wall_seconds(self) -> float:
        """Seconds from `reset` to the last recorded decision."""
        return self.records[-1]["wall_s"] if self.records else 0.0

    @property
    def ended(self) -> bool:
        """Whether the recorded episode has ended (terminated or truncated)."""
        return bool(self.records) and bool(self.records[-1]["terminated"]
                                           or self.records[-1]["truncated"])

    def _log_scalars(self, scalars: dict[str, float], step: int) -> None:
        if self._writer is not None:
            for tag, value in scalars.items():
                self._writer.add_scalar(tag, value, global_step=step)
        if self._tracker is not None:
            self._tracker.log_metrics(scalars, step)

    def _log_params(self) -> None:
        """The run's parameters: TensorBoard's HPARAMS tab and the tracker."""
        if self._writer is None and self._tracker is None:
            return
        params = tracking.run_params(self.env, self.agent)
        if self._writer is not None and self._params_to_tb:
            add_hparams(self._writer, params, FINAL_METRICS)  # at step 0: never purged
        if self._tracker is not None:
            self._tracker.log_params(params)

    def _log_final(self) -> None:
        """The final metrics and how the episode ended (only while the outputs are open)."""
        if self._writer is None and self._tracker is None:
            return
        last = self.records[-1]
        fractions = [r["trainable_fraction"] for r in self.records]
        final = {"final/val_ppl": _number(last.get("val_ppl")),
                 "final/trainable_fraction": _number(last.get("trainable_fraction")),
                 "final/mean_trainable_fraction": _number(float(np.mean(fractions))),
                 "final/return": _number(sum(r["reward"] for r in self.records))}
        scalars = {k: v for k, v in final.items() if v is not None}
        how = (("terminated" + (" (training diverged)" if last.get("diverged") else ""))
               if last["terminated"] else "truncated (the budget of decisions is spent)")
        self._log_scalars(scalars, step=last["decision"])
        if self._writer is not None:
            self._writer.add_text("episode/end", f"The episode ended at decision "
                                                 f"{last['decision']}: {how}.",
                                  global_step=last["decision"])
            end_hparams(self._writer)
        if self._tracker is not None:
            self._tracker.set_tags({"episode_end": how})

    @staticmethod
    def _postfix(info: dict[str, Any]) -> dict[str, str]:
        return {
            "sweep": str(info.get("sweep", "?")),
            "layer": str(info.get("layer", "?")),
            "val_ppl": f"{info.get('val_ppl', float('nan')):.3f}",
            "trainable": f"{info.get('trainable_fraction', float('nan')):.3f}",
        }


def check_position(log_path: Path, position: dict[str, Any]) -> None:
    """ValueError unless `log_path` begins with exactly the bytes `position` describes."""
    if not log_path.is_file():
        raise ValueError(f"{log_path} is missing")
    data = log_path.read_bytes()
    n = int(position["bytes"])
    if len(data) < n:
        raise ValueError(f"{log_path} has {len(data)} bytes, fewer than the {n} recorded at "
                         "the checkpoint")
    if hashlib.sha256(data[:n]).hexdigest() != position["sha256"]:
        raise ValueError(f"the first {n} bytes of {log_path} differ from those recorded at the "
                         "checkpoint")
    if data[:n].count(b"\n") != position["lines"]:
        raise ValueError(f"{log_path}: the line count differs from the checkpoint's")


def add_hparams(writer: Any, params: dict[str, tracking.Param], metrics: Sequence[str]) -> None:
    """Start the HPARAMS tab's session of a TensorBoard `SummaryWriter`: the run's
    parameters (booleans as `"true"`/`"false"`) and the names of its final metrics."""
    from torch.utils.tensorboard.summary import hparams

    shown = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    experiment, start, _ = hparams(shown, dict.fromkeys(metrics, 0.0))
    file_writer = writer._get_file_writer()
    file_writer.add_summary(experiment)
    file_writer.add_summary(start)


def end_hparams(writer: Any) -> None:
    """End the HPARAMS tab's session of a TensorBoard `SummaryWriter` (the run ended)."""
    from torch.utils.tensorboard.summary import hparams

    writer._get_file_writer().add_summary(hparams({}, {})[2])


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of a `log.jsonl` line (or the reset info): every finite
    number by key, dicts as `key/sub`, `tie_map` as `tie_map/layer_<i>`; no booleans,
    and not `decision` (the step) nor `timestamp`."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key in ("decision", "timestamp"):
            continue
        if isinstance(value, dict):
            items = [(f"{key}/{sub}", v) for sub, v in value.items()]
        elif key == "tie_map":
            items = [(f"tie_map/layer_{i}", root) for i, root in enumerate(value)]
        else:
            items = [(key, value)]
        for tag, v in items:
            number = _number(v)
            if number is not None:
                scalars[tag] = number
    return scalars


def agent_metrics(agent: Agent) -> dict[str, float]:
    """`agent.metrics()` as `agent/<name>` scalars (finite numbers only, no booleans)."""
    metrics = {}
    for name, value in agent.metrics().items():
        number = _number(value)
        if number is not None:
            metrics[f"agent/{name}"] = number
    return metrics


def _number(value: Any) -> float | None:
    """`value` as a float if it is a finite number and not a boolean, else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _scalars(info: dict[str, Any]) -> dict[str, Any]:
    """Scalar entries of `info` plus `tie_map` and `memory_bytes`, JSON-ready."""
    keep = {k: v for k, v in info.items()
            if isinstance(v, SCALAR_TYPES) or k in ("tie_map", "memory_bytes")}
    return to_jsonable(keep)
