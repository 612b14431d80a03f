"""What defines one run: `RunSpec`, checked up front, saved as `run.json`.

A run is one agent driving one episode of one registered layer-tying environment.
The command line, the benchmark and Python callers all build a `RunSpec`
and hand it to `agents.runs.driver.run`; nothing else reaches the driver.

A bad setting raises `SettingError` whose `argument` is the
spec field at fault (`"agent"`, `"agent_kwargs"`, `"env_id"`, `"out"`, `"cache_dir"`,
`"resume"`), or `"env_kwargs.<field>"` for an environment setting (`<field>`
is the `EnvConfig` field, e.g. `"env_kwargs.n_layer"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

import tying_env
from tying_env.errors import SettingError
from tying_env.files import read_json, to_jsonable
from tying_env.presets import make_config

DEFAULT_ENV = "LayerTying-GPT2-Tiny-v0"
DEFAULT_CHECKPOINT_EVERY = 10
RUN_FILE = "run.json"
RUN_FORMAT = "layer-tying-gym/run"
TRACKERS = ("mlflow",)
NOT_CONFIG = ("cache_dir", "render_mode")  # constructor arguments that are not EnvConfig fields


def env_ids() -> list[str]:
    """Registered Gymnasium ids whose entry point is the layer-tying environment."""
    return sorted(env_id for env_id, spec in gym.registry.items()
                  if spec.entry_point == tying_env.ENV_ENTRY_POINT)


@dataclass(frozen=True)
class RunSpec:
    """One run: the agent, the environment and its settings, the seed and the run folder.

    `env_kwargs` are the settings given on top of the env id's registered defaults;
    `make_kwargs` (what `gym.make` receives) merges the two. `out` defaults to
    `runs/<agent>-<env_id>-s<seed>`. `resume` continues the run in `out` from its
    checkpoint (build such a spec with `from_folder`). `overwrite` lets a new run take a
    folder that holds another run, which is moved aside, never deleted.
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
    tracker: str | None = None  # an experiment tracker besides TensorBoard (TRACKERS)
    track: str | None = None  # the benchmark track's `NAME/vVERSION` (agents.benchmark.tracks)

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
        if self.track is not None:
            settings["track"] = self.track
        return to_jsonable(settings)

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

    def check(self) -> RunSpec:
        """Raise `SettingError` for anything a run would trip over; return self."""
        blame = "resume" if self.resume else None
        self.agent_class()
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
        if self.train_episodes and self.resume:
            raise SettingError("resume", "a train-then-evaluate run (train_episodes > 0) "
                                         "writes no checkpoints: start it again instead")
        if self.tracker is not None and self.tracker not in TRACKERS:
            raise SettingError("tracker", f"tracker={self.tracker!r} is unknown; allowed: "
                                          f"{', '.join(TRACKERS)} (or none)")
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
                    tracker=self.tracker)

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
        if saved.get("format") != RUN_FORMAT or bad:
            raise SettingError("resume", f"{run_file} is not a valid run file (bad or missing "
                                         f"{', '.join(bad) or 'format'})")
        saved_cache = saved.get("cache_dir")
        cache = cache_dir if cache_dir is not None else saved_cache
        every = saved.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
        tracker = saved.get("tracker")
        spec = cls(agent=settings["agent"], env_id=settings["env_id"],
                   env_kwargs=dict(settings["env_kwargs"]), seed=settings["seed"], out=folder,
                   agent_kwargs=dict(settings["agent_kwargs"]),
                   cache_dir=None if cache is None else Path(cache), progress=progress,
                   checkpoint_every=int(every if checkpoint_every is None else checkpoint_every),
                   resume=resume, tracker=tracker if isinstance(tracker, str) else None,
                   train_episodes=int(settings.get("train_episodes", 0)),
                   eval_episodes=int(settings.get("eval_episodes", 3)),
                   track=settings["track"] if isinstance(settings.get("track"), str) else None)
        try:
            return spec.check()
        except SettingError as e:
            raise SettingError("resume", f"{run_file}: {e}") from e
