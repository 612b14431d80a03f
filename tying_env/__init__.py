"""Dynamic layer tying (Hay & Wolf, ICLR 2024) as a Gymnasium environment.

Importing this package registers the environment ids (cheaply: torch and
transformers are imported when an environment is made)::

    import gymnasium as gym
    import tying_env

    env = gym.make("LayerTying-GPT2-Tiny-v0")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # the package's version (pyproject.toml reads it from here)

ENV_ENTRY_POINT = "tying_env.env:LayerTyingEnv"
ENV_IDS = {
    "LayerTying-GPT2-v0": dict(preset="small", dataset="wikitext-2"),
    "LayerTying-GPT2-Tiny-v0": dict(preset="tiny", dataset="synthetic"),
    "LayerTying-Llama-v0": dict(preset="llama-small"),
    "LayerTying-Llama-Tiny-v0": dict(preset="llama-tiny"),
    "LayerTying-BERT-v0": dict(preset="bert-small"),
    "LayerTying-BERT-Tiny-v0": dict(preset="bert-tiny"),
    "LayerTying-ViT-v0": dict(preset="vit-small"),
    "LayerTying-ViT-Tiny-v0": dict(preset="vit-tiny"),
}

# benchmark tracks emulated by a model of their logged runs: id -> the shipped model
SURROGATE_ENTRY_POINT = "tying_env.surrogate.env:SurrogateEnv"
SURROGATE_IDS = {"LayerTying-Surrogate-Deep-v0": "deep-v1"}


def register_ids() -> None:
    """Register the ids of `ENV_IDS` that are not registered yet (idempotent, no warnings).

    Called on import, and by Gymnasium's plugin loader (versions before 1.0) through the
    `gymnasium.envs` entry point in `pyproject.toml`. Gymnasium is imported here, after
    this function exists: an `import tying_env` that comes first makes that loader call
    it while this module is still being imported.
    """
    from gymnasium.envs.registration import register, registry

    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=ENV_ENTRY_POINT, kwargs=dict(kwargs))
    for env_id, model in SURROGATE_IDS.items():  # the tracks emulated (tying_env.surrogate)
        if env_id not in registry:
            register(id=env_id, entry_point=SURROGATE_ENTRY_POINT, kwargs={"model": model})


register_ids()

# public names, imported on first use so that `import tying_env` stays light
_LAZY = {
    "LayerTyingEnv": "tying_env.env",
    "TiedModel": "tying_env.models",
    "EnvConfig": "tying_env.presets",
    "PRESETS": "tying_env.presets",
    "make_config": "tying_env.presets",
}
__all__ = [*_LAZY, "ENV_IDS", "ENV_ENTRY_POINT", "SURROGATE_IDS", "register_ids"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tying_env' has no attribute {name!r}")
