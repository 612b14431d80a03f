"""Static tying patterns, and uniformly random agents (masked and unmasked).

Every static agent plays one fixed tie map, given by `tie_map` in the
project's convention (`t[i] == i`: own weights; `t[i] == r < i`: runs root
`r`'s weights). In layer mode it answers `t[i]` for the layer in
`info["layer"]` (`t[i] == i` is the "independent" action); in vector mode it
answers the whole map. Because the environment applies choices for layers
1..L-1 in order and every entry points at a root, one sweep reaches exactly
the map, and later sweeps keep it.

| name             | pattern (L = 6)        | source                                    |
|------------------|------------------------|-------------------------------------------|
| `vanilla`      | `0 1 2 3 4 5`        | conventional training: independently      |
|                  |                        | initialised blocks, never tied (below)    |
| `untie-all`    | `0 1 2 3 4 5`        | unties every layer from the env's start   |
| `albert`       | `0 0 0 0 0 0`        | one block for all layers (ALBERT)         |
| `sequence`     | blocks `0 0 1 1 2 2` (M = 3) | Takase & Kiyono 2021, SEQUENCE    |
| `cycle`        | blocks `0 1 2 0 1 2` (M = 3) | Takase & Kiyono 2021, CYCLE       |
| `cycle-rev`    | blocks `0 1 2 2 1 0` (M = 3) | Takase & Kiyono 2021, CYCLE (REV) |
| `paper-sequence` | `0 0 2 2 4 4`      | Hay & Wolf's "sequence" ablation          |
| `paper-reverse`  | `0 1 2 2 1 0`      | Hay & Wolf's "reverse" ablation           |
| `random`       | a uniform valid choice at every decision (seeded) |                |
| `random-unmasked` | a uniform index of `Discrete(L)` (masks ignored) |                |

`vanilla` is conventional training of an untied model inside the
environment's loop: it requires the environment setting `initial_ties="none"`
(`ConventionalAgent.env_settings`, applied by the run over any `env_kwargs`
and recorded in `run.json`), so every block has its own random initialisation
from the first step, and it trains as many steps as the episode's budget
(`max_sweeps` x (L - 1) decisions x `steps_per_decision`). It is not the
published `--vnl`: in the published causal-LM loop that flag only unties every
layer before the Q-learner starts, and the Q-learner then ties them as usual.
The published baseline is `code/train.py --gpt`, an untied model trained for
100 full epochs; `scripts/table1.py` runs `vanilla` for that budget.
`untie-all` plays the same map from whatever start the environment has: from
`initial_ties="first"` each untied block begins as a copy of block 0.

The Takase & Kiyono patterns use `M = n_unique` blocks over L layers; a
layer's tie-map entry is the first layer that uses its block. The default
`n_unique = max(1, L // 4)` is the fewest blocks that leave at least 75% of
the layers tied (the paper's headline regime): 3 blocks for L = 12, 1 block
(the ALBERT map) for L < 8. When M does not divide L:

- `sequence`: the first `L mod M` blocks get one layer more
  (L = 7, M = 3: blocks `0 0 0 1 1 2 2`);
- `cycle`: the last repetition is cut short (L = 7, M = 3: `0 1 2 0 1 2 0`);
- `cycle-rev`: the last M layers run the blocks in reverse order, the layers
  before them cycle (L = 7, M = 3: `0 1 2 0 2 1 0`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agents.base import Agent, AgentState, action_mode, n_layers
from tying_env import checkpoint as ckpt
from tying_env import ties as tm

TAKASE = ("sequence", "cycle", "cycle-rev")
STATIC = ("vanilla", "albert", *TAKASE, "paper-sequence", "paper-reverse")
CONVENTIONAL_START = {"initial_ties": "none"}


# ------------------------------------------------------------------ the tie maps
def blocks(name: str, n_layer: int, n_unique: int) -> list[int]:
    """Block index of every layer for the Takase & Kiyono patterns."""
    L, M = n_layer, n_unique
    if not 1 <= M <= L:
        raise ValueError(f"n_unique={M} must be in 1..n_layer={L}")
    if name == "sequence":
        sizes = [L // M + (b < L % M) for b in range(M)]
        return [b for b, size in enumerate(sizes) for _ in range(size)]
    if name == "cycle":
        return [i % M for i in range(L)]
    if name == "cycle-rev":
        head = L - M
        return [i % M for i in range(head)] + [M - 1 - k for k in range(M)]
    raise ValueError(f"pattern {name!r} has no blocks; allowed: {', '.join(TAKASE)}")


def tie_map(name: str, n_layer: int, n_unique: int | None = None) -> tm.TieMap:
    """The tie map of the static pattern `name` for `n_layer` layers (validated)."""
    L = n_layer
    if name not in STATIC:
        raise ValueError(f"pattern {name!r} is unknown; allowed: {', '.join(STATIC)}")
    if n_unique is not None and name not in TAKASE:
        raise ValueError(f"n_unique applies to {', '.join(TAKASE)} only, not {name!r}")
    if name == "vanilla":
        t = list(range(L))
    elif name == "albert":
        t = [0] * L
    elif name == "paper-sequence":
        t = [i - i % 2 for i in range(L)]
    elif name == "paper-reverse":
        t = [min(i, L - 1 - i) for i in range(L)]
    else:
        b = blocks(name, L, max(1, L // 4) if n_unique is None else n_unique)
        t = [b.index(block) for block in b]
    return tm.validate(t)


# ------------------------------------------------------------------ the agents
class StaticAgent(Agent):
    """Plays the fixed tie map of its `pattern` (one of `STATIC`), every sweep.

    Each pattern is a subclass that declares its `name` and, where the two differ,
    its `pattern`; the Takase & Kiyono ones (`TakaseAgent`) take `n_unique`.
    """

    learns = False  # nothing it sees changes what it does

    pattern: ClassVar[str] = ""  # "" means the agent's name

    def __init__(self, env: gym.Env, seed: int = 0, **hparams: Any):
        super().__init__(env, seed, **hparams)
        self.action_mode: str = action_mode(env.action_space)
        self.ties = self.build_map(n_layers(env.action_space))

    def build_map(self, n_layer: int) -> tm.TieMap:
        """The tie map this agent plays on `n_layer` layers (subclasses may override)."""
        return tie_map(self.pattern or self.name, n_layer, self.hparams.get("n_unique"))

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        if self.action_mode == "vector":
            return np.asarray(self.ties, dtype=np.int64)
        return self.ties[int(info["layer"])]

    def get_state(self) -> AgentState:
        """The pattern's tie map, for the record: nothing is learned."""
        return {}, {"agent": self.name, "tie_map": list(self.ties)}

    def set_state(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        ckpt.require(meta, ("agent", "tie_map"), f"agent {self.name!r}")
        if meta["agent"] != self.name or list(meta["tie_map"]) != list(self.ties):
            raise ckpt.CheckpointError(f"the saved state is of agent {meta['agent']!r} with tie "
                                       f"map {meta['tie_map']}; this is {self.name!r} with "
                                       f"{list(self.ties)}")


class ConventionalAgent(StaticAgent):
    """Conventional training (`vanilla`): independently initialised blocks, nothing tied,
    trained for the episode's steps (not the published `--vnl`; see the module docstring).

    `env_settings` makes the run build its environment with `initial_ties="none"`,
    whatever the given `env_kwargs` say.
    """

    name = "vanilla"
    env_settings = CONVENTIONAL_START

    def __init__(self, env: gym.Env, seed: int = 0):
        start = env.get_wrapper_attr("cfg").initial_ties
        if start != CONVENTIONAL_START["initial_ties"]:
            raise ValueError(f"vanilla (conventional training) needs an environment built with "
                             f"initial_ties='none', got initial_ties={start!r}; runs and "
                             f"benchmarks apply it for you (agents.env_settings)")
        super().__init__(env, seed)


class UntieAll(StaticAgent):
    """`untie-all`: the untied map, played from the environment's start (no requirement)."""

    name = "untie-all"
    pattern = "vanilla"


class AlbertAgent(StaticAgent):
    """`albert`: one block for all layers."""

    name = "albert"


class PaperSequenceAgent(StaticAgent):
    """`paper-sequence`: Hay & Wolf's "sequence" ablation."""

    name = "paper-sequence"


class PaperReverseAgent(StaticAgent):
    """`paper-reverse`: Hay & Wolf's "reverse" ablation."""

    name = "paper-reverse"


class TakaseAgent(StaticAgent):
    """A Takase & Kiyono pattern over `n_unique` blocks (default `max(1, L // 4)`)."""

    def __init__(self, env: gym.Env, seed: int = 0, n_unique: int | None = None):
        super().__init__(env, seed, **({} if n_unique is None else {"n_unique": n_unique}))


class SequenceAgent(TakaseAgent):
    """`sequence`: Takase & Kiyono's SEQUENCE."""

    name = "sequence"


class CycleAgent(TakaseAgent):
    """`cycle`: Takase & Kiyono's CYCLE."""

    name = "cycle"


class CycleRevAgent(TakaseAgent):
    """`cycle-rev`: Takase & Kiyono's CYCLE (REV)."""

    name = "cycle-rev"


class RandomAgent(Agent):
    """A uniform choice among the valid options at every decision, from its own seeded RNG.

    Layer mode: uniform over `action_masks()` (the `i + 1` distinct choices), the action
    semantics of `maskable-ppo` and the Q-learners; vector mode: entry `i` uniform over
    `0..i`. `random-unmasked` (`RandomUnmaskedAgent`) is the unmasked learners' random.
    """

    learns = False  # nothing it sees changes what it does

    name = "random"

    def __init__(self, env: gym.Env, seed: int = 0):
        super().__init__(env, seed)
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        space = self.env.action_space
        if isinstance(space, gym.spaces.MultiDiscrete):
            return self.rng.integers(space.nvec)
        if "layer" in info:  # the env it plays says which layer it decides (0..i are valid)
            return int(self.rng.choice(np.arange(int(info["layer"]) + 1)))
        masks = self.env.get_wrapper_attr("action_masks")()
        return int(self.rng.choice(np.flatnonzero(masks)))

    def get_state(self) -> AgentState:
        """The generator's state: the only thing this agent keeps."""
        return {}, {"agent": self.name, "rng": ckpt.generator_state(self.rng)}

    def set_state(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        ckpt.require(meta, ("agent", "rng"), f"agent {self.name!r}")
        if meta["agent"] != self.name:
            raise ckpt.CheckpointError(f"the saved state is of agent {meta['agent']!r}, "
                                       f"this is {self.name!r}")
        self.rng = ckpt.make_generator(meta["rng"])


class RandomUnmaskedAgent(RandomAgent):
    """`random-unmasked`: a uniform index of the whole action space at every decision.

    Layer mode: uniform over `Discrete(L)`, masks ignored; every index `>= i` means
    "independent", so layer i trains its own weights with probability `(L - i) / L`
    (against `1 / (i + 1)` for `random`). These are the action semantics of the
    unmasked learners `dqn`, `ppo`, `a2c`, `qrdqn` and `recurrent-ppo`; `random`
    (uniform over the `i + 1` distinct choices) shares those of `maskable-ppo` and
    the Q-learners (`qlearning*` draw and choose among layer i's `i + 1` outputs).
    Vector mode has no redundant index, so there it plays as `random` does.
    """

    name = "random-unmasked"

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        space = self.env.action_space
        if isinstance(space, gym.spaces.MultiDiscrete):
            return self.rng.integers(space.nvec)
        return int(self.rng.integers(space.n))
