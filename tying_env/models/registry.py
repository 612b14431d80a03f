"""The supported families by name, and finding a config's family."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from tying_env.errors import SettingError
from tying_env.models.bert import BERT
from tying_env.models.bert_causal import BERT_CAUSAL
from tying_env.models.family import Family
from tying_env.models.gpt2 import GPT2
from tying_env.models.llama import LLAMA
from tying_env.models.vit import VIT

FAMILIES: dict[str, Family] = {f.name: f for f in (GPT2, LLAMA, BERT, VIT, BERT_CAUSAL)}
ADAPTER_NEEDS = ("the Hugging Face model and config classes, the dotted path of the block "
                 "list, the keyword of the model's inputs, a config builder from the shape "
                 "settings, and the task (how examples become inputs and targets): "
                 "see tying_env/models/family.py and docs/families.md")

def get_family(name: str) -> Family:
    """The family `name`; a `SettingError` lists the supported ones."""
    if name not in FAMILIES:
        raise SettingError("family", f"family={name!r} is not supported; supported: "
                                     f"{', '.join(FAMILIES)}. A new family needs an adapter: "
                                     f"{ADAPTER_NEEDS}")
    return FAMILIES[name]


def family_of(config: PretrainedConfig | dict[str, Any]) -> Family:
    """The family of a Hugging Face config (object or dict), by its `model_type`: a family's
    name (what this package writes in the configs it saves), or a Hugging Face model type,
    whose families are told apart by their `config_flags` (a `"bert"` config with
    `is_decoder=True` is causal BERT's, one without masked BERT's). A `SettingError` names
    the config's type and lists what is supported."""
    model_type = (config.get("model_type") if isinstance(config, dict)
                  else getattr(config, "model_type", None))
    named = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if named is not None and named.hf_model_type != model_type:
        return named  # our own name for it ("bert-causal"): its flags are as_config's
    fitting = [f for f in FAMILIES.values()
               if f.hf_model_type == model_type and f.fits(config)]
    if not fitting:
        kind = type(config).__name__ if not isinstance(config, dict) else "dict"
        raise SettingError("hf_config", f"a {kind} config of model_type={model_type!r} is not "
                                        f"supported; supported model types: "
                                        f"{', '.join(FAMILIES)}. A new family needs an "
                                        f"adapter: {ADAPTER_NEEDS}")
    return max(fitting, key=lambda f: len(f.config_flags))  # the most specific


def as_config(config: PretrainedConfig | dict[str, Any]) -> PretrainedConfig:
    """A Hugging Face config object of a supported family, from an object or a dict (a
    dict's missing `config_flags` are set; a contradicting one is refused)."""
    family = family_of(config)
    if isinstance(config, PretrainedConfig):
        if not isinstance(config, family.config_class):
            raise SettingError("hf_config", f"a {type(config).__name__} is not a "
                                            f"{family.config_class.__name__}")
        return config
    for key, value in family.config_flags.items():
        if key in config and config[key] != value:
            raise SettingError("hf_config", f"a {family.name} config needs {key}={value!r}, "
                                            f"this one has {key}={config[key]!r}")
    return family.config_class.from_dict({**family.config_flags, **{
        k: v for k, v in config.items() if k != "model_type"}})
