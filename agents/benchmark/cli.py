"""`python -m agents.benchmark`: agents x seeds on one environment, with tables and plots.

The options build a `Request`;
`agents.benchmark.launcher.run_benchmark` runs its missing cells and
`agents.benchmark.report` writes the tables and plots.

**Re-running** the same command skips finished cells; any other cell folder is
deleted and run again, so a failed cell is retried by the next run. Adding agents or
seeds to an existing `OUT` is fine.

**A changed request is refused**: if any cell in `OUT` holds a result of another
environment configuration (env id or resolved env settings), or of other agent kwargs
for a requested agent, nothing runs and the error (naming `--out`) lists the cells and
the differing settings. Results of two configurations never end up in one table, and
finished work is never deleted silently; use another `--out` or delete those cells.

Exit status: 0 when every cell finished, 1 when any cell failed (the others still run
and are summarized), 2 for bad options (including a refused `--out`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agents.benchmark.report import RESULTS_MD
from agents.runs.config import parse_with_config
from agents.runs.spec import DEFAULT_ENV
from tying_env.errors import SettingError

# request fields, by the option that sets them
OPTIONS = {"env_id": "--env", "env_kwargs": "--env-kwargs", "agents": "--agents",
           "seeds": "--seeds", "workers": "--workers", "threads": "--threads", "out": "--out",
           "agent_kwargs": "--agent-kwargs", "cache_dir": "--cache-dir",
           "train_episodes": "--train-episodes", "eval_episodes": "--eval-episodes"}


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
    parser.add_argument("--env", default=DEFAULT_ENV, dest="env_id",
                        help=f"registered environment id (default {DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", default="{}", metavar="JSON",
                        help='environment settings for every cell, e.g. \'{"n_layer": 4}\'')
    parser.add_argument("--agents", required=True, metavar="A,B,...",
                        help="comma-separated registered agent names")
    parser.add_argument("--seeds", default="0,1,2", metavar="S,S,...",
                        help="comma-separated non-negative seeds (default 0,1,2)")
    parser.add_argument("--workers", default="1", metavar="N",
                        help="cells run at the same time (default 1)")
    parser.add_argument("--threads", metavar="N",
                        help="torch threads per worker (default: cores // workers, at least 1)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="benchmark folder (cells go to DIR/cells/<agent>-s<seed>)")
    parser.add_argument("--agent-kwargs", default="{}", metavar="JSON",
                        help='per-agent hyperparameters, e.g. \'{"qlearning": {"lr": 0.01}}\'')
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="cache for tokenizers and tokenized corpora (shared by cells)")
    parser.add_argument("--train-episodes", default="0", metavar="N",
                        help="train-then-evaluate: each cell learns over N episodes, then is "
                             "evaluated frozen on held-out seeds (default 0: online)")
    parser.add_argument("--eval-episodes", default="3", metavar="K",
                        help="with --train-episodes: held-out evaluation episodes (default 3)")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m agents.benchmark`."""
    parser = build_parser()
    args = parse_with_config(parser, argv)
    try:
        from agents.benchmark.launcher import run_benchmark

        results = run_benchmark(
            args.env_id, args.env_kwargs, args.agents, args.seeds,
            _count("workers", args.workers), args.out, agent_kwargs=args.agent_kwargs,
            cache_dir=args.cache_dir, threads=_count("threads", args.threads),
            progress=not args.no_progress,
            train_episodes=_count("train_episodes", args.train_episodes),
            eval_episodes=_count("eval_episodes", args.eval_episodes))
    except SettingError as e:
        parser.error(f"argument {option_of(e.argument, args.env_kwargs)}: {e}")  # status 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept and running ones wrote a checkpoint; run "
              "the same command again to go on", file=sys.stderr)
        return 130
    run, counts = results["run"], results["counts"]
    print(f"{counts['finished']} of {len(results['cells'])} cells finished "
          f"({len(run['ran'])} run now, {len(run['skipped'])} skipped), "
          f"{counts['failed']} failed -> {args.out / RESULTS_MD}")
    return 1 if counts["failed"] or run["failed"] else 0
