"""Saving a trained `TiedGPT2`, expanded or compact.

- **Expanded** (`save_expanded`): a standard Hugging Face folder that
  `GPT2LMHeadModel.from_pretrained` loads; every tied position gets its own
  copy of its root's weights, so any GPT-2 tooling can use it.
- **Compact** (`save_compact` / `load_compact`): only the root
  blocks, the embeddings and the final norm (`weights.safetensors`) plus
  `config.json` holding the GPT-2 config, the tie map and the tie mode. It is
  smaller than the expanded folder by about the tied fraction of parameters,
  and loads back into a `TiedGPT2` that gives the same logits.

All files are written atomically (`tying_env.files`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config

from tying_env.files import atomic_write, write_json
from tying_env.model import TiedGPT2

COMPACT_FORMAT = "layer-tying-gym/compact"
COMPACT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
CONFIG_NAME = "config.json"


def save_expanded(model: TiedGPT2, path: str | Path) -> Path:
    """Save `model` untied as a standard HF folder (`GPT2LMHeadModel.from_pretrained`)."""
    path = Path(path)
    model.to_hf().save_pretrained(path)
    return path


def compact_state_dict(model: TiedGPT2) -> dict[str, torch.Tensor]:
    """Root blocks, embeddings and final norm; a tensor shared by two keys is kept once."""
    state, seen = {}, set()
    for key, value in model.lm.state_dict().items():
        ptr = (value.device, value.untyped_storage().data_ptr(), value.storage_offset())
        if ptr in seen:  # the LM head tied to the input embeddings
            continue
        seen.add(ptr)
        state[key] = value.detach().to("cpu").contiguous().clone()
    return state


def save_compact(model: TiedGPT2, path: str | Path) -> Path:
    """Save `model` with only its root blocks (see the module docstring)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = compact_state_dict(model)
    meta = {"format": COMPACT_FORMAT, "version": str(COMPACT_VERSION)}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(weights, str(tmp), metadata=meta))
    write_json(path / CONFIG_NAME, {
        "format": COMPACT_FORMAT,
        "version": COMPACT_VERSION,
        "tie_map": list(model.ties),
        "tie_mode": model.tie_mode,
        "config": model.config.to_dict(),
    })
    return path


def load_compact(path: str | Path, device: str | torch.device = "cpu") -> TiedGPT2:
    """Load a folder written by `save_compact` into a `TiedGPT2` (in eval mode)."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: {path} is not a compact export "
                                    f"(expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    meta = json.loads(config_file.read_text(encoding="utf-8"))
    if meta.get("format") != COMPACT_FORMAT or meta.get("version") != COMPACT_VERSION:
        raise ValueError(f"{config_file} has format={meta.get('format')!r} "
                         f"version={meta.get('version')!r}; expected {COMPACT_FORMAT!r} "
                         f"version {COMPACT_VERSION}")
    config = GPT2Config.from_dict(meta["config"])
    model = TiedGPT2(config, meta["tie_mode"], ties=meta["tie_map"])
    weights = load_file(str(weights_file))
    missing, unexpected = model.lm.load_state_dict(weights, strict=False)
    tied_aliases = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if unexpected or set(missing) - tied_aliases:
        raise ValueError(f"{weights_file} does not match tie map {meta['tie_map']}: "
                         f"missing {sorted(set(missing) - tied_aliases)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.to(device).eval()
