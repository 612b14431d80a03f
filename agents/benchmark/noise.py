"""How noisy is a track's reward, against the effect of one decision?

At `--points` decision points of a `random` episode on the track's environment
(after `--warmup` sweeps), the training run's exact state is saved and replayed:

- **training noise**: the no-change action (the layer keeps what it runs) replayed
  with `--replicas` other training-data orders; the standard deviation of its reward
  (the change of validation log-perplexity, `log_ppl_delta`) measured on the whole
  validation split;
- **evaluation noise** for each evaluation size of `--eval-batches`: the same
  transition's reward measured on disjoint validation subsets of that many
  batches; its standard deviation over the subsets is what a subset of that size
  adds on top of the training noise;
- **effect of a decision**: every other valid choice replayed with the first
  data order; |its reward minus the no-change reward| on the whole validation split.

`python -m agents.benchmark.noise --track tiny --json docs/results/leaderboard/noise-tiny.json`
prints a table and writes the figures; the results page shows them beside the
evaluation size the track uses.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import tying_env  # noqa: F401  (registers the ids)
from agents.benchmark import tracks
from tying_env.training import TrainingRun, split_windows


def _reward(run: TrainingRun, before: TrainingRun, windows: np.ndarray) -> float:
    return before.evaluate_loss(windows) - run.evaluate_loss(windows)


def measure(track: tracks.Track, points: int, replicas: int, warmup: int,
            eval_batches: tuple[int, ...], seed: int = 0, cache_dir: str | None = None,
            max_windows: int | None = None) -> dict[str, Any]:
    """The figures of the module docstring, per decision point and summarised
    (`max_windows`: only the first windows of the validation split, for quick checks)."""
    kwargs = dict(track.env_kwargs)
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    env = gym.make(track.env_id, **kwargs).unwrapped
    _, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    cfg = env.cfg
    for _ in range(warmup * env.budget // cfg.max_sweeps):
        _, _, _, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
    valid = split_windows(env.corpus.valid, cfg.seq_len)[:max_windows]
    rows = []
    for _ in range(points):
        layer, run = int(info["layer"]), env.run
        tensors, meta = run.state()

        def replay(choice: int, data_seed: int | None, tensors: Any = tensors,
                   meta: Any = meta, layer: int = layer) -> TrainingRun:
            copy = TrainingRun.restore(cfg, env.corpus, env.device, tensors, meta)
            if data_seed is not None:
                copy.data_rng = np.random.default_rng(data_seed)
            copy.choose(layer, choice)
            copy.train(cfg.steps_per_decision)
            return copy

        before = TrainingRun.restore(cfg, env.corpus, env.device, tensors, meta)
        keep = int(run.model.ties[layer])  # the root it runs now: no change
        stay = [replay(keep, 1000 + r) for r in range(replicas)]
        train_rewards = [_reward(s, before, valid) for s in stay]
        per_size = {}
        for n in eval_batches:
            size = n * cfg.batch_size
            subsets = [valid[k * size:(k + 1) * size] for k in range(len(valid) // size)]
            per_size[n] = statistics.stdev([_reward(stay[0], before, w) for w in subsets]) \
                if len(subsets) > 1 else float("nan")
        effects = [abs(_reward(replay(c, 1000), before, valid) - train_rewards[0])
                   for c in range(layer + 1) if c != keep]
        rows.append(dict(layer=layer, tie_map=list(run.model.ties),
                         train_noise_std=statistics.stdev(train_rewards),
                         eval_noise_std={str(n): s for n, s in per_size.items()},
                         decision_effects=effects))
        _, _, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        if term or trunc:
            break
    env.close()
    effects = [e for r in rows for e in r["decision_effects"]]
    return dict(
        track=track.label, points=len(rows), replicas=replicas, warmup_sweeps=warmup,
        validation_windows=len(valid), batch_size=cfg.batch_size,
        track_eval_batches=cfg.eval_batches,
        train_noise_std=statistics.median(r["train_noise_std"] for r in rows),
        eval_noise_std={str(n): statistics.median(r["eval_noise_std"][str(n)] for r in rows)
                        for n in eval_batches},
        decision_effect_median=statistics.median(effects) if effects else float("nan"),
        decision_effect_iqr=(list(np.percentile(effects, [25, 75])) if effects else []),
        rows=rows)


def format_report(result: dict[str, Any]) -> str:
    lines = [f"track {result['track']}: {result['points']} decision points after "
             f"{result['warmup_sweeps']} random sweeps, {result['replicas']} data orders; "
             f"rewards in validation log-perplexity", "",
             "| quantity | median over points |", "|---|---|",
             f"| effect of one decision, abs(r(change) - r(no change)) | "
             f"{result['decision_effect_median']:.4f} |",
             f"| training noise (std of r(no change) over data orders) | "
             f"{result['train_noise_std']:.4f} |"]
    for n, std in result["eval_noise_std"].items():
        mark = " (the track's)" if int(n) == result["track_eval_batches"] else ""
        lines.append(f"| evaluation noise, {n} batches = {int(n) * result['batch_size']} "
                     f"windows{mark} | {std:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", required=True, help=f"one of {', '.join(tracks.TRACKS)}")
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="random sweeps before measuring")
    parser.add_argument("--eval-batches", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = measure(tracks.get(args.track), args.points, args.replicas, args.warmup,
                     tuple(int(n) for n in args.eval_batches.split(",")),
                     cache_dir=args.cache_dir)
    result["seconds"] = time.perf_counter() - start
    result["command"] = "python -m agents.benchmark.noise " + " ".join(
        argv if argv is not None else __import__("sys").argv[1:])
    print(format_report(result))
    if args.json is not None:
        from tying_env.files import write_json

        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
