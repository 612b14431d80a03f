"""Stable-Baselines3 and sb3-contrib algorithms as online agents for one training run.

One adapter, :class:`SB3Agent`, builds the algorithm's model on the
environment and runs ``model.learn(total_timesteps=budget)`` for exactly one
episode (one training run of the transformer), learning as it goes, like the
paper's Q-learner.

Why the environment is wrapped in :class:`agents.base.OneEpisode`: SB3 resets
its environments when ``learn()`` starts and again as soon as an episode ends
(and on-policy algorithms keep stepping until their rollout buffer is full).
A reset would throw the trained transformer away. ``OneEpisode`` answers the
reset after the end with the last observation and keeps the finished model;
a callback stops ``learn()`` at the episode's end so that no step is taken
after it (on-policy algorithms skip the update on the partial last rollout).

| name            | algorithm                 | action modes      |
|-----------------|---------------------------|-------------------|
| ``dqn``         | ``stable_baselines3.DQN``   | layer             |
| ``ppo``         | ``stable_baselines3.PPO``   | layer, vector     |
| ``a2c``         | ``stable_baselines3.A2C``   | layer, vector     |
| ``maskable-ppo``| ``sb3_contrib.MaskablePPO`` | layer, vector (masks via ``action_masks()``) |
| ``qrdqn``       | ``sb3_contrib.QRDQN``       | layer             |
| ``recurrent-ppo``| ``sb3_contrib.RecurrentPPO`` | layer, vector |

Defaults, sized for short online runs (``budget`` = decisions per episode;
every one can be overridden by a keyword, and ``policy=...`` replaces the
policy name):

- all: ``device="cpu"``, ``seed`` = the agent's seed, ``verbose=0``,
  ``policy_kwargs=dict(net_arch=[64, 64])`` (MLP policies);
- ``ppo``, ``maskable-ppo``: ``n_steps=16, batch_size=16, n_epochs=4,
  learning_rate=3e-4, ent_coef=0.01``;
- ``recurrent-ppo``: the same with ``MlpLstmPolicy``,
  ``policy_kwargs=dict(lstm_hidden_size=64, net_arch=[64])``;
- ``a2c``: ``n_steps=8, ent_coef=0.01`` (``learning_rate=7e-4``, SB3's default);
- ``dqn``, ``qrdqn``: ``learning_rate=1e-3, buffer_size=10_000, batch_size=32,
  learning_starts=min(16, max(1, budget // 10)), train_freq=1, gradient_steps=1,
  target_update_interval=max(1, budget // 20), exploration_fraction=0.5,
  exploration_initial_eps=1.0, exploration_final_eps=0.05`` (the fraction is of
  ``total_timesteps = budget``, i.e. epsilon reaches its floor half-way through
  the episode); ``qrdqn`` adds ``n_quantiles=25`` to its policy kwargs.

Note: SB3 seeds Python's, NumPy's and torch's global RNGs from ``seed`` when
it builds a model (SB3's own behaviour); the environment's training draws from
its own generators, so its numbers do not depend on that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
from sb3_contrib import QRDQN, MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.base import Agent, OneEpisode, register


# ------------------------------------------------------------------ defaults
def _on_policy(budget: int, n_steps: int = 16) -> dict[str, Any]:
    return dict(n_steps=n_steps, batch_size=n_steps, n_epochs=4, learning_rate=3e-4,
                ent_coef=0.01, policy_kwargs=dict(net_arch=[64, 64]))


def _recurrent(budget: int) -> dict[str, Any]:
    return {**_on_policy(budget), "policy_kwargs": dict(lstm_hidden_size=64, net_arch=[64])}


def _a2c(budget: int) -> dict[str, Any]:
    return dict(n_steps=8, ent_coef=0.01, policy_kwargs=dict(net_arch=[64, 64]))


def _value_based(budget: int, quantiles: int | None = None) -> dict[str, Any]:
    policy_kwargs: dict[str, Any] = dict(net_arch=[64, 64])
    if quantiles is not None:
        policy_kwargs["n_quantiles"] = quantiles
    return dict(learning_rate=1e-3, buffer_size=10_000, batch_size=32,
                learning_starts=min(16, max(1, budget // 10)), train_freq=1, gradient_steps=1,
                target_update_interval=max(1, budget // 20), exploration_fraction=0.5,
                exploration_initial_eps=1.0, exploration_final_eps=0.05,
                policy_kwargs=policy_kwargs)


@dataclass(frozen=True)
class Algorithm:
    """How to build one SB3 algorithm: its class, policy name and budget-sized defaults."""

    cls: type[BaseAlgorithm]
    policy: str
    defaults: Callable[[int], dict[str, Any]]
    discrete_only: bool = False


ALGORITHMS: dict[str, Algorithm] = {
    "dqn": Algorithm(DQN, "MlpPolicy", _value_based, discrete_only=True),
    "ppo": Algorithm(PPO, "MlpPolicy", _on_policy),
    "a2c": Algorithm(A2C, "MlpPolicy", _a2c),
    "maskable-ppo": Algorithm(MaskablePPO, "MlpPolicy", _on_policy),
    "qrdqn": Algorithm(QRDQN, "MlpPolicy", partial(_value_based, quantiles=25),
                       discrete_only=True),
    "recurrent-ppo": Algorithm(RecurrentPPO, "MlpLstmPolicy", _recurrent),
}


# ------------------------------------------------------------------ the adapter
class StopAtEpisodeEnd(BaseCallback):
    """Stops ``learn()`` right after the step that ends the episode."""

    def __init__(self, episode: OneEpisode):
        super().__init__()
        self.episode = episode

    def _on_step(self) -> bool:
        return not self.episode.finished


def find_one_episode(env: gym.Env) -> OneEpisode | None:
    """The ``OneEpisode`` wrapper in ``env``'s wrapper chain, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, OneEpisode):
            return env
        env = env.env
    return None


