"""The fingerprint of an agent's source code, recorded with every run's result.

A leaderboard submission is a results file; `agent_source(cls)` lets it say which code
produced it. The fingerprint covers the source file of every module that defines a class
in the agent class's hierarchy, from the class itself up to (not including) the
library's `agents.base.Agent`: a subclass of `QLearningAgent` in your own module records
your module and `agents/qlearning.py`. Code those modules import (SB3, torch, the
environment) is not covered: the run records its versions elsewhere
(`agents.benchmark.report.machine_info`, the commit).

| key       | value                                                        |
|-----------|--------------------------------------------------------------|
| `class`   | `module:QualifiedName` of the agent class                    |
| `modules` | each covered module's name and the SHA-256 of its file       |
| `sha256`  | the SHA-256 of the `modules` table: one value to compare     |
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from typing import Any


def module_sha256(module_name: str) -> str | None:
    """The SHA-256 of a module's source file, or None when it has none (built in, or
    defined where no file can be read, e.g. in a notebook cell)."""
    module = sys.modules.get(module_name)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        path = None
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def agent_source(cls: type) -> dict[str, Any]:
    """The fingerprint of agent class `cls` (see the module's table)."""
    from agents.base import Agent

    modules: dict[str, str | None] = {}
    for klass in cls.__mro__:
        if klass is Agent or not (isinstance(klass, type) and issubclass(klass, Agent)):
            continue
        modules.setdefault(klass.__module__, module_sha256(klass.__module__))
    table = "".join(f"{name} {digest}\n" for name, digest in sorted(modules.items()))
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "modules": modules,
            "sha256": hashlib.sha256(table.encode()).hexdigest()}
