"""The inner optimizer: AdamW that follows every change of the tie map.

After each decision call :meth:`InnerOptimizer.sync` with the model's current
trainable tensors: the state of tensors that are gone (a root became tied) is
deleted, so its memory is freed, and new tensors (an untied clone) start with
fresh state. Tensors that survive (including a root handed to its lowest
dependent) keep their state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def lr_factor(step: int, warmup_steps: int, total_steps: int | None, cosine: bool) -> float:
    """Linear warm-up to 1, then constant or cosine decay to 0.1 at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine or not total_steps:
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class InnerOptimizer:
    """AdamW with weight decay, gradient clipping and an optional warm-up/cosine schedule."""

    def __init__(self, params: Sequence[nn.Parameter], lr: float, weight_decay: float = 0.01,
                 grad_clip: float = 1.0, warmup_steps: int = 0, total_steps: int | None = None,
                 cosine: bool = False):
        self.base_lr = lr
        self.grad_clip = grad_clip
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.cosine = cosine
        self.steps = 0
        self.optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)
        self._set_lr()

    @property
    def params(self) -> list[nn.Parameter]:
        return self.optimizer.param_groups[0]["params"]

    def sync(self, params: Sequence[nn.Parameter]) -> None:
        """Follow the model's trainable tensors: free state of removed ones."""
        params = list(params)
        keep = {id(p) for p in params}
        for p in list(self.optimizer.state):
            if id(p) not in keep:
                del self.optimizer.state[p]
        for p in self.params:
            if id(p) not in keep:
                p.grad = None  # the gradient of a freed tensor must not linger either
        self.optimizer.param_groups[0]["params"] = params

    def step(self, loss: torch.Tensor) -> float:
        """Backward, clip, update; returns the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.steps += 1
        self._set_lr()
        return float(norm)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _set_lr(self) -> None:
        factor = lr_factor(self.steps, self.warmup_steps, self.total_steps, self.cosine)
        self.optimizer.param_groups[0]["lr"] = self.base_lr * factor
