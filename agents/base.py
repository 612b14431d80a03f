"""The common agent interface, the one-episode guard, and the registry.

Every agent learns online inside one training run (one episode), as the
paper does, so all agents get the same inner training budget. An agent knows
only the Gymnasium API plus ``action_masks()``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np


class OneEpisode(gym.Wrapper):
    """Lets exactly one episode run, then keeps the finished training run alive.

    Libraries such as Stable-Baselines3 reset an environment as soon as an
    episode ends, which would throw the trained model away. After the episode
    this wrapper answers ``reset()`` with the last observation and leaves the
    environment (and its model) untouched; a further ``step()`` raises.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.started = False
        self.finished = False
        self._last: tuple[np.ndarray, dict[str, Any]] | None = None

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        if self.finished:
            assert self._last is not None
            return self._last
        if self.started:
            raise RuntimeError("OneEpisode: reset() during the episode is not allowed")
        self.started = True
        self._last = self.env.reset(**kwargs)
        return self._last

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.finished:
            raise RuntimeError("OneEpisode: the episode has ended")
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last = (obs, info)
        self.finished = terminated or truncated
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


class Agent(ABC):
    """An agent that drives one episode of a layer-tying environment while it learns.

    Subclasses set ``name`` and implement :meth:`run`. Agents that act step by
    step can instead implement :meth:`act` and :meth:`observe` and use the
    default :meth:`run` loop.
    """

    name: ClassVar[str] = ""

    def __init__(self, env: gym.Env, seed: int = 0, **hparams: Any):
        self.env = env
        self.seed = seed
        self.hparams = hparams

    def run(self) -> None:
        """Run one episode, learning online, until it terminates or is truncated."""
        obs, info = self.env.reset(seed=self.seed)
        done = False
        while not done:
            action = self.act(obs, info)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            self.observe(obs, action, float(reward), next_obs, terminated, truncated, info)
            obs, done = next_obs, terminated or truncated

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        raise NotImplementedError(f"{type(self).__name__} implements neither act() nor run()")

    def observe(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray,  # noqa: B027
                terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        """Learn from one transition (static agents ignore it)."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Save the agent's learned state under the folder ``path``."""

    def load(self, path: str | Path) -> None:  # noqa: B027
        """Load state written by :meth:`save` into this agent (static agents: nothing)."""


AgentFactory = Callable[..., Agent]
_REGISTRY: dict[str, AgentFactory] = {}


def register(name: str, factory: AgentFactory) -> None:
    """Make ``agents.make(name, env, ...)`` build an agent with ``factory(env, **kwargs)``."""
    if name in _REGISTRY:
        raise ValueError(f"agent name {name!r} is already registered")
    _REGISTRY[name] = factory


def names() -> list[str]:
    return sorted(_REGISTRY)


def make(name: str, env: gym.Env, **kwargs: Any) -> Agent:
    """Build the registered agent ``name`` for ``env``."""
    if name not in _REGISTRY:
        raise ValueError(f"agent={name!r} is unknown; allowed: {', '.join(names())}")
    return _REGISTRY[name](env, **kwargs)
