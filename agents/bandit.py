"""`schedule-bandit`: learns which tie schedule to play, one whole episode per pull.

What the noise measurements say (`agents.benchmark.noise`): one decision moves the reward
by about as much as the training and evaluation noise do, so a learner that credits single
decisions needs thousands of them; a whole schedule's effect (a few percent of perplexity
between the static maps, `agents.schedules`) is far above one episode's noise. So this
agent learns over episodes, not decisions: its arms are whole schedules, and each
training episode plays one of them and scores it by the episode's return (the track's
objective). It is made for the train-then-test protocol (`Agent.train`, then `policy`).

| arm                | what it plays                                                      |
|--------------------|--------------------------------------------------------------------|
| `static-K`         | K roots in contiguous groups; K in `ROOT_ARMS` (those <= L), and L |
| `untie-then-tie@F` | untied for the first F of the sweeps, then tied to the paper's     |
|                    | budget (`untie-then-tie`); F in `UNTIE_ARMS`                       |

Choice of the arm of a training episode: every arm once, in an order drawn from the
agent's seed; then UCB1 on the mean return, with the bonus scaled by the spread of the
returns seen (`c * sd * sqrt(ln n / n_arm)`). The frozen policy plays the arm with the best
mean return. In the online protocol (`run`: one episode) it can pull only one arm, the
first of its order: it cannot learn there, and says so in its docstring, not by guessing.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.base import Agent, AgentState, action_mode, n_layers
from agents.schedules import (
    contiguous_map,
    episode_sweeps,
    paper_budget,
    untie_sweeps,
    untie_then_tie_map,
)
from tying_env import checkpoint as ckpt
from tying_env import ties as tm
from tying_env.errors import SettingError

ROOT_ARMS = (1, 2, 3, 4, 6)  # static arms' root counts (with L itself: untied)
UNTIE_ARMS = (0.25, 0.5, 0.75)  # untie-then-tie arms' untied share of the sweeps


def arms(n_layer: int) -> list[str]:
    """The arms at `n_layer` layers, in a fixed order."""
    roots = sorted({k for k in ROOT_ARMS if k <= n_layer} | {n_layer})
    return [*(f"static-{k}" for k in roots), *(f"untie-then-tie@{f}" for f in UNTIE_ARMS)]


def arm_map(arm: str, n_layer: int, sweeps: int, sweep: int) -> tm.TieMap:
    """The tie map `arm` plays in sweep `sweep` (from 0) of an episode of `sweeps`."""
    if arm.startswith("untie-then-tie@"):
        untied = untie_sweeps(sweeps, float(arm.removeprefix("untie-then-tie@")))
        return untie_then_tie_map(n_layer, paper_budget(n_layer), sweeps, untied,
                                  min(sweep, sweeps - 1))
    return contiguous_map(n_layer, int(arm.removeprefix("static-")))


class ScheduleBanditAgent(Agent):
    """`schedule-bandit`: a UCB1 bandit over whole tie schedules, one episode per pull
    (see the module's docstring). Hyperparameter `exploration`: UCB's c (default 1.0)."""

    name = "schedule-bandit"

    def __init__(self, env: gym.Env, seed: int = 0, exploration: float = 1.0):
        super().__init__(env, seed, exploration=exploration)
        if not exploration >= 0:
            raise SettingError("exploration", f"exploration={exploration!r} is not allowed "
                                              f"for agent {self.name!r}; allowed: a number "
                                              ">= 0")
        self.exploration = float(exploration)
        self.mode = action_mode(env.action_space)
        self.n_layer = n_layers(env.action_space)
        self.arms = arms(self.n_layer)
        order = np.random.default_rng(seed).permutation(len(self.arms))
        self.order = [self.arms[i] for i in order]  # the first pulls, one per arm
        self.returns: dict[str, list[float]] = {a: [] for a in self.arms}
        self.current = self.order[0]
        self._online = 0.0  # the running return of an online episode

    # ------------------------------------------------------------ choosing
    def choose(self) -> str:
        """The arm of the next training episode: an untried one first, then UCB1."""
        untried = [a for a in self.order if not self.returns[a]]
        if untried:
            return untried[0]
        seen = [r for rs in self.returns.values() for r in rs]
        spread = float(np.std(seen)) if len(seen) > 1 else 0.0
        total = len(seen)

        def ucb(arm: str) -> float:
            rs = self.returns[arm]
            return float(np.mean(rs)) + self.exploration * spread * math.sqrt(
                math.log(total) / len(rs))
        return max(self.order, key=ucb)

    def best(self) -> str:
        """The arm with the best mean return (the first of the order when none has one)."""
        tried = [a for a in self.order if self.returns[a]]
        if not tried:
            return self.order[0]
        return max(tried, key=lambda a: float(np.mean(self.returns[a])))

    def play(self, arm: str, info: dict[str, Any]) -> Any:
        """The action of `arm` at the decision `info` announces."""
        sweeps = episode_sweeps(info, self.mode, self.n_layer)
        ties = arm_map(arm, self.n_layer, sweeps, int(info["sweep"]))
        if self.mode == "vector":
            return np.asarray(ties, dtype=np.int64)
        return ties[int(info["layer"])]

    # ------------------------------------------------------------ episodes
    def _episode(self, arm: str, seed: int | None) -> float:
        obs, info = self.env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = self.env.step(self.play(arm, info))
            total += float(reward)
            done = terminated or truncated
        return total

    def train(self, episodes: int) -> None:
        """`episodes` pulls, one training episode each (the first reset passes the seed)."""
        for episode in range(episodes):
            self.current = self.choose()
            ret = self._episode(self.current, self.seed if episode == 0 else None)
            self.returns[self.current].append(ret)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        """One online episode plays the arm chosen at its start (`choose`)."""
        if int(info.get("decision", 0)) == 0:
            self.current = self.choose()
        return self.play(self.current, info)

    def observe(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray,
                terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        self._online += reward
        if terminated or truncated:
            self.returns[self.current].append(self._online)
            self._online = 0.0

    def policy(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        """The frozen agent: the arm with the best mean return."""
        return self.play(self.best(), info)

    def metrics(self) -> dict[str, float]:
        return {"arms_tried": float(sum(bool(r) for r in self.returns.values())),
                "pulls": float(sum(len(r) for r in self.returns.values()))}

    # ------------------------------------------------------------ state
    def get_state(self) -> AgentState:
        return ({}, {"agent": self.name, "arms": self.arms, "order": self.order,
                     "returns": self.returns, "current": self.current,
                     "online": self._online})

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        ckpt.require(meta, ("agent", "arms", "order", "returns", "current"),
                     f"agent {self.name!r}")
        if meta["agent"] != self.name or list(meta["arms"]) != self.arms:
            raise ckpt.CheckpointError(f"the saved state is of agent {meta['agent']!r} with "
                                       f"arms {meta['arms']}; this is {self.name!r} with "
                                       f"{self.arms}")
        self.order = list(meta["order"])
        self.returns = {a: [float(r) for r in meta["returns"][a]] for a in self.arms}
        self.current = str(meta["current"])
        self._online = float(meta.get("online", 0.0))
