"""The surrogate's features: what it knows of a decision and of the episode before it.

A decision's effect is the change of the validation loss over the training steps that
follow it, `delta = val_loss_after - val_loss_before`. Its features come from the tie
maps, the decisions and the losses of the episode so far; no weights are seen. What the
weights would tell is approximated from the tie maps' history (`Lineage`): when a layer
starts to run other weights, the jump of the loss grows with how long the two weight
vectors have trained apart.

| feature        | meaning                                                          |
|----------------|------------------------------------------------------------------|
| `progress`     | decisions done before this one / budget                          |
| `layer`        | the layer decided / (L - 1)                                      |
| `roots`        | roots after the decision / L                                     |
| `root_change`  | roots after minus roots before (-1, 0 or 1)                      |
| `changed`      | whether the tie map changed                                      |
| `own`          | whether the decided layer is a root afterwards                   |
| `mean_roots`   | mean of `roots` over the episode's decisions so far, this one in |
| `since_change` | decisions since the tie map last changed / budget               |
| `val_loss`     | the validation loss before the decision                          |
| `last_delta`   | the previous decision's change of the validation loss (0 first)  |
| `delta_2`      | the change two decisions back (0 before)                         |
| `delta_3`      | the change three decisions back (0 before)                       |
| `sweep_delta`  | the sum of the changes over the last L - 1 decisions (a sweep)   |
| `above_best`   | the validation loss before the decision minus the lowest so far  |
| `jump`         | decisions that the weights the layer runs before and after the   |
|                | decision have trained apart / budget (0 when they are the same)  |
| `sweep_jumps`  | the sum of `jump` over the last L - 1 decisions, this one out    |
| `root_k`       | whether position k is a root afterwards, k = 0 .. L - 1           |
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tying_env import ties as tm

FEATURES = ("progress", "layer", "roots", "root_change", "changed", "own", "mean_roots",
            "since_change", "val_loss", "last_delta", "delta_2", "delta_3", "sweep_delta",
            "above_best", "jump", "sweep_jumps")

# the features that see a loss; the level (`tying_env.surrogate.model`) sees the others
LOSS_FEATURES = ("val_loss", "last_delta", "delta_2", "delta_3", "sweep_delta", "above_best")


def feature_names(n_layer: int) -> list[str]:
    return [*FEATURES, *(f"root_{k}" for k in range(n_layer))]


class Lineage:
    """The weight vectors the roots hold, as a tree of clones with their birth times.

    At the start every root holds a vector of its own, all counted as split at decision 0
    (the copy start has one vector, block 0's). Untying a layer clones the vector it ran;
    when a root that others ran is tied, the lowest of them keeps its vector
    (`tying_env.ties.tie`). Two vectors have trained apart since the earliest birth
    below their last common ancestor.
    """

    def __init__(self, ties: tm.TieMap):
        self.path: dict[int, tuple[int, ...]] = {0: (0,)}  # vector -> its ancestry, itself last
        self.born: dict[int, int] = {0: 0}
        self.held: dict[int, int] = {}  # root position -> the vector it holds
        for r in tm.roots(ties):
            self.held[r] = self._new(0, 0) if r else 0

    def _new(self, parent: int, now: int) -> int:
        vector = len(self.born)
        self.path[vector] = (*self.path[parent], vector)
        self.born[vector] = now
        return vector

    def apart(self, a: int, b: int, now: int) -> int:
        """Decisions that vectors `a` and `b` have trained apart at decision `now`."""
        if a == b:
            return 0
        pa, pb = self.path[a], self.path[b]
        k = 0
        while k < min(len(pa), len(pb)) and pa[k] == pb[k]:
            k += 1
        return now - min(self.born[p[k]] for p in (pa, pb) if k < len(p))

    def decide(self, layer: int, before: tm.TieMap, after: tm.TieMap, now: int) -> int:
        """Record the decision about `layer` (`before` -> `after`) at decision `now`; the
        decisions that the weights `layer` ran and now runs have trained apart."""
        ran = self.held[before[layer]]
        held = {}
        for r in tm.roots(after):
            if before[r] == r:
                held[r] = self.held[r]
            elif r == layer:  # untied: a clone of what it ran
                held[r] = self._new(ran, now)
            else:  # the heir of a root that was tied keeps its vector
                held[r] = self.held[before[r]]
        self.held = held
        return self.apart(ran, held[after[layer]], now)


@dataclass
class History:
    """What the features need of an episode's past: `features` before a decision's
    outcome is known, `observe` after it."""

    n_layer: int
    budget: int
    ties: tm.TieMap  # the tie map now
    val_loss: float  # the validation loss now
    decision: int = 0
    roots_sum: float = 0.0
    last_change: int = 0
    best: float = field(init=False)
    deltas: list[float] = field(default_factory=list)
    jumps: list[float] = field(default_factory=list)
    lineage: Lineage = field(init=False)

    def __post_init__(self) -> None:
        self.best = self.val_loss
        self.lineage = Lineage(self.ties)

    def features(self, layer: int, after: tm.TieMap) -> np.ndarray:
        """The features of deciding `layer` (the tie map now -> `after`); records the
        decision, whose outcome `observe` then takes."""
        L, before = self.n_layer, self.ties
        is_root = [float(t == k) for k, t in enumerate(after)]
        roots = sum(is_root)
        roots_before = sum(t == k for k, t in enumerate(before))
        changed = before != after
        if changed:
            self.last_change = self.decision
        self.roots_sum += roots
        jump = self.lineage.decide(layer, before, after, self.decision) / self.budget
        sweep = L - 1
        past = [0.0, 0.0, 0.0, *self.deltas[-3:]]
        x = np.array([self.decision / self.budget, layer / (L - 1), roots / L,
                      roots - roots_before, float(changed), float(after[layer] == layer),
                      self.roots_sum / (self.decision + 1) / L,
                      (self.decision - self.last_change) / self.budget, self.val_loss,
                      past[-1], past[-2], past[-3], sum(self.deltas[-sweep:]),
                      self.val_loss - self.best, jump, sum(self.jumps[-sweep:]), *is_root])
        self.jumps.append(jump)
        self.ties = after
        self.decision += 1
        return x

    def observe(self, val_loss: float) -> None:
        """The validation loss after the decision's training steps."""
        self.deltas.append(val_loss - self.val_loss)
        self.val_loss = val_loss
        self.best = min(self.best, val_loss)
