"""`python -m agents.benchmark`: agents x seeds on one environment, with tables and plots.

The options build a `Request`;
`agents.benchmark.launcher.run_request` runs its missing cells (`--launcher local`, the
default: processes on this machine, `--gpus` to pin them to GPUs; `--launcher ray`: Ray
tasks, on the cluster at `--ray-address` or a local instance) and
`agents.benchmark.report` writes the tables and plots. See docs/scaling.md.

**Re-running** the same command skips finished cells; any other cell is claimed, its
folder cleared (or its stopped run resumed from its checkpoint) and run again, so a failed
cell is retried by the next run. Adding agents or seeds to an existing `OUT` is fine.
Several invocations may share `OUT` at once: a cell that another live invocation has
claimed is waited for, never started twice, and its folder never deleted.

**Any scheduler**: `--print-commands` prints one self-contained command per cell (e.g.
for a Slurm array) and runs nothing; `--shard i/n` runs a deterministic 1/n of the cells
and writes no report; a later plain invocation gathers everything into the results.

**Tracks**: `--track NAME` runs a named, versioned setting (`agents.benchmark.tracks`);
options the track fixes are refused beside it, and every cell records the track's label.

**Trackers**: `--tracker mlflow|wandb` logs each cell it runs as one tracked run
(`agents.runs.tracking`), grouped by the benchmark folder's name (W&B's run group, an
MLflow tag `group`). It does not change what a cell is: finished cells are skipped with or
without it, and a resumed cell logs to the tracker of the invocation that resumes it.

**A changed request is refused**: if any cell in `OUT` holds a result of another
environment configuration (env id or resolved env settings), or of other agent kwargs or
hyperparameters (from the agents' hyperparameter files, `--hyperparams`) for a requested
agent, nothing runs and the error (naming `--out`) lists the cells and
the differing settings. Results of two configurations never end up in one table, and
finished work is never deleted silently; use another `--out` or delete those cells.

Exit status: 0 when every cell finished, 1 when any cell failed (the others still run
and are summarized), 2 for bad options (including a refused `--out`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from agents.benchmark.report import RESULTS_MD
from agents.benchmark.tracks import TRACKS
from agents.hyperparams import NO_FILE, SHIPPED, parse_source
from agents.runs.config import parse_with_config
from agents.runs.spec import DEFAULT_ENV, TRACKERS
from tying_env.errors import SettingError

# request fields, by the option that sets them
OPTIONS = {"env_id": "--env", "env_kwargs": "--env-kwargs", "agents": "--agents",
           "seeds": "--seeds", "workers": "--workers", "threads": "--threads", "out": "--out",
           "agent_kwargs": "--agent-kwargs", "cache_dir": "--cache-dir",
           "train_episodes": "--train-episodes", "eval_episodes": "--eval-episodes",
           "train_env_id": "--train-env",
           "launcher": "--launcher", "ray_address": "--ray-address", "gpus": "--gpus",
           "shard": "--shard", "tracker": "--tracker", "hyperparams": "--hyperparams"}


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.benchmark",
        description="Run agents x seeds on one layer-tying environment (each cell one "
                    "train_agent.py run in its own process) and write results.json, "
                    "results.md, pareto.png and curves.png. Re-running skips finished cells.")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="read options from a YAML, TOML or JSON file (a run's run.json "
                             "works too); flags override it")
    parser.add_argument("--track", metavar="NAME",
                        help="run a named, versioned track (agents.benchmark.tracks: "
                             f"{', '.join(TRACKS)}), which fixes the environment, its settings, "
                             "the seeds and the agents' hyperparameters; --agents defaults "
                             "to the track's main agents")
    parser.add_argument("--env", dest="env_id",
                        help=f"registered environment id (default {DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", metavar="JSON",
                        help='environment settings for every cell, e.g. \'{"n_layer": 4}\'')
    parser.add_argument("--agents", metavar="A,B,...",
                        help="comma-separated agent names: registered ones, or "
                             "package.module:ClassName for an agent class of your own")
    parser.add_argument("--seeds", metavar="S,S,...",
                        help="comma-separated non-negative seeds (default 0,1,2)")
    parser.add_argument("--workers", metavar="N",
                        help="cells run at the same time (default 1; with --launcher ray: "
                             "every cell, as the cluster's resources allow)")
    parser.add_argument("--threads", metavar="N",
                        help="torch threads per worker (default: cores // workers, at least 1; "
                             "with --launcher ray: 1), and the CPUs a Ray task asks for")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="benchmark folder (cells go to DIR/cells/<agent>-s<seed>)")
    parser.add_argument("--agent-kwargs", metavar="JSON",
                        help='per-agent hyperparameters, e.g. \'{"qlearning": {"lr": 0.01}}\', '
                             "over the agents' hyperparameter files")
    parser.add_argument("--hyperparams", metavar="PATH",
                        help="the agents' hyperparameter files: a folder of <agent>.yml files "
                             "(an agent without one there uses its shipped file), or one .yml "
                             f"file for every agent (default {SHIPPED}, the shipped ones; "
                             f"'{NO_FILE}': none, the agents' code defaults)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="cache for tokenizers and tokenized corpora (shared by cells)")
    parser.add_argument("--train-episodes", metavar="N",
                        help="train-then-evaluate: each cell learns over N episodes, then is "
                             "evaluated frozen on held-out seeds (default 0: online)")
    parser.add_argument("--eval-episodes", metavar="K",
                        help="with --train-episodes: held-out evaluation episodes (default 3)")
    parser.add_argument("--train-env", metavar="ID",
                        help="with --train-episodes: the cells train on this registered env "
                             "(the same spaces, e.g. LayerTying-Surrogate-Deep-v0) and are "
                             "evaluated on --env (sim-to-real)")
    parser.add_argument("--launcher", default="local", metavar="NAME",
                        help="where cells run: 'local' (processes on this machine, the "
                             "default) or 'ray' (Ray tasks; pip install 'layer-tying-gym[ray]')")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="with --launcher ray: the cluster to use, 'auto' or HOST:PORT "
                             "(default: start a local Ray instance for this run)")
    parser.add_argument("--gpus", metavar="I,J,...",
                        help="local launcher: pin worker k to GPU list[k %% len(list)], e.g. "
                             "0,1,2,3 with --workers 4 on a 4-GPU node")
    parser.add_argument("--shard", metavar="I/N",
                        help="run only shard I of N (cells sorted by name, every N-th from the "
                             "I-th) and write no report; a plain run gathers the shards")
    parser.add_argument("--tracker", choices=list(TRACKERS),
                        help="log every cell to an experiment tracker as well, one run per "
                             "cell grouped by the benchmark folder's name (mlflow, or wandb: "
                             "offline unless $WANDB_MODE says otherwise); finished cells count "
                             "the same with or without it")
    parser.add_argument("--print-commands", action="store_true",
                        help="print one self-contained command per cell (for Slurm arrays or "
                             "any scheduler) and run nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _count(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise SettingError(name, f"{value!r} is not allowed; expected an int >= 1") from None


def option_of(argument: str, env_kwargs: str) -> str:
    """The option that supplied the request setting `argument`."""
    head, _, name = argument.partition(".")
    if head == "env_kwargs" and name:
        try:
            given = json.loads(env_kwargs)
        except json.JSONDecodeError:
            given = {}
        return "--env-kwargs" if isinstance(given, dict) and name in given else "--env"
    return OPTIONS.get(head, "--env-kwargs")


# the settings a track fixes, by request field (their defaults without a track)
TRACK_FIXED = {"env_id": DEFAULT_ENV, "env_kwargs": "{}", "seeds": "0,1,2",
               "agent_kwargs": "{}", "hyperparams": SHIPPED, "train_episodes": "0",
               "eval_episodes": "3"}


def request_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the request is built from: the options, or the track and its agents.

    A `SettingError` when a track is combined with an option it fixes, or when neither
    `--track` nor `--agents` is given.
    """
    if args.track is None:
        if not args.agents:
            raise SettingError("agents", "is required (or --track NAME)")
        values = {k: default if getattr(args, k) is None else getattr(args, k)
                  for k, default in TRACK_FIXED.items()}
        return dict(values, agents=args.agents, hyperparams=parse_source(args.hyperparams),
                    train_episodes=_count("train_episodes", values["train_episodes"]),
                    eval_episodes=_count("eval_episodes", values["eval_episodes"]),
                    train_env_id=args.train_env)
    if args.train_env is not None:
        raise SettingError("train_env_id", "a track fixes where its agents train; training "
                                           "a track's agents elsewhere makes another track")
    from agents.benchmark import tracks

    tracks.refuse_overrides([OPTIONS[k] for k in TRACK_FIXED if getattr(args, k) is not None])
    track = tracks.get(args.track)
    tracks.prepare(track)
    names = tuple(a.strip() for a in args.agents.split(",")) if args.agents else track.agents
    return dict(env_id=track.env_id, env_kwargs=track.env_kwargs, agents=names,
                seeds=tracks.seeds_for(track, names),
                agent_kwargs={a: k for a, k in track.agent_kwargs.items() if a in names},
                hyperparams=track.hyperparams, train_episodes=track.train_episodes,
                eval_episodes=track.eval_episodes, track=track.to_json())


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m agents.benchmark`."""
    parser = build_parser()
    args = parse_with_config(parser, argv)
    from agents.benchmark.launcher import (  # here: --help stays fast
        Terminated,
        build_request,
        cell_commands,
        check_out,
        parse_shard,
        run_request,
    )

    try:
        settings = request_settings(args)
        request = build_request(
            **settings, workers=_count("workers", args.workers), out=args.out,
            cache_dir=args.cache_dir, threads=_count("threads", args.threads),
            launcher=args.launcher, tracker=args.tracker)
        if args.print_commands:
            shard = parse_shard(args.shard)
            check_out(request)
            print("\n".join(cell_commands(request, shard)))
            return 0
        results = run_request(request, progress=not args.no_progress, launcher=args.launcher,
                              ray_address=args.ray_address, gpus=args.gpus, shard=args.shard)
    except SettingError as e:
        option = "--track" if e.argument == "track" else option_of(e.argument,
                                                                     args.env_kwargs or "{}")
        parser.error(f"argument {option}: {e}")  # status 2
    except KeyboardInterrupt as e:
        print("interrupted: finished cells are kept and running ones wrote a checkpoint; run "
              "the same command again to go on", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
    run, counts = results["run"], results["counts"]
    cells = results["cells"]
    done = (f"{counts['finished']} of {len(cells)} cells finished ({len(run['ran'])} run now, "
            f"{len(run['skipped'])} skipped"
            + (f", {len(run['elsewhere'])} by another runner" if run["elsewhere"] else "")
            + f"), {counts['failed']} failed")
    if "shard" in results:
        index, count = results["shard"]
        print(f"shard {index}/{count}: {done}; the same command without --shard gathers every "
              f"shard's cells into {args.out / RESULTS_MD}")
    else:
        print(f"{done} -> {args.out / RESULTS_MD}")
    return 1 if counts["failed"] or run["failed"] else 0
