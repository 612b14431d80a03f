"""What defines one run: `RunSpec`, checked up front, saved as `run.json`.

A run is one agent driving one episode of one registered layer-tying environment.
The command line, the benchmark and Python callers all build a `RunSpec`
and hand it to `agents.runs.driver.run`; nothing else reaches the driver.

The agent is built with its hyperparameter file's values (`agents.hyperparams`, from the
spec's `hyperparams`) under `agent_kwargs`; `run.json` records the file and the values
the run used (`hyperparams_record`), and a run continued or rebuilt from its folder uses the
recorded values, not the file as it is now. `settings()`, what a run is compared by, does
not hold them: a run's identity is unchanged by the files.

A bad setting raises `SettingError` whose `argument` is the
spec field at fault (`"agent"`, `"agent_kwargs"`, `"hyperparams"`, `"env_id"`, `"out"`,
`"cache_dir"`, `"resume"`), or `"env_kwargs.<field>"` for an environment setting (`<field>`
is the `EnvConfig` field, e.g. `"env_kwargs.n_layer"`).
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import agents.hyperparams as hp
import tying_env
from tying_env.errors import SettingError
from tying_env.files import read_json, to_jsonable
from tying_env.presets import make_config

DEFAULT_ENV = "LayerTying-GPT2-Tiny-v0"
DEFAULT_CHECKPOINT_EVERY = 10
RUN_FILE = "run.json"
RUN_FORMAT = "layer-tying-gym/run"
TRACKERS = ("mlflow", "wandb")
NOT_CONFIG = ("cache_dir", "render_mode")  # constructor arguments that are not EnvConfig fields


def env_ids() -> list[str]:
    """Registered Gymnasium ids whose entry point is the layer-tying environment."""
    return sorted(env_id for env_id, spec in gym.registry.items()
                  if spec.entry_point == tying_env.ENV_ENTRY_POINT)


def registered(env_id: str) -> Any:
    """The Gymnasium spec of `env_id`, or None: an id registered on import of `tying_env`,
    or `"module:Id"` for one registered by importing your own module (as `gym.make` reads
    it; worker processes then import that module too)."""
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    return gym.registry.get(name)


@dataclass(frozen=True)
class RunSpec:
    """One run: the agent, the environment and its settings, the seed and the run folder.

    `env_kwargs` are the settings given on top of the env id's registered defaults;
    `make_kwargs` (what `gym.make` receives) merges the two. `out` defaults to
    `runs/<agent>-<env_id>-s<seed>`. `resume` continues the run in `out` from its
    checkpoint (build such a spec with `from_folder`). `overwrite` lets a new run take a
    folder that holds another run, which is moved aside, never deleted. `tracker` and
    `tracker_group` say where else the run is logged (`agents.runs.tracking`); they do not
    define the run (they are not in `settings`).
    """

    agent: str
    env_id: str = DEFAULT_ENV
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    out: Path | None = None
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None
    progress: bool = True
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY  # decisions; 0: only when stopped
    resume: bool = False
    overwrite: bool = False  # move a run already in `out` aside (see agents.runs.folder)
    sb3_zip: bool = False  # also save SB3 agents as SB3's own zip (for interop; pickles)
    train_episodes: int = 0  # > 0: the train-then-evaluate protocol (agents.runs.protocol)
    eval_episodes: int = 3  # held-out episodes of the frozen agent (with train_episodes)
    # with train_episodes: train on another registered env with the same spaces (e.g. a
    # surrogate, LayerTying-Surrogate-Deep-v0), evaluate on env_id (sim-to-real)
    train_env_id: str | None = None
    train_env_kwargs: dict[str, Any] = field(default_factory=dict)
    tracker: str | None = None  # an experiment tracker besides TensorBoard (TRACKERS)
    tracker_group: str | None = None  # the tracker's group of runs (a benchmark: its folder)
    track: str | None = None  # the benchmark track's `NAME/vVERSION` (agents.benchmark.tracks)
    hyperparams: str | Path | None = hp.SHIPPED  # the agent's hyperparameter file(s)
    saved_hyperparams: Mapping[str, Any] | None = None  # run.json's record (from_folder)

    def __post_init__(self) -> None:
        if self.out is None:
            object.__setattr__(self, "out", Path("runs") / f"{self.agent}-{self.env_id}"
                                                          f"-s{self.seed}")
        object.__setattr__(self, "out", Path(self.out))

    @property
    def folder(self) -> Path:
        """The run folder (`out`, never None once built)."""
        assert self.out is not None
        return self.out

    @property
    def agent_env_settings(self) -> dict[str, Any]:
        """Environment settings the agent requires; {} when it cannot be imported (`check`
        reports that)."""
        import agents

        try:
            return agents.env_settings(self.agent)
        except ValueError:
            return {}

    @property
    def make_kwargs(self) -> dict[str, Any]:
        """What `gym.make(env_id, ...)` receives: the id's defaults, then `env_kwargs`, then
        the settings the agent requires (`agents.env_settings`, e.g. `vanilla`'s start)."""
        kwargs = {**gym.spec(self.env_id).kwargs, **self.env_kwargs, **self.agent_env_settings}
        if self.cache_dir is not None:
            kwargs["cache_dir"] = str(self.cache_dir)
        return kwargs

    def settings(self) -> dict[str, Any]:
        """What defines the run (saved in run.json and in every checkpoint), as plain JSON."""
        env_kwargs = {k: v for k, v in self.make_kwargs.items() if k != "cache_dir"}
        settings = dict(agent=self.agent, env_id=self.env_id, env_kwargs=env_kwargs,
                        seed=self.seed, agent_kwargs=self.agent_kwargs)
        if self.train_episodes:  # the online protocol's settings stay as they were
            settings |= dict(train_episodes=self.train_episodes,
                             eval_episodes=self.eval_episodes)
        if self.train_env_id is not None:
            settings |= dict(train_env_id=self.train_env_id,
                             train_env_kwargs=self.train_env_kwargs)
        if self.track is not None:
            settings["track"] = self.track
        return to_jsonable(settings)

    @property
    def train_make_kwargs(self) -> dict[str, Any]:
        """What `gym.make(train_env_id, ...)` receives: its defaults, `train_env_kwargs`, then
        the settings the agent requires that the training env has (e.g. `initial_ties`)."""
        assert self.train_env_id is not None
        defaults = registered(self.train_env_id).kwargs
        required = {k: v for k, v in self.agent_env_settings.items() if k == "initial_ties"}
        return {**defaults, **self.train_env_kwargs, **required}

    def env_config(self) -> dict[str, Any]:
        """The environment's resolved settings (every EnvConfig field), as plain JSON."""
        config = {k: v for k, v in self.make_kwargs.items() if k not in NOT_CONFIG}
        try:
            return to_jsonable(make_config(**config).to_dict())
        except SettingError as e:
            where = "resume" if self.resume else f"env_kwargs.{e.argument}"
            raise SettingError(where, str(e)) from e

    def agent_class(self) -> Any:
        """The agent's class, its hyperparameters checked (`Agent.hyperparameters`); a
        `SettingError` names the spec's field at fault (`agent`, `agent_kwargs`, or
        `resume` when the settings came from a checkpoint)."""
        import agents  # the registry: imported here so that reading a spec stays light
        from agents.base import check_hyperparameters

        blame = "resume" if self.resume else None
        if self.agent not in agents.names() and ":" not in self.agent:
            allowed = ", ".join(agents.names()) or "(no agent is registered)"
            raise SettingError(blame or "agent",
                               f"{self.agent!r} is not a registered agent; allowed: {allowed}, "
                               f"or 'package.module:ClassName' for an agent class of your own")
        try:
            agent = agents.factory(self.agent)
        except ValueError as e:
            raise SettingError(blame or "agent", str(e)) from None
        try:
            check_hyperparameters(agent, self.agent_kwargs)
        except SettingError as e:
            raise SettingError(blame or "agent_kwargs", str(e)) from None
        return agent

    def file_defaults(self) -> hp.FileDefaults:
        """The agent's hyperparameters from its file for this env id (`agents.hyperparams`);
        with `saved_hyperparams`, those the run recorded."""
        if self.saved_hyperparams is not None:
            saved = self.saved_hyperparams
            return hp.FileDefaults(saved.get("file"), tuple(saved.get("entries", ())),
                                   dict(saved.get("values", {})))
        try:
            return hp.defaults(self.agent, self.env_id, self.hyperparams)
        except SettingError as e:
            raise SettingError("resume" if self.resume else e.argument, str(e)) from None

    def agent_hyperparameters(self) -> dict[str, Any]:
        """What the agent is built with: the file's values, then `agent_kwargs` on top."""
        return copy.deepcopy({**self.file_defaults().values, **self.agent_kwargs})

    def hyperparams_record(self) -> dict[str, Any]:
        """What run.json records: the hyperparameter file, its entries applied, and the
        values the agent is built with (`agent_hyperparameters`)."""
        return {**self.file_defaults().to_json(), "values": self.agent_hyperparameters()}

    def used_hyperparameters(self, run_file: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters of this spec's agent that the run whose run.json is
        `run_file` used, complete: one it does not name is the agent's code default, as the
        shipped `default` entry gives it (they are equal: tests/test_hyperparams.py).

        A run.json without `hyperparams` was written before hyperparameter files: its agent
        ran with its `agent_kwargs` alone.
        """
        record = run_file.get("hyperparams")
        if isinstance(record, Mapping):
            values = record.get("values") or {}
        else:
            values = (run_file.get("settings") or {}).get("agent_kwargs") or {}
        return {**hp.defaults(self.agent, None, hp.SHIPPED).values, **values}

    def same_hyperparameters(self, run_file: Mapping[str, Any]) -> bool:
        """Whether the run whose run.json is `run_file` used this spec's hyperparameters
        (`used_hyperparameters`: a hyperparameter left to its code default counts as given
        with that value)."""
        ours = self.used_hyperparameters({"hyperparams": self.hyperparams_record()})
        return _plain(self.used_hyperparameters(run_file)) == _plain(ours)

    def check(self) -> RunSpec:
        """Raise `SettingError` for anything a run would trip over; return self."""
        from agents.base import check_hyperparameters

        blame = "resume" if self.resume else None
        agent = self.agent_class()
        try:
            check_hyperparameters(agent, self.agent_hyperparameters())
        except SettingError as e:
            raise SettingError(blame or "hyperparams", str(e)) from None
        ids = env_ids()
        if self.env_id not in ids:
            raise SettingError(blame or "env_id",
                               f"{self.env_id!r} is not a registered layer-tying environment "
                               f"id; allowed: {', '.join(ids)}")
        for name, low in (("train_episodes", 0), ("eval_episodes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingError(name, f"{name}={value!r} is not allowed; expected an int "
                                         f">= {low}")
        if self.train_env_id is not None:
            if not self.train_episodes:
                raise SettingError("train_env_id", "a training env needs train_episodes > 0 "
                                                   "(the train-then-evaluate protocol)")
            if registered(self.train_env_id) is None:
                raise SettingError("train_env_id", f"{self.train_env_id!r} is not a "
                                                   "registered Gymnasium id (or 'module:Id' "
                                                   "for one your module registers)")
        if self.train_episodes and self.resume:
            raise SettingError("resume", "a train-then-evaluate run (train_episodes > 0) "
                                         "writes no checkpoints: start it again instead")
        if self.tracker is not None and self.tracker not in TRACKERS:
            raise SettingError("tracker", f"tracker={self.tracker!r} is unknown; allowed: "
                                          f"{', '.join(TRACKERS)} (or none)")
        if self.tracker_group is not None and (not isinstance(self.tracker_group, str)
                                               or not self.tracker_group.strip()):
            raise SettingError("tracker_group", f"tracker_group={self.tracker_group!r} is not "
                                                "allowed; expected a non-empty name")
        for name in ("out", "cache_dir"):
            path = getattr(self, name)
            if path is not None and path.exists() and not path.is_dir():
                raise SettingError(name, f"{str(path)!r} exists and is not a folder")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SettingError(blame or "seed", f"seed={self.seed!r} is not allowed; expected "
                                                "an int >= 0")
        self.env_config()
        return self

    def to_run_file(self) -> dict[str, Any]:
        """The content of `run.json` (what `from_folder` reads back)."""
        return dict(format=RUN_FORMAT, settings=self.settings(),
                    checkpoint_every=self.checkpoint_every,
                    cache_dir=None if self.cache_dir is None else str(self.cache_dir),
                    tracker=self.tracker, tracker_group=self.tracker_group,
                    hyperparams=self.hyperparams_record())

    @classmethod
    def from_folder(cls, folder: str | Path, *, cache_dir: str | Path | None = None,
                    checkpoint_every: int | None = None, progress: bool = True,
                    resume: bool = True) -> RunSpec:
        """The spec that resumes the run in `folder`, from its `run.json` (no writes);
        `resume=False`: the same run's spec, to build its environment and agent again (a
        train-then-evaluate run too, which cannot be resumed).

        `cache_dir` and `checkpoint_every` override the saved ones (they do not
        change what the run computes).
        """
        folder = Path(folder)
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is not a folder"
            raise SettingError("resume", f"{str(folder)!r} {what}; expected a run folder "
                                         "written by train-agent")
        run_file = folder / RUN_FILE
        if not run_file.is_file():
            raise SettingError("resume", f"{folder} has no {RUN_FILE}: it is not a run folder "
                                         "written by train-agent")
        saved = read_json(run_file)
        if saved is None:
            raise SettingError("resume", f"{run_file} is not a valid run file (not a JSON "
                                         "object)")
        settings = saved.get("settings")
        kinds = dict(agent=str, env_id=str, env_kwargs=dict, seed=int, agent_kwargs=dict)
        bad = ([k for k, kind in kinds.items() if not isinstance(settings.get(k), kind)]
               if isinstance(settings, dict) else ["settings"])
        record = saved.get("hyperparams")  # absent: written before hyperparameter files
        if record is not None and not _is_record(record):
            bad.append("hyperparams")
        if saved.get("format") != RUN_FORMAT or bad:
            raise SettingError("resume", f"{run_file} is not a valid run file (bad or missing "
                                         f"{', '.join(bad) or 'format'})")
        saved_cache = saved.get("cache_dir")
        cache = cache_dir if cache_dir is not None else saved_cache
        every = saved.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
        tracker, group = saved.get("tracker"), saved.get("tracker_group")
        spec = cls(agent=settings["agent"], env_id=settings["env_id"],
                   env_kwargs=dict(settings["env_kwargs"]), seed=settings["seed"], out=folder,
                   agent_kwargs=dict(settings["agent_kwargs"]),
                   cache_dir=None if cache is None else Path(cache), progress=progress,
                   checkpoint_every=int(every if checkpoint_every is None else checkpoint_every),
                   resume=resume, tracker=tracker if isinstance(tracker, str) else None,
                   tracker_group=group if isinstance(group, str) else None,
                   train_episodes=int(settings.get("train_episodes", 0)),
                   eval_episodes=int(settings.get("eval_episodes", 3)),
                   train_env_id=settings.get("train_env_id"),
                   train_env_kwargs=dict(settings.get("train_env_kwargs") or {}),
                   track=settings["track"] if isinstance(settings.get("track"), str) else None,
                   hyperparams=None if record is None else record["file"],
                   saved_hyperparams=record)
        try:
            return spec.check()
        except SettingError as e:
            raise SettingError("resume", f"{run_file}: {e}") from e


def _is_record(record: Any) -> bool:
    """Whether `record` is a run.json's `hyperparams` (`RunSpec.hyperparams_record`)."""
    return (isinstance(record, dict) and isinstance(record.get("values"), dict)
            and isinstance(record.get("entries"), list)
            and (record.get("file") is None or isinstance(record.get("file"), str)))


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (for comparisons with files on disk)."""
    return json.loads(json.dumps(to_jsonable(value)))
