"""Agents for the layer-tying environments, behind one small interface.

`agents.make(name, env, seed=0, **hparams)` builds a registered agent;
`agents.names()` lists them; a name `"package.module:ClassName"` builds an unregistered
agent class. The built-in agents are registered here by name and
imported (with torch, and SB3 for the `agents.sb3` adapters) only when one is made,
so `import agents` stays light.

- `agents.qlearning`: `qlearning` (the paper's), `qlearning-fast` (its exploration
  shortened for 10-sweep budgets), `qlearning-plus`;
- `agents.baselines`: `vanilla` (conventional training), `untie-all`, `albert`,
  `sequence`, `cycle`, `cycle-rev`, `paper-sequence`, `paper-reverse`, `random`,
  `random-unmasked`;
- `agents.schedules`: `static-K` (the contiguous map with K roots, K in `STATIC_ROOTS`),
  `untie-then-tie`;
- `agents.bandit`: `schedule-bandit` (learns which whole schedule to play, over episodes);
- `agents.sb3`: `dqn`, `ppo`, `a2c`, `maskable-ppo`, `qrdqn`, `recurrent-ppo`.

For plain Stable-Baselines3: `agents.OneEpisode(env)` keeps the trained model when SB3
resets the environment, and `learn(..., callback=agents.StopAtEpisodeEnd(env))` stops
`learn()` at the episode's end, whatever the budget.
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.registry import env_settings, factory, make, names, register, unregister

# built-in agents, by name (each module's table: baselines.STATIC, sb3.ALGORITHMS)
STATIC_AGENTS = ("vanilla", "albert", "sequence", "cycle", "cycle-rev", "paper-sequence",
                 "paper-reverse")
SB3_AGENTS = ("dqn", "ppo", "a2c", "maskable-ppo", "qrdqn", "recurrent-ppo")
# the static-K agents and their K roots (agents.schedules.STATIC_ROOTS): they need L >= K
STATIC_ROOTS = {f"static-{k}": k for k in (1, 2, 3, 4, 6, 8, 12)}

# each class declares its name; registered by path, imported when first made
for _name, _path in {
    "qlearning": "agents.qlearning:QLearningAgent",
    "qlearning-plus": "agents.qlearning:QLearningPlusAgent",
    "qlearning-fast": "agents.qlearning:QLearningFastAgent",
    "vanilla": "agents.baselines:ConventionalAgent",
    "untie-all": "agents.baselines:UntieAll",
    "albert": "agents.baselines:AlbertAgent",
    "sequence": "agents.baselines:SequenceAgent",
    "cycle": "agents.baselines:CycleAgent",
    "cycle-rev": "agents.baselines:CycleRevAgent",
    "paper-sequence": "agents.baselines:PaperSequenceAgent",
    "paper-reverse": "agents.baselines:PaperReverseAgent",
    "random": "agents.baselines:RandomAgent",
    "random-unmasked": "agents.baselines:RandomUnmaskedAgent",
    **{name: f"agents.schedules:Static{k}Agent" for name, k in STATIC_ROOTS.items()},
    "untie-then-tie": "agents.schedules:UntieThenTieAgent",
    "schedule-bandit": "agents.bandit:ScheduleBanditAgent",
    "dqn": "agents.sb3:DQNAgent",
    "ppo": "agents.sb3:PPOAgent",
    "a2c": "agents.sb3:A2CAgent",
    "maskable-ppo": "agents.sb3:MaskablePPOAgent",
    "qrdqn": "agents.sb3:QRDQNAgent",
    "recurrent-ppo": "agents.sb3:RecurrentPPOAgent",
}.items():
    register(_name, _path)

# public names, imported on first use (`StopAtEpisodeEnd` imports Stable-Baselines3)
_LAZY = {"Agent": "agents.base", "OneEpisode": "agents.base",
         "StopAtEpisodeEnd": "agents.sb3"}
__all__ = ["Agent", "OneEpisode", "SB3_AGENTS", "STATIC_AGENTS", "STATIC_ROOTS",
           "StopAtEpisodeEnd", "env_settings", "factory", "fits", "make", "names", "register",
           "unregister"]


def fits(name: str, n_layer: int) -> bool:
    """Whether agent `name` can play an environment of `n_layer` layers, without importing
    it: `static-K` needs at least K layers; every other agent plays any depth."""
    return STATIC_ROOTS.get(name, 1) <= n_layer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
