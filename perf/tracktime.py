"""Where a decision's time goes on a benchmark track, and the track's expected wall time.

Plays `--decisions` decisions of a uniformly random agent on the track's environment
(one process, `--threads` torch threads, as one benchmark worker runs) and splits each
`env.step` into the inner training steps, the evaluation and everything else (the
environment's bookkeeping), by the training run's own clock (`TrainingRun.seconds`).
From the mean decision it estimates one episode (the track's decisions plus the final
evaluation of the whole validation and test splits) and the whole track: its main agents
x seeds over `--workers` workers, each cell one episode online, and on a
train-then-test track its test episodes plus, for an agent that learns
(`Agent.learns`), its training episodes. Agents add their own time on top
(e.g. an SB3 update); the benchmark's `results.json` has the measured wall time.

    python -m perf.tracktime --track tiny [--decisions 60] [--threads 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import tying_env  # noqa: F401  (registers the ids)
from agents.benchmark import tracks
from tying_env.files import write_json


def measure(track: tracks.Track, decisions: int, cache_dir: str | None = None) -> dict[str, Any]:
    """Mean seconds per decision (total, train, evaluate, other) and the final evaluation's."""
    kwargs = dict(track.env_kwargs)
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    tracks.prepare(track)
    env = gym.make(track.env_id, **kwargs).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    seconds = env.run.seconds
    rows = []
    for _ in range(min(decisions, env.budget)):
        train0, eval0 = seconds["train"], seconds["evaluate"]
        start = time.perf_counter()
        env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        total = time.perf_counter() - start
        train, evaluate = seconds["train"] - train0, seconds["evaluate"] - eval0
        rows.append(dict(total=total, train=train, evaluate=evaluate,
                         other=total - train - evaluate))
    start = time.perf_counter()
    env.evaluate_split("valid"), env.evaluate_split("test")
    final = time.perf_counter() - start
    budget = env.budget
    env.close()
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}  # means add up
    return dict(decisions=len(rows), budget=budget, mean=mean,
                median_total=statistics.median(r["total"] for r in rows),
                final_evaluation=final)


def cell_episodes(track: tracks.Track, agent: str) -> int:
    """The episodes one cell of `agent` plays on `track`: one online; on a train-then-test
    track the test episodes, and the training episodes before them if the agent learns."""
    if not track.train_episodes:
        return 1
    import agents

    return (track.train_episodes if agents.factory(agent).learns else 0) + track.eval_episodes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="tiny", help=f"one of {', '.join(tracks.TRACKS)}")
    parser.add_argument("--decisions", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per worker)")
    parser.add_argument("--workers", type=int, default=2, help="benchmark workers assumed")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    track = tracks.get(args.track)
    load = os.getloadavg()[0]
    result = measure(track, args.decisions, args.cache_dir)
    m = result["mean"]
    episode = result["budget"] * m["total"] + result["final_evaluation"]
    per_agent = {a: cell_episodes(track, a) for a in track.agents}
    episodes = sum(per_agent.values()) * len(track.seeds)
    cells = len(track.agents) * len(track.seeds)
    result.update(track=track.label, threads=args.threads, workers=args.workers,
                  load_average_before=load, episode_seconds=episode, main_cells=cells,
                  episodes_per_cell=per_agent, episodes=episodes,
                  track_hours=episodes * episode / args.workers / 3600)
    print(f"track {track.label}, {args.threads} thread(s), load average before {load:.2f}: "
          f"mean of {result['decisions']} decisions")
    print("| part | ms per decision | share |\n|---|---|---|")
    for part in ("train", "evaluate", "other", "total"):
        print(f"| {part} | {1e3 * m[part]:.1f} | {m[part] / m['total']:.1%} |")
    print(f"final evaluation (whole validation and test splits): "
          f"{result['final_evaluation']:.1f} s")
    counts = sorted(set(per_agent.values()))
    print(f"one episode of {result['budget']} decisions: about {episode / 60:.1f} min; a cell "
          f"plays {' or '.join(map(str, counts))} episode(s); the main agents x seeds "
          f"({cells} cells, {episodes} episodes) on {args.workers} workers: about "
          f"{result['track_hours']:.2f} h (the environment's share; agents add their own)")
    if args.json is not None:
        write_json(args.json, result)  # atomic: never half-written
    return result


if __name__ == "__main__":
    main()
