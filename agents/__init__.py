"""Agents for the layer-tying environments, behind one small interface.

`agents.make(name, env, seed=0, **hparams)` builds a registered agent;
`agents.names()` lists them; a name `"package.module:ClassName"` builds an unregistered
agent class. The built-in agents are registered here by name and
imported (with torch, and SB3 for the `agents.sb3` adapters) only when one is made,
so `import agents` stays light.

- `agents.qlearning`: `qlearning` (the paper's), `qlearning-fast` (its exploration
  shortened for 10-sweep budgets), `qlearning-plus`;
- `agents.baselines`: `vanilla` (conventional training), `untie-all`, `albert`,
  `sequence`, `cycle`, `cycle-rev`, `paper-sequence`, `paper-reverse`, `random`;
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

register("qlearning", "agents.qlearning:QLearningAgent")
register("qlearning-plus", "agents.qlearning:QLearningPlusAgent")
# the paper's Q-learner with epsilon x 0.6 per sweep: at its 0.01 floor after 9 sweeps
register("qlearning-fast", "agents.qlearning:QLearningAgent", epsilon_decay=0.6)
register("vanilla", "agents.baselines:ConventionalAgent")
for _name in STATIC_AGENTS[1:]:
    register(_name, "agents.baselines:StaticAgent", pattern=_name)
register("untie-all", "agents.baselines:UntieAll")
register("random", "agents.baselines:RandomAgent")
for _name in SB3_AGENTS:
    register(_name, "agents.sb3:SB3Agent", algo=_name)

# public names, imported on first use (`StopAtEpisodeEnd` imports Stable-Baselines3)
_LAZY = {"Agent": "agents.base", "OneEpisode": "agents.base",
         "StopAtEpisodeEnd": "agents.sb3"}
__all__ = ["Agent", "OneEpisode", "SB3_AGENTS", "STATIC_AGENTS", "StopAtEpisodeEnd",
           "env_settings", "factory", "make", "names", "register", "unregister"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
