"""The tied transformer: a Hugging Face model whose block list follows a tie map.

The model is any family of `tying_env.models.FAMILIES` (GPT-2, Llama, BERT, ViT, causal
BERT), known here only through its adapter (`tying_env.models.family.Family`): where its
block list is, what its inputs are called, its task. Only *root* positions own a block. A
tied position holds a `TiedBlock`, a parameter-free stand-in that runs its root's block:

- `copy` mode (the published behaviour): the position runs a twin of the
  root whose parameters are detached views of the root's storage, so
  activations carry gradient through the position to earlier layers but no
  weight gradient from it reaches the root (and none is computed);
- `share` mode (ALBERT): the root's block is simply called again, so every
  position of a root adds its gradient to it.

Tied blocks therefore have no parameters, gradients or optimizer state: tying a
root frees its memory for real.

A root can also be *frozen* (`TiedModel.freeze`): it holds its block, which runs and
passes gradient to earlier layers, but its weights get no gradient and no optimizer
state. This reproduces the published start state (`initial_ties="frozen"`): every
block keeps its own random initialisation, frozen, until a decision unties it
(`untie` or `choose(i, >= i)` unfreezes it). Frozenness follows the block: a frozen
root handed to its lowest dependent (promotion) stays frozen; a clone made by
`untie` is trainable. This module knows nothing about Gymnasium.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from tying_env import dropout as fast_dropout
from tying_env import ties as tm
from tying_env.models.family import IGNORE, set_layer_index
from tying_env.models.registry import as_config, family_of
from tying_env.ties import TIE_MODES, TieMap, Transition


class TiedBlock(nn.Module):
    """Runs the block of another position (its root) without owning parameters."""

    def __init__(self, root: nn.Module, mode: str):
        super().__init__()
        # Kept in tuples so that PyTorch does not register them as children: the
        # root's parameters are counted (and saved) once, at the root's position.
        self._root = (root,)
        self._frozen: tuple[nn.Module, list[tuple[nn.Parameter, nn.Parameter]]] | None = None
        self.mode = mode

    @property
    def root(self) -> nn.Module:
        return self._root[0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "share":
            return self.root(*args, **kwargs)
        return self._frozen_root()(*args, **kwargs)

    def _frozen_root(self) -> nn.Module:
        """A twin of the root whose parameters are non-trainable views of the root's storage.

        The optimizer updates the root in place, so the twin always runs the root's
        current weights; it is rebuilt if the root's tensors are replaced (e.g. moved
        to another device).
        """
        if self._frozen is None or self._frozen[1][0][0].data_ptr() != \
                self._frozen[1][0][1].data_ptr():
            views = {id(p): nn.Parameter(p.detach(), requires_grad=False)
                     for p in self.root.parameters()}
            twin = copy.deepcopy(self.root, memo=dict(views))  # shares storage, allocates none
            pairs = [(views[id(p)], p) for p in self.root.parameters()]
            self._frozen = (twin, pairs)
        twin = self._frozen[0]
        if twin.training != self.root.training:
            twin.train(self.root.training)
        return twin

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


@dataclass(frozen=True)
class MemoryBytes:
    """Bytes held by parameters, their gradients and the optimizer state."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer

    def to_dict(self) -> dict[str, int]:
        return dict(params=self.params, grads=self.grads, optimizer=self.optimizer,
                    total=self.total)


