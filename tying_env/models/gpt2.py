"""GPT-2 (`GPT2LMHeadModel`): a causal LM, input embeddings tied to the LM head (by default).

The MLP is `4 * n_embd` wide unless `intermediate_size` (the `mlp_width` setting) says
otherwise; `tie_embeddings=False` gives the model an LM head of its own.
"""

from __future__ import annotations

from typing import Any

from transformers import GPT2Config, GPT2LMHeadModel

from tying_env.models.family import CausalLM, DataShape, Family


def gpt2_config(n_layer: int, n_embd: int, n_head: int, seq_len: int, vocab_size: int,
                dropout: float = 0.0, activation: str = "gelu",
                intermediate_size: int | None = None,
                tie_embeddings: bool = True) -> GPT2Config:
    """A GPT-2 config trained from scratch, input embeddings tied to the LM head unless
    `tie_embeddings=False`; the MLP `intermediate_size` wide (None: `4 * n_embd`)."""
    return GPT2Config(
        vocab_size=vocab_size, n_positions=seq_len, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, n_inner=intermediate_size, resid_pdrop=dropout, embd_pdrop=dropout,
        attn_pdrop=dropout, activation_function=activation,
        tie_word_embeddings=tie_embeddings, use_cache=False, bos_token_id=0, eos_token_id=0,
    )


def _config(cfg: Any, data: DataShape) -> GPT2Config:
    return gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, data.vocab_size,
                       cfg.dropout, cfg.activation, cfg.mlp_width or None, cfg.tie_embeddings)


GPT2 = Family(
    name="gpt2", label="GPT-2", task="causal-lm",
    model_class=GPT2LMHeadModel, config_class=GPT2Config, blocks=("transformer.h",),
    input_name="input_ids", make_config=_config, make_task=lambda config: CausalLM(),
    description="GPT-2: learnt positions, LayerNorm, GELU MLP; causal LM (perplexity)",
    shape_fields={"n_layer": "n_layer", "n_embd": "n_embd", "n_head": "n_head"},
)
