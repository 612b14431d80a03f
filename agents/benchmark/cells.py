"""The cells of a benchmark: agents x seeds, each one run spec, and their state on disk.

A `Request` is a validated benchmark: one environment (id and settings), the
agents, the seeds and per-agent hyperparameters. `Request.spec` gives the
`RunSpec` of one (agent, seed) *cell*, run in
`OUT/cells/<agent>-s<seed>/`. With a `tracker` (`agents.runs.tracking`) each cell is one
tracked run, grouped by the benchmark folder's name; where a cell is logged is no part of
what it is: a finished cell counts the same with or without a tracker.

A cell is `finished` when its `result.json` is a run result, is complete
(`agents.runs.result.RunResult.complete`) and records the requested agent, seed, env id, env
settings and agent kwargs; `failed` when it holds a `failure.json`;
`incomplete` when its folder holds anything else; `missing` otherwise. The hyperparameters
each agent's file gives (`Request.hyperparams`, `agents.hyperparams`) are recorded in the
cell's `run.json`, not its result: `conflicts` compares them with the request's
(`hyperparams_differences`), and a cell from before hyperparameter files counts as run with
its agent's code defaults, which the shipped files equal.

A bad request raises `SettingError` whose `argument` is the
request field at fault (`"agents"`, `"seeds"`, `"workers"`, `"threads"`,
`"agent_kwargs"`, `"hyperparams"`, `"env_id"`, `"out"`, `"tracker"`), or
`"env_kwargs.<field>"`.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agents as registry
import agents.hyperparams as hp
from agents.runs import tracking
from agents.runs.result import FILE as RESULT_FILE
from agents.runs.result import ResultFormatError, RunResult, read_result
from agents.runs.spec import RUN_FILE, RunSpec, env_ids, registered
from tying_env.errors import SettingError
from tying_env.files import read_json, to_jsonable
from tying_env.presets import ADDED_SETTINGS

CELLS = "cells"
# settings that change no number a run computes: results with and without them compare equal
NOT_COMPUTED = ("memory_check",)

Json = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """A validated benchmark request."""

    env_id: str
    env_kwargs: Json  # as given (each cell's RunSpec.env_kwargs)
    env_config: Json  # resolved settings: what each cell's result.json must record
    agents: tuple[str, ...]
    seeds: tuple[int, ...]
    agent_kwargs: dict[str, Json]
    workers: int
    threads: int
    out: Path
    cache_dir: Path | None
    train_episodes: int = 0  # > 0: every cell is a train-then-evaluate run
    eval_episodes: int = 3
    train_env_id: str | None = None  # sim-to-real: the cells train on this env
    track: Json | None = None  # `agents.benchmark.tracks.Track.to_json()` of a track run
    tracker: str | None = None  # each cell's experiment tracker (agents.runs.tracking)
    # the agents' hyperparameter files (`agents.hyperparams`): the shipped ones, a file or
    # folder of your own, or None for none
    hyperparams: str | None = hp.SHIPPED

    def cells(self) -> list[tuple[str, int]]:
        """(agent, seed) pairs, seed by seed: a benchmark stopped early has every agent's
        first seeds."""
        return [(agent, seed) for seed in self.seeds for agent in self.agents]

    def expected(self, agent: str, seed: int) -> Json:
        """What a finished cell's result.json records about its request."""
        return expected_record(self.to_json(), agent, seed)

    def spec(self, agent: str, seed: int) -> RunSpec:
        """The run of one cell."""
        return RunSpec(agent=agent, env_id=self.env_id, env_kwargs=self.env_kwargs, seed=seed,
                       out=cell_dir(self.out, agent, seed),
                       agent_kwargs=self.agent_kwargs.get(agent, {}), cache_dir=self.cache_dir,
                       progress=False, train_episodes=self.train_episodes,
                       eval_episodes=self.eval_episodes, train_env_id=self.train_env_id,
                       track=None if self.track is None else self.track["label"],
                       tracker=self.tracker, tracker_group=self.group,
                       hyperparams=self.hyperparams)

    @property
    def group(self) -> str | None:
        """The tracker's group of the cells: the benchmark folder's name (with a tracker)."""
        return self.out.name if self.tracker is not None else None

    def command(self) -> list[str]:
        """The equivalent `python -m agents.benchmark` command line."""
        if self.track is not None:
            argv = ["python", "-m", "agents.benchmark", "--track", self.track["name"],
                    "--agents", ",".join(self.agents), "--workers", str(self.workers),
                    "--threads", str(self.threads), "--out", str(self.out)]
            if self.cache_dir is not None:
                argv += ["--cache-dir", str(self.cache_dir)]
            return argv + (["--tracker", self.tracker] if self.tracker else [])
        argv = ["python", "-m", "agents.benchmark", "--env", self.env_id,
                "--env-kwargs", json.dumps(self.env_kwargs), "--agents", ",".join(self.agents),
                "--seeds", ",".join(map(str, self.seeds)), "--workers", str(self.workers),
                "--threads", str(self.threads), "--out", str(self.out)]
        if self.agent_kwargs:
            argv += ["--agent-kwargs", json.dumps(self.agent_kwargs)]
        if self.cache_dir is not None:
            argv += ["--cache-dir", str(self.cache_dir)]
        if self.train_episodes:
            argv += ["--train-episodes", str(self.train_episodes),
                     "--eval-episodes", str(self.eval_episodes)]
        if self.train_env_id is not None:
            argv += ["--train-env", self.train_env_id]
        if self.hyperparams != hp.SHIPPED:
            argv += ["--hyperparams", self.hyperparams or hp.NO_FILE]
        return argv + (["--tracker", self.tracker] if self.tracker else [])

    def to_json(self) -> Json:
        return {"env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "env_config": self.env_config, "agents": list(self.agents),
                "seeds": list(self.seeds), "agent_kwargs": self.agent_kwargs,
                "workers": self.workers, "threads": self.threads, "out": str(self.out),
                "train_episodes": self.train_episodes, "eval_episodes": self.eval_episodes,
                "train_env_id": self.train_env_id,
                "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
                "track": self.track, "tracker": self.tracker, "hyperparams": self.hyperparams,
                "command": shlex.join(self.command())}


