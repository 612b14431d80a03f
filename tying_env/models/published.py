"""The published tie mechanics on a real model: `PublishedModel` (`tie_semantics="published"`).

Hay & Wolf's `DynamicGPT.apply_action` keeps one block of `Parameter` objects per position
and, for a decision on layer i, does only this (`tying_env.published_ties` replays it on
storage ids):

- *copy j* (`choice < i`): every parameter of block i is pointed at block j's current
  storage (`p_i.data = p_j.data`) and gets `requires_grad = False`;
- *independent* (`choice >= i`): every parameter of block i gets `requires_grad = True`,
  nothing else: the block stays on whatever storage it has.

No operation gives a block new storage, so distinct storages only merge; a re-tied block's
dependents stay, frozen, on its old tensor; a block made independent after a tie trains an
alias of another block's tensor as a second trainable `Parameter`. `PublishedModel` does
exactly that to the blocks of a Hugging Face model of any supported family (through its
adapter, `tying_env.models.family`).

How we read the published optimizer (`code/dqn_trainer.py`, `q_learn_loop`): it is
`AdamW(target_model.parameters(), lr, weight_decay=0.01)`, built once before the first
decision; after each decision only the model is passed through `accelerator.prepare`
again, so the optimizer's parameter list is never rebuilt. It holds every `Parameter` of
the model, trainable or not (`optimizer_parameters`): each trainable Parameter gets its own
gradient (autograd sees two leaves where two Parameters alias one storage) and its own
AdamW moments, gradient clipping takes the norm over all of those gradients, and every
update of an aliased Parameter lands on the shared storage, one after another. A Parameter
without a gradient (`requires_grad` off, and `zero_grad` set the old one to None) is
skipped, its state kept, stale, for when it trains again: state is never freed.
`tying_env.training.InnerOptimizer(..., aliased=True)` updates one Parameter at a time for
this: the published code's CUDA AdamW takes the multi-tensor path, whose kernels make no
promise for aliased inputs (two thread blocks may read-modify-write one element at once and
lose an update), so the sequential result is what the published code computes when no
update is lost, and what it computes on the CPU.

Our view of the state, for the environment: `ties` names, per position, the lowest position
that runs the same storage (a valid tie map: the storage's "root"); `frozen` the roots whose
storage no position trains; `trainable` the published flags per position. Counts: the
published "# trainable params" (`published_trainable_params`: `numel` over `requires_grad`
Parameters, an aliased storage once per trainable position) beside the unique count
(`param_counts`, as `TiedModel` counts); `memory_bytes` counts each storage once and every
gradient and optimizer moment as it exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from tying_env import dropout as fast_dropout
from tying_env import ties as tm
from tying_env.models.registry import as_config, family_of
from tying_env.models.tied import FamilyModel, MemoryBytes
from tying_env.ties import TieMap, Transition

StorageKey = tuple[Any, ...]


def _key(p: torch.Tensor) -> StorageKey:
    """What identifies the memory a tensor uses: two Parameters with one key alias."""
    return (p.device, p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape),
            p.dtype)


class PublishedModel(FamilyModel):
    """A Hugging Face model of a supported family whose blocks are tied as published.

    `config` (a config object or dict) names the family; the model is built from it,
    initialised from torch's current random state (as `TiedModel`: the same seed gives the
    same initial weights). `storage` (a tie map: per position, the lowest position on the
    same storage; default every block its own) and `trainable` (per position; default all)
    set the starting layout: `PublishedTies.start(L, initial_ties)` gives the published
    starts, a saved `ties` and `trainable` restore a checkpoint's.
    """

    tie_mode = "copy"  # how a non-trainable position runs its storage (for exports)

    def __init__(self, config: PretrainedConfig | dict[str, Any],
                 storage: Sequence[int] | None = None,
                 trainable: Sequence[bool] | None = None):
        super().__init__()
        self.family = family_of(config)
        self.config = as_config(config)
        self.task = self.family.make_task(self.config)
        self.net = fast_dropout.install(self.family.model_class(self.config))
        n = self.n_layer
        storage = tm.untied(n) if storage is None else tm.validate(storage)
        trainable = (True,) * n if trainable is None else tuple(trainable)
        if len(storage) != n or len(trainable) != n:
            raise ValueError(f"a layout of {len(storage)} storages and {len(trainable)} "
                             f"flags does not fit {n} layers")
        if any(not isinstance(t, bool) for t in trainable):
            raise ValueError(f"trainable flags must be bools, got {list(trainable)}")
        self._alias(storage)
        for block, flag in zip(self._blocks(), trainable, strict=True):
            block.requires_grad_(flag)

    # ------------------------------------------------------------------ the decisions
    @property
    def n_layer(self) -> int:
        return self.family.shape(self.config)["n_layer"]

    def _blocks(self) -> list[nn.Module]:
        return list(self.family.block_list(self.net))

    def block(self, position: int) -> nn.Module:
        """The block (module with its own `Parameter` objects) at `position`."""
        return self.family.block_list(self.net)[position]

    def choose(self, i: int, choice: int) -> Transition:
        """The published `apply_action(choice, i)`: copy `choice` if `choice < i`, else
        independent. Returns the change of `ties` (our view of the storages)."""
        if not 1 <= i < self.n_layer:
            raise ValueError(f"layer {i} out of range, allowed 1..{self.n_layer - 1}")
        if choice < 0:
            raise ValueError(f"choice for layer {i} must be >= 0, got {choice}")
        before = self.ties
        block = self.block(i)
        if choice < i:
            for source, param in zip(self.block(choice).parameters(), block.parameters(),
                                     strict=True):
                param.data = source.data  # j's storage *now*; i's old storage is released
                param.requires_grad = False
        else:
            block.requires_grad_(True)  # stays on whatever storage it has
        return Transition(before, self.ties)

    def _alias(self, storage: TieMap) -> None:
        """Point every position's parameters at its root's storage (`.data =`)."""
        blocks = self._blocks()
        for i, r in enumerate(storage):
            if r != i:
                for source, param in zip(blocks[r].parameters(), blocks[i].parameters(),
                                         strict=True):
                    param.data = source.data

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor],
               recurse: bool = True) -> PublishedModel:
        """`Module._apply` converts every Parameter apart (`.to`, `.bfloat16`, ...), which
        would give aliased ones storages of their own: alias them again afterwards."""
        storage = self.ties
        super()._apply(fn, recurse)
        self._alias(storage)
        return self

    # ------------------------------------------------------------------ our view
    @property
    def ties(self) -> TieMap:
        """Per position, the lowest position that runs the same storage."""
        first: dict[StorageKey, int] = {}
        return tuple(first.setdefault(_key(next(b.parameters())), i)
                     for i, b in enumerate(self._blocks()))

    @property
    def trainable(self) -> tuple[bool, ...]:
        """The published flags: whether each position's parameters require grad."""
        return tuple(next(b.parameters()).requires_grad for b in self._blocks())

    @property
    def frozen(self) -> tuple[int, ...]:
        """The roots of `ties` whose storage no position trains, ascending."""
        trained = {r for r, t in zip(self.ties, self.trainable, strict=True) if t}
        return tuple(r for r in tm.roots(self.ties) if r not in trained)

    @property
    def distinct_storages(self) -> int:
        """Blocks of weights that exist (positions grouped by storage)."""
        return len(tm.roots(self.ties))

    # -------------------------------------------------------------- accounting
    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Every Parameter, trainable or not, aliased or not: what the published AdamW holds
        (`model.parameters()` keeps each Parameter object once, the LM head's tied
        embedding too)."""
        return list(self.net.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The Parameters that require grad (several may alias one storage)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def block_numel(self) -> int:
        return sum(p.numel() for p in self.block(0).parameters())

    def published_trainable_params(self) -> int:
        """The published "# trainable params": `numel` over `requires_grad` Parameters, an
        aliased storage once per trainable position."""
        return sum(p.numel() for p in self.trainable_parameters())

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total): trainable elements counted once per storage, and those of
        the untied model."""
        unique = {_key(p): p.numel() for p in self.trainable_parameters()}
        in_blocks = {id(p) for b in self._blocks() for p in b.parameters()}
        other = sum(p.numel() for p in self.net.parameters() if id(p) not in in_blocks)
        return sum(unique.values()), other + self.n_layer * self.block_numel()

    def memory_bytes(self, optimizer: torch.optim.Optimizer | None = None) -> MemoryBytes:
        """Walk the real tensors: each storage once, every existing gradient (one per
        Parameter that has one) and all optimizer state (stale state included)."""
        params = {_key(p): p.nbytes for p in self.net.parameters()}
        grads = sum(p.grad.nbytes for p in self.net.parameters() if p.grad is not None)
        opt = 0
        if optimizer is not None:
            for state in optimizer.state.values():
                opt += sum(v.nbytes for v in state.values() if torch.is_tensor(v))
        return MemoryBytes(sum(params.values()), grads, opt)

    # ------------------------------------------------------------------ export
    def expanded_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the plain Hugging Face model running the same weights (untied)."""
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

