"""`train-agent` (and `train_agent.py`): the command line over one `RunSpec`.

The options build a `RunSpec`, `agents.runs.driver.run`
runs it; this module only parses, and turns a setting's name back into the option
that supplied it when something is wrong. The run folder and checkpoints are
described in `agents.runs.driver` and `agents.runs.resume`;
`--resume DIR` needs no other option: it reads `DIR/run.json`.

Exit status: 0 on success (a diverged run included); 2 for bad options (a damaged or
mismatched checkpoint, or an `--out` folder that holds another run, included); 1 when
the environment cannot be built for another reason (e.g. a dataset unavailable
offline) or a file cannot be written (full disk, read-only location); 128 + the
signal's number (143 for SIGTERM, 130 for SIGINT) when a signal stopped the run after
it wrote a checkpoint: `--resume DIR` continues it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.hyperparams import NO_FILE, SHIPPED, parse_source
from agents.runs.config import parse_with_config
from agents.runs.spec import DEFAULT_CHECKPOINT_EVERY, DEFAULT_ENV, TRACKERS, RunSpec
from tying_env.data.images import IMAGE_DATASETS
from tying_env.errors import DataUnavailableError, SettingError, WriteFailedError
from tying_env.presets import DATASETS, DEVICES, PRESETS

if TYPE_CHECKING:
    from agents.runs.result import RunResult

# explicit options that override --env-kwargs, by EnvConfig field
EXPLICIT = {"preset": "--preset", "dataset": "--dataset", "data_dir": "--data-dir",
            "max_sweeps": "--max-sweeps", "device": "--device"}
# spec fields, by the option that sets them
SPEC_OPTIONS = {"agent": "--agent", "env_id": "--env", "env_kwargs": "--env-kwargs",
                "seed": "--seed", "out": "--out", "agent_kwargs": "--agent-kwargs",
                "cache_dir": "--cache-dir", "resume": "--resume", "tracker": "--tracker",
                "tracker_group": "--tracker-group", "hyperparams": "--hyperparams",
                "train_episodes": "--train-episodes", "eval_episodes": "--eval-episodes",
                "train_env_id": "--train-env", "train_env_kwargs": "--train-env-kwargs"}
# options that define a run, by argparse dest: --resume reads them from run.json instead
RUN_OPTIONS = {"agent": "--agent", "env_id": "--env", "env_kwargs": "--env-kwargs",
               **EXPLICIT, "seed": "--seed", "out": "--out", "agent_kwargs": "--agent-kwargs",
               "hyperparams": "--hyperparams", "train_episodes": "--train-episodes",
               "eval_episodes": "--eval-episodes", "train_env_id": "--train-env",
               "train_env_kwargs": "--train-env-kwargs"}


def json_object(value: str) -> dict[str, Any]:
    """An argparse type: a JSON object."""
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not valid JSON ({e.msg} at character {e.pos}); "
            'expected a JSON object such as \'{"n_layer": 4}\'') from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(
            f"{value!r} is a JSON {type(obj).__name__}, not an object; "
            'expected a JSON object such as \'{"n_layer": 4}\'')
    return obj


def _int_at_least(value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed; expected an int >= {low}")
    return number


def positive_int(value: str) -> int:
    """An argparse type: an int >= 1."""
    return _int_at_least(value, 1)


def non_negative_int(value: str) -> int:
    """An argparse type: an int >= 0."""
    return _int_at_least(value, 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train-agent",
        description="Train one agent on one layer-tying environment (one episode = one "
                    "training run) and write logs, results, the final model and figures.",
        epilog="Settings are resolved as: the env id's defaults < --env-kwargs < explicit "
               "options (--preset, --dataset, --data-dir, --max-sweeps, --device); "
               "hyperparameters as: the agent's hyperparameter file (its env family's entry "
               "over its default one) < --config < --agent-kwargs. "
               "--resume DIR continues a stopped run from its checkpoint; it reads the run's "
               "settings from DIR/run.json and takes no run-defining option.")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="read options from a YAML, TOML or JSON file (a run's run.json "
                             "works too); flags override it")
    parser.add_argument("--agent", help="registered agent name (see agents.names()); "
                                        "required unless --resume")
    parser.add_argument("--env", dest="env_id",
                        help=f"registered environment id (default {DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", type=json_object, metavar="JSON",
                        help='environment settings as a JSON object, e.g. \'{"n_layer": 4}\'')
    parser.add_argument("--preset", choices=list(PRESETS), help="named model/run shape")
    parser.add_argument("--dataset", choices=[*DATASETS, *IMAGE_DATASETS],
                        help="corpus (text families) or image set (ViT)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="local folder of text splits, or of image class folders")
    parser.add_argument("--max-sweeps", type=positive_int, metavar="N",
                        help="sweeps over the layers in the episode")
    parser.add_argument("--seed", type=non_negative_int,
                        help="episode and agent seed (default 0)")
    parser.add_argument("--device", metavar="DEVICE",
                        help=f"where the transformer trains: {', '.join(DEVICES)} or cuda:N")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="run folder (default runs/<agent>-<env>-s<seed>)")
    parser.add_argument("--agent-kwargs", type=json_object, metavar="JSON",
                        help="agent hyperparameters as a JSON object (over the "
                             "hyperparameter file's)")
    parser.add_argument("--hyperparams", metavar="FILE",
                        help="the agent's hyperparameter file: a .yml file keyed by env "
                             "family and 'default', or a folder of <agent>.yml files (default "
                             f"{SHIPPED}, the shipped ones: {SHIPPED}/<agent>.yml; '{NO_FILE}': "
                             "none, the agent's code defaults)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="cache for tokenizers and tokenized corpora")
    parser.add_argument("--checkpoint-every", type=non_negative_int, metavar="N",
                        help="write DIR/checkpoint every N decisions, at the agent's next "
                             f"consistent point (default {DEFAULT_CHECKPOINT_EVERY}; 0: never)")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the run in DIR from its checkpoint (settings from "
                             "DIR/run.json)")
    parser.add_argument("--overwrite", action="store_true",
                        help="let a new run take an --out folder that holds another run: the "
                             "old run is moved aside to DIR.old-<time>/, never deleted")
    parser.add_argument("--train-episodes", type=non_negative_int, metavar="N",
                        help="the train-then-evaluate protocol: learn over N episodes (fresh "
                             "training runs), then evaluate the frozen agent on held-out "
                             "seeds (default 0: the paper's online protocol, one episode)")
    parser.add_argument("--eval-episodes", type=positive_int, metavar="K",
                        help="with --train-episodes: held-out evaluation episodes (default 3)")
    parser.add_argument("--train-env", dest="train_env_id", metavar="ID",
                        help="with --train-episodes: train on this registered env (the same "
                             "spaces, e.g. LayerTying-Surrogate-Deep-v0), then evaluate on "
                             "--env (sim-to-real)")
    parser.add_argument("--train-env-kwargs", type=json_object, metavar="JSON",
                        help="settings of --train-env, as a JSON object")
    parser.add_argument("--sb3-zip", action="store_true",
                        help="SB3 agents: also save agent/sb3.zip, loadable with SB3's own "
                             "load() (for interop; SB3's zip pickles, our checkpoints never do)")
    parser.add_argument("--tracker", choices=list(TRACKERS),
                        help="also log to an experiment tracker: mlflow (at "
                             "$MLFLOW_TRACKING_URI when set, else offline in the run folder) or "
                             "wandb (Weights & Biases, offline in the run folder unless "
                             "$WANDB_MODE says otherwise; upload later with wandb sync); with "
                             "--resume, the tracker of the resumed part (default: the run's)")
    parser.add_argument("--tracker-group", metavar="NAME",
                        help="with --tracker: gather this run with others under NAME (the W&B "
                             "run group, an MLflow tag 'group')")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


class UsageError(Exception):
    """A bad option: `argument OPTION: message`, reported with exit status 2."""

    def __init__(self, option: str, message: str):
        super().__init__(f"argument {option}: {message}")
        self.option = option


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The run the options describe (checked; nothing is written)."""
    if args.resume is not None:
        if args.overwrite:
            raise UsageError("--overwrite", "cannot be combined with --resume: resuming "
                                            "continues the run in its folder")
        for dest, option in RUN_OPTIONS.items():
            if getattr(args, dest) is not None:
                raise UsageError(option, "cannot be combined with --resume: the run's settings "
                                         f"are read from {args.resume / 'run.json'}")
        spec = RunSpec.from_folder(args.resume, cache_dir=args.cache_dir,
                                   checkpoint_every=args.checkpoint_every,
                                   progress=not args.no_progress)
        if args.tracker is None and args.tracker_group is None:
            return spec
        return dataclasses.replace(  # where else it logs does not change the run
            spec, tracker=args.tracker or spec.tracker,
            tracker_group=args.tracker_group or spec.tracker_group).check()
    if args.agent is None:
        raise UsageError("--agent", "is required (or --resume DIR to continue a stopped run)")
    explicit = {k: getattr(args, k) for k in EXPLICIT if getattr(args, k) is not None}
    every = DEFAULT_CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every
    spec = RunSpec(agent=args.agent, env_id=args.env_id or DEFAULT_ENV,
                   env_kwargs={**(args.env_kwargs or {}), **explicit},
                   seed=0 if args.seed is None else args.seed, out=args.out,
                   agent_kwargs=dict(args.agent_kwargs or {}), cache_dir=args.cache_dir,
                   progress=not args.no_progress, checkpoint_every=every,
                   overwrite=args.overwrite, sb3_zip=args.sb3_zip, tracker=args.tracker,
                   tracker_group=args.tracker_group,
                   hyperparams=parse_source(args.hyperparams),
                   train_episodes=args.train_episodes or 0,
                   eval_episodes=3 if args.eval_episodes is None else args.eval_episodes,
                   train_env_id=args.train_env_id,
                   train_env_kwargs=dict(args.train_env_kwargs or {}))
    return spec.check()


