"""The paper's Q-learner (Hay & Wolf, ICLR 2024), and a repaired variant.

`qlearning` reproduces the published driver in every listed detail
(docs/method.md, "The paper's Q-learner"):

- the Q-network is an MLP: input the raw index chosen last for each layer
  (`info["choices"]`: the published `state` list, not resolved to roots; before a
  layer's first decision, its starting entry), one hidden layer of 128 units, ReLU,
  `L(L+1)/2` outputs; `state="ties"` feeds it the tie map resolved to roots
  (`info["tie_map"]`) instead;
- layer `i` owns the outputs `[i(i+1)/2, i(i+1)/2 + i + 1)`: index `j < i`
  means "copy layer j", index `i` means "train independently" (the agent
  returns action `i`, which the environment reads as independent);
- epsilon-greedy: epsilon starts at 1.0, is multiplied by 0.95 after every
  sweep, floor 0.01; a random action is uniform over the `i + 1` choices;
- one TD step per decision, no replay buffer, no target network:
  `target = clip(r, -10, 10) + 0.99 * max Q(next state)[slice of the SAME layer]`,
  MSE loss on the chosen output, AdamW (lr 1e-3, weight decay 0.01);
- the published code bootstraps even from the last transition of an episode
  (`bootstrap_at_end=True`, the default here); set it to False to use the
  clipped reward alone as the target when the episode ends.

`qlearning-fast` is the paper's Q-learner with `epsilon_decay=0.6` (at its floor after
9 sweeps), for budgets of about 10 sweeps.

`qlearning-plus` is NOT the paper's algorithm: a DQN-style repair with a
replay buffer, a hard-updated target network, and a target that bootstraps
from the NEXT decision's layer (the layer the next state is about), with no
bootstrap after a diverged (terminated) run. It uses the same network,
output layout, exploration schedule and action set (it masks nothing extra), and
by default the resolved tie map as its state (`state="ties"`).

Both only play layer mode (`action_mode="layer"`). The layer being decided
is read from the observation's one-hot (`obs[L:2L]`), the sweep count from
`info["sweep"]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.base import Agent, AgentState, action_mode, check_hyperparameters, n_layers
from tying_env import checkpoint as ckpt
from tying_env.errors import SettingError

ArrayLike = np.ndarray | torch.Tensor
STATES = ("choices", "ties")  # the Q-network's input: raw last choices, or the resolved map


# ------------------------------------------------------------------ the pure pieces
def n_outputs(n_layer: int) -> int:
    """Size of the Q-network's output: `L(L+1)/2`."""
    return n_layer * (n_layer + 1) // 2


def slice_of(i: int) -> slice:
    """The outputs owned by layer `i`: `[i(i+1)/2, i(i+1)/2 + i + 1)`."""
    start = i * (i + 1) // 2
    return slice(start, start + i + 1)


def greedy(q: ArrayLike, i: int) -> int:
    """The best choice for layer `i` (`j < i`: copy j, `i`: independent); ties: lowest."""
    return int(np.argmax(_numpy(q)[slice_of(i)]))


def td_target(reward: float, q_next: ArrayLike, i: int, gamma: float = 0.99,
              clip: float = 10.0) -> float:
    """`clip(reward, -clip, clip) + gamma * max(q_next[slice_of(i)])`.

    The paper bootstraps from the slice of the layer that was just decided
    (`i`), evaluated at the next tie map.
    """
    return float(np.clip(reward, -clip, clip) + gamma * np.max(_numpy(q_next)[slice_of(i)]))


def epsilon_after(sweeps: int, start: float = 1.0, decay: float = 0.95,
                  floor: float = 0.01) -> float:
    """Exploration rate after `sweeps` completed sweeps."""
    return max(floor, start * decay**sweeps)


def random_choice(i: int, rng: np.random.Generator) -> int:
    """A uniform choice among layer `i`'s `i + 1` options (`i` = independent)."""
    return int(rng.integers(i + 1))


