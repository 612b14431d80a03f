"""Stable-Baselines3 and sb3-contrib algorithms as online agents for one training run.

One adapter, `SB3Agent`, with one subclass per algorithm (`dqn`, `ppo`, `a2c`,
`maskable-ppo`, `qrdqn`, `recurrent-ppo`), builds the algorithm's model once the episode's
budget is known and runs `model.learn` for exactly that one episode, inside
`agents.base.OneEpisode`. Its hyperparameters are the algorithm's constructor keywords,
with defaults sized for short online runs (`Algorithm.defaults`).

The design (why the episode guard, the defaults, the checkpoint boundaries and what a
checkpoint holds, without SB3's pickling `save`) is in docs/agents.md,
"The Stable-Baselines3 adapters".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import QRDQN, MaskablePPO, RecurrentPPO
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from agents.base import (
    Agent,
    AgentState,
    OneEpisode,
    check_hyperparameters,
    read_state,
    write_state,
)
from tying_env import checkpoint as ckpt

REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls")
RATES = ("_current_progress_remaining", "exploration_rate")


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


SET_BY_ADAPTER = ("self", "env", "seed", "_init_setup_model")  # not hyperparameters


# ------------------------------------------------------------------ the adapter
class StopAtEpisodeEnd(BaseCallback):
    """Stops `learn()` right after the step that ends the episode."""

    def __init__(self, episode: OneEpisode):
        super().__init__()
        self.episode = episode

    def _on_step(self) -> bool:
        return not self.episode.finished


class AtBoundary(BaseCallback):
    """Calls `fn()` at the start of every rollout but the first of a `learn()` call."""

    def __init__(self, agent: SB3Agent, fn: Callable[[], None]):
        super().__init__()
        self.agent = agent
        self.fn = fn
        self._first = True

    def _on_rollout_start(self) -> None:
        if self._first:  # nothing new since learn() started
            self._first = False
            return
        self.agent.at_boundary = True
        try:
            self.fn()
        finally:
            self.agent.at_boundary = False

    def _on_step(self) -> bool:
        return True


def find_one_episode(env: gym.Env) -> OneEpisode | None:
    """The `OneEpisode` wrapper in `env`'s wrapper chain, if any."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, OneEpisode):
            return env
        env = env.env
    return None