def option_of(argument: str, env_kwargs: dict[str, Any] | None = None,
              explicit: Collection[str] = (), resume: bool = False) -> str:
    """The option that supplied the setting `argument` (a spec field or `env_kwargs.X`).

    `env_kwargs` are the settings given with `--env-kwargs`, `explicit` the
    EnvConfig fields given as their own options, `resume` whether `--resume` was.
    """
    if resume:
        return "--resume"
    head, _, name = argument.partition(".")
    if head != "env_kwargs" or not name:
        return SPEC_OPTIONS.get(head, "--env-kwargs")
    if name in EXPLICIT and name in explicit:
        return EXPLICIT[name]
    if name in (env_kwargs or {}):
        return "--env-kwargs"
    return "--env"  # a default of the env id


def to_argv(spec: RunSpec) -> list[str]:
    """The `train_agent.py` options of `spec` (the command line equivalent of a spec)."""
    if spec.resume:
        return ["--resume", str(spec.folder)]
    argv = ["--agent", spec.agent, "--env", spec.env_id, "--seed", str(spec.seed),
            "--out", str(spec.folder), "--checkpoint-every", str(spec.checkpoint_every)]
    if spec.env_kwargs:
        argv += ["--env-kwargs", json.dumps(spec.env_kwargs)]
    if spec.agent_kwargs:
        argv += ["--agent-kwargs", json.dumps(spec.agent_kwargs)]
    if spec.hyperparams != SHIPPED:
        argv += ["--hyperparams", NO_FILE if spec.hyperparams is None else str(spec.hyperparams)]
    if spec.cache_dir is not None:
        argv += ["--cache-dir", str(spec.cache_dir)]
    if spec.overwrite:
        argv.append("--overwrite")
    if spec.sb3_zip:
        argv.append("--sb3-zip")
    if spec.train_episodes:
        argv += ["--train-episodes", str(spec.train_episodes),
                 "--eval-episodes", str(spec.eval_episodes)]
    if spec.train_env_id is not None:
        argv += ["--train-env", spec.train_env_id]
        if spec.train_env_kwargs:
            argv += ["--train-env-kwargs", json.dumps(spec.train_env_kwargs)]
    if spec.tracker is not None:
        argv += ["--tracker", spec.tracker]
    if spec.tracker_group is not None:
        argv += ["--tracker-group", spec.tracker_group]
    return argv if spec.progress else [*argv, "--no-progress"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of `train_agent.py` and the `train-agent` command."""
    parser = build_parser()
    args = parse_with_config(parser, argv)
    try:
        spec = spec_from_args(args)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    except SettingError as e:
        parser.error(f"argument {blamed_option(e, args)}: {e}")
    return run_and_report(spec, parser.prog, lambda e: blamed_option(e, args),
                          usage=parser.format_usage())


def run_and_report(spec: RunSpec, prog: str, option_for: Callable[[SettingError], str],
                   usage: str = "") -> int:
    """Run `spec` and report as `train-agent` does: the summary line and status 0, or the
    error and its status (a bad setting exits with 2, as argparse does)."""
    # torch, transformers and the agents: imported only now (`--help` stays fast)
    from agents.runs.driver import run
    from agents.runs.resume import Preempted

    try:
        result = run(spec)
    except SettingError as e:
        sys.stderr.write(usage)
        print(f"{prog}: error: argument {option_for(e)}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except (DataUnavailableError, WriteFailedError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except Preempted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.exit_status
    print(summary_line(result, spec.folder))
    return 0


def blamed_option(error: SettingError, args: argparse.Namespace) -> str:
    """The option to name for `error`, given the parsed options."""
    explicit = [k for k in EXPLICIT if getattr(args, k) is not None]
    return option_of(error.argument, args.env_kwargs, explicit, args.resume is not None)


def summary_line(result: RunResult, folder: Path) -> str:
    """The one line printed at the end of a run."""
    head = (f"{result.agent} on {result.env_id} (seed {result.seed}): "
            f"val ppl {_fmt(result.final_val_ppl)}, test ppl "
            f"{_fmt(result.final_test_ppl)}, trainable fraction "
            f"{_fmt(result.trainable_fraction)}")
    if result.tie_map is not None:
        return f"{head}, tie map {result.tie_map} -> {folder}"
    return (f"{head} (means over {result.eval_episodes} held-out episodes of the frozen "
            f"agent, after {result.train_episodes} training episodes) -> {folder}")


def _fmt(value: float | None) -> str:
    return "null" if value is None or not math.isfinite(value) else f"{value:.3f}"