class FamilyModel(nn.Module):
    """What a model of tied blocks computes, whatever its tie mechanics: the logits of its
    Hugging Face model `net` (of family adapter `family`), the training loss, and the plain
    Hugging Face model running the same weights (`to_hf`, from `expanded_state_dict`)."""

    net: PreTrainedModel
    family: Any
    config: PretrainedConfig

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits: (batch, seq, vocab) for language models, (batch, classes) for images
        (inputs first through the family's `prepare_inputs`: ViT resizes images)."""
        if self.family.prepare_inputs is not None:
            inputs = self.family.prepare_inputs(inputs, self.config)
        return self.net(**{self.family.input_name: inputs}).logits

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of targets `y` (those not `IGNORE`) given inputs `x`, in
        float32 (from bfloat16 logits too, as autocast does)."""
        return self.loss_and_logits(x, y)[0]

    def loss_and_logits(self, x: torch.Tensor,
                        y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(x)
        loss = F.cross_entropy(logits.flatten(0, -2).float(), y.flatten(), ignore_index=IGNORE)
        return loss, logits

    def expanded_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the plain Hugging Face model running the same weights (untied)."""
        raise NotImplementedError

    def to_hf(self) -> PreTrainedModel:
        """A standalone, untied Hugging Face model of the family giving the same outputs."""
        config = copy.deepcopy(self.config)
        config._attn_implementation = "sdpa"  # a plain model, loadable without this package
        model = self.family.model_class(config)
        model.load_state_dict(self.expanded_state_dict())
        return model.eval()


class TiedModel(FamilyModel):
    """A Hugging Face model of a supported family whose blocks are tied by a tie map.

    `config` (a config object or dict) names the family by its `model_type`; the model is
    built from it, initialised from torch's current random state. `net` is the Hugging
    Face model itself (its block list holds the roots' blocks and `TiedBlock`s).
    """

    def __init__(self, config: PretrainedConfig | dict[str, Any], tie_mode: str = "copy",
                 ties: Sequence[int] | None = None, frozen: Sequence[int] = ()):
        super().__init__()
        if tie_mode not in TIE_MODES:
            raise ValueError(f"tie_mode={tie_mode!r} is unknown; allowed: {', '.join(TIE_MODES)}")
        self.family = family_of(config)
        self.config = as_config(config)
        self.task = self.family.make_task(self.config)
        self.tie_mode = tie_mode
        self.net = fast_dropout.install(self.family.model_class(self.config))
        self._owned: dict[int, nn.Module] = dict(enumerate(self.family.block_list(self.net)))
        self._ties: TieMap = tm.untied(self.n_layer)
        self._frozen: set[int] = set()
        if ties is not None:
            self.set_ties(ties)
        self.freeze(frozen)

    # ------------------------------------------------------------------ tie map
    @property
    def n_layer(self) -> int:
        return self.family.shape(self.config)["n_layer"]

    @property
    def ties(self) -> TieMap:
        return self._ties

    def block(self, position: int) -> nn.Module:
        """The block (module with weights) that `position` runs."""
        return self._owned[self._ties[position]]

    @property
    def frozen(self) -> tuple[int, ...]:
        """The roots whose block is frozen (held and run, but not trained), ascending."""
        return tuple(sorted(self._frozen))

    def freeze(self, positions: Sequence[int]) -> None:
        """Freeze the blocks of these roots: no gradients, no optimizer state (the caller's
        optimizer must then `sync`); ValueError for a position that is not a root."""
        for i in positions:
            if not 0 <= i < self.n_layer or self._ties[i] != i:
                raise ValueError(f"only roots can be frozen; position {i} of tie map "
                                 f"{list(self._ties)} is not one")
        for i in positions:
            self._owned[i].requires_grad_(False)
            self._frozen.add(i)

    def _unfreeze(self, i: int) -> None:
        if i in self._frozen:
            self._frozen.discard(i)
            self._owned[i].requires_grad_(True)

    def apply_transition(self, transition: Transition) -> Transition:
        """Carry out a transition computed by `tying_env.ties` on this model's map."""
        if transition.before != self._ties:
            raise ValueError(f"transition starts from {list(transition.before)}, "
                             f"but the model's tie map is {list(self._ties)}")
        if not transition.changed:
            return transition
        after = transition.after
        owned = dict(self._owned)
        frozen = set(self._frozen)
        if transition.promoted is not None:  # dependents keep the weights they ran
            old, heir = transition.promoted
            owned[heir] = owned.pop(old)
            if old in frozen:  # frozen weights stay frozen
                frozen.discard(old)
                frozen.add(heir)
        elif transition.cloned is not None:  # own storage, fresh optimizer state
            position, source = transition.cloned
            owned[position] = copy.deepcopy(owned[source]).requires_grad_(True)
        else:  # a root nobody else ran became tied: its weights are freed
            for r in set(owned) - set(tm.roots(after)):
                del owned[r]
                frozen.discard(r)
        self._owned = owned
        self._frozen = frozen
        self._ties = after
        self._rebuild()
        return transition

    def tie(self, i: int, j: int) -> Transition:
        return self.apply_transition(tm.tie(self._ties, i, j))

    def untie(self, i: int) -> Transition:
        """Position i trains its own weights: a clone of what it ran, or, for a frozen root,
        its own block, unfrozen (the transition is then unchanged: see `frozen`)."""
        transition = self.apply_transition(tm.untie(self._ties, i))
        self._unfreeze(i)
        return transition

    def choose(self, i: int, choice: int) -> Transition:
        """The published action convention: `choice < i` copies it, else independent."""
        transition = self.apply_transition(tm.apply_choice(self._ties, i, choice))
        if choice >= i:
            self._unfreeze(i)
        return transition

    def set_ties(self, target: Sequence[int]) -> None:
        """Reach `target` by a sequence of decisions (layers 1..L-1 in order)."""
        target = tm.validate(target)
        if len(target) != self.n_layer:
            raise ValueError(f"tie map {list(target)} has {len(target)} positions, "
                             f"the model has {self.n_layer} layers")
        for i in range(1, self.n_layer):
            self.choose(i, target[i])
        if self._ties != target:  # a later decision promoted an earlier root's dependents
            raise AssertionError(f"reached {list(self._ties)}, wanted {list(target)}")

    def _rebuild(self) -> None:
        blocks = []
        for i, r in enumerate(self._ties):
            if r == i:
                block = self._owned[i]
                set_layer_index(block, i)
                blocks.append(block)
            else:
                blocks.append(TiedBlock(self._owned[r], self.tie_mode))
        self.family.set_block_list(self.net, nn.ModuleList(blocks))

    # -------------------------------------------------------------- accounting
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Unique trainable tensors, in a stable order (embeddings, roots, final norm)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def block_numel(self) -> int:
        return sum(p.numel() for p in next(iter(self._owned.values())).parameters())

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total): unique trainable elements, and those of the untied model."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        shared = trainable - (len(self._owned) - len(self._frozen)) * self.block_numel()
        return trainable, shared + self.n_layer * self.block_numel()

    def memory_bytes(self, optimizer: torch.optim.Optimizer | None = None) -> MemoryBytes:
        """Walk the real tensors: parameters, existing gradients, optimizer state."""
        params = list(self.net.parameters())
        grads = sum(p.grad.nbytes for p in params if p.grad is not None)
        opt = 0
        if optimizer is not None:
            for state in optimizer.state.values():
                opt += sum(v.nbytes for v in state.values() if torch.is_tensor(v))
        return MemoryBytes(sum(p.nbytes for p in params), grads, opt)

    # ------------------------------------------------------------------ export
    def expanded_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the plain Hugging Face model running the same weights (untied)."""
        prefix = self.family.blocks_path(self.net) + "."
        state = {}
        for key, value in self.net.state_dict().items():
            if key.startswith(prefix):
                root, _, rest = key[len(prefix):].partition(".")
                for i in (k for k, r in enumerate(self._ties) if r == int(root)):
                    state[f"{prefix}{i}.{rest}"] = value.detach().clone()
            else:
                state[key] = value.detach().clone()
        return state