class SB3Agent(Agent):
    """An SB3 / sb3-contrib algorithm learning online during one episode: one subclass per
    algorithm declares its `name` and `algorithm`."""

    algorithm: ClassVar[Algorithm]

    def __init__(self, env: gym.Env, seed: int = 0, **hparams: Any):
        if not hasattr(type(self), "algorithm"):
            raise TypeError(f"{type(self).__qualname__} declares no algorithm; use one of "
                            f"{', '.join(c.__qualname__ for c in AGENTS)}")
        episode = find_one_episode(env)
        if episode is None:
            episode = OneEpisode(env)
            env = episode
        super().__init__(env, seed, **hparams)
        self.episode = episode
        if self.algorithm.discrete_only and not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"agent {self.name!r} needs a Discrete action space (action_mode="
                             f"'layer'), got {env.action_space}")
        self.budget: int | None = None  # decisions in the episode: info["budget"] at reset
        self.model: BaseAlgorithm | None = None  # built when the budget is known
        self.at_boundary = False  # True while on_boundary() runs
        self._learning = False
        self._restored: dict[str, Any] | None = None  # set_state's data for the next run()
        self._policy_state: Any = None  # recurrent-ppo's LSTM state while evaluating

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """The algorithm's constructor parameters but those the adapter sets (`env`, `seed`),
        with SB3's defaults, except `policy` and `device` (the adapter's). The adapter's
        budget-sized defaults (`Algorithm.defaults`) replace some when the model is built."""
        params = inspect.signature(cls.algorithm.cls.__init__).parameters
        return {name: p.default for name, p in params.items() if name not in SET_BY_ADAPTER
                } | {"policy": cls.algorithm.policy, "device": "cpu"}

    def _build_model(self, hparams: dict[str, Any], budget: int) -> BaseAlgorithm:
        """The SB3 model, its defaults sized by `budget` (decisions in the episode)."""
        check_hyperparameters(type(self), hparams)
        self.budget = budget
        kwargs = {**self.algorithm.defaults(budget), "seed": self.seed, "device": "cpu",
                  "verbose": 0, **hparams}
        policy = kwargs.pop("policy", self.algorithm.policy)
        self.device = kwargs["device"]
        try:
            return self.algorithm.cls(policy, self.env, **kwargs)
        except AssertionError as e:  # SB3 checks some values with assert
            raise ValueError(f"agent {self.name!r}: {e}") from None

    def run(self, on_boundary: Callable[[], None] | None = None) -> None:
        """`model.learn` for one episode's budget, stopped at the episode's end.

        After `set_state`, it continues the restored run instead: the
        episode guard answers the first reset with the restored observation and
        `learn()` goes on from the restored counters.
        """
        if self.episode.finished:
            raise RuntimeError(f"agent {self.name!r}: its episode has already ended; build "
                               "the agent on a fresh environment to run again")
        if self.model is None:  # a fresh episode: its reset info says how long it is
            _, info = self.episode.start(seed=self.seed)
            self.model = self._build_model(self.hparams, int(info["budget"]))
        assert self.budget is not None
        callbacks: list[BaseCallback] = [StopAtEpisodeEnd(self.episode)]
        if on_boundary is not None:
            callbacks.append(AtBoundary(self, on_boundary))
        total, fresh = self.budget, True
        if self._restored is not None:
            self._continue_restored()
            total, fresh = self.budget - self.model.num_timesteps, False
        self._learning = True
        try:
            self.model.learn(total_timesteps=total, callback=CallbackList(callbacks),
                             reset_num_timesteps=fresh)
        finally:
            self._learning = False

    def train(self, episodes: int) -> None:
        """`model.learn` over `episodes` episodes, stopped at the last one's end (the
        train-then-evaluate protocol). The environment's guard must let that many run
        (`OneEpisode(env, episodes=...)`); the defaults are sized by one episode's
        budget, as online, and `total_timesteps` covers all the episodes."""
        if self.model is None:
            _, info = self.episode.start(seed=self.seed)
            self.model = self._build_model(self.hparams, int(info["budget"]))
        assert self.budget is not None
        self._learning = True
        try:
            self.model.learn(total_timesteps=episodes * self.budget,
                             callback=StopAtEpisodeEnd(self.episode))
        finally:
            self._learning = False

    def policy(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        """The model's deterministic action (with the action masks for `maskable-ppo`;
        the LSTM state carried through the episode for `recurrent-ppo`)."""
        if self.model is None:
            raise RuntimeError(f"agent {self.name!r} has no model yet: train it first")
        kwargs: dict[str, Any] = {}
        if isinstance(self.model, MaskablePPO):
            kwargs["action_masks"] = self.env.get_wrapper_attr("action_masks")()
        if isinstance(self.model, RecurrentPPO):
            start = int(info["decision"]) == 0
            if start:
                self._policy_state = None
            kwargs |= {"state": self._policy_state, "episode_start": np.array([start])}
        action, state = self.model.predict(obs, deterministic=True, **kwargs)
        self._policy_state = state
        if isinstance(self.env.action_space, gym.spaces.Discrete):
            return int(np.asarray(action).reshape(-1)[0])
        return np.asarray(action, dtype=np.int64)

    def metrics(self) -> dict[str, float]:
        """The numbers SB3's logger holds now (`model.logger.name_to_value`), by their
        SB3 names: `train/loss`, `train/entropy_loss`, `rollout/exploration_rate`, ...

        They are what the algorithm recorded since its logger last wrote out (after each
        rollout for the on-policy ones, at the episode's end for `dqn`/`qrdqn`); none
        before `learn()` starts, nor just after a resume (SB3's logger is not restored).
        """
        logger = getattr(self.model, "_logger", None) if self.model is not None else None
        values = getattr(logger, "name_to_value", None) or {}
        return {name: float(value) for name, value in values.items()
                if isinstance(value, (int, float, np.integer, np.floating))
                and not isinstance(value, (bool, np.bool_))}

    # ---------------------------------------------------------- persistence
    def get_state(self) -> AgentState:
        """Everything SB3 computes with (docs/agents.md lists it); only at a boundary."""
        if self._learning and not self.at_boundary:
            raise RuntimeError(f"agent {self.name!r}: get_state() is only complete at a rollout "
                               "boundary (inside run()'s on_boundary callback)")
        if self.model is None:
            raise RuntimeError(f"agent {self.name!r}: nothing to save before run() (the model "
                               "is built when the episode starts)")
        m = self.model
        policy, policy_meta = ckpt.module_state(m.policy)
        optim, optim_meta = ckpt.optimizer_state(m.policy.optimizer)
        tensors = {**ckpt.prefixed("policy/", policy), **ckpt.prefixed("optim/", optim)}
        for name in ("_last_obs", "_last_original_obs", "_last_episode_starts"):
            value = getattr(m, name, None)
            if isinstance(value, np.ndarray):
                tensors[f"rollout/{name.lstrip('_')}"] = torch.from_numpy(value.copy())
        lstm = getattr(m, "_last_lstm_states", None)
        if lstm is not None:
            for head in ("pi", "vf"):
                for i, t in enumerate(getattr(lstm, head)):
                    tensors[f"lstm/{head}_{i}"] = t.detach().to("cpu").clone()
        meta: dict[str, Any] = dict(
            agent=self.name, hparams=self.hparams, budget=self.budget, policy=policy_meta,
            optimizer=optim_meta,
            counters={k: int(getattr(m, k)) for k in COUNTERS if hasattr(m, k)},
            rates={k: ckpt.exact(getattr(m, k)) for k in RATES if hasattr(m, k)},
            action_space_rng=ckpt.generator_state(m.action_space.np_random),
            monitor=self._monitor_state(),
        )
        if isinstance(m, OffPolicyAlgorithm) and m.replay_buffer is not None:
            rb = m.replay_buffer
            rows = rb.buffer_size if rb.full else rb.pos
            for name in REPLAY_ARRAYS:
                value = getattr(rb, name, None)
                if isinstance(value, np.ndarray):
                    tensors[f"replay/{name}"] = torch.from_numpy(value[:rows].copy())
            meta["replay"] = dict(pos=int(rb.pos), full=bool(rb.full))
        return tensors, meta

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Load `get_state` into the freshly built model; the next `run` continues."""
        ckpt.require(meta, ("agent", "hparams", "budget", "policy", "optimizer", "counters",
                            "rates", "action_space_rng", "monitor"), f"agent {self.name!r}")
        if meta["agent"] != self.name:
            raise ckpt.CheckpointError(f"the saved state is of agent {meta['agent']!r}, "
                                       f"this is {self.name!r}")
        if meta["hparams"] != self.hparams:
            raise ckpt.CheckpointError(
                f"agent {self.name!r} was saved with hyperparameters {meta['hparams']}, "
                f"this one has {self.hparams}")
        if self.model is None or meta["budget"] != self.budget:
            self.model = self._build_model(self.hparams, int(meta["budget"]))
        m = self.model
        ckpt.load_module_state(m.policy, ckpt.sub(tensors, "policy/"), meta["policy"], "policy")
        ckpt.load_optimizer_state(m.policy.optimizer, ckpt.sub(tensors, "optim/"),
                                  meta["optimizer"])
        for key, value in meta["counters"].items():
            if key in COUNTERS:
                setattr(m, key, int(value))
        for key, value in meta["rates"].items():
            if key in RATES:
                setattr(m, key, ckpt.from_exact(value))
        rollout = ckpt.sub(tensors, "rollout/")
        for name, value in rollout.items():
            setattr(m, f"_{name}", value.numpy().copy())
        lstm = ckpt.sub(tensors, "lstm/")
        if lstm:
            device = m.device
            m._last_lstm_states = RNNStates(
                *(tuple(lstm[f"{head}_{i}"].to(device, copy=True)
                        for i in range(sum(k.startswith(head) for k in lstm)))
                  for head in ("pi", "vf")))
        if "replay" in meta and isinstance(m, OffPolicyAlgorithm):
            self._load_replay(ckpt.sub(tensors, "replay/"), meta["replay"])
        rng = ckpt.make_generator(meta["action_space_rng"])  # checks the generator's kind
        m.action_space.np_random.bit_generator.state = rng.bit_generator.state
        self._restored = dict(monitor=meta["monitor"], rollout=rollout)

    def save(self, path: str | Path) -> None:
        """Safe files only: `policy.safetensors`, `optim.safetensors`, ..., `agent.json`."""
        was, self.at_boundary = self.at_boundary, True
        try:
            write_state(path, self.get_state(), agent=self.name)
        finally:
            self.at_boundary = was

    def save_zip(self, path: str | Path) -> Path:
        """Save the model with SB3's own `model.save`, as the zip file `path`, for
        interoperability: `PPO.load(path)`, `MaskablePPO.load(path)`, ... (the class of
        this agent's algorithm) load it without this package.

        SB3's zip embeds cloudpickled objects (spaces, schedules), and loading it unpickles
        them: load only zips you trust. This package never reads it back: its checkpoints
        and `save`/`load` use safetensors and JSON only. Written atomically.
        """
        from tying_env.files import atomic_write

        if self.model is None:
            raise RuntimeError(f"agent {self.name!r}: nothing to save before run() (the model "
                               "is built when the episode starts)")
        model = self.model

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                model.save(f)

        return atomic_write(path, write)

    def load(self, path: str | Path) -> None:
        """Load what `save` wrote (nothing is unpickled); like SB3's `load`, the
        saved hyperparameters replace this agent's (the model is rebuilt with them)."""
        tensors, meta = read_state(path)
        if isinstance(meta.get("hparams"), dict) and meta["hparams"] != self.hparams:
            self.hparams = dict(meta["hparams"])
            self.model = None  # rebuilt with them by set_state
        self.set_state(tensors, meta)
        self._restored = None  # loaded to be used, not to continue a stopped run

    def _load_replay(self, arrays: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        rb = self.model.replay_buffer  # type: ignore[attr-defined]
        pos, full = int(meta["pos"]), bool(meta["full"])
        rows = rb.buffer_size if full else pos
        if not 0 <= pos < rb.buffer_size:
            raise ckpt.CheckpointError(f"replay buffer position {pos} does not fit its size "
                                       f"{rb.buffer_size}")
        for name in REPLAY_ARRAYS:
            target = getattr(rb, name, None)
            if not isinstance(target, np.ndarray):
                continue
            if name not in arrays or tuple(arrays[name].shape) != (rows, *target.shape[1:]):
                raise ckpt.CheckpointError(f"the saved replay buffer's {name} does not fit "
                                           f"{(rows, *target.shape[1:])}")
            target[:rows] = arrays[name].numpy()
        rb.pos, rb.full = pos, full

    def _monitor(self) -> Monitor | None:
        env = self.model.get_env() if self.model is not None else None
        inner = env.envs[0] if env is not None and hasattr(env, "envs") else None
        while isinstance(inner, gym.Wrapper):
            if isinstance(inner, Monitor):
                return inner
            inner = inner.env
        return None

    def _monitor_state(self) -> dict[str, Any]:
        monitor = self._monitor()
        if monitor is None:
            return {}
        return dict(rewards=[ckpt.exact(r) for r in monitor.rewards],
                    total_steps=int(monitor.total_steps))

    def _continue_restored(self) -> None:
        """Reset the vectorised env (the guard answers with the restored episode), then put
        back what that reset overwrote: the last observation and the Monitor's counts."""
        assert self._restored is not None
        m = self.model
        env = m.get_env()
        assert env is not None
        env.reset()
        for name, value in self._restored["rollout"].items():
            setattr(m, f"_{name}", value.numpy().copy())
        monitor, saved = self._monitor(), self._restored["monitor"]
        if monitor is not None and saved:
            monitor.rewards = [ckpt.from_exact(r) for r in saved["rewards"]]
            monitor.total_steps = int(saved["total_steps"])
        self._restored = None


# ------------------------------------------------------------------ one class per algorithm
class DQNAgent(SB3Agent):
    name = "dqn"
    algorithm = Algorithm(DQN, "MlpPolicy", _value_based, discrete_only=True)


class PPOAgent(SB3Agent):
    name = "ppo"
    algorithm = Algorithm(PPO, "MlpPolicy", _on_policy)


class A2CAgent(SB3Agent):
    name = "a2c"
    algorithm = Algorithm(A2C, "MlpPolicy", _a2c)


class MaskablePPOAgent(SB3Agent):
    name = "maskable-ppo"
    algorithm = Algorithm(MaskablePPO, "MlpPolicy", _on_policy)


class QRDQNAgent(SB3Agent):
    name = "qrdqn"
    algorithm = Algorithm(QRDQN, "MlpPolicy", partial(_value_based, quantiles=25),
                          discrete_only=True)


class RecurrentPPOAgent(SB3Agent):
    name = "recurrent-ppo"
    algorithm = Algorithm(RecurrentPPO, "MlpLstmPolicy", _recurrent)


AGENTS: tuple[type[SB3Agent], ...] = (DQNAgent, PPOAgent, A2CAgent, MaskablePPOAgent,
                                      QRDQNAgent, RecurrentPPOAgent)
ALGORITHMS: dict[str, Algorithm] = {agent.name: agent.algorithm for agent in AGENTS}
