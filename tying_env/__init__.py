"""Dynamic layer tying (Hay & Wolf, ICLR 2024) as a Gymnasium environment.

Importing this package registers the environment ids::

    import gymnasium as gym
    import tying_env

    env = gym.make("LayerTying-GPT2-Tiny-v0")
"""

from gymnasium.envs.registration import register

from tying_env.env import LayerTyingEnv
from tying_env.model import TiedGPT2
from tying_env.presets import PRESETS, EnvConfig, make_config

__all__ = ["LayerTyingEnv", "TiedGPT2", "EnvConfig", "PRESETS", "make_config", "ENV_IDS"]

ENV_IDS = {
    "LayerTying-GPT2-v0": dict(preset="small", dataset="wikitext-2"),
    "LayerTying-GPT2-Tiny-v0": dict(preset="tiny", dataset="synthetic"),
}

for _env_id, _kwargs in ENV_IDS.items():
    register(id=_env_id, entry_point="tying_env.env:LayerTyingEnv", kwargs=_kwargs)
