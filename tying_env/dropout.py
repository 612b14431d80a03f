"""Dropout that is cheap on the CPU, for the transformers the environment trains.

On the CPU, PyTorch draws a dropout mask with `bernoulli_`, and at the small
shapes of the environment random numbers and mask arithmetic, not matrix
products, set the pace of an inner step. This module draws the mask from raw
random bits instead: one 64-bit draw of torch's generator gives two
independent 32-bit integers (half the draws of one float per element), and an
element is kept when its integer lies above `round(p * 2**32)` in the
unsigned range. The mask is built with vectorised float arithmetic only
(`keep_mask`); comparing in float32 moves the threshold by at most 2**-24
of probability, the resolution of a float32 uniform. The 1 / (1 - p)
rescaling is folded into the smallest tensor that can carry it (for attention,
the output of `probs @ value`).

Attention with dropout uses this mask in an explicit attention (causal where the
attention module says so, `is_causal`, and no mask is given: GPT-2, Llama; bidirectional
for BERT and ViT);
without dropout (evaluation), and on other devices, both defer to PyTorch's and
Hugging Face's own kernels.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "layer_tying_sdpa"
_INT32_MIN = -(2 ** 31)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """A float mask of `shape`: 1.0 (keep) with probability 1 - `p`, else 0.0.

    Each 64-bit draw of torch's generator yields two of the mask's elements.
    """
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device)
    words.random_(-(2 ** 63), None)  # the full 64-bit range: every bit uniform
    halves = words.view(torch.int32)[:n].view(shape)
    threshold = _INT32_MIN + round(p * 2 ** 32)
    # sign(h - threshold) is 1 above the threshold, else 0 or -1; relu keeps the 1s
    return halves.to(torch.float32).sub_(threshold).sign_().relu_()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout; on the CPU with the mask of `keep_mask`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p).mul_(1.0 / (1.0 - p)).to(x.dtype)


class Dropout(nn.Dropout):
    """`nn.Dropout` with the cheap CPU mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


@functools.lru_cache(maxsize=16)
def causal_bias(q_len: int, k_len: int, device: str) -> torch.Tensor:
    """0 where a query may see a key, -inf above the causal diagonal (added to the scores)."""
    bias = torch.zeros(q_len, k_len, device=device)
    return bias.masked_fill_(torch.ones_like(bias, dtype=torch.bool).triu(k_len - q_len + 1),
                             float("-inf"))


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0,
              scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention (Hugging Face's attention-function signature), cheap dropout on the CPU;
    causal when `module.is_causal` and no mask is given."""
    if dropout == 0.0 or query.device.type != "cpu":
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if key.shape[1] != query.shape[1]:  # grouped key/value heads (e.g. a Llama config's)
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    scores = (query * scale) @ key.transpose(-1, -2)  # scaling q: fewer elements than scores
    if attention_mask is None:
        if getattr(module, "is_causal", True):  # causal, no padding: the mask HF leaves out
            q_len, k_len = scores.shape[-2:]
            scores += causal_bias(q_len, k_len, str(scores.device))  # adding: no backward
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill_(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    kept = probs * keep_mask(probs.shape, dropout).to(probs.dtype)
    out = (kept @ value).mul_(1.0 / (1.0 - dropout))
    return out.transpose(1, 2).contiguous(), None


def install(model: nn.Module) -> nn.Module:
    """Use the cheap dropout in every dropout module and in the attention of `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
    model.config._attn_implementation = ATTENTION
    return model


AttentionInterface.register(ATTENTION, attention)
