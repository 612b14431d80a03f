"""Llama (`LlamaForCausalLM`): rotary position embeddings, RMSNorm, a SwiGLU MLP.

Trained from scratch as a causal LM, input embeddings tied to the LM head (unless
`tie_embeddings=False`: Llama-2's own layout, an LM head of its own), one key/value head
per query head. The MLP's width is `8/3 * n_embd` rounded up to a multiple of 16 (Llama's
ratio, which keeps a SwiGLU MLP at the parameter count of a 4x GELU one) unless
`intermediate_size` (the `mlp_width` setting) says otherwise: Llama-2-7B's 11008 is
`8/3 * 4096` rounded up to a multiple of 256. Llama has no dropout on its residual stream:
`dropout` applies to the attention probabilities only.
"""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig, LlamaForCausalLM

from tying_env.models.family import CausalLM, DataShape, Family


def mlp_width(n_embd: int) -> int:
    """Llama's SwiGLU width for `n_embd`: `8/3 * n_embd`, rounded up to a multiple of 16."""
    return -(-8 * n_embd // (3 * 16)) * 16


def llama_config(n_layer: int, n_embd: int, n_head: int, seq_len: int, vocab_size: int,
                 dropout: float = 0.0, intermediate_size: int | None = None,
                 tie_embeddings: bool = True) -> LlamaConfig:
    """A Llama config trained from scratch, input embeddings tied to the LM head unless
    `tie_embeddings=False`; the MLP `intermediate_size` wide (None: `mlp_width(n_embd)`)."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=n_embd,
        intermediate_size=intermediate_size or mlp_width(n_embd), num_hidden_layers=n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_head,
        max_position_embeddings=seq_len, attention_dropout=dropout,
        tie_word_embeddings=tie_embeddings, use_cache=False, bos_token_id=0, eos_token_id=0,
        pad_token_id=None,
    )


def _config(cfg: Any, data: DataShape) -> LlamaConfig:
    return llama_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, data.vocab_size,
                        cfg.dropout, cfg.mlp_width or None, cfg.tie_embeddings)


LLAMA = Family(
    name="llama", label="Llama", task="causal-lm",
    model_class=LlamaForCausalLM, config_class=LlamaConfig, blocks=("model.layers",),
    input_name="input_ids", make_config=_config, make_task=lambda config: CausalLM(),
    description="Llama: RoPE, RMSNorm, SwiGLU MLP; causal LM (perplexity)",
)
