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


def factory(name: str) -> AgentFactory:
    """The factory of `name`: a registered agent, or a `"package.module:ClassName"`.

    The second form runs an agent class that is not registered (e.g. your own,
    for the benchmark); it is imported here.
    """
    if name in _REGISTRY:
        built, defaults = _REGISTRY[name]
    elif ":" in name:
        built, defaults = name, {}
    else:
        raise ValueError(f"agent={name!r} is unknown; allowed: {', '.join(names())}, or "
                         f"'package.module:ClassName' for an agent class of your own")
    if isinstance(built, str):
        module, _, attribute = built.partition(":")
        try:
            built = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"agent={name!r} cannot be imported: {type(e).__name__}: {e}"
                             ) from None
    return partial(built, **defaults) if defaults else built


def env_settings(name: str) -> dict[str, Any]:
    """Environment settings agent `name` requires (its factory's `env_settings`, if any).

    They override the run's `env_kwargs`: e.g. `vanilla` (conventional training)
    starts from independently initialised blocks, `initial_ties="none"`.
    """
    built = factory(name)
    return dict(getattr(getattr(built, "func", built), "env_settings", {}))


def make(name: str, env: gym.Env, **kwargs: Any) -> Agent:
    """Build the agent `name` (registered, or `"package.module:ClassName"`) for `env`."""
    return factory(name)(env, **kwargs)
