"""The common agent interface, the one-episode guard and the saved-state format.

Every agent learns online inside one training run (one episode), as the
paper does, so all agents get the same inner training budget. An agent knows
only the Gymnasium API plus `action_masks()`: the number of layers and the
action mode from `action_space` (`Discrete(L)`: one layer per step;
`MultiDiscrete`: a whole tie map per step), the episode's length from
`info["budget"]` at reset.

Checkpoints: `Agent.run` calls `on_boundary()` whenever the agent's
state is complete and consistent (for step-by-step agents: after every
decision), and `Agent.get_state` / `Agent.set_state` hold that
state as tensors plus JSON, so that a run can be stopped there and continued
bit for bit (see `agents.runs.resume`). `Agent.save` writes the same state
with `write_state`, one format for every agent; an agent whose `run` has no such
points declares `checkpoints = False` and is run without them.

Hyperparameters: `Agent.hyperparameters()` names those an agent accepts, with their
defaults, and `check_hyperparameters` is the one check of a keyword dict against it
(every agent's constructor, `agents.make` and the run harness call it).
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file

from tying_env import checkpoint as ckpt
from tying_env.errors import SettingTypeError
from tying_env.files import atomic_write, write_json

AgentState = tuple[dict[str, torch.Tensor], dict[str, Any]]


class OneEpisode(gym.Wrapper):
    """Lets exactly one episode run (or `episodes`), then keeps the finished training run alive.

    Libraries such as Stable-Baselines3 reset an environment as soon as an
    episode ends, which would throw the trained model away. After the episode
    this wrapper answers `reset()` with the last observation and leaves the
    environment (and its model) untouched; a further `step()` raises. SB3's on-policy
    algorithms step on until their rollout buffer is full, so with a budget that is not
    a multiple of `n_steps` pass `callback=agents.StopAtEpisodeEnd(env)` to `learn()`:
    it stops `learn()` right after the episode's last step.

    `resume` starts it "already running" for an episode restored from a
    checkpoint: the first `reset()` is answered with the restored observation.
    """

    def __init__(self, env: gym.Env, episodes: int = 1):
        super().__init__(env)
        self.episodes = episodes  # how many may run, one after another
        self.ended = 0  # episodes that have ended
        self.started = False
        self.finished = False
        self._running = False
        self._last: tuple[np.ndarray, dict[str, Any]] | None = None
        self._restored = False

    def resume(self, obs: np.ndarray, info: dict[str, Any]) -> None:
        """Continue an episode restored underneath: answer the next `reset()` with it."""
        self.started, self.finished, self._running = True, False, True
        self._last = (obs, info)
        self._restored = True

    def start(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset now, and answer the next `reset()` with the same observation and info.

        For an agent that needs the reset `info` (e.g. `info["budget"]`) before it
        hands the environment to a library that resets it itself.
        """
        obs, info = self.reset(**kwargs)
        self._restored = True
        return obs, info

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        if self.finished or self._restored:
            assert self._last is not None
            self._restored = False
            return self._last
        if self._running:
            raise RuntimeError("OneEpisode: reset() during the episode is not allowed")
        self.started, self._running = True, True
        self._last = self.env.reset(**kwargs)
        return self._last

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.finished:
            raise RuntimeError("OneEpisode: the episode has ended, so this step would start "
                               "a new training run; to stop SB3's learn() at the episode's "
                               "end, pass callback=agents.StopAtEpisodeEnd(env) to learn()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last = (obs, info)
        if terminated or truncated:
            self._running = False
            self.ended += 1
            self.finished = self.ended >= self.episodes
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.env.get_wrapper_attr("action_masks")()


def n_layers(space: spaces.Space) -> int:
    """The number of layers a layer-tying action space decides."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(len(space.nvec))
    raise ValueError(f"{space} is not a layer-tying action space (Discrete or MultiDiscrete)")


def action_mode(space: spaces.Space) -> str:
    """`"layer"` for `Discrete` (one layer per step), `"vector"` for `MultiDiscrete`."""
    n_layers(space)  # raises for other spaces
    return "layer" if isinstance(space, spaces.Discrete) else "vector"


class Agent:
    """An agent that drives one episode of a layer-tying environment while it learns.

    Subclasses declare `name` (the registry reads it) and implement `run`. Agents that
    act step by step can instead implement `act` and `observe` and use the
    default `run` loop. Agents with state of their own (networks,
    optimizers, random generators, counters) override `get_state` and
    `set_state`; the defaults suit agents without any. The hyperparameters an agent
    accepts are its constructor's keyword parameters after `env` and `seed`, unless it
    overrides `hyperparameters()`; the constructor checks `hparams` against them.
    """

    name: ClassVar[str] = ""  # the name it is registered under (`agents.register`)
    checkpoints: ClassVar[bool] = True  # run() takes on_boundary; False: it takes none
    # False: nothing it sees changes what it does (static and random agents), so the
    # train-then-evaluate protocol plays it no training episodes
    learns: ClassVar[bool] = True

    def __init__(self, env: gym.Env, seed: int = 0, **hparams: Any):
        check_hyperparameters(type(self), hparams)
        self.env = env
        self.seed = seed
        self.hparams = hparams

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """The hyperparameters this agent accepts, each with its default: by default the
        keyword parameters of its constructor after `env` and `seed` (a required one's
        default is `inspect.Parameter.empty`; `**kwargs` accepts none)."""
        params = list(inspect.signature(cls).parameters.values())[1:]  # after env
        return {p.name: p.default for p in params if p.name != "seed"
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def run(self, on_boundary: Callable[[], None] | None = None) -> None:
        """Run one episode, learning online, until it terminates or is truncated.

        `on_boundary()` is called after every decision but the last, when the
        agent has learned from it: a point where `get_state` is complete. An override
        that offers no such points takes no `on_boundary` and sets `checkpoints = False`.
        """
        obs, info = self.env.reset(seed=self.seed)
        done = False
        while not done:
            action = self.act(obs, info)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            self.observe(obs, action, float(reward), next_obs, terminated, truncated, info)
            obs, done = next_obs, terminated or truncated
            if on_boundary is not None and not done:
                on_boundary()

    def train(self, episodes: int) -> None:
        """Learn over `episodes` episodes, one after another (the train-then-evaluate
        protocol, `agents.runs.protocol`). The first reset passes the agent's seed; later
        ones pass none, so the environment's own generator seeds each new training run
        (a wrapper may choose the seeds instead)."""
        for episode in range(episodes):
            obs, info = self.env.reset(seed=self.seed if episode == 0 else None)
            done = False
            while not done:
                action = self.act(obs, info)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                self.observe(obs, action, float(reward), next_obs, terminated, truncated,
                             info)
                obs, done = next_obs, terminated or truncated

    def policy(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        """The frozen agent's action: no exploration and nothing learned (for evaluation).

        The default is `act`, right for agents that neither explore nor learn.
        """
        return self.act(obs, info)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} implements neither act() nor run()")

    def observe(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray,  # noqa: B027
                terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        """Learn from one transition (static agents ignore it)."""

    def metrics(self) -> dict[str, float]:
        """The agent's internals now, for logging: name -> number (e.g. `epsilon`).

        The recorder logs them as TensorBoard scalars `agent/<name>` at every decision
        (`agents.runs.runlog.RunLog`). Reading them must change nothing (a resumed run
        stays exact). The default is none.
        """
        return {}

    def save(self, path: str | Path) -> None:
        """Write `get_state` under the folder `path` (see `write_state`)."""
        write_state(path, self.get_state(), agent=self.name)

    def load(self, path: str | Path) -> None:
        """Load what `save` wrote into this agent."""
        self.set_state(*read_state(path))

    def get_state(self) -> AgentState:
        """Everything needed to continue exactly: tensors and JSON-able metadata.

        The default is no state at all (agents whose acts depend on nothing but
        the observation); agents with state must override it and `set_state`.
        """
        return {}, {}

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what `get_state` returned (raise ValueError on a mismatch)."""
        if tensors or meta:
            raise ckpt.CheckpointError(f"agent {self.name!r} keeps no state, but the saved "
                                       f"state holds {sorted(tensors) or sorted(meta)}")


def check_hyperparameters(agent: type[Agent], hparams: Mapping[str, Any]) -> None:
    """Check `hparams` against `agent.hyperparameters()`: a `SettingTypeError` naming an
    unknown name (with the closest allowed one and all of them) or a value whose type is
    not its default's (bool, int, finite number, string; other defaults take anything).
    Its `argument` is the hyperparameter at fault."""
    label = agent.name or f"{agent.__module__}:{agent.__qualname__}"
    allowed = agent.hyperparameters()
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        given = ", ".join(f"{key}={hparams[key]!r}" for key in unknown)
        close = (difflib.get_close_matches(key, allowed, n=1) for key in unknown)
        hints = "".join(f" (did you mean {match[0]}?)" for match in close if match)
        raise SettingTypeError(unknown[0], f"unknown hyperparameter(s) {given} for agent "
                                           f"{label!r}{hints}; allowed: "
                                           f"{', '.join(sorted(allowed)) or 'none'}")
    for key, value in hparams.items():
        kind = _kind_error(allowed[key], value)
        if kind is not None:
            raise SettingTypeError(key, f"{key}={value!r} is not allowed for agent {label!r}; "
                                        f"expected {kind} (default {allowed[key]!r})")


def _kind_error(default: Any, value: Any) -> str | None:
    """What `value` should be, judged by the type of `default`; None when it fits."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "a bool"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):  # a list or tuple too: SB3's train_freq=[4, "step"]
        ok = (number and isinstance(value, int)) or isinstance(value, (list, tuple))
        return None if ok else "an int"
    if isinstance(default, float):
        return None if number and math.isfinite(value) else "a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    return None


def write_state(path: str | Path, state: AgentState, agent: str | None = None) -> None:
    """Save an agent state into the folder `path`: `agent.json` (the agent's name and
    the JSON part) plus one `<group>.safetensors` per first component of the tensor
    names (`qnet/...`). Safe files only: nothing is pickled."""
    tensors, meta = state
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        group, _, rest = key.partition("/")
        if not rest or not group.isidentifier():
            raise ValueError(f"agent tensor name {key!r} must look like 'group/name'")
        groups.setdefault(group, {})[rest] = value.detach().to("cpu").contiguous()
    for group, entries in groups.items():
        atomic_write(path / f"{group}.safetensors",
                     lambda tmp, entries=entries: save_file(entries, str(tmp)))
    write_json(path / "agent.json", {"agent": agent, "state": meta,
                                     "tensor_files": sorted(groups)})


def read_state(path: str | Path) -> AgentState:
    """Read what `write_state` wrote (no unpickling anywhere)."""
    path = Path(path)
    doc = json.loads((path / "agent.json").read_text(encoding="utf-8"))
    tensors: dict[str, torch.Tensor] = {}
    for group in doc["tensor_files"]:
        if not str(group).isidentifier():
            raise ValueError(f"{path / 'agent.json'}: bad tensor file name {group!r}")
        for key, value in load_file(str(path / f"{group}.safetensors")).items():
            tensors[f"{group}/{key}"] = value
    return tensors, doc["state"]
