"""The tied transformer: generic tying over a block list, one small adapter per family.

- `tied.TiedModel`: any supported Hugging Face model whose block list follows a tie map;
- `published.PublishedModel`: the same models tied as the published code ties them
  (storage aliasing and `requires_grad` flags, `tie_semantics="published"`);
- `family.Family`: what the machinery needs to know about a family (its classes, where
  its blocks are, its config, its task); `gpt2`, `llama`, `bert`, `vit` and `bert_causal`
  (BERT as a causal LM, the published `CustomBert`) hold one each.
"""

from __future__ import annotations

from tying_env.models.bert import bert_config
from tying_env.models.bert_causal import bert_causal_config
from tying_env.models.family import DataShape, Family
from tying_env.models.gpt2 import gpt2_config
from tying_env.models.llama import llama_config
from tying_env.models.published import PublishedModel
from tying_env.models.registry import FAMILIES, as_config, family_of, get_family
from tying_env.models.tied import MemoryBytes, TiedBlock, TiedModel
from tying_env.models.vit import vit_config

__all__ = ["FAMILIES", "DataShape", "Family", "MemoryBytes", "PublishedModel", "TiedBlock",
           "TiedModel", "as_config", "bert_causal_config", "bert_config", "family_of",
           "get_family", "gpt2_config", "llama_config", "vit_config"]
