"""What the tying machinery needs to know about a model family: a small adapter.

A `Family` names the Hugging Face classes of one family, where its block list lives,
how to build its config from the environment's shape settings, and its `Task`: how a
batch of examples becomes `(inputs, targets)`. Everything else (tying, untying,
accounting, checkpoints, export) is generic and lives in `tying_env.models.tied`.

How the blocks are *called* is left to the Hugging Face model itself: its forward pass
walks its block list, giving each block what it needs (GPT-2 and BERT an attention mask,
Llama the rotary position embeddings), and a tied position's stand-in passes those
arguments on to its root's block unchanged.

Three tasks cover the five families. Each turns examples (rows of a 2-D integer array:
token windows, or image rows with the label last) into `(inputs, targets)`, and the loss
is always the mean cross-entropy of the logits against the targets that are not
`IGNORE` (-100), so its exponential is the perplexity:

| task | inputs | targets | metric |
|---|---|---|---|
| `CausalLM` (GPT-2, Llama, causal BERT) | `window[:-1]` | `window[1:]` | perplexity |
| `MaskedLM` (BERT) | `window[:-1]`, masked | the masked tokens | masked-token perplexity |
| `ImageClassification` (ViT) | pixels in [-1, 1] | the label | cross-entropy |

BERT's masking is the usual one: 15% of the tokens are chosen for prediction, 80% of
those replaced by `[MASK]`, 10% by a random token, 10% kept. ViT's accuracy is reported
beside its cross-entropy.

To add a family: write a module like `tying_env/models/llama.py` (a config builder and a
`Family(...)`), add it to `tying_env.models.FAMILIES`, and give it presets in
`tying_env.presets` (docs/families.md walks through it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

IGNORE = -100  # a target the loss leaves out (PyTorch's and Hugging Face's convention)
MASK_RATE = 0.15  # masked LM: the share of tokens chosen for prediction
MASK_SPLIT = (0.8, 0.1)  # of those: replaced by [MASK], by a random token (the rest kept)
EVAL_MASK_SEED = 2024  # masked LM: evaluation masks come from this seed, so they never vary


@dataclass(frozen=True)
class CausalLM:
    """Next-token prediction: the targets are the inputs shifted by one."""

    name: str = "causal-lm"
    metric: str = "perplexity"

    def batch(self, examples: np.ndarray,
              rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        return examples[:, :-1], examples[:, 1:]


@dataclass(frozen=True)
class MaskedLM:
    """BERT's masked-token prediction, the mask drawn from `rng` (training) or from
    `EVAL_MASK_SEED` (evaluation, `rng=None`: the same masks at every evaluation).

    `mask_id` is the `[MASK]` token, the last row of the embedding (the corpora have no
    such token, so the family adds one); random replacements are drawn from the corpus's
    own ids `[0, mask_id)`.
    """

    mask_id: int
    name: str = "masked-lm"
    metric: str = "masked-token perplexity"

    def batch(self, examples: np.ndarray,
              rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(EVAL_MASK_SEED) if rng is None else rng
        tokens = examples[:, :-1].astype(np.int64)
        draw = rng.random(tokens.shape)
        chosen = draw < MASK_RATE
        kind = rng.random(tokens.shape)
        random_ids = rng.integers(0, self.mask_id, size=tokens.shape)
        inputs = tokens.copy()
        inputs[chosen & (kind < MASK_SPLIT[0])] = self.mask_id
        swap = chosen & (kind >= MASK_SPLIT[0]) & (kind < MASK_SPLIT[0] + MASK_SPLIT[1])
        inputs[swap] = random_ids[swap]
        targets = np.where(chosen, tokens, IGNORE)
        return inputs, targets


@dataclass(frozen=True)
class ImageClassification:
    """Classify rows of uint8 pixels followed by the label, for a model of `channels x
    height x width` images.

    Rows of `channels * height * width` pixels are such images. Rows of another size must
    be square images of `channels` channels (a dataset the model sees resized, ViT's
    `image_size`): they keep their own size here, and the family's `prepare_inputs`
    resizes them on the model's device.
    """

    channels: int
    height: int
    width: int
    name: str = "image-classification"
    metric: str = "cross-entropy"

    def batch(self, examples: np.ndarray,
              rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        pixels = examples[:, :-1].astype(np.float32) * (2.0 / 255.0) - 1.0
        n = pixels.shape[1]
        side = math.isqrt(n // self.channels)
        if n == self.channels * self.height * self.width:
            size = (self.height, self.width)
        elif n == self.channels * side * side:
            size = (side, side)
        else:
            raise ValueError(f"rows of {n} pixels are neither {self.channels}x{self.height}x"
                             f"{self.width} images nor square {self.channels}-channel ones")
        shape = (len(examples), self.channels, *size)
        return pixels.reshape(shape), examples[:, -1].astype(np.int64)


Task = CausalLM | MaskedLM | ImageClassification


@dataclass(frozen=True)
class DataShape:
    """What a config needs to know about the data: the vocabulary (text) or the image
    geometry and classes (images)."""

    vocab_size: int = 0
    channels: int = 0
    height: int = 0
    width: int = 0
    n_classes: int = 0


@dataclass(frozen=True)
class Family:
    """One model family's adapter (see the module docstring).

    - `name`: the `family` setting, and the `model_type` this package writes in the
      configs it saves (`hf_config`, compact exports);
    - `label`: its name for people (model cards, pages): `"GPT-2"`, `"BERT"`, ...;
    - `model_class`, `config_class`: the Hugging Face classes trained from scratch;
    - `blocks`: the dotted paths where `model_class` may hold its block list
      (`("transformer.h",)`), the first that exists is used;
    - `input_name`: the keyword the model takes its inputs under;
    - `make_config(shape, data)`: the config for the environment's shape settings
      (`n_layer`, `n_embd`, `n_head`, `seq_len`, `dropout`, ... of an `EnvConfig`);
    - `make_task(config)`: the task, which may depend on the config (BERT's mask id);
    - `task`: the task's name (`"causal-lm"`, `"masked-lm"`, `"image-classification"`);
    - `data_kind`: `"text"` or `"images"`, the corpora it trains on;
    - `extra_tokens`: ids the family adds to the corpus's vocabulary (BERT: `[MASK]`);
    - `model_type`: the Hugging Face `model_type` of its configs when it is not `name`
      (the causal BERT's configs are `"bert"` ones), and `config_flags`: what such a
      config must say to be of this family (`{"is_decoder": True}`): `family_of` picks
      the family whose flags a config has, `as_config` sets missing flags of a dict and
      refuses contradicting ones;
    - `prepare_inputs(inputs, config)`: what the inputs need on the model's device before
      the model (ViT: images resized to the config's `image_size`); None: nothing.
    """

    name: str
    label: str  # the family's name for people: "GPT-2", "Llama", ...
    task: str
    model_class: type[PreTrainedModel]
    config_class: type[PretrainedConfig]
    blocks: tuple[str, ...]
    input_name: str
    make_config: Callable[[Any, DataShape], PretrainedConfig]
    make_task: Callable[[PretrainedConfig], Task]
    data_kind: str = "text"
    description: str = ""
    extra_tokens: int = 0  # ids the family adds to the corpus's vocabulary (BERT's [MASK])
    # config attributes that hold the shape settings (`n_layer`, `n_embd`, `n_head`)
    shape_fields: dict[str, str] = field(default_factory=lambda: {
        "n_layer": "num_hidden_layers", "n_embd": "hidden_size",
        "n_head": "num_attention_heads"})
    model_type: str = ""  # the Hugging Face model_type, when it is not `name`
    config_flags: dict[str, Any] = field(default_factory=dict)
    prepare_inputs: Callable[[torch.Tensor, PretrainedConfig], torch.Tensor] | None = None

    @property
    def hf_model_type(self) -> str:
        """The `model_type` of this family's Hugging Face configs."""
        return self.model_type or self.name

    def fits(self, config: PretrainedConfig | dict[str, Any]) -> bool:
        """Whether `config` (object or dict) says what `config_flags` ask."""
        get = config.get if isinstance(config, dict) else lambda k: getattr(config, k, None)
        return all(get(k) == v for k, v in self.config_flags.items())

    def blocks_path(self, model: nn.Module) -> str:
        """The first path of `blocks` that exists in `model` (releases of Hugging Face
        `transformers` differ: ViT's blocks are `vit.encoder.layer` in 4.x, `vit.layers`
        in 5.x)."""
        for path in self.blocks:
            if isinstance(_lookup(model, path), nn.ModuleList):
                return path
        raise ValueError(f"a {type(model).__name__} has no block list at "
                         f"{' or '.join(self.blocks)}")

    def block_list(self, model: nn.Module) -> nn.ModuleList:
        """The model's block list (at `blocks_path`)."""
        return _lookup(model, self.blocks_path(model))

    def set_block_list(self, model: nn.Module, blocks: nn.ModuleList) -> None:
        parent, _, last = self.blocks_path(model).rpartition(".")
        setattr(_lookup(model, parent) if parent else model, last, blocks)

    def shape(self, config: PretrainedConfig) -> dict[str, int]:
        """`n_layer`, `n_embd`, `n_head` of a config of this family."""
        return {ours: int(getattr(config, theirs)) for ours, theirs in self.shape_fields.items()}


def _lookup(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def set_layer_index(block: nn.Module, position: int) -> None:
    """Tell a root's block which position it runs at (Hugging Face's `layer_idx`, used by
    key/value caches): every submodule that has the attribute gets `position`."""
    for module in block.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = position
