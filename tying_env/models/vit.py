"""ViT (`ViTForImageClassification`): a vision transformer over image patches.

Trained from scratch to classify; the reward's metric is the validation cross-entropy
(`val_ppl` is its exponential), the accuracy is reported beside it. `patch_size` must
divide the image's height and width. The MLP is `4 * n_embd` wide unless
`intermediate_size` (the `mlp_width` setting) says otherwise.

The model sees images of its config's `image_size`: the dataset's own size, or the
`image_size` setting (the published ViT: CIFAR-10's 32 x 32 images resized to 224 x 224).
Images of another size are resized on the model's device, in `prepare_inputs`, bilinearly
(the published `ViTImageProcessor` resizes with Pillow's bilinear filter), so batches and
the corpus stay at the dataset's size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig, ViTConfig, ViTForImageClassification

from tying_env.models.family import DataShape, Family, ImageClassification


def vit_config(n_layer: int, n_embd: int, n_head: int, image_size: tuple[int, int],
               channels: int, n_classes: int, patch_size: int,
               dropout: float = 0.0, intermediate_size: int | None = None) -> ViTConfig:
    """A ViT config trained from scratch for `n_classes` classes, the MLP
    `intermediate_size` wide (None: `4 * n_embd`)."""
    height, width = image_size
    return ViTConfig(
        hidden_size=n_embd, num_hidden_layers=n_layer, num_attention_heads=n_head,
        intermediate_size=intermediate_size or 4 * n_embd, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, image_size=height if height == width
        else [height, width], patch_size=patch_size, num_channels=channels,
        num_labels=n_classes,
    )


def image_size(config: PretrainedConfig) -> tuple[int, int]:
    """(height, width) of the images a ViT config takes."""
    size = config.image_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(pixels: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """`pixels` (batch, channels, height, width) at the config's image size: bilinear,
    half-pixel centres (`align_corners=False`); unchanged when they already are."""
    size = image_size(config)
    if tuple(pixels.shape[-2:]) == size:
        return pixels
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)


def _config(cfg: Any, data: DataShape) -> ViTConfig:
    side = cfg.image_size
    size = (side, side) if side else (data.height, data.width)
    return vit_config(cfg.n_layer, cfg.n_embd, cfg.n_head, size, data.channels,
                      data.n_classes, cfg.patch_size, cfg.dropout, cfg.mlp_width or None)


def _task(config: ViTConfig) -> ImageClassification:
    return ImageClassification(config.num_channels, *image_size(config))


VIT = Family(
    name="vit", label="ViT", task="image-classification",
    model_class=ViTForImageClassification, config_class=ViTConfig,
    blocks=("vit.layers", "vit.encoder.layer"), input_name="pixel_values", make_config=_config,
    make_task=_task, data_kind="images", prepare_inputs=resize,
    description="ViT: patch embeddings, a [CLS] token; image classification (cross-entropy)",
    shape_fields={"n_layer": "num_hidden_layers", "n_embd": "hidden_size",
                  "n_head": "num_attention_heads", "patch_size": "patch_size"},
)
