"""``train-agent``: train one agent on one layer-tying environment and record the run.

One run is one episode (one training run of a fresh transformer) driven by the
agent. The run folder (``--out``, default ``runs/<agent>-<env>-s<seed>``) gets:

| path            | content                                                         |
|-----------------|-----------------------------------------------------------------|
| ``log.jsonl``   | one JSON line per decision (see :class:`agents.runlog.RunLog`)  |
| ``tb/``         | TensorBoard scalars                                             |
| ``result.json`` | final full-split perplexities, parameters, memory, tie map, ... |
| ``model/``      | the final model, untied, as a Hugging Face folder               |
| ``compact/``    | the final model, root blocks only (``tying_env.export``)        |
| ``agent/``      | the agent's saved state                                         |
| ``tie_map.png``, ``curves.png`` | figures of the run                              |
| ``run.json``    | the run's resolved settings (what ``--resume`` reads back)      |
| ``checkpoint/`` | the latest checkpoint (see below)                               |

Checkpoints. Every ``--checkpoint-every N`` decisions (default 10; 0 disables),
at the agent's next consistent point (after a decision for step-by-step agents,
at a rollout boundary for SB3 ones), the run writes ``checkpoint/``: the
environment (root blocks, tie map, inner AdamW and schedule, counters, its
generators), the agent's full state, the global generators (Python, NumPy,
torch) and the position in ``log.jsonl``, as safetensors plus JSON with a
sha256 manifest, swapped in atomically (see :mod:`tying_env.checkpoint`).
``--resume DIR`` needs no other option: it reads ``DIR/run.json``, verifies the
checkpoint (files, settings, corpus, agent, log) before touching anything,
cuts ``log.jsonl`` back to the checkpoint, and finishes the run as if it had
never stopped: on CPU ``result.json``, the log and the final weights are
identical to an uninterrupted run's, except the timing fields
(:data:`RESULT_TIMING_FIELDS` in ``result.json``, ``wall_s`` and ``timestamp``
in ``log.jsonl``).

Exit status: 0 on success (a diverged run included), 2 for bad options (a damaged or
mismatched checkpoint included), 1 when the environment cannot be built for another
reason (e.g. a dataset unavailable offline).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from transformers.utils import logging as hf_logging

import agents
import tying_env  # noqa: F401  (registers the environment ids)
from agents.base import OneEpisode
from agents.plots import plot_curves, plot_tie_map
from agents.runlog import RunLog, check_position
from tying_env import checkpoint as ckpt
from tying_env.env import LayerTyingEnv
from tying_env.export import save_compact, save_expanded, write_json
from tying_env.presets import DATASETS, DEVICES, PRESETS, make_config

DEFAULT_ENV = "LayerTying-GPT2-Tiny-v0"
DEFAULT_CHECKPOINT_EVERY = 10
# explicit options that override --env-kwargs, by config field
EXPLICIT = {"preset": "--preset", "dataset": "--dataset", "data_dir": "--data-dir",
            "max_sweeps": "--max-sweeps", "device": "--device"}
NOT_CONFIG = ("cache_dir", "render_mode")  # constructor arguments that are not EnvConfig fields
# options that define a run, by argparse dest: --resume reads them from run.json instead
RUN_OPTIONS = {"agent": "--agent", "env_id": "--env", "env_kwargs": "--env-kwargs",
               **EXPLICIT, "seed": "--seed", "out": "--out", "agent_kwargs": "--agent-kwargs"}
RUN_FORMAT = "layer-tying-gym/run"
STATE_FORMAT = "layer-tying-gym/run-state-v1"
# result.json fields that measure time, so differ between otherwise identical runs
RESULT_TIMING_FIELDS = ("wall_seconds", "eval_seconds", "total_seconds")


class UsageError(Exception):
    """A bad option: reported as ``argument OPTION: message`` with exit status 2."""

    def __init__(self, option: str, message: str):
        super().__init__(f"argument {option}: {message}")
        self.option = option


class RunError(Exception):
    """A run that cannot start for a reason other than a bad option (exit status 1)."""


@dataclass
class RunSpec:
    """A validated run: what ``gym.make`` and ``agents.make`` will receive."""

    agent: str
    env_id: str
    make_kwargs: dict[str, Any]  # for gym.make (the id's defaults already merged in)
    seed: int
    out: Path
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY  # decisions; 0: no checkpoints
    resume: bool = False  # continue the run in ``out`` from its checkpoint

    def settings(self) -> dict[str, Any]:
        """What defines the run (saved in run.json and in every checkpoint)."""
        env_kwargs = {k: v for k, v in self.make_kwargs.items() if k != "cache_dir"}
        return json.loads(json.dumps(dict(agent=self.agent, env_id=self.env_id,
                                          env_kwargs=env_kwargs, seed=self.seed,
                                          agent_kwargs=self.agent_kwargs)))

    @property
    def blame(self) -> str | None:
        """The option to name for an error in the settings: --resume when they came from it."""
        return "--resume" if self.resume else None


# ---------------------------------------------------------------- options
def _json_object(value: str) -> dict[str, Any]:
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


def _positive_int(value: str) -> int:
    return _int_at_least(value, 1)


def _non_negative_int(value: str) -> int:
    return _int_at_least(value, 0)


def env_ids() -> list[str]:
    """Registered Gymnasium ids whose entry point is the layer-tying environment."""
    ids = []
    for env_id, spec in gym.registry.items():
        entry = spec.entry_point
        if entry == "tying_env.env:LayerTyingEnv" or entry is LayerTyingEnv:
            ids.append(env_id)
    return sorted(ids)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train-agent",
        description="Train one agent on one layer-tying environment (one episode = one "
                    "training run) and write logs, results, the final model and figures.",
        epilog="Settings are resolved as: the env id's defaults < --env-kwargs < explicit "
               "options (--preset, --dataset, --data-dir, --max-sweeps, --device). "
               "--resume DIR continues a stopped run from its checkpoint; it reads the run's "
               "settings from DIR/run.json and takes no run-defining option.")
    parser.add_argument("--agent", help="registered agent name (see agents.names()); "
                                        "required unless --resume")
    parser.add_argument("--env", dest="env_id",
                        help=f"registered environment id (default {DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", type=_json_object, metavar="JSON",
                        help='environment settings as a JSON object, e.g. \'{"n_layer": 4}\'')
    parser.add_argument("--preset", choices=list(PRESETS), help="named model/run shape")
    parser.add_argument("--dataset", choices=list(DATASETS), help="corpus")
    parser.add_argument("--data-dir", metavar="DIR", help="local folder of text splits")
    parser.add_argument("--max-sweeps", type=_positive_int, metavar="N",
                        help="sweeps over the layers in the episode")
    parser.add_argument("--seed", type=_non_negative_int,
                        help="episode and agent seed (default 0)")
    parser.add_argument("--device", choices=list(DEVICES), help="where the transformer trains")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="run folder (default runs/<agent>-<env>-s<seed>)")
    parser.add_argument("--agent-kwargs", type=_json_object, metavar="JSON",
                        help="agent hyperparameters as a JSON object")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="cache for tokenizers and tokenized corpora")
    parser.add_argument("--checkpoint-every", type=_non_negative_int, metavar="N",
                        help="write DIR/checkpoint every N decisions, at the agent's next "
                             f"consistent point (default {DEFAULT_CHECKPOINT_EVERY}; 0: never)")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the run in DIR from its checkpoint (settings from "
                             "DIR/run.json)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def resolve(args: argparse.Namespace) -> RunSpec:
    """Check the parsed options against the registries and the env's settings."""
    if args.resume is not None:
        return resolve_resume(args)
    if args.agent is None:
        raise UsageError("--agent", "is required (or --resume DIR to continue a stopped run)")
    args.env_id = args.env_id or DEFAULT_ENV
    args.env_kwargs = {} if args.env_kwargs is None else args.env_kwargs
    args.agent_kwargs = {} if args.agent_kwargs is None else args.agent_kwargs
    args.seed = 0 if args.seed is None else args.seed
    _check_folder_option("--cache-dir", args.cache_dir)
    _check_folder_option("--out", args.out)
    if args.agent not in agents.names():
        allowed = ", ".join(agents.names()) or "(no agent is registered)"
        raise UsageError("--agent", f"{args.agent!r} is not a registered agent; allowed: {allowed}")
    ids = env_ids()
    if args.env_id not in ids:
        raise UsageError("--env", f"{args.env_id!r} is not a registered layer-tying "
                                  f"environment id; allowed: {', '.join(ids)}")
    explicit = {k: getattr(args, k) for k in EXPLICIT if getattr(args, k) is not None}
    kwargs = {**gym.spec(args.env_id).kwargs, **args.env_kwargs, **explicit}
    if args.cache_dir is not None:
        kwargs["cache_dir"] = str(args.cache_dir)
    config_kwargs = {k: v for k, v in kwargs.items() if k not in NOT_CONFIG}
    try:
        make_config(**config_kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(_blame(str(e), explicit, args.env_kwargs), str(e)) from None
    out = args.out or Path("runs") / f"{args.agent}-{args.env_id}-s{args.seed}"
    every = DEFAULT_CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every
    return RunSpec(agent=args.agent, env_id=args.env_id, make_kwargs=kwargs, seed=args.seed,
                   out=out, agent_kwargs=dict(args.agent_kwargs), progress=not args.no_progress,
                   checkpoint_every=every)


def resolve_resume(args: argparse.Namespace) -> RunSpec:
    """The spec of the run in ``--resume DIR``, from ``DIR/run.json`` (nothing is written)."""
    for dest, option in RUN_OPTIONS.items():
        if getattr(args, dest) is not None:
            raise UsageError(option, "cannot be combined with --resume: the run's settings are "
                                     f"read from {args.resume / 'run.json'}")
    _check_folder_option("--cache-dir", args.cache_dir)
    folder: Path = args.resume
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise UsageError("--resume", f"{str(folder)!r} {what}; expected a run folder written "
                                     "by train-agent")
    run_file = folder / "run.json"
    if not run_file.is_file():
        raise UsageError("--resume", f"{folder} has no run.json: it is not a run folder "
                                     "written by train-agent")
    try:
        saved = json.loads(run_file.read_text(encoding="utf-8"))
        settings = saved["settings"]
        fields = dict(agent=str, env_id=str, env_kwargs=dict, seed=int, agent_kwargs=dict)
        bad = [k for k, kind in fields.items() if not isinstance(settings.get(k), kind)]
        if saved.get("format") != RUN_FORMAT or bad:
            raise ValueError(f"bad or missing {', '.join(bad) or 'format'}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError("--resume", f"{run_file} is not a valid run file ({e})") from None
    if ckpt.find_checkpoint(folder) is None:
        raise UsageError("--resume", f"{folder} holds no checkpoint ({folder}/checkpoint is "
                                     "missing): the run was started with --checkpoint-every 0 "
                                     "or stopped before its first checkpoint; start it again")
    if settings["agent"] not in agents.names():
        raise UsageError("--resume", f"{run_file}: agent {settings['agent']!r} is not "
                                     "registered in this installation")
    kwargs = dict(settings["env_kwargs"])
    cache_dir = args.cache_dir or saved.get("cache_dir")
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        make_config(**{k: v for k, v in kwargs.items() if k not in NOT_CONFIG})
    except (TypeError, ValueError) as e:
        raise UsageError("--resume", f"{run_file}: {e}") from None
    every = saved.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    if args.checkpoint_every is not None:
        every = args.checkpoint_every
    return RunSpec(agent=settings["agent"], env_id=settings["env_id"], make_kwargs=kwargs,
                   seed=settings["seed"], out=folder, agent_kwargs=settings["agent_kwargs"],
                   progress=not args.no_progress, checkpoint_every=int(every), resume=True)


def _finished(folder: Path) -> bool:
    """Whether ``folder`` holds a complete result (``total_seconds`` is written last)."""
    try:
        return "total_seconds" in json.loads((folder / "result.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False


def _check_folder_option(option: str, path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise UsageError(option, f"{str(path)!r} exists and is not a folder")


def _blame(message: str, explicit: dict[str, Any], env_kwargs: dict[str, Any]) -> str:
    """The option that supplied the setting a config error names."""
    match = re.match(r"(\w+)=", message)
    name = match.group(1) if match else None
    if name in explicit:
        return EXPLICIT[name]
    if name is None or name in env_kwargs:
        return "--env-kwargs"
    return "--env"


# -------------------------------------------------------------------- run
def run(spec: RunSpec) -> dict[str, Any]:
    """Train (or continue), evaluate, save and plot one run; returns its result.json."""
    t_start = time.perf_counter()
    saved = _read_checkpoint(spec) if spec.resume else None  # verified; nothing written yet
    env, recorder, guarded, agent = _build(spec)
    base: LayerTyingEnv = env.unwrapped
    if saved is not None:
        try:
            _restore(spec, saved, recorder, guarded, agent)
        except BaseException:
            env.close()
            raise
        print(f"resuming {spec.out} at decision {base.decision} of {base.budget}",
              file=sys.stderr)
    else:
        _start_fresh(spec)
    checkpointer = Checkpointer(spec, base, recorder, agent,
                                last=base.decision if saved is not None else 0)
    try:
        _drive(agent, checkpointer)
    finally:
        recorder.finish()
    last = recorder.records[-1] if recorder.records else recorder.start or {}
    if last.get("diverged"):
        print(f"warning: training diverged at decision {last.get('decision')} of {base.budget} "
              "(non-finite loss); the episode ended early. Non-finite perplexities are "
              "written as null in result.json.", file=sys.stderr)
    elif not guarded.finished:
        print(f"warning: the agent stopped after {len(recorder.records)} of {base.budget} "
              "decisions", file=sys.stderr)

    result = summarize(spec, base, recorder, finished=guarded.finished)
    write_json(spec.out / "result.json", result)  # early, in case saving or plotting fails
    result["files"] = ["run.json", *_save_outputs(spec, base, recorder, agent, result)]
    result["total_seconds"] = time.perf_counter() - t_start
    write_json(spec.out / "result.json", result)
    env.close()
    return result


def _build(spec: RunSpec) -> tuple[gym.Env, RunLog, OneEpisode, agents.Agent]:
    """The environment, its recorder and guard, and the agent (bad options -> UsageError)."""
    try:
        env = gym.make(spec.env_id, **spec.make_kwargs)
    except (OSError, TypeError, ValueError) as e:
        option = "--data-dir" if spec.make_kwargs.get("data_dir") else "--env-kwargs"
        raise UsageError(spec.blame or option,
                         f"cannot build {spec.env_id}: {type(e).__name__}: {e}") from None
    except RuntimeError as e:  # e.g. a dataset that cannot be loaded offline
        raise RunError(f"cannot build {spec.env_id}: {e}") from None
    spec.out.mkdir(parents=True, exist_ok=True)
    recorder = RunLog(env, spec.out, progress=spec.progress, desc=f"{spec.agent} s{spec.seed}")
    guarded = OneEpisode(recorder)
    try:
        agent = agents.make(spec.agent, guarded, seed=spec.seed, **spec.agent_kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        env.close()
        raise UsageError(spec.blame or "--agent-kwargs",
                         f"{spec.agent!r} refused {json.dumps(spec.agent_kwargs)}: {e}") from None
    return env, recorder, guarded, agent


def _start_fresh(spec: RunSpec) -> None:
    """A new run in ``spec.out``: no stale events or checkpoints; the settings in run.json."""
    shutil.rmtree(spec.out / "tb", ignore_errors=True)
    ckpt.remove_checkpoints(spec.out)
    cache_dir = spec.make_kwargs.get("cache_dir")
    write_json(spec.out / "run.json", dict(format=RUN_FORMAT, settings=spec.settings(),
                                           checkpoint_every=spec.checkpoint_every,
                                           cache_dir=cache_dir))


def _drive(agent: agents.Agent, checkpointer: Checkpointer) -> None:
    """Run the agent's episode, checkpointing at its boundaries when it offers them."""
    if checkpointer.every <= 0:
        agent.run()
    elif "on_boundary" not in inspect.signature(agent.run).parameters:
        print(f"warning: agent {agent.name!r} offers no checkpoint boundaries "
              "(its run() takes no on_boundary): this run cannot be resumed", file=sys.stderr)
        agent.run()
    else:
        agent.run(on_boundary=checkpointer)


# ------------------------------------------------------------ checkpoints
class Checkpointer:
    """Called by the agent at its boundaries; writes a checkpoint once ``every`` decisions
    have passed since the last one."""

    def __init__(self, spec: RunSpec, env: LayerTyingEnv, recorder: RunLog,
                 agent: agents.Agent, last: int = 0):
        self.spec = spec
        self.every = spec.checkpoint_every
        self.env = env
        self.recorder = recorder
        self.agent = agent
        self.last = last

    def __call__(self) -> None:
        if self.every > 0 and self.env.decision - self.last >= self.every:
            self.save()

    def save(self) -> None:
        """Write ``out/checkpoint`` (atomically) for the current decision."""
        agent_tensors, agent_meta = self.agent.get_state()
        state = dict(format=STATE_FORMAT, settings=self.spec.settings(),
                     decision=self.env.decision, budget=self.env.budget,
                     log=self.recorder.position(), start=self.recorder.start,
                     wall_s=self.recorder.wall_seconds)
        ckpt.write_checkpoint(self.spec.out, {
            "state": ({}, state),
            "env": self.env.get_state(),
            "agent": (agent_tensors, {"agent": self.spec.agent, "state": agent_meta}),
            "rng": ckpt.global_rng_state(),
        })
        self.last = self.env.decision


def _read_checkpoint(spec: RunSpec) -> dict[str, ckpt.Part]:
    """The checkpoint of ``spec.out``, verified against its files, run.json and log.jsonl."""
    folder = spec.out
    try:
        parts = ckpt.read_checkpoint(folder)
        missing = [p for p in ("state", "env", "agent", "rng") if p not in parts]
        if missing:
            raise ckpt.CheckpointError(f"the checkpoint in {folder} lacks {', '.join(missing)}")
        state = parts["state"][1]
        ckpt.require(state, ("format", "settings", "decision", "log", "start", "wall_s"), "run")
        if state["format"] != STATE_FORMAT:
            raise ckpt.CheckpointError(f"the checkpoint in {folder} has format "
                                       f"{state['format']!r}; expected {STATE_FORMAT!r}")
        diff = ckpt.differences(spec.settings(), state["settings"], ("run.json", "the checkpoint"))
        if diff:
            raise ckpt.CheckpointError(f"the checkpoint in {folder} is not of the run described "
                                       f"by {folder / 'run.json'}: " + "; ".join(diff))
        saved_agent = parts["agent"][1].get("agent")
        if saved_agent != spec.agent or "state" not in parts["agent"][1]:
            raise ckpt.CheckpointError(f"the checkpoint holds agent {saved_agent!r}, the run "
                                       f"{spec.agent!r}")
        check_position(folder / "log.jsonl", state["log"])
    except (ckpt.CheckpointError, ValueError, KeyError, TypeError) as e:
        raise UsageError("--resume", f"cannot resume: {e}") from None
    return parts


def _restore(spec: RunSpec, parts: dict[str, ckpt.Part], recorder: RunLog, guarded: OneEpisode,
             agent: agents.Agent) -> None:
    """Load the checkpoint into the fresh env and agent; only then touch the run folder."""
    base: LayerTyingEnv = recorder.unwrapped
    recorder.env.reset(seed=spec.seed)  # the wrappers below the recorder want one reset
    try:
        obs, info = base.set_state(*parts["env"])
        tensors, meta = parts["agent"]
        agent.set_state(tensors, meta["state"])
        restore_global_rngs = ckpt.global_rng_setter(*parts["rng"])
    except (ckpt.CheckpointError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise UsageError("--resume", f"cannot resume from the checkpoint in {spec.out}: "
                                     f"{e}") from None
    if _finished(spec.out):
        raise UsageError("--resume", f"the run in {spec.out} has finished (its result.json is "
                                     "complete): there is nothing to resume")
    # everything is loaded: only now is the run folder written to
    state = parts["state"][1]
    recorder.resume(state["log"], state["start"], info, float(state["wall_s"]))
    guarded.resume(obs, info)
    restore_global_rngs()  # last: nothing may draw from them before the agent goes on


def summarize(spec: RunSpec, env: LayerTyingEnv, recorder: RunLog, *,
              finished: bool) -> dict[str, Any]:
    """result.json: evaluates the final model on the full validation and test splits."""
    records, start = recorder.records, recorder.start or {}
    last = records[-1] if records else start
    t_eval = time.perf_counter()
    final_val, final_test = env.evaluate_split("valid"), env.evaluate_split("test")
    eval_seconds = time.perf_counter() - t_eval
    assert env.model is not None
    fractions = [r["trainable_fraction"] for r in records] or [start["trainable_fraction"]]
    diverged = bool(last.get("diverged", False))
    notes = []
    if diverged:
        notes.append("training diverged (non-finite loss): the episode ended early")
    if not (math.isfinite(final_val) and math.isfinite(final_test)):
        notes.append("non-finite final perplexities are written as null")
    return {
        "agent": spec.agent,
        "agent_kwargs": spec.agent_kwargs,
        "env_id": spec.env_id,
        "env_kwargs": env.cfg.to_dict(),
        "seed": spec.seed,
        "device": str(env.device),
        "final_val_ppl": final_val,
        "final_test_ppl": final_test,
        "optimal_ppl": env.optimal_ppl,
        "optimal_val_ppl": _optimal_split_ppl(env, "valid"),
        "optimal_test_ppl": _optimal_split_ppl(env, "test"),
        "initial_val_ppl": start.get("val_ppl"),
        "last_val_ppl": last.get("val_ppl"),
        "trainable_params": last["trainable_params"],
        "total_params": last["total_params"],
        "trainable_fraction": last["trainable_fraction"],
        "mean_trainable_fraction": float(np.mean(fractions)),
        "tie_map": list(env.model.ties),
        "memory_bytes": last["memory_bytes"],
        "peak_memory_bytes": max(r["memory_bytes"]["total"] for r in [start, *records]),
        "train_steps": last["train_steps"],
        "decisions": len(records),
        "budget": env.budget,
        "finished": finished,
        "diverged": diverged,
        "wall_seconds": recorder.wall_seconds,
        "eval_seconds": eval_seconds,
        "notes": notes,
    }


def _save_outputs(spec: RunSpec, env: LayerTyingEnv, recorder: RunLog, agent: agents.Agent,
                  result: dict[str, Any]) -> list[str]:
    """Models (expanded and compact), the agent and the figures; returns their names."""
    assert env.model is not None
    out = spec.out
    with _quiet_hf():
        save_expanded(env.model, out / "model")
    save_compact(env.model, out / "compact")
    agent.save(out / "agent")
    title = f"{spec.agent} on {spec.env_id}, seed {spec.seed}"
    plot_tie_map(recorder.records, out / "tie_map.png", start=recorder.start,
                 title=f"tie map: {title}")
    final = result["final_val_ppl"]
    plot_curves(recorder.records, out / "curves.png", start=recorder.start,
                optimal_ppl=env.optimal_ppl,
                final_val_ppl=final if math.isfinite(final) else None, title=title)
    return ["log.jsonl", "tb", "model", "compact", "agent", "tie_map.png", "curves.png"]


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """Hide Hugging Face's own progress bars (ours is the one that matters)."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _optimal_split_ppl(env: LayerTyingEnv, split: str) -> float | None:
    """The source's exact perplexity on the windows ``evaluate_split`` uses (synthetic only)."""
    source = env.corpus.source
    if source is None:
        return None
    return source.optimal_ppl(env.split_windows(split))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``train_agent.py`` and the ``train-agent`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = resolve(args)
        result = run(spec)
    except UsageError as e:
        parser.error(str(e))  # exits with status 2
    except RunError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    print(f"{result['agent']} on {result['env_id']} (seed {result['seed']}): "
          f"val ppl {_fmt(result['final_val_ppl'])}, test ppl {_fmt(result['final_test_ppl'])}, "
          f"trainable fraction {result['trainable_fraction']:.3f}, "
          f"tie map {result['tie_map']} -> {spec.out}")
    return 0


def _fmt(value: float | None) -> str:
    return "null" if value is None or not math.isfinite(value) else f"{value:.3f}"

