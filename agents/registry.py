"""The agent registry: names to agent classes, imported only when an agent is made.

Every agent class declares the name it is registered under (`Agent.name`), and the
registry reads it: `register(MyAgent)`. The included agents register lazily, as
`register(name, "module:Class")`, so that `import agents` imports neither torch nor
SB3; the class's declared name is checked against `name` when it is first imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium as gym

    from agents.base import Agent

_REGISTRY: dict[str, type[Agent] | str] = {}


def register(agent: type[Agent] | str, factory: type[Agent] | str | None = None) -> str:
    """Make `agents.make(name, env, **kwargs)` build an agent class; returns the name.

    `register(MyAgent)` registers the class under its declared `name`;
    `register(name, "module:Class")` registers it lazily (imported when first made, and
    refused then unless the class declares `name`); `register(name, MyAgent)` is the
    same as `register(MyAgent)` when `name` is the one it declares. A missing name, one
    taken already, or one the class does not declare raises ValueError.
    """
    if factory is None:
        if isinstance(agent, str):
            raise ValueError(f"register({agent!r}) names no agent class: pass the class, "
                             f"or register(name, 'module:Class')")
        name, factory = _declared_name(agent), agent
    elif isinstance(agent, str):
        name = agent
        if not isinstance(factory, str):
            _check_name(name, factory)
        elif ":" not in factory:
            raise ValueError(f"agent {name!r}: {factory!r} is not a 'module:Class' path")
    else:
        raise ValueError(f"register({agent!r}, {factory!r}): pass a class, or a name and a "
                         "class or 'module:Class' path")
    if name in _REGISTRY:
        raise ValueError(f"agent name {name!r} is already registered "
                         f"({_label(_REGISTRY[name])}); agent names must be unique")
    _REGISTRY[name] = factory
    return name


def unregister(name: str) -> None:
    """Remove a registered agent (e.g. one registered by a test)."""
    if name not in _REGISTRY:
        raise ValueError(f"agent={name!r} is not registered; registered: {', '.join(names())}")
    del _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


def factory(name: str) -> type[Agent]:
    """The agent class of `name`: a registered agent, or a `"package.module:ClassName"`.

    The second form runs an agent class that is not registered (e.g. your own,
    for the benchmark); it is imported here.
    """
    from agents.base import Agent

    if name in _REGISTRY:
        built = _REGISTRY[name]
    elif ":" in name:
        built = name
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
        if not (isinstance(built, type) and issubclass(built, Agent)):
            raise ValueError(f"agent={name!r}: {module}:{attribute} is not an agent class "
                             "(a subclass of agents.base.Agent)")
        if name in _REGISTRY:
            _check_name(name, built)
            _REGISTRY[name] = built  # imported once
    return built


def env_settings(name: str) -> dict[str, Any]:
    """Environment settings agent `name` requires (its class's `env_settings`, if any).

    They override the run's `env_kwargs`: e.g. `vanilla` (conventional training)
    starts from independently initialised blocks, `initial_ties="none"`.
    """
    return dict(getattr(factory(name), "env_settings", {}))


def make(name: str, env: gym.Env, **kwargs: Any) -> Agent:
    """Build the agent `name` (registered, or `"package.module:ClassName"`) for `env`;
    `kwargs` are `seed` and the hyperparameters (`agents.base.check_hyperparameters`)."""
    from agents.base import check_hyperparameters

    built = factory(name)
    check_hyperparameters(built, {k: v for k, v in kwargs.items() if k != "seed"})
    return built(env, **kwargs)


def _declared_name(cls: Any) -> str:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{_label(cls)} declares no name: give it the class attribute "
                         "name = '...', the name it is registered under")
    return name


def _check_name(name: str, cls: Any) -> None:
    declared = _declared_name(cls)
    if declared != name:
        raise ValueError(f"agent {name!r} is registered as {_label(cls)}, which declares "
                         f"name={declared!r}: register it under its own name")


def _label(factory: Any) -> str:
    if isinstance(factory, str):
        return factory
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', factory)}"
