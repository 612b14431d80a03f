"""The surrogate's leaderboard section: every agent of a track played on its surrogate.

    python -m agents.surrogate.board --env LayerTying-Surrogate-Deep-v0 \\
        --out docs/results/leaderboard/deep-surrogate.json

plays every agent of the track the surrogate emulates (`deep`) on each of the track's seeds,
one online episode per seed as the real track plays them, on the surrogate environment,
and writes a results file in the benchmark's format (cells, per-agent rows, the track's
paired statistics: `agents.benchmark.paired`) whose track is `<track>-surrogate`, marked
`surrogate_of`. The leaderboard (`agents.benchmark.leaderboard`) puts such a file in a
section of its own after the real tracks, never in a real table, and re-checks its top
agents against the real track's results file when that is among its inputs.

What a surrogate cell holds: the episode return, the last validation perplexity the
surrogate predicted (as `final_val_ppl`: there is no model to evaluate on a whole split,
so `final_test_ppl` is null), the trainable fraction and tie map (exact, as the real
environment computes them), and the share of decisions outside the logged data
(`ood_share`, from the ensemble's disagreement). A cell with more than `MAX_OOD_SHARE` of
its decisions outside the data is marked `invalid`, and the page says so beside the agent.
The whole board's wall time is printed when it ends and recorded in the file
(`run.seconds`, with `request.workers`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from agents.benchmark.paired import paired_statistics
from agents.benchmark.report import aggregate, code_version
from agents.benchmark.tracks import get as get_track
from agents.benchmark.tracks import judged_by
from agents.runs.result import RunResult
from agents.surrogate.validate import play
from tying_env import SURROGATE_IDS
from tying_env.errors import SettingError
from tying_env.files import write_json

Json = dict[str, Any]
MAX_OOD_SHARE = 0.10  # a cell with more decisions outside the logged data is invalid
FORMAT = "layer-tying-gym/surrogate-board"


def emulated_track(env_id: str) -> str:
    """The name of the track the surrogate `env_id` emulates (its model's `track`)."""
    if env_id not in SURROGATE_IDS:
        raise SettingError("env", f"{env_id!r} is not a surrogate environment; allowed: "
                                  f"{', '.join(sorted(SURROGATE_IDS))}")
    env = gym.make(env_id)
    try:
        return str(env.unwrapped.ensemble.meta["track"]).split("/")[0]
    finally:
        env.close()


def play_cell(env_id: str, agent: str, seed: int) -> Json:
    """One online episode of `agent` on the surrogate from `reset(seed=seed)`
    (`agents.surrogate.validate.play`): a cell of the benchmark's results format."""
    (row,) = play(SURROGATE_IDS[env_id], agent, [seed])
    ood = row["ood_steps"] / max(row["decisions"], 1)
    result = RunResult(
        agent=agent, seed=seed, env_id=env_id, env_kwargs=row["env_kwargs"],
        protocol="online", device="cpu", final_val_ppl=row["last_val_ppl"],
        final_test_ppl=None, optimal_ppl=row["optimal_ppl"], last_val_ppl=row["last_val_ppl"],
        trainable_fraction=row["trainable_fraction"], tie_map=row["tie_map"],
        decisions=row["decisions"], budget=row["budget"], all_decisions=True, diverged=False,
        wall_seconds=row["seconds"], total_seconds=row["seconds"],
        notes=[f"emulated by the surrogate {env_id}: {ood:.1%} of the decisions outside "
               "the logged data"])
    return {"name": f"{agent}-s{seed}", "agent": agent, "seed": seed, "status": "finished",
            "path": None, "result": result.to_json(), "failure": None,
            "episode_return": row["return"], "ood_share": ood, "invalid": ood > MAX_OOD_SHARE}


def board(env_id: str, command: str, names: Sequence[str] | None = None,
          seeds: Sequence[int] | None = None, workers: int = 1) -> Json:
    """Every agent of the emulated track on every seed of it, with the paired statistics
    (`names`, `seeds`: a part of them, for a quick look; the request records which), in
    `workers` processes (one torch thread each; the cells are the same for any number)."""
    real = get_track(emulated_track(env_id))
    chosen, seeds = list(names or real.agents), list(seeds or real.seeds)
    jobs = [(env_id, agent, seed) for agent in chosen for seed in seeds]
    start = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=torch.set_num_threads,
                                 initargs=(1,)) as pool:
            cells = list(pool.map(play_cell, *zip(*jobs, strict=True)))
    else:
        cells = [play_cell(*job) for job in jobs]
    seconds = time.perf_counter() - start
    track = {**real.to_json(), "name": f"{real.name}-surrogate", "env_id": env_id,
             "env_kwargs": {"model": SURROGATE_IDS[env_id]}, "seeds": seeds,
             "agents": chosen, "label": f"{real.name}-surrogate/v{real.version}",
             "surrogate_of": real.name,
             "description": f"The `{real.name}` track emulated by the surrogate `{env_id}` "
                            f"(the same agents, seeds and objective; {real.description})"}
    reference, hypothesis = judged_by(real.to_json())
    table = aggregate(cells, chosen)
    for agent, row in table.items():
        mine = [c for c in cells if c["agent"] == agent]
        row["ood_share"] = max(c["ood_share"] for c in mine)
        row["invalid_seeds"] = [c["seed"] for c in mine if c["invalid"]]
    paired = paired_statistics(
        cells, chosen, reference=reference, hypothesis=hypothesis,
        random_for=real.random_for, static_agents=real.static_agents,
        metric=real.rank_metric, lower_is_better=real.rank_metric != "episode_return",
        margin=real.margin)
    return {"format": FORMAT, "format_version": 1,
            "request": {"env_id": env_id, "track": track, "command": command,
                        "workers": workers,
                        "agents": chosen, "seeds": seeds},
            "machine": {"cpu_count": os.cpu_count(), "threads_per_worker": 1},
            "code": code_version(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "run": {"seconds": seconds, "ran": [c["name"] for c in cells], "skipped": []},
            "counts": {"finished": len(cells), "failed": 0, "incomplete": 0, "missing": 0},
            "agents": table, "statistics": {"paired": paired}, "cells": cells}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.surrogate.board",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LayerTying-Surrogate-Deep-v0",
                        help="the surrogate environment (default: the deep track's)")
    parser.add_argument("--out", type=Path, required=True, help="the results file to write")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes, one torch thread each (default 2)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        parser.error(f"{args.out} exists; pass --force to replace it")
    command = " ".join(["python", "-m", "agents.surrogate.board",
                        *(argv if argv is not None else sys.argv[1:])])
    torch.set_num_threads(1)  # as each worker: the cells do not depend on --workers
    try:
        result = board(args.env, command, workers=args.workers)
    except SettingError as e:
        parser.error(str(e))
    write_json(args.out, result)
    invalid = sorted(a for a, row in result["agents"].items() if row["invalid_seeds"])
    print(f"{len(result['cells'])} surrogate episodes in {result['run']['seconds']:.1f} s; "
          f"invalid (> {MAX_OOD_SHARE:.0%} of decisions outside the data): "
          f"{', '.join(invalid) or 'none'} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
