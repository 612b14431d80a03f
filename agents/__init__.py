"""Agents for the layer-tying environments, behind one small interface.

``agents.make(name, env, seed=0, **hparams)`` builds a registered agent;
``agents.names()`` lists them. Importing this package registers the paper's
Q-learner (``agents.qlearning``), the static baselines (``agents.baselines``)
and the Stable-Baselines3 / sb3-contrib adapters (``agents.sb3``).
"""

from agents import baselines, qlearning, sb3
from agents.base import Agent, OneEpisode, make, names, register, unregister

__all__ = ["Agent", "OneEpisode", "make", "names", "register", "unregister", "baselines",
           "qlearning", "sb3"]
