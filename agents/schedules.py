"""Schedules that map the (perplexity, trainable fraction) front.

- `static-K` (K in `ROOTS`): the fixed tie map with exactly K roots, K contiguous groups
  as equal as possible (the first `L mod K` groups one layer longer); every layer runs
  the first layer of its group, its root. This is `sequence` with `n_unique=K`, so
  `static-1` is `albert`'s map and `static-L` is `untie-all`'s (`vanilla` plays that map from
  independently initialised blocks). `StaticRootsAgent` takes any K as
  the hyperparameter `roots`; all refuse K > L when they meet the environment.

  | name        | map at L = 12               | same map at L = 12 | at L = 6               |
  |-------------|-----------------------------|--------------------|------------------------|
  | `static-1`  | `0 0 0 0 0 0 0 0 0 0 0 0`   | `albert`           | `albert`, `sequence`,  |
  |             |                             |                    | `cycle`, `cycle-rev`   |
  | `static-2`  | `0 0 0 0 0 0 6 6 6 6 6 6`   | -                  | -                      |
  | `static-3`  | `0 0 0 0 4 4 4 4 8 8 8 8`   | `sequence`         | `paper-sequence`       |
  | `static-4`  | `0 0 0 3 3 3 6 6 6 9 9 9`   | -                  | -                      |
  | `static-6`  | `0 0 2 2 4 4 6 6 8 8 10 10` | `paper-sequence`   | `untie-all`            |
  | `static-8`  | `0 0 2 2 4 4 6 6 8 9 10 11` | -                  | refused                |
  | `static-12` | `0 1 2 ... 11`              | `untie-all`        | refused                |

- `untie-then-tie`: a dynamic heuristic. Of the episode's S sweeps, the first
  `floor(untie_fraction * S)` (at most S - 1) play the untied map; the others tie layers
  one by one into the `static-B` map of `budget_roots` B roots, a share of the layers to
  tie per sweep, so that the last sweep plays that map: at most B roots at the end
  (default `max(1, L // 4)`, the most roots that leave at least 75% of the layers tied,
  for L >= 4). A layer once tied stays tied, to its final root (roots are never tied);
  the second layer of every group is tied first, then the third, and so on.
  It reads only `info["layer"]`, `info["sweep"]` and `info["budget"]`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agents.base import Agent, action_mode, n_layers
from agents.baselines import StaticAgent, tie_map
from tying_env import ties as tm
from tying_env.errors import SettingError

ROOTS = (1, 2, 3, 4, 6, 8, 12)  # the root counts of the registered `static-K` agents
STATIC_ROOTS = {f"static-{k}": k for k in ROOTS}


# ------------------------------------------------------------------ the maps
def check_roots(roots: Any, n_layer: int, agent: str, argument: str = "roots") -> int:
    """`roots` as an int in `1..n_layer`, or a `SettingError` naming it and what is allowed."""
    if isinstance(roots, bool) or not isinstance(roots, int) or not 1 <= roots <= n_layer:
        raise SettingError(argument, f"{argument}={roots!r} is not allowed for agent "
                                     f"{agent!r} on an environment of {n_layer} layers; "
                                     f"allowed: an int from 1 to {n_layer} (n_layer)")
    return roots


def contiguous_map(n_layer: int, roots: int) -> tm.TieMap:
    """`roots` contiguous groups as equal as possible, each layer tied to its group's first."""
    return tie_map("sequence", n_layer, roots)