def _numpy(q: ArrayLike) -> np.ndarray:
    if isinstance(q, torch.Tensor):
        return q.detach().cpu().numpy()
    return np.asarray(q)


# ------------------------------------------------------------------ the network
class QNetwork(nn.Module):
    """Tie map (raw integers) -> one Q-value per (layer, choice) pair."""

    def __init__(self, n_layer: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_layer, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_outputs(n_layer)))

    def forward(self, ties: torch.Tensor) -> torch.Tensor:
        return self.net(ties)


@dataclass
class QLearningConfig:
    """Hyperparameters of the paper's Q-learner (the published values)."""

    hidden: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    gamma: float = 0.99
    reward_clip: float = 10.0
    epsilon_start: float = 1.0
    epsilon_decay: float = 0.95
    epsilon_min: float = 0.01
    bootstrap_at_end: bool = True  # the published code bootstraps from the last transition too
    state: str = "choices"  # the published input: the raw last choice per layer (STATES)

    def __post_init__(self) -> None:
        """Refuse what a check of types lets through (`agents.base.check_hyperparameters`):
        an int below 1 (`learning_starts`: below 0), a `state` not in `STATES`."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "state" and value not in STATES:
                raise SettingError(f.name, f"state={value!r} is not allowed for a Q-learner; "
                                           f"allowed: {', '.join(STATES)}")
            if isinstance(f.default, int) and not isinstance(f.default, bool):
                low = 0 if f.name == "learning_starts" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise SettingError(f.name, f"{f.name}={value!r} is not allowed for a "
                                               f"Q-learner; expected an int >= {low}")


# ------------------------------------------------------------------ the agent
class QLearningAgent(Agent):
    """The paper's Q-learner: epsilon-greedy, one TD step per decision on the same layer."""

    name = "qlearning"
    config_class: ClassVar[type[QLearningConfig]] = QLearningConfig

    def __init__(self, env: gym.Env, seed: int = 0, **hparams: Any):
        super().__init__(env, seed, **hparams)
        if action_mode(env.action_space) != "layer":
            raise ValueError(f"agent {self.name!r} plays action_mode='layer' only (a Discrete "
                             f"action space), got action_mode='vector' ({env.action_space})")
        self.n_layer: int = n_layers(env.action_space)
        self.cfg = self.config_class(**hparams)  # hparams checked by Agent.__init__
        self.rng = np.random.default_rng(seed)
        self.qnet = self._new_network(seed)
        self.optimizer = self._new_optimizer()
        self.sweeps = 0  # completed sweeps, over all episodes this agent has played
        self.epsilon = self._epsilon()
        self.decisions = 0
        self.last_loss = float("nan")
        self._sweep_at_act: int | None = None
        self._state_at_act: np.ndarray | None = None

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """The fields of `config_class`, with their defaults."""
        return asdict(cls.config_class())

    def _new_network(self, seed: int) -> QNetwork:
        # initialise from the agent's seed without touching the caller's global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return QNetwork(self.n_layer, self.cfg.hidden)

    def _new_optimizer(self) -> torch.optim.AdamW:
        return torch.optim.AdamW(self.qnet.parameters(), lr=self.cfg.lr,
                                 weight_decay=self.cfg.weight_decay)

    def _epsilon(self) -> float:
        cfg = self.cfg
        return epsilon_after(self.sweeps, cfg.epsilon_start, cfg.epsilon_decay, cfg.epsilon_min)

    # -------------------------------------------------------------- acting
    def ties_of(self, obs: np.ndarray) -> np.ndarray:
        """The first `L` entries of an observation (raw integers as float32)."""
        return np.asarray(obs[: self.n_layer], dtype=np.float32)

    def state_of(self, info: dict[str, Any]) -> np.ndarray:
        """The Q-network's input (float32): `info["choices"]`, the raw last choice per
        layer (`state="choices"`, the published input), or `info["tie_map"]`, the tie map
        resolved to roots (`state="ties"`)."""
        key = "choices" if self.cfg.state == "choices" else "tie_map"
        if key not in info:
            raise KeyError(f"agent {self.name!r} with state={self.cfg.state!r} reads "
                           f"info[{key!r}], which this environment's info lacks")
        return np.asarray(info[key], dtype=np.float32)

    def layer_of(self, obs: np.ndarray) -> int:
        """The layer an observation asks about (its one-hot)."""
        return int(np.argmax(obs[self.n_layer: 2 * self.n_layer]))

    @torch.no_grad()
    def q_values(self, ties: np.ndarray) -> np.ndarray:
        """All `L(L+1)/2` Q-values for one state (see `state_of`)."""
        return self.qnet(torch.as_tensor(ties, dtype=torch.float32)).numpy()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        i = int(info["layer"])
        self._sweep_at_act = int(info["sweep"])
        self._state_at_act = self.state_of(info)
        if self.rng.random() < self.epsilon:
            return random_choice(i, self.rng)
        return greedy(self.q_values(self._state_at_act), i)

    def policy(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        """The greedy choice (no exploration), for evaluating the frozen agent."""
        return greedy(self.q_values(self.state_of(info)), int(info["layer"]))

    # ------------------------------------------------------------- learning
    def observe(self, obs: np.ndarray, action: Any, reward: float, next_obs: np.ndarray,
                terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        if self._state_at_act is None:
            raise RuntimeError(f"agent {self.name!r}: observe() needs the state seen by the "
                               "act() that chose the action; call act() first")
        layer = self.layer_of(obs)
        state, self._state_at_act = self._state_at_act, None
        self.last_loss = self.update(state, layer, int(action), reward, self.state_of(info),
                                     self.layer_of(next_obs), terminated, truncated)
        self.decisions += 1
        sweep = int(info["sweep"])
        if self._sweep_at_act is not None and sweep > self._sweep_at_act:
            self.sweeps += sweep - self._sweep_at_act
            self.epsilon = self._epsilon()

    def update(self, ties: np.ndarray, layer: int, action: int, reward: float,
               next_ties: np.ndarray, next_layer: int, terminated: bool = False,
               truncated: bool = False) -> float:
        """One TD step on one transition; returns the loss.

        The paper's target uses `layer`'s slice at `next_ties`
        (`next_layer` is ignored here; `qlearning-plus` uses it).
        """
        cfg = self.cfg
        choice = min(action, layer)  # any action >= layer means independent
        if cfg.bootstrap_at_end or not (terminated or truncated):
            target = td_target(reward, self.q_values(next_ties), layer, cfg.gamma,
                               cfg.reward_clip)
        else:
            target = float(np.clip(reward, -cfg.reward_clip, cfg.reward_clip))
        q = self.qnet(torch.as_tensor(ties, dtype=torch.float32))[slice_of(layer).start + choice]
        loss = F.mse_loss(q, torch.tensor(target, dtype=torch.float32))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def metrics(self) -> dict[str, float]:
        """`epsilon` (the exploration rate of the next action), `td_loss` (the loss of the
        last update; NaN before the first), `sweeps` (completed sweeps)."""
        return {"epsilon": float(self.epsilon), "td_loss": float(self.last_loss),
                "sweeps": float(self.sweeps)}

    # ---------------------------------------------------------- persistence
    def get_state(self) -> AgentState:
        """Q-network (`qnet/`), AdamW state (`optim/`), epsilon, counters and the RNG."""
        qnet, qnet_meta = ckpt.module_state(self.qnet)
        optim, optim_meta = ckpt.optimizer_state(self.optimizer)
        meta = dict(agent=self.name, n_layer=self.n_layer, seed=self.seed,
                    hparams=asdict(self.cfg), epsilon=ckpt.exact(self.epsilon),
                    sweeps=self.sweeps, decisions=self.decisions,
                    last_loss=ckpt.exact(self.last_loss), rng=ckpt.generator_state(self.rng),
                    qnet=qnet_meta, optimizer=optim_meta)
        return {**ckpt.prefixed("qnet/", qnet), **ckpt.prefixed("optim/", optim)}, meta

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore `get_state`, hyperparameters included (they define the network)."""
        ckpt.require(meta, ("agent", "n_layer", "hparams", "epsilon", "sweeps", "decisions",
                            "last_loss", "rng", "qnet", "optimizer"), f"agent {self.name!r}")
        if meta["agent"] != self.name or meta["n_layer"] != self.n_layer:
            raise ckpt.CheckpointError(
                f"the saved state is of agent {meta['agent']!r} for n_layer={meta['n_layer']}; "
                f"this is {self.name!r} for n_layer={self.n_layer}")
        check_hyperparameters(type(self), meta["hparams"])
        self.cfg = self.config_class(**meta["hparams"])
        self.qnet = self._new_network(self.seed)
        ckpt.load_module_state(self.qnet, ckpt.sub(tensors, "qnet/"), meta["qnet"], "Q-network")
        self.optimizer = self._new_optimizer()
        ckpt.load_optimizer_state(self.optimizer, ckpt.sub(tensors, "optim/"), meta["optimizer"])
        self.epsilon = ckpt.from_exact(meta["epsilon"])
        self.sweeps, self.decisions = int(meta["sweeps"]), int(meta["decisions"])
        self.last_loss = ckpt.from_exact(meta["last_loss"])
        self.rng = ckpt.make_generator(meta["rng"])


@dataclass
class QLearningFastConfig(QLearningConfig):
    """The paper's values with epsilon x 0.6 per sweep: at its 0.01 floor after 9 sweeps."""

    epsilon_decay: float = 0.6


class QLearningFastAgent(QLearningAgent):
    """The paper's Q-learner with its exploration shortened for 10-sweep budgets."""

    name = "qlearning-fast"
    config_class = QLearningFastConfig


# ------------------------------------------------------------------ not the paper's
@dataclass
class QLearningPlusConfig(QLearningConfig):
    """The paper's values plus the replay buffer and target network of the repair."""

    buffer_size: int = 10_000
    batch_size: int = 32
    learning_starts: int = 16  # decisions stored before the first update
    target_update: int = 20  # decisions between hard copies into the target network
    bootstrap_at_end: bool = True  # at truncation (a time limit); never after divergence
    state: str = "ties"  # the repair sees the tie map resolved to roots


class QLearningPlusAgent(QLearningAgent):
    """NOT the paper's algorithm: replay buffer, target network, next-layer bootstrap.

    Target: `clip(r) + gamma * (1 - terminated) * max Q_target(s')[slice of the next
    decision's layer]`, so the value chains decision after decision instead of
    pointing back at the layer just decided. Each decision stores the transition
    and, once `learning_starts` are stored, takes one gradient step on a batch
    sampled uniformly (without replacement) from the buffer.
    """

    name = "qlearning-plus"
    config_class = QLearningPlusConfig
    cfg: QLearningPlusConfig

    def __init__(self, env: gym.Env, seed: int = 0, **hparams: Any):
        super().__init__(env, seed, **hparams)
        self.target = self._new_target()
        self.buffer = ReplayBuffer(self.cfg.buffer_size, self.n_layer)

    def _new_target(self) -> QNetwork:
        target = self._new_network(self.seed)
        target.load_state_dict(self.qnet.state_dict())
        return target.requires_grad_(False)

    def update(self, ties: np.ndarray, layer: int, action: int, reward: float,
               next_ties: np.ndarray, next_layer: int, terminated: bool = False,
               truncated: bool = False) -> float:
        cfg = self.cfg
        bootstrap = not terminated and (cfg.bootstrap_at_end or not truncated)
        self.buffer.add(ties, layer, min(action, layer), reward, next_ties, next_layer, bootstrap)
        loss = float("nan")
        if len(self.buffer) >= cfg.learning_starts:
            batch = self.buffer.sample(min(cfg.batch_size, len(self.buffer)), self.rng)
            loss = self._learn(batch)
        if (self.decisions + 1) % cfg.target_update == 0:
            self.target.load_state_dict(self.qnet.state_dict())
        return loss

    def _learn(self, batch: dict[str, np.ndarray]) -> float:
        cfg = self.cfg
        t = {k: torch.as_tensor(v) for k, v in batch.items()}
        with torch.no_grad():
            q_next = self.target(t["next_ties"])
            best_next = torch.stack([q_next[n, slice_of(int(layer))].max()
                                     for n, layer in enumerate(t["next_layer"])])
            target = (t["reward"].clamp(-cfg.reward_clip, cfg.reward_clip)
                      + cfg.gamma * t["bootstrap"] * best_next)
        index = torch.as_tensor([slice_of(int(layer)).start for layer in t["layer"]]) + t["action"]
        q = self.qnet(t["ties"]).gather(1, index[:, None]).squeeze(1)
        loss = F.mse_loss(q, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def get_state(self) -> AgentState:
        """As `qlearning`, plus the target network (`target/`) and the buffer (`replay/`)."""
        tensors, meta = super().get_state()
        target, meta["target"] = ckpt.module_state(self.target)
        replay = {k: torch.from_numpy(np.ascontiguousarray(v))
                  for k, v in self.buffer.state().items()}
        return {**tensors, **ckpt.prefixed("target/", target),
                **ckpt.prefixed("replay/", replay)}, meta

    def set_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().set_state(tensors, meta)
        ckpt.require(meta, ("target",), f"agent {self.name!r}")
        self.target = self._new_target()
        ckpt.load_module_state(self.target, ckpt.sub(tensors, "target/"), meta["target"],
                               "target network")
        self.buffer = ReplayBuffer(self.cfg.buffer_size, self.n_layer)
        replay = {k: v.numpy() for k, v in ckpt.sub(tensors, "replay/").items()}
        try:
            self.buffer.load_state(replay)
        except (KeyError, ValueError) as e:
            raise ckpt.CheckpointError(f"the saved replay buffer does not fit: {e}") from None


class ReplayBuffer:
    """A ring buffer of decisions, stored as flat numpy arrays."""

    def __init__(self, capacity: int, n_layer: int):
        self.capacity = capacity
        self.data = dict(
            ties=np.zeros((capacity, n_layer), np.float32),
            layer=np.zeros(capacity, np.int64), action=np.zeros(capacity, np.int64),
            reward=np.zeros(capacity, np.float32),
            next_ties=np.zeros((capacity, n_layer), np.float32),
            next_layer=np.zeros(capacity, np.int64), bootstrap=np.zeros(capacity, np.float32),
        )
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, ties: np.ndarray, layer: int, action: int, reward: float,
            next_ties: np.ndarray, next_layer: int, bootstrap: bool) -> None:
        row = dict(ties=ties, layer=layer, action=action, reward=reward, next_ties=next_ties,
                   next_layer=next_layer, bootstrap=float(bootstrap))
        for key, value in row.items():
            self.data[key][self.pos] = value
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = rng.choice(self.size, size=n, replace=False)
        return {key: value[rows] for key, value in self.data.items()}

    def state(self) -> dict[str, np.ndarray]:
        return {**{k: v[: self.size] for k, v in self.data.items()},
                "pos": np.asarray([self.pos], np.int64)}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        size, pos = len(state["layer"]), int(state["pos"][0])
        if size > self.capacity or not 0 <= pos < self.capacity:
            raise ValueError(f"{size} rows at position {pos} do not fit capacity {self.capacity}")
        for key, value in self.data.items():
            value[:size] = state[key]
        self.size, self.pos = size, pos
