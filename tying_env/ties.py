"""The tie map as a value: its invariant and the two transitions, tie and untie.

A tie map `t` of length L says which block each position runs:

- `t[i] == i`: position i is a *root*, it owns trainable weights;
- `t[i] == r < i`: position i runs the weights of root r (it is *tied*).

Invariant: `t[0] == 0`, `t[i] <= i` and `t[t[i]] == t[i]` (every tie
points at a root, never at another tied position).

The functions here are pure: they return a new tuple and a description of
what changed, and know nothing about models or optimizers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TieMap = tuple[int, ...]

TIE_MODES = ("copy", "share")  # how a tied position runs its root (see tying_env.models)


def validate(ties: Sequence[int]) -> TieMap:
    """Return `ties` as a tuple, or raise ValueError naming the broken rule."""
    t = tuple(int(x) for x in ties)
    if not t:
        raise ValueError("tie map must have at least one position, got []")
    if t[0] != 0:
        raise ValueError(f"tie map {list(t)}: position 0 must be its own root (t[0] == 0)")
    for i, r in enumerate(t):
        if not 0 <= r <= i:
            raise ValueError(f"tie map {list(t)}: t[{i}] = {r}, allowed 0..{i}")
        if t[r] != r:
            raise ValueError(
                f"tie map {list(t)}: t[{i}] = {r} points at a tied position "
                f"(t[{r}] = {t[r]}); ties must point at roots"
            )
    return t


def untied(n_layer: int) -> TieMap:
    """Every position is its own root (conventional training)."""
    return tuple(range(n_layer))


def all_first(n_layer: int) -> TieMap:
    """Every position runs block 0 (the published start's tie map, with real copies)."""
    return (0,) * n_layer


def roots(ties: Sequence[int]) -> list[int]:
    """Positions that own weights, in order."""
    return [i for i, r in enumerate(ties) if r == i]


def dependents(ties: Sequence[int], root: int) -> list[int]:
    """Positions (other than `root`) that run `root`'s weights, in order."""
    return [i for i, r in enumerate(ties) if r == root and i != root]


@dataclass(frozen=True)
class Transition:
    """What one decision changed.

    `promoted`: when a root that others ran becomes tied, the lowest of its
    dependents takes over its weights; `(old_root, new_root)` or None.
    `cloned`: position that became a root with a clone of the weights it ran
    (the source root), as `(position, source)` or None.
    """

    before: TieMap
    after: TieMap
    promoted: tuple[int, int] | None = None
    cloned: tuple[int, int] | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def tie(ties: Sequence[int], i: int, j: int) -> Transition:
    """Position `i` runs the weights of `j`'s root (`j < i`).

    If `i` was a root that others ran, they keep its current weights: the
    lowest of them becomes their root.
    """
    t = validate(ties)
    _check_position(t, i, low=1)
    if not 0 <= j < i:
        raise ValueError(f"tie({i}, {j}): source must be an earlier position 0..{i - 1}")
    target = t[j]
    if t[i] == target:
        return Transition(t, t)
    new = list(t)
    promoted = None
    if t[i] == i:
        deps = dependents(t, i)
        if deps:
            heir = deps[0]
            for k in deps:
                new[k] = heir
            promoted = (i, heir)
    new[i] = target
    return Transition(t, validate(new), promoted=promoted)


def untie(ties: Sequence[int], i: int) -> Transition:
    """Position `i` becomes a root holding a clone of the weights it ran."""
    t = validate(ties)
    _check_position(t, i, low=0)
    if t[i] == i:
        return Transition(t, t)
    new = list(t)
    new[i] = i
    return Transition(t, validate(new), cloned=(i, t[i]))


def apply_choice(ties: Sequence[int], i: int, choice: int) -> Transition:
    """The published action convention: `choice < i` copies `choice`, else independent."""
    if choice < 0:
        raise ValueError(f"choice for layer {i} must be >= 0, got {choice}")
    return tie(ties, i, choice) if choice < i else untie(ties, i)


def _check_position(t: TieMap, i: int, low: int) -> None:
    if not low <= i < len(t):
        raise ValueError(f"layer {i} out of range, allowed {low}..{len(t) - 1}")