def expected_record(request: Mapping[str, Any], agent: str, seed: int) -> Json:
    """What a finished cell of `request` (a `Request.to_json()`, as results.json keeps it)
    records about its request: the fields a cell's result.json must match."""
    expected = {"agent": agent, "seed": seed, "env_id": request["env_id"],
                "env_kwargs": cell_env_config(request["env_config"], agent),
                "agent_kwargs": request["agent_kwargs"].get(agent, {}),
                "train_episodes": request.get("train_episodes") or None}
    if request.get("train_episodes"):
        expected["eval_episodes"] = request.get("eval_episodes")
        expected["train_env_id"] = request.get("train_env_id")
    label = (request.get("track") or {}).get("label")
    if label:
        expected["track"] = label
    return plain(expected)


def cell_name(agent: str, seed: int) -> str:
    """The cell's folder name (an agent class `package.module:Class` as `package.module.Class`)."""
    return f"{agent.replace(':', '.')}-s{seed}"


def cell_dir(out: Path, agent: str, seed: int) -> Path:
    return out / CELLS / cell_name(agent, seed)


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------- validation
def parse_agents(value: str | Sequence[str]) -> tuple[str, ...]:
    """Agent names from `"a,b"` or a sequence (`--agents`): registered names, or
    `package.module:ClassName` for an agent class of your own (imported to check it)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(a).strip() for a in items]
    if not names or any(not a for a in names):
        raise SettingError("agents", f"{value!r} is not a comma-separated list of "
                                         "agent names, e.g. 'vanilla,albert'")
    unknown = [a for a in names if a not in registry.names() and ":" not in a]
    if unknown:
        raise SettingError("agents", f"{', '.join(map(repr, unknown))} not registered; "
                                     f"allowed: {', '.join(registry.names())}, or "
                                     f"'package.module:ClassName' for an agent class")
    for name in (a for a in names if ":" in a):
        try:
            registry.factory(name)
        except ValueError as e:
            raise SettingError("agents", str(e)) from None
    _no_duplicates("agents", names)
    return tuple(names)


def parse_indices(option: str, value: str | Sequence[int], noun: str,
                  example: str) -> tuple[int, ...]:
    """Distinct non-negative ints from `"0,1,2"` or a sequence; a `SettingError` names the
    bad item of `option` (`noun`: what one item is, e.g. "seed" or "GPU index")."""
    items = value.split(",") if isinstance(value, str) else list(value)
    found = []
    for item in items:
        try:
            number = int(str(item).strip()) if not isinstance(item, bool) else -1
        except ValueError:
            number = -1
        if number < 0:
            raise SettingError(option, f"{item!r} in {value!r} is not a {noun}; expected "
                                       f"non-negative ints separated by commas, e.g. {example}")
        found.append(number)
    if not found:
        raise SettingError(option, f"no {noun} given; expected e.g. {example}")
    repeated = sorted({n for n in found if found.count(n) > 1})
    if repeated:
        raise SettingError(option, f"{noun.split()[0]} {', '.join(map(str, repeated))} given "
                                   f"more than once in {value!r}")
    return tuple(found)


def parse_seeds(value: str | Sequence[int]) -> tuple[int, ...]:
    """Non-negative, distinct seeds from `"0,1,2"` or a sequence (`--seeds`)."""
    return parse_indices("seeds", value, "seed", "0,1,2")


def _no_duplicates(option: str, values: Sequence[Any]) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise SettingError(option, f"{', '.join(repeated)} given more than once")


def _json_object(option: str, value: str | Mapping[str, Any]) -> Json:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise SettingError(option, f"{value!r} is not valid JSON ({e.msg} at character "
                                         f"{e.pos}); expected a JSON object") from None
    if not isinstance(value, Mapping):
        raise SettingError(option, f"{value!r} is a {type(value).__name__}, not a JSON object")
    return dict(value)


def make_request(env_id: str, env_kwargs: str | Mapping[str, Any], agents: str | Sequence[str],
                 seeds: str | Sequence[int], workers: int, out: str | Path, *,
                 agent_kwargs: str | Mapping[str, Any] | None = None,
                 cache_dir: str | Path | None = None,
                 threads: int | None = None, train_episodes: int = 0,
                 eval_episodes: int = 3, track: Json | None = None,
                 tracker: str | None = None, train_env_id: str | None = None,
                 hyperparams: str | Path | None = hp.SHIPPED) -> Request:
    """Check every setting up front; a bad one raises `SettingError`. `hyperparams`: where
    the agents' hyperparameter files are (`agents.hyperparams`), each agent's checked."""
    names = parse_agents(agents)
    seed_list = parse_seeds(seeds)
    env_kwargs = _json_object("env_kwargs", env_kwargs)
    per_agent = _json_object("agent_kwargs", agent_kwargs or {})
    for name, kwargs in per_agent.items():
        if name not in names:
            raise SettingError("agent_kwargs", f"key {name!r} is not one of --agents "
                                                   f"({', '.join(names)})")
        if not isinstance(kwargs, Mapping):
            raise SettingError("agent_kwargs", f"the value for {name!r} must be a JSON "
                                                   f"object of hyperparameters, not {kwargs!r}")
    for option, number, low in (("workers", workers, 1), ("threads", threads, 1),
                                ("train_episodes", train_episodes, 0),
                                ("eval_episodes", eval_episodes, 1)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                                   or number < low):
            raise SettingError(option, f"{number!r} is not allowed; expected an int >= {low}")
    tracking.check(tracker)  # known and installed, before any cell starts
    if train_env_id is not None:
        if not train_episodes:
            raise SettingError("train_env_id", "a training env needs train_episodes > 0 "
                                               "(train-then-evaluate cells)")
        if registered(train_env_id) is None:
            raise SettingError("train_env_id", f"{train_env_id!r} is not a registered "
                                               "Gymnasium id (or 'module:Id' for one your "
                                               "module registers)")
        if track is not None:
            raise SettingError("train_env_id", "a track fixes where its agents train; "
                                               "training a track's agents elsewhere makes "
                                               "another track")
    if threads is None:
        threads = max(1, available_cores() // workers)
    env_config = _resolve_env(env_id, env_kwargs, cache_dir)
    source = _hyperparams_source(hyperparams)
    for name in names:
        hp.defaults(name, env_id, source)  # the file loads and fits the agent
    return Request(env_id=env_id, env_kwargs=env_kwargs, env_config=env_config, agents=names,
                   seeds=seed_list, agent_kwargs={k: dict(v) for k, v in per_agent.items()},
                   workers=workers, threads=threads, out=Path(out).absolute(),
                   cache_dir=None if cache_dir is None else Path(cache_dir).absolute(),
                   train_episodes=train_episodes, eval_episodes=eval_episodes, track=track,
                   tracker=tracker, hyperparams=source, train_env_id=train_env_id)


def _hyperparams_source(source: str | Path | None) -> str | None:
    """A hyperparameter source as cells run it: a file or folder of your own as an absolute
    path (a cell may run elsewhere), the shipped ones and none as they are."""
    if source is None:
        return None
    return Path(source).as_posix() if hp.is_shipped(source) else str(Path(source).absolute())


def _resolve_env(env_id: str, env_kwargs: Json, cache_dir: str | Path | None) -> Json:
    """The env settings a cell will record, checked as a run checks them."""
    spec = RunSpec(agent=registry.names()[0], env_id=env_id, env_kwargs=env_kwargs,
                   cache_dir=None if cache_dir is None else Path(cache_dir))
    if env_id not in env_ids():
        raise SettingError("env_id", f"{env_id!r} is not a registered layer-tying environment "
                                     f"id; allowed: {', '.join(env_ids())}")
    return spec.env_config()


def cell_env_config(env_config: Json, agent: Any) -> Json:
    """The env settings a cell of `agent` records: the request's, then what the agent
    requires (`agents.env_settings`; e.g. `vanilla` starts untied)."""
    try:
        required = registry.env_settings(agent) if isinstance(agent, str) else {}
    except ValueError:
        required = {}
    return {**env_config, **plain(required)}


def plain(value: Any) -> Any:
    """`value` as it reads back from JSON (for comparisons with files on disk)."""
    return json.loads(json.dumps(to_jsonable(value)))


# ---------------------------------------------------------------- cells on disk
def differences(result: RunResult, expected: Json) -> list[str]:
    """`field: found -> expected` for every request setting `result` records otherwise
    (`expected`: `RunResult` field names and their values, as `expected_record` gives)."""
    diffs = []
    for key, want in expected.items():
        got = plain(getattr(result, key))
        if isinstance(want, dict) and isinstance(got, dict):
            if key == "env_kwargs":  # a setting added since: the result ran (or the
                # request, recorded before it existed, asked for) its default
                got, want = {**ADDED_SETTINGS, **got}, {**ADDED_SETTINGS, **want}
            diffs += [f"{key}.{k}: {got.get(k, '(absent)')!r} -> {want.get(k, '(absent)')!r}"
                      for k in sorted(set(got) | set(want))
                      if got.get(k) != want.get(k) and k not in NOT_COMPUTED]
        elif got != want:
            diffs.append(f"{key}: {got!r} -> {want!r}")
    return diffs


def hyperparams_differences(spec: RunSpec, folder: Path) -> list[str]:
    """`hyperparams.<name>: found -> requested` for every hyperparameter the run in `folder`
    used otherwise than `spec` would (`RunSpec.used_hyperparameters`: a run from before
    hyperparameter files used its agent's code defaults); none without a run.json."""
    saved = read_json(folder / RUN_FILE)
    if saved is None:
        return []
    got = plain(spec.used_hyperparameters(saved))
    want = plain(spec.used_hyperparameters({"hyperparams": spec.hyperparams_record()}))
    return [f"hyperparams.{k}: {got.get(k, '(absent)')!r} -> {want.get(k, '(absent)')!r}"
            for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]


def conflicts(request: Request) -> list[str]:
    """Cells in `request.out` whose results belong to another configuration."""
    found = []
    for folder in sorted((request.out / CELLS).glob("*/")):
        obj = read_json(folder / RESULT_FILE)
        if obj is None:
            continue  # no result: nothing to mix up, the folder is rerun or left alone
        try:
            result = RunResult.from_json(obj)
        except ResultFormatError as e:
            found.append(f"{folder.name}: {RESULT_FILE} is not a run result ({e})")
            continue
        agent, seed = result.agent, result.seed
        expected = {"env_id": request.env_id,
                    "env_kwargs": cell_env_config(request.env_config, agent),
                    "train_episodes": request.train_episodes or None}
        if request.train_episodes:
            expected["train_env_id"] = request.train_env_id
        if request.track is not None:
            expected["track"] = request.track["label"]
        if agent in request.agents:
            expected["agent_kwargs"] = plain(request.agent_kwargs.get(agent, {}))
        diffs = differences(result, expected)
        if agent in request.agents and isinstance(seed, int):
            diffs += hyperparams_differences(request.spec(agent, seed), folder)
        if not isinstance(agent, str) or not isinstance(seed, int) or \
                folder.name != cell_name(agent, seed):
            diffs.append(f"agent {agent!r} seed {seed!r} do not match the folder name")
        if diffs:
            found.append(f"{folder.name}: {'; '.join(diffs)}")
    return found


def cell_status(out: Path, agent: str, seed: int, expected: Json | None = None) -> str:
    """`finished`, `failed` (failure.json), `incomplete` (other folder) or `missing`."""
    folder = cell_dir(out, agent, seed)
    result = read_result(folder)
    if result is not None and result.complete:
        if expected is None or not differences(result, expected):
            return "finished"
    if (folder / "failure.json").is_file():
        return "failed"
    return "incomplete" if folder.exists() else "missing"
