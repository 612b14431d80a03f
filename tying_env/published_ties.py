"""The published tie mechanics as a value, beside ours, for the same decisions.

Hay & Wolf's `DynamicGPT.apply_action` keeps one block of `Parameter` objects per
position and, for a decision on layer i:

- *copy j* (`choice < i`): points every parameter of block i at block j's current
  storage (`p_i.data = p_j.data`) and sets `p_i.requires_grad = False`;
- *independent* (`choice >= i`): sets `p_i.requires_grad = True`, nothing else: the
  block stays on whatever storage it has.

No operation gives a block new storage, so the number of distinct storages can only
fall; tying a block that others copied leaves them on its old tensor. The published
"trainable" count (`state[i] == i`, and "# trainable params": `numel` summed over
`requires_grad` parameters) counts an aliased storage once per trainable position.

`PublishedTies` replays those operations on storage ids (a storage is named by the
position that owned it at the start); `OurTies` replays the same decisions under this
project's semantics (`tying_env.ties`, with the frozen roots of `TiedModel`), where a
block's storage is its root's and every trainable root counts once. Both are immutable:
`choose` returns the next value. Nothing here touches a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tying_env import ties as tm

STARTS = ("frozen", "first", "none")  # as `EnvConfig.initial_ties`


def _check_start(n_layer: int, start: str) -> None:
    if n_layer < 1:
        raise ValueError(f"n_layer must be >= 1, got {n_layer}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")


def _check_choice(n_layer: int, i: int, choice: int) -> None:
    if not 1 <= i < n_layer:
        raise ValueError(f"layer {i} out of range, allowed 1..{n_layer - 1}")
    if choice < 0:
        raise ValueError(f"choice for layer {i} must be >= 0, got {choice}")


@dataclass(frozen=True)
class PublishedTies:
    """The published mechanics: per position, the storage its block points at, whether
    its parameters require grad, and the published Q-learner's state (the last choice,
    `i` for independent)."""

    storage: tuple[int, ...]
    trainable: tuple[bool, ...]
    state: tuple[int, ...]

    @classmethod
    def start(cls, n_layer: int, start: str = "frozen") -> PublishedTies:
        """The state at reset. `frozen` (the published start): every block on its own
        random storage, only block 0 trainable, state all 0; `first`: every block on
        block 0's storage (real copies, as our default start), only block 0 trainable;
        `none`: every block its own and trainable."""
        _check_start(n_layer, start)
        own = tuple(range(n_layer))
        if start == "none":
            return cls(own, (True,) * n_layer, own)
        storage = (0,) * n_layer if start == "first" else own
        return cls(storage, (True,) + (False,) * (n_layer - 1), (0,) * n_layer)

    @property
    def n_layer(self) -> int:
        return len(self.storage)

    def choose(self, i: int, choice: int) -> PublishedTies:
        """`apply_action(i, choice)`: copy `choice` if `choice < i`, else independent."""
        _check_choice(self.n_layer, i, choice)
        storage, trainable, state = list(self.storage), list(self.trainable), list(self.state)
        if choice < i:
            storage[i] = storage[choice]  # p_i.data = p_j.data: j's storage *now*
            trainable[i] = False
            state[i] = choice
        else:
            trainable[i] = True  # the block keeps its storage, aliased or not
            state[i] = i
        return PublishedTies(tuple(storage), tuple(trainable), tuple(state))

    @property
    def distinct_storages(self) -> int:
        """Blocks of weights that exist: distinct storages over all positions."""
        return len(set(self.storage))

    @property
    def trainable_positions(self) -> int:
        """The published count: positions whose parameters require grad (= `state[i] == i`)."""
        return sum(self.trainable)

    @property
    def trainable_storages(self) -> int:
        """Distinct storages that some trainable position updates (a unique count)."""
        return len({s for s, t in zip(self.storage, self.trainable, strict=True) if t})

    def counted_params(self, block_numel: int) -> int:
        """The published "# trainable params" of the blocks: an aliased storage counts once
        per trainable position."""
        return self.trainable_positions * block_numel

    def unique_params(self, block_numel: int) -> int:
        """Trainable block parameters counted once per storage, as this project counts."""
        return self.trainable_storages * block_numel


@dataclass(frozen=True)
class OurTies:
    """This project's mechanics: the tie map (`tying_env.ties`) and its frozen roots,
    with the transitions of `TiedModel.choose`. A root owns its storage; a tied position
    has none."""

    ties: tm.TieMap
    frozen: frozenset[int]

    @classmethod
    def start(cls, n_layer: int, start: str = "frozen") -> OurTies:
        """The state at reset, as `tying_env.memory.starting_state` for `initial_ties`."""
        _check_start(n_layer, start)
        if start == "first":
            return cls(tm.all_first(n_layer), frozenset())
        frozen = frozenset(range(1, n_layer)) if start == "frozen" else frozenset()
        return cls(tm.untied(n_layer), frozen)

    @property
    def n_layer(self) -> int:
        return len(self.ties)

    def choose(self, i: int, choice: int) -> OurTies:
        """`TiedModel.choose(i, choice)`: tie to `choice`'s root, or train position i (a
        clone of what it ran, or its own block unfrozen)."""
        _check_choice(self.n_layer, i, choice)
        transition = tm.apply_choice(self.ties, i, choice)
        frozen = set(self.frozen)
        if transition.promoted is not None and transition.promoted[0] in frozen:
            old, heir = transition.promoted  # frozen weights stay frozen
            frozen = (frozen - {old}) | {heir}
        frozen &= set(tm.roots(transition.after))
        if choice >= i:
            frozen.discard(i)
        return OurTies(transition.after, frozenset(frozen))

    @property
    def storage(self) -> tuple[int, ...]:
        """Per position, the root whose storage it runs."""
        return self.ties

    @property
    def distinct_storages(self) -> int:
        """Roots: every root owns one storage, a tied position none."""
        return len(tm.roots(self.ties))

    @property
    def trainable_positions(self) -> int:
        """Roots that train (not frozen): here the same as `trainable_storages`."""
        return self.distinct_storages - len(self.frozen)

    @property
    def trainable_storages(self) -> int:
        return self.trainable_positions

    def counted_params(self, block_numel: int) -> int:
        return self.trainable_storages * block_numel

    def unique_params(self, block_numel: int) -> int:
        return self.trainable_storages * block_numel


def replay(n_layer: int, decisions: Sequence[tuple[int, int]],
           start: str = "frozen") -> tuple[PublishedTies, OurTies]:
    """Both mechanics after the decisions `(layer, choice)`, from the same start."""
    published, ours = PublishedTies.start(n_layer, start), OurTies.start(n_layer, start)
    for i, choice in decisions:
        published, ours = published.choose(i, choice), ours.choose(i, choice)
    return published, ours
