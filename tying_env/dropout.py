"""Dropout that is fast on the CPU, for the GPT-2 the environment trains.

PyTorch's CPU dropout draws its mask with `bernoulli_`, which took about 30%
of an inner training step at the `small` preset (dropout 0.2). Comparing
uniform numbers with `p` gives the same distribution of masks at about half
the cost. The same holds for attention dropout, which also keeps CPU attention
off its fused kernel; this module's attention function computes causal
attention with the cheap mask. On other devices both defer to PyTorch's and
Hugging Face's own kernels, and without dropout (evaluation) nothing changes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "layer_tying_sdpa"


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout; on the CPU the mask comes from `rand_like(x) >= p`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * ((torch.rand_like(x) >= p) * (1.0 / (1.0 - p))).to(x.dtype)


class Dropout(nn.Dropout):
    """`nn.Dropout` with the fast CPU mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0,
              scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Causal attention (Hugging Face's attention-function signature), fast dropout on CPU."""
    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    scores = (query @ key.transpose(-1, -2)) * scale
    if attention_mask is None:  # causal, no padding: the mask Hugging Face leaves out
        q_len, k_len = scores.shape[-2:]
        future = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill(future.triu(k_len - q_len + 1), float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask
    probs = _dropout_probs(torch.softmax(scores, dim=-1), dropout)
    return (probs @ value).transpose(1, 2).contiguous(), None


_dropout_probs = dropout  # the parameter `dropout` of `attention` shadows the function


def install(model: nn.Module) -> nn.Module:
    """Use the fast dropout in every dropout module and in the attention of `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
    model.config._attn_implementation = ATTENTION
    return model


AttentionInterface.register(ATTENTION, attention)
