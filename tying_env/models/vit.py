"""ViT (`ViTForImageClassification`): a vision transformer over image patches.

Trained from scratch to classify; the reward's metric is the validation cross-entropy
(`val_ppl` is its exponential), the accuracy is reported beside it. `patch_size` must
divide the image's height and width.
"""

from __future__ import annotations

from typing import Any

from transformers import ViTConfig, ViTForImageClassification

from tying_env.models.family import DataShape, Family, ImageClassification


def vit_config(n_layer: int, n_embd: int, n_head: int, image_size: tuple[int, int],
               channels: int, n_classes: int, patch_size: int,
               dropout: float = 0.0) -> ViTConfig:
    """A ViT config trained from scratch for `n_classes` classes."""
    height, width = image_size
    return ViTConfig(
        hidden_size=n_embd, num_hidden_layers=n_layer, num_attention_heads=n_head,
        intermediate_size=4 * n_embd, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, image_size=height if height == width
        else [height, width], patch_size=patch_size, num_channels=channels,
        num_labels=n_classes,
    )


def _config(cfg: Any, data: DataShape) -> ViTConfig:
    return vit_config(cfg.n_layer, cfg.n_embd, cfg.n_head, (data.height, data.width),
                      data.channels, data.n_classes, cfg.patch_size, cfg.dropout)


def _task(config: ViTConfig) -> ImageClassification:
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else size
    return ImageClassification(config.num_channels, height, width)


VIT = Family(
    name="vit", label="ViT", task="image-classification",
    model_class=ViTForImageClassification, config_class=ViTConfig,
    blocks=("vit.layers", "vit.encoder.layer"), input_name="pixel_values", make_config=_config,
    make_task=_task, data_kind="images",
    description="ViT: patch embeddings, a [CLS] token; image classification (cross-entropy)",
    shape_fields={"n_layer": "num_hidden_layers", "n_embd": "hidden_size",
                  "n_head": "num_attention_heads", "patch_size": "patch_size"},
)
