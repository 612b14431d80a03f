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

Exit status: 0 on success (a diverged run included), 2 for bad options, 1 when the
environment cannot be built for another reason (e.g. a dataset unavailable offline).
"""

from __future__ import annotations

import argparse
import contextlib
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
from agents.runlog import RunLog
from tying_env.env import LayerTyingEnv
from tying_env.export import save_compact, save_expanded, write_json
from tying_env.presets import DATASETS, DEVICES, PRESETS, make_config

DEFAULT_ENV = "LayerTying-GPT2-Tiny-v0"
# explicit options that override --env-kwargs, by config field
EXPLICIT = {"preset": "--preset", "dataset": "--dataset", "data_dir": "--data-dir",
            "max_sweeps": "--max-sweeps", "device": "--device"}
NOT_CONFIG = ("cache_dir", "render_mode")  # constructor arguments that are not EnvConfig fields


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
               "options (--preset, --dataset, --data-dir, --max-sweeps, --device).")
    parser.add_argument("--agent", required=True,
                        help="registered agent name (see agents.names())")
    parser.add_argument("--env", default=DEFAULT_ENV, dest="env_id",
                        help=f"registered environment id (default {DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", type=_json_object, default={}, metavar="JSON",
                        help='environment settings as a JSON object, e.g. \'{"n_layer": 4}\'')
    parser.add_argument("--preset", choices=list(PRESETS), help="named model/run shape")
    parser.add_argument("--dataset", choices=list(DATASETS), help="corpus")
    parser.add_argument("--data-dir", metavar="DIR", help="local folder of text splits")
    parser.add_argument("--max-sweeps", type=_positive_int, metavar="N",
                        help="sweeps over the layers in the episode")
    parser.add_argument("--seed", type=_non_negative_int, default=0,
                        help="episode and agent seed (default 0)")
    parser.add_argument("--device", choices=list(DEVICES), help="where the transformer trains")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="run folder (default runs/<agent>-<env>-s<seed>)")
    parser.add_argument("--agent-kwargs", type=_json_object, default={}, metavar="JSON",
                        help="agent hyperparameters as a JSON object")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="cache for tokenizers and tokenized corpora")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def resolve(args: argparse.Namespace) -> RunSpec:
    """Check the parsed options against the registries and the env's settings."""
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
    return RunSpec(agent=args.agent, env_id=args.env_id, make_kwargs=kwargs, seed=args.seed,
                   out=out, agent_kwargs=dict(args.agent_kwargs), progress=not args.no_progress)


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
    """Train, evaluate, save and plot one run; returns what it wrote to result.json."""
    t_start = time.perf_counter()
    env, recorder, guarded, agent = _build(spec)
    try:
        agent.run()
    finally:
        recorder.finish()
    base: LayerTyingEnv = env.unwrapped
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
    result["files"] = _save_outputs(spec, base, recorder, agent, result)
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
        raise UsageError(option,
                         f"cannot build {spec.env_id}: {type(e).__name__}: {e}") from None
    except RuntimeError as e:  # e.g. a dataset that cannot be loaded offline
        raise RunError(f"cannot build {spec.env_id}: {e}") from None
    spec.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(spec.out / "tb", ignore_errors=True)  # no stale events from an earlier run
    recorder = RunLog(env, spec.out, progress=spec.progress, desc=f"{spec.agent} s{spec.seed}")
    guarded = OneEpisode(recorder)
    try:
        agent = agents.make(spec.agent, guarded, seed=spec.seed, **spec.agent_kwargs)
    except (TypeError, ValueError) as e:
        env.close()
        raise UsageError("--agent-kwargs",
                         f"{spec.agent!r} refused {json.dumps(spec.agent_kwargs)}: {e}") from None
    return env, recorder, guarded, agent


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

