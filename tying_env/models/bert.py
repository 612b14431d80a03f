"""BERT (`BertForMaskedLM`): a bidirectional encoder trained by masked-token prediction.

The corpora have no `[MASK]` token, so the vocabulary gets one more id, the last
(`vocab_size` of the corpus); the masking (15% of tokens, 80/10/10) is `MaskedLM`'s. The
input embeddings are tied to the LM head (unless `tie_embeddings=False`); there is one
segment type and no padding (every window is full). The MLP is `4 * n_embd` wide unless
`intermediate_size` (the `mlp_width` setting) says otherwise.
"""

from __future__ import annotations

from typing import Any

from transformers import BertConfig, BertForMaskedLM

from tying_env.models.family import DataShape, Family, MaskedLM

MASK_TOKENS = 1  # the [MASK] id, added after the corpus's ids


def bert_config(n_layer: int, n_embd: int, n_head: int, seq_len: int, vocab_size: int,
                dropout: float = 0.0, intermediate_size: int | None = None,
                tie_embeddings: bool = True, extra_tokens: int = MASK_TOKENS,
                **flags: Any) -> BertConfig:
    """A BERT config trained from scratch for a corpus of `vocab_size` ids (plus
    `extra_tokens`: `[MASK]`); `flags` are further `BertConfig` settings (`is_decoder`)."""
    return BertConfig(
        vocab_size=vocab_size + extra_tokens, hidden_size=n_embd, num_hidden_layers=n_layer,
        num_attention_heads=n_head, intermediate_size=intermediate_size or 4 * n_embd,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=seq_len, type_vocab_size=1, pad_token_id=None,
        tie_word_embeddings=tie_embeddings, use_cache=False, **flags,
    )


def _config(cfg: Any, data: DataShape) -> BertConfig:
    return bert_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, data.vocab_size,
                       cfg.dropout, cfg.mlp_width or None, cfg.tie_embeddings)


BERT = Family(
    name="bert", label="BERT", task="masked-lm",
    model_class=BertForMaskedLM, config_class=BertConfig, blocks=("bert.encoder.layer",),
    input_name="input_ids", make_config=_config,
    make_task=lambda config: MaskedLM(mask_id=config.vocab_size - 1),
    extra_tokens=MASK_TOKENS,
    description="BERT: bidirectional encoder; masked LM (masked-token perplexity)",
)
