"""Agents that misbehave, for the tests of how the harness reports them.

Named as ``helper_agents:ClassName`` (the tests folder is on the path of the benchmark's
worker processes, as pytest puts it there).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import Agent


class CrashingAgent(Agent):
    """Raises inside `run()`, at its third decision."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        if info["decision"] >= 2:
            raise RuntimeError("CrashingAgent gave up at decision 2")
        return 0


class NoSeedAgent(Agent):
    """A constructor without the `seed` parameter the harness passes."""

    def __init__(self, env: Any, greedy: bool = True):
        super().__init__(env, 0, greedy=greedy)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return 0
