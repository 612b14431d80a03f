"""How noisy is a track's reward, against the effect of one decision?

At decision points spread over the episode (`--phases`, fractions of its decisions:
early, middle, late) of `random` episodes on the track's environment, one per seed of
`--seeds`, the training run's exact state is saved and replayed, `--points` decisions in a
row at each phase:

- **training noise**: the no-change action (the layer keeps what it runs) replayed
  with `--replicas` other training-data orders; the standard deviation of its reward
  (the change of validation log-perplexity, `log_ppl_delta`) measured on the whole
  validation split;
- **evaluation noise** for each evaluation size of `--eval-batches`: the same
  transition's reward measured on disjoint validation subsets of that many batches,
  each spread evenly over the split as the environment draws its subset
  (`tying_env.training.spread_windows`), not contiguous; its standard deviation over
  the subsets is what a subset of that size adds on top of the training noise;
- **effect of a decision**: every other valid choice replayed with the first
  data order; |its reward minus the no-change reward| on the whole validation split.

The **signal-to-noise ratio** of one decision's reward is the median effect over the noise
of the reward the agent gets: sqrt(training noise^2 + evaluation noise^2) at the track's
evaluation size. The smallest evaluation size whose noise is at most half the training
noise is the one to choose (`recommended_eval_batches`).

`python -m agents.benchmark.noise --track tiny --json docs/results/leaderboard/noise-tiny.json`
prints a table and writes the figures; the leaderboard shows them beside the evaluation
size the track uses, and `python -m agents.benchmark.noise --page docs/results/noise.md
FILE.json ...` writes the page of every measurement's table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import tying_env  # noqa: F401  (registers the ids)
from agents.benchmark import tracks
from tying_env.training import TrainingRun, split_windows

PHASES = (0.1, 0.5, 0.9)  # early, middle, late in the episode


def _reward(run: TrainingRun, before: TrainingRun, windows: np.ndarray) -> float:
    return before.evaluate_loss(windows) - run.evaluate_loss(windows)


def spread_subsets(windows: np.ndarray, size: int) -> list[np.ndarray]:
    """Disjoint subsets of `size` windows, each spread evenly over `windows` (subset k
    takes every `stride`-th window from k): how the environment draws its one subset."""
    stride = len(windows) // size
    return [windows[k::stride][:size] for k in range(stride)] if stride > 1 else []


def _point(env: Any, info: dict[str, Any], valid: np.ndarray, replicas: int,
           eval_batches: Sequence[int]) -> dict[str, Any]:
    """The figures at the decision `info` announces."""
    cfg, layer, run = env.cfg, int(info["layer"]), env.run
    tensors, meta = run.state()

    def replay(choice: int, data_seed: int) -> TrainingRun:
        copy = TrainingRun.restore(cfg, env.corpus, env.device, tensors, meta)
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
        subsets = spread_subsets(valid, n * cfg.batch_size)
        per_size[str(n)] = statistics.stdev([_reward(stay[0], before, w) for w in subsets]) \
            if len(subsets) > 1 else float("nan")
    effects = [abs(_reward(replay(c, 1000), before, valid) - train_rewards[0])
               for c in range(layer + 1) if c != keep]
    return dict(decision=int(env.decision), sweep=int(info["sweep"]), layer=layer,
                tie_map=list(run.model.ties), train_noise_std=statistics.stdev(train_rewards),
                eval_noise_std=per_size, decision_effects=effects)


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def summarize(rows: list[dict[str, Any]], eval_batches: Sequence[int],
              track_eval_batches: int) -> dict[str, Any]:
    """Medians over `rows`: effect, training and evaluation noise, SNR, the size to use."""
    effects = [e for r in rows for e in r["decision_effects"]]
    train = _median([r["train_noise_std"] for r in rows])
    evaluation = {str(n): _median([r["eval_noise_std"][str(n)] for r in rows])
                  for n in eval_batches}
    effect = _median(effects)
    at_track = evaluation.get(str(track_eval_batches), float("nan"))
    enough = [n for n in sorted(eval_batches) if evaluation[str(n)] <= train / 2]
    return dict(
        points=len(rows), train_noise_std=train, eval_noise_std=evaluation,
        decision_effect_median=effect,
        decision_effect_iqr=list(np.percentile(effects, [25, 75])) if effects else [],
        snr=effect / math.hypot(train, at_track) if math.isfinite(at_track) else float("nan"),
        recommended_eval_batches=enough[0] if enough else None)


def measure(track: tracks.Track, points: int, replicas: int, eval_batches: tuple[int, ...],
            seeds: Sequence[int] = (0,), phases: Sequence[float] = PHASES,
            cache_dir: str | None = None, max_windows: int | None = None) -> dict[str, Any]:
    """The figures of the module docstring, per decision point, per phase and summarised
    (`max_windows`: only the first windows of the validation split, for quick checks)."""
    if not all(0 <= f < 1 for f in phases):
        raise ValueError(f"phases {list(phases)} must be fractions of the episode in [0, 1)")
    kwargs = dict(track.env_kwargs)
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    env = gym.make(track.env_id, **kwargs).unwrapped
    rows: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            _, info = env.reset(seed=seed)
            rng = np.random.default_rng(seed)
            valid = split_windows(env.corpus.valid, env.cfg.seq_len)[:max_windows]
            done = False
            for phase in sorted(phases):
                target = int(phase * env.budget)
                while env.decision < target and not done:
                    _, _, term, trunc, info = env.step(
                        int(rng.choice(np.flatnonzero(env.action_masks()))))
                    done = term or trunc
                for _ in range(points):
                    if done:
                        break
                    rows.append({"seed": seed, "phase": phase,
                                 **_point(env, info, valid, replicas, eval_batches)})
                    _, _, term, trunc, info = env.step(
                        int(rng.choice(np.flatnonzero(env.action_masks()))))
                    done = term or trunc
        cfg = env.cfg
    finally:
        env.close()
    per_phase = {str(f): summarize([r for r in rows if r["phase"] == f], eval_batches,
                                   cfg.eval_batches) for f in sorted(phases)}
    return dict(track=track.label, seeds=list(seeds), phases=sorted(phases),
                points_per_phase=points, replicas=replicas, validation_windows=len(valid),
                batch_size=cfg.batch_size, track_eval_batches=cfg.eval_batches,
                subsets="spread", **summarize(rows, eval_batches, cfg.eval_batches),
                per_phase=per_phase, rows=rows)


def format_report(result: dict[str, Any]) -> str:
    """The figures as a Markdown table: all points, then each phase of the episode."""
    phases = result.get("per_phase") or {}
    columns = [("all points", result), *((f"at {float(f):.0%}", v) for f, v in phases.items())]

    def row(name: str, value: Any, digits: int = 4) -> str:
        cells = [value(v) for _, v in columns]
        return f"| {name} | " + " | ".join(
            "n/a" if c is None or (isinstance(c, float) and not math.isfinite(c))
            else f"{c:.{digits}f}" if isinstance(c, float) else str(c) for c in cells) + " |"

    where = (f"seeds {result['seeds']}, {result.get('points_per_phase')} decisions at each "
             "phase" if "phases" in result else  # measured before phases and seeds existed
             f"seed 0, {result['points']} decisions after {result.get('warmup_sweeps')} "
             "random sweeps")
    lines = [f"track {result['track']}: {where}, {result['replicas']} data orders, "
             f"{result.get('subsets', 'contiguous')} evaluation subsets; rewards in "
             "validation log-perplexity (medians over points)",
             "", "| quantity | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---|" * len(columns),
             row("decision points", lambda v: v["points"]),
             row("effect of one decision, abs(r(change) - r(no change))",
                 lambda v: v["decision_effect_median"]),
             row("training noise (std of r(no change) over data orders)",
                 lambda v: v["train_noise_std"])]
    for n in result["eval_noise_std"]:
        mark = " (the track's)" if int(n) == result["track_eval_batches"] else ""
        lines.append(row(f"evaluation noise, {n} batches = {int(n) * result['batch_size']} "
                         f"windows{mark}", lambda v, n=n: v["eval_noise_std"][n]))
    def snr(v: dict[str, Any]) -> float | None:  # older files did not record it
        at_track = v["eval_noise_std"].get(str(result["track_eval_batches"]))
        return v.get("snr", None if at_track is None else
                     v["decision_effect_median"] / math.hypot(v["train_noise_std"], at_track))

    lines += [row("signal-to-noise ratio of one reward (at the track's size)", snr, 2),
              row("smallest size with evaluation noise <= training noise / 2",
                  lambda v: v.get("recommended_eval_batches"))]
    return "\n".join(lines)


def write_page(paths: Sequence[Path], out: Path) -> str:
    """The page of the measurements in `paths` (their tables, in the order given), with
    the command and the commit that made it."""
    from agents.benchmark.leaderboard import display_path
    from agents.benchmark.report import code_version
    from tying_env.files import read_json, write_text

    commit = code_version().get("commit")
    command = "python -m agents.benchmark.noise --page " + " ".join(
        display_path(Path(p)) for p in [out, *paths])
    lines = ["# Reward noise", "",
             f"Generated from the measurements' JSON by `{command}`"
             + (f" at commit `{commit[:12]}`" if commit else "") + "; do not edit it by hand.",
             "", __doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0], ""]
    for path in paths:
        result = read_json(path)
        if result is None or "train_noise_std" not in result:
            raise ValueError(f"{path} is not a reward-noise measurement (--json of this module)")
        lines += [f"## `{result['track']}`: `{Path(path).stem}`", "", format_report(result), "",
                  f"Measured by `{result.get('command', '?')}` in "
                  f"{float(result.get('seconds', 0)) / 60:.1f} min; file "
                  f"`{display_path(Path(path))}`.", ""]
    text = "\n".join(lines).rstrip("\n") + "\n"
    write_text(out, text)
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", help=f"one of {', '.join(tracks.TRACKS)}")
    parser.add_argument("--page", type=Path, default=None, metavar="OUT.md",
                        help="write the page of the measurements FILE.json instead")
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE.json",
                        help="with --page: measurements written by --json")
    parser.add_argument("--points", type=int, default=2,
                        help="decisions measured in a row at each phase of each seed")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--seeds", default="0,1,2", help="episodes, one per seed")
    parser.add_argument("--phases", default=",".join(map(str, PHASES)),
                        help="where in the episode to measure, as fractions of its decisions")
    parser.add_argument("--eval-batches", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.page is not None:
        if not args.files:
            parser.error("--page needs the measurements' JSON files")
        print(write_page(args.files, args.page), end="")
        return {}
    if args.track is None:
        parser.error("--track is required (or --page OUT.md FILE.json ...)")
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = measure(tracks.get(args.track), args.points, args.replicas,
                     tuple(int(n) for n in args.eval_batches.split(",")),
                     seeds=[int(x) for x in args.seeds.split(",")],
                     phases=[float(x) for x in args.phases.split(",")],
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
