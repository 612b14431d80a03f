"""Causal BERT (`BertLMHeadModel`, `is_decoder=True`): BERT's blocks trained as a causal LM.

The published code's `CustomBert` is this model: BERT's encoder layers under a causal
attention mask (`is_decoder=True`), its LM head, trained from scratch on next-token
prediction (`CausalLM`: `window[:-1]` predicts `window[1:]`), so `val_ppl` is a perplexity
comparable with GPT-2's and Llama's on the same tokens. The masked-LM family (`bert`,
`tying_env.models.bert`) is this package's own BERT task.

Its configs are Hugging Face `"bert"` configs with `is_decoder=True` (the family's
`config_flags`): `family_of` gives this family for such a config, masked BERT for one
without. No `[MASK]` token is added. The rest is `bert_config`'s: learnt positions
(`seq_len` of them), one segment type, no padding id, input embeddings tied to the LM
head (unless `tie_embeddings=False`), an MLP of `4 * n_embd` (or `intermediate_size`).
"""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, BertLMHeadModel

from tying_env.models.bert import bert_config
from tying_env.models.family import CausalLM, DataShape, Family


def bert_causal_config(n_layer: int, n_embd: int, n_head: int, seq_len: int, vocab_size: int,
                       dropout: float = 0.0, intermediate_size: int | None = None,
                       tie_embeddings: bool = True) -> BertConfig:
    """A causal BERT config (`is_decoder=True`) trained from scratch for `vocab_size` ids."""
    return bert_config(n_layer, n_embd, n_head, seq_len, vocab_size, dropout,
                       intermediate_size, tie_embeddings, extra_tokens=0, is_decoder=True)


def _config(cfg: Any, data: DataShape) -> BertConfig:
    return bert_causal_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len,
                              data.vocab_size, cfg.dropout, cfg.mlp_width or None,
                              cfg.tie_embeddings)


BERT_CAUSAL = Family(
    name="bert-causal", label="causal BERT", task="causal-lm",
    model_class=BertLMHeadModel, config_class=BertConfig, blocks=("bert.encoder.layer",),
    input_name="input_ids", make_config=_config, make_task=lambda config: CausalLM(),
    description="causal BERT: BERT's layers under a causal mask (is_decoder); causal LM "
                "(perplexity), the published CustomBert",
    model_type="bert", config_flags={"is_decoder": True},
)
