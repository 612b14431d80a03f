"""The agent registry: names to factories, imported only when an agent is made."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium as gym

    from agents.base import Agent

AgentFactory = Callable[..., "Agent"]
_REGISTRY: dict[str, tuple[AgentFactory | str, dict[str, Any]]] = {}


def register(name: str, factory: AgentFactory | str, **defaults: Any) -> None:
    """Make `agents.make(name, env, **kwargs)` build `factory(env, **defaults, **kwargs)`.

    `factory` is a callable or a `"module:attribute"` string, imported only when
    the agent is first made (so that registering costs no import).
    """
    if name in _REGISTRY:
        raise ValueError(f"agent name {name!r} is already registered")
    _REGISTRY[name] = (factory, defaults)


def unregister(name: str) -> None:
    """Remove a registered agent (e.g. one registered by a test)."""
    if name not in _REGISTRY:
        raise ValueError(f"agent={name!r} is not registered; registered: {', '.join(names())}")
    del _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


def make(name: str, env: gym.Env, **kwargs: Any) -> Agent:
    """Build the registered agent `name` for `env`."""
    if name not in _REGISTRY:
        raise ValueError(f"agent={name!r} is unknown; allowed: {', '.join(names())}")
    factory, defaults = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return partial(factory, **defaults)(env, **kwargs)
