"""Downstream fine-tuning of a saved model on a GLUE task (no Q-learning, no Gymnasium).

The published code fine-tunes a saved tied model on GLUE; this package does the same for
a run's exported model (`model/` or `compact/`, see `tying_env.export`) or any local
Hugging Face checkpoint of a text model:

- `glue`: the tasks, their files in GLUE's own TSV layout or in the local `datasets`
  cache, and their metrics;
- `classifier`: the model as a sequence classifier (the tie map kept or not), its
  tokenizer, and examples as token ids;
- `run`: the training run and the result folder.

From the command line: `python -m tying_env.finetune --model RUN/model --task sst2
--data-dir GLUE --out RUN/glue-sst2` (see `docs/finetune.md`).
"""

from __future__ import annotations

import importlib
from typing import Any

# public names, imported on first use so that `--help` stays fast (torch loads with `run`)
_LAZY = {"TASKS": "tying_env.finetune.glue", "GlueTask": "tying_env.finetune.glue",
         "get_task": "tying_env.finetune.glue", "FinetuneSettings": "tying_env.finetune.run",
         "finetune": "tying_env.finetune.run"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tying_env.finetune' has no attribute {name!r}")