class SB3Agent(Agent):
    """An SB3 / sb3-contrib algorithm learning online during one episode."""

    def __init__(self, env: gym.Env, seed: int = 0, *, algo: str, **hparams: Any):
        if algo not in ALGORITHMS:
            raise ValueError(f"algo={algo!r} is unknown; allowed: {', '.join(ALGORITHMS)}")
        episode = find_one_episode(env)
        if episode is None:
            episode = OneEpisode(env)
            env = episode
        super().__init__(env, seed, **hparams)
        self.episode = episode
        self.name = algo  # type: ignore[misc]  # one class, one registry name per algorithm
        self.algorithm = ALGORITHMS[algo]
        if self.algorithm.discrete_only and not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"agent {algo!r} needs a Discrete action space (action_mode="
                             f"'layer'), got {env.action_space}")
        self.budget: int = env.unwrapped.budget
        kwargs = {**self.algorithm.defaults(self.budget), "seed": seed, "device": "cpu",
                  "verbose": 0, **hparams}
        policy = kwargs.pop("policy", self.algorithm.policy)
        self.device = kwargs["device"]
        self.model: BaseAlgorithm = self.algorithm.cls(policy, env, **kwargs)

    def run(self) -> None:
        """``model.learn`` for one episode's budget, stopped at the episode's end."""
        if self.episode.finished:
            raise RuntimeError(f"agent {self.name!r}: its episode has already ended; build "
                               "the agent on a fresh environment to run again")
        self.model.learn(total_timesteps=self.budget, callback=StopAtEpisodeEnd(self.episode))

    def save(self, path: str | Path) -> None:
        """SB3's own format: ``path/model.zip``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model.zip")

    def load(self, path: str | Path) -> None:
        self.model = self.algorithm.cls.load(Path(path) / "model.zip", env=self.env,
                                             device=self.device)


for _name in ALGORITHMS:
    register(_name, partial(SB3Agent, algo=_name))
