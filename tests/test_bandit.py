"""`schedule-bandit`: arms are whole schedules, one episode per pull."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import agents
from agents.bandit import ScheduleBanditAgent, arm_map, arms
from agents.schedules import contiguous_map
from tying_env.errors import SettingError


class ScheduleScore(gym.Env):
    """A stand-in environment with the real one's info keys: L layers, `sweeps` sweeps of
    L - 1 decisions; the reward of a decision is minus |trainable fraction - target|
    (plus a seeded noise), so the static map with L * target roots is the best schedule."""

    def __init__(self, n_layer: int = 12, sweeps: int = 4, target: float = 0.25,
                 noise: float = 0.01):
        self.n_layer, self.sweeps, self.target, self.noise = n_layer, sweeps, target, noise
        self.action_space = spaces.Discrete(n_layer)
        self.observation_space = spaces.Box(0, n_layer, (n_layer,), np.float32)
        self.budget = sweeps * (n_layer - 1)

    def _info(self) -> dict[str, Any]:
        return {"layer": 1 + self.decision % (self.n_layer - 1),
                "sweep": self.decision // (self.n_layer - 1), "decision": self.decision,
                "budget": self.budget}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.ties, self.decision = list(range(self.n_layer)), 0
        return np.asarray(self.ties, np.float32), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        layer = self._info()["layer"]
        self.ties[layer] = int(action) if int(action) < layer else layer
        self.decision += 1
        roots = sum(t == i for i, t in enumerate(self.ties))
        reward = -abs(roots / self.n_layer - self.target) + self.noise * self.np_random.normal()
        done = self.decision >= self.budget
        return np.asarray(self.ties, np.float32), float(reward), done, False, self._info()


def test_the_arms_are_whole_schedules():
    assert arms(12) == ["static-1", "static-2", "static-3", "static-4", "static-6",
                        "static-12", "untie-then-tie@0.25", "untie-then-tie@0.5",
                        "untie-then-tie@0.75"]
    assert arms(3)[:3] == ["static-1", "static-2", "static-3"]
    assert arm_map("static-3", 12, 10, 0) == contiguous_map(12, 3)
    assert arm_map("untie-then-tie@0.5", 12, 10, 0) == tuple(range(12))  # untied first
    assert arm_map("untie-then-tie@0.5", 12, 10, 9) == contiguous_map(12, 3)  # the budget


def test_it_tries_every_arm_then_learns_the_best_schedule():
    agent = agents.make("schedule-bandit", ScheduleScore(), seed=3)
    assert isinstance(agent, ScheduleBanditAgent)
    first = [agent.choose()]
    agent.train(len(agent.arms))
    assert all(len(r) == 1 for r in agent.returns.values())  # each arm once, first
    assert first[0] == agent.order[0]
    agent.train(6)
    assert agent.best() == "static-3"  # 3 roots of 12: the target fraction 0.25
    env = agent.env
    obs, info = env.reset(seed=99)
    for _ in range(11):  # one sweep: layers 1 to 11
        obs, _, _, _, info = env.step(agent.policy(obs, info))
    assert env.ties == list(contiguous_map(12, 3))  # the frozen policy plays the best arm


def test_it_is_seeded_and_its_state_round_trips():
    def trained(seed: int) -> ScheduleBanditAgent:
        agent = agents.make("schedule-bandit", ScheduleScore(), seed=seed)
        agent.train(11)
        return agent

    a, b = trained(0), trained(0)
    assert a.returns == b.returns and a.order == b.order
    assert trained(1).order != a.order
    copy = agents.make("schedule-bandit", ScheduleScore(), seed=5)
    copy.set_state(*a.get_state())
    assert copy.returns == a.returns and copy.best() == a.best()
    other = agents.make("schedule-bandit", ScheduleScore(n_layer=6), seed=0)
    with pytest.raises(ValueError, match="arms"):
        other.set_state(*a.get_state())


def test_a_bad_exploration_is_refused():
    with pytest.raises(SettingError, match="exploration=-1.0"):
        agents.make("schedule-bandit", ScheduleScore(), exploration=-1.0)
