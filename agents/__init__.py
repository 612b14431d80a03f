"""Agents for the layer-tying environments, behind one small interface.

``agents.make(name, env, seed=0, **hparams)`` builds a registered agent;
``agents.names()`` lists them.
"""

from agents.base import Agent, OneEpisode, make, names, register

__all__ = ["Agent", "OneEpisode", "make", "names", "register"]