def paper_budget(n_layer: int) -> int:
    """The paper's budget in roots: `max(1, L // 4)`, so that at least 75% of the layers
    are tied (for L >= 4; a smaller model keeps its one root)."""
    return max(1, n_layer // 4)


def tie_order(final: tm.TieMap) -> list[int]:
    """The layers `final` ties, in the order `untie-then-tie` ties them: by their place in
    their group (the second layer of every group first), then from the bottom."""
    return sorted((i for i, r in enumerate(final) if r != i), key=lambda i: (i - final[i], i))


def untie_sweeps(sweeps: int, untie_fraction: float) -> int:
    """The untied sweeps of an episode of `sweeps`: `floor(untie_fraction * sweeps)`,
    leaving at least the last sweep to reach the budget."""
    return max(0, min(math.floor(round(untie_fraction * sweeps, 9)), sweeps - 1))


def untie_then_tie_map(n_layer: int, budget_roots: int, sweeps: int, untied: int,
                       sweep: int) -> tm.TieMap:
    """The tie map `untie-then-tie` plays in sweep `sweep` (from 0) of `sweeps`, `untied` of
    them untied: then `ceil(n * done / (sweeps - untied))` of the `n` layers to tie are tied
    after `done` tying sweeps, all of them in the last."""
    final = contiguous_map(n_layer, budget_roots)
    order = tie_order(final)
    tying = max(1, sweeps - untied)
    done = min(max(0, sweep - untied + 1), tying)
    tied = set(order[:(len(order) * done + tying - 1) // tying])  # ceil
    return tuple(final[i] if i in tied else i for i in range(n_layer))


def episode_sweeps(info: dict[str, Any], mode: str, n_layer: int) -> int:
    """The sweeps of the episode, from `info["budget"]` (its decisions): one decision per
    sweep in vector mode, one per layer but the first in layer mode."""
    per_sweep = 1 if mode == "vector" else max(1, n_layer - 1)
    return max(1, int(info["budget"]) // per_sweep)


# ------------------------------------------------------------------ static at every root count
class StaticRootsAgent(StaticAgent):
    """The static map with exactly `roots` roots in contiguous groups (`contiguous_map`).

    Not registered itself (`agents.make("agents.schedules:StaticRootsAgent", env,
    roots=K)`); the registered `static-K` subclasses fix K by their name.
    """

    name = "static"
    roots: ClassVar[int] = 0  # a `static-K` subclass's K; 0: the hyperparameter `roots`

    def __init__(self, env: gym.Env, seed: int = 0, roots: int = 1):
        self.n_roots = roots  # read by `build_map`, which the base constructor calls
        super().__init__(env, seed, **({} if self.roots else {"roots": roots}))

    def build_map(self, n_layer: int) -> tm.TieMap:
        """The contiguous map; a `SettingError` when there are more roots than layers."""
        return contiguous_map(n_layer, check_roots(self.n_roots, n_layer, self.name))


class _NamedRoots(StaticRootsAgent):
    """A `static-K` agent: its name declares K, so it takes no hyperparameter."""

    def __init__(self, env: gym.Env, seed: int = 0):
        super().__init__(env, seed, roots=self.roots)


class Static1Agent(_NamedRoots):
    """`static-1`: one root; the same policy as `albert` (and, for L < 8, as `sequence`,
    `cycle` and `cycle-rev` with their default one block)."""

    name, roots = "static-1", 1


class Static2Agent(_NamedRoots):
    """`static-2`: two contiguous groups; the same policy as `sequence` for 8 <= L < 12
    (its default 2 blocks)."""

    name, roots = "static-2", 2


class Static3Agent(_NamedRoots):
    """`static-3`: three contiguous groups; the same policy as `sequence` for
    12 <= L < 16 (its default 3 blocks) and as `paper-sequence` for L = 6."""

    name, roots = "static-3", 3


class Static4Agent(_NamedRoots):
    """`static-4`: four contiguous groups; the same policy as `sequence` for 16 <= L < 20
    and as `paper-sequence` for L = 8."""

    name, roots = "static-4", 4


class Static6Agent(_NamedRoots):
    """`static-6`: six contiguous groups; the same policy as `paper-sequence` for L = 12
    and as `untie-all` for L = 6."""

    name, roots = "static-6", 6


class Static8Agent(_NamedRoots):
    """`static-8`: eight contiguous groups (L >= 8); the same policy as `untie-all` for
    L = 8 and as `paper-sequence` for L = 16."""

    name, roots = "static-8", 8


class Static12Agent(_NamedRoots):
    """`static-12`: twelve contiguous groups (L >= 12); the same policy as `untie-all`
    for L = 12 (the map of `vanilla`, which starts from independently initialised blocks
    instead of the environment's start)."""

    name, roots = "static-12", 12


# ------------------------------------------------------------------ the dynamic heuristic
class UntieThenTieAgent(Agent):
    """`untie-then-tie`: untied for the first `untie_fraction` of the sweeps, then tied
    progressively so that the last sweep plays the `budget_roots` map (default: the
    paper's budget, `max(1, L // 4)` roots). See the module's docstring."""

    learns = False  # its schedule is fixed by the budget

    name = "untie-then-tie"

    def __init__(self, env: gym.Env, seed: int = 0, budget_roots: int | None = None,
                 untie_fraction: float = 0.5):
        super().__init__(env, seed, **({} if budget_roots is None
                                       else {"budget_roots": budget_roots}),
                         untie_fraction=untie_fraction)
        self.action_mode: str = action_mode(env.action_space)
        self.n_layer = n_layers(env.action_space)
        self.budget_roots = check_roots(paper_budget(self.n_layer) if budget_roots is None
                                        else budget_roots, self.n_layer, self.name,
                                        "budget_roots")
        if not 0.0 <= untie_fraction <= 1.0:
            raise SettingError("untie_fraction", f"untie_fraction={untie_fraction!r} is not "
                                                 f"allowed for agent {self.name!r}; allowed: "
                                                 "a number from 0 to 1")
        self.untie_fraction = float(untie_fraction)

    def target(self, info: dict[str, Any]) -> tm.TieMap:
        """The tie map of the sweep `info` is in, from the episode's budget."""
        sweeps = episode_sweeps(info, self.action_mode, self.n_layer)
        untied = untie_sweeps(sweeps, self.untie_fraction)
        return untie_then_tie_map(self.n_layer, self.budget_roots, sweeps, untied,
                                  min(int(info["sweep"]), sweeps - 1))

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        ties = self.target(info)
        if self.action_mode == "vector":
            return np.asarray(ties, dtype=np.int64)
        return ties[int(info["layer"])]
