"""One fine-tuning run: a saved model on one GLUE task, its metric, written to a folder.

`finetune(settings)` reads the task's train and dev splits (`tying_env.finetune.glue`),
loads the model as a classifier and its tokenizer (`tying_env.finetune.classifier`),
trains with AdamW (linear warmup, then linear decay to 0; gradient clipping), evaluates
on the dev split after every epoch, and writes into `settings.out`:

- `finetune.json`: the task's metrics after the last epoch, the per-epoch history
  (train and dev loss, metrics), the metrics of always predicting the majority training
  label, the model (source, tie map, trainable and untied parameters, new weights), the
  tokenizer, the data (files, sizes, examples cut to fit) and the settings;
- `predictions.tsv`: one line per dev example, `index`, `prediction`, `label` (label
  values as written in GLUE's files).

The reported metric is the last epoch's, not the best over epochs (choosing the best
epoch on the split that is reported would select on the evaluation data). Both files are
written atomically, and a folder that already holds a `finetune.json` is refused unless
`overwrite` is set. Training is seeded: the head's initialisation, dropout and the order
of the examples follow `seed`, so on CPU two runs with the same settings give the same
numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tying_env.errors import SettingError
from tying_env.export import quiet_hf
from tying_env.files import write_json, write_text
from tying_env.finetune.classifier import (
    Classifier,
    load_classifier,
    load_tokenizer,
)
from tying_env.finetune.glue import (
    Examples,
    GlueTask,
    get_task,
    majority_label,
    read_split,
    task_metrics,
)

RESULT_FORMAT = "layer-tying-gym/finetune"
RESULT_VERSION = 1
RESULT_NAME = "finetune.json"
PREDICTIONS_NAME = "predictions.tsv"


@dataclass(frozen=True)
class FinetuneSettings:
    """What `finetune` does (the command line's options, `python -m tying_env.finetune`).

    Defaults follow the published fine-tuning where it sets them (AdamW, lr 1e-4, weight
    decay 0.01, gradient clipping 1.0); `max_length` defaults to the model's context,
    `ties` to `"keep"` for a compact folder and `"untie"` for an HF one; `max_train` and
    `max_eval` keep the first N examples of a split.
    """

    model: str
    task: str
    out: str
    data_dir: str | None = None
    tokenizer: str | None = None
    ties: str | None = None
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int | None = None
    max_train: int | None = None
    max_eval: int | None = None
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False

    def check(self) -> None:
        """A `SettingError` for the first bad value (nothing is read or written)."""
        for name in ("epochs", "batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("max_train", "max_eval"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.max_length is not None:
            _positive_int("max_length", self.max_length, low=2)
        for name, low, high in (("lr", 0.0, math.inf), ("weight_decay", 0.0, math.inf),
                                ("warmup", 0.0, 1.0), ("max_grad_norm", 0.0, math.inf)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not low <= value <= high \
                    or (name == "lr" and value == 0):
                raise SettingError(name, f"{name}={value!r} must be a number in "
                                         f"{'(' if name == 'lr' else '['}{low}, {high}]")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise SettingError("seed", f"seed={self.seed!r} must be an integer >= 0")
        get_task(self.task)


def _positive_int(name: str, value: Any, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SettingError(name, f"{name}={value!r} must be an integer >= {low}")


def finetune(settings: FinetuneSettings) -> dict[str, Any]:
    """Run `settings` (see the module docstring); returns what `finetune.json` holds."""
    from tying_env.presets import check_device, resolve_device

    settings.check()
    check_device(settings.device)
    task = get_task(settings.task)
    out = _out_folder(settings)
    start = time.perf_counter()
    train = _first(read_split(task, "train", settings.data_dir), settings.max_train)
    dev = _first(read_split(task, "dev", settings.data_dir), settings.max_eval)

    torch.manual_seed(settings.seed)  # the new head, then dropout
    clf = load_classifier(settings.model, len(task.labels), settings.ties)
    config = clf.model.config
    with quiet_hf():  # e.g. "longer than the maximum length": the result counts the cuts
        encoder = load_tokenizer(settings.tokenizer, settings.model, int(config.vocab_size))
    config.pad_token_id = encoder.pad_id  # for HF's own pooling of the model
    context = _context(config)
    max_length = settings.max_length or context
    if max_length > context:
        raise SettingError("max_length", f"max_length={max_length} exceeds the model's "
                                         f"context of {context} positions")
    with quiet_hf():
        train_ids, train_cut = encoder.encode(train, max_length)
        dev_ids, dev_cut = encoder.encode(dev, max_length)

    device = resolve_device(settings.device)
    clf.model.to(device)
    history = _train(clf, settings, train_ids, train.labels, dev_ids, dev.labels, task,
                     encoder.pad_id, device)
    final = history[-1]
    majority = majority_label(train.labels)
    result = {
        "format": RESULT_FORMAT, "version": RESULT_VERSION,
        "task": task.name, "metric": task.metrics[0], "score": final["metrics"][task.metrics[0]],
        "metrics": final["metrics"], "eval_split": "dev",
        "majority_baseline": {"label": task.labels[majority],
                              "metrics": task_metrics(task, dev.labels,
                                                      [majority] * len(dev))},
        "model": {"path": str(settings.model), "source": clf.source,
                  "model_type": clf.model_type, "ties": clf.ties, "tie_map": clf.tie_map,
                  "tie_mode": clf.tie_mode, "pooling": clf.pooling,
                  "trainable_params": clf.trainable_params(),
                  "untied_params": clf.untied_params, "new_weights": clf.new_weights},
        "tokenizer": {"name": encoder.name, "pad_id": encoder.pad_id,
                      "pair_separator": encoder.separator},
        "data": {"source": "tsv" if settings.data_dir is not None else "datasets",
                 "train": train.source, "eval": dev.source, "train_examples": len(train),
                 "eval_examples": len(dev), "train_truncated": train_cut,
                 "eval_truncated": dev_cut, "max_length": max_length},
        "settings": asdict(settings),
        "history": [{k: v for k, v in h.items() if k != "predictions"} for h in history],
        "device": str(device),
        "wall_seconds": time.perf_counter() - start,
    }
    _write(out, result, task, final["predictions"], dev)
    return result


def _first(examples: Examples, n: int | None) -> Examples:
    if n is None or n >= len(examples):
        return examples
    return Examples(examples.texts[:n], examples.labels[:n], examples.source)


def _out_folder(settings: FinetuneSettings) -> Path:
    out = Path(settings.out).expanduser()
    if out.exists() and not out.is_dir():
        raise SettingError("out", f"out={str(out)!r} is a file, not a folder")
    if (out / RESULT_NAME).exists() and not settings.overwrite:
        raise SettingError("out", f"out={str(out)!r} already holds a {RESULT_NAME}; choose "
                                  "another folder or set overwrite")
    return out


def _context(config: Any) -> int:
    for name in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, name, None), int):
            return int(getattr(config, name))
    raise SettingError("model", f"the model's config ({config.model_type}) names no context "
                                "length (n_positions or max_position_embeddings)")


def _batches(ids: list[list[int]], labels: list[int], order: np.ndarray, size: int, pad: int,
             device: torch.device):
    """(ids, attention mask, labels) tensors, right-padded, `size` examples at a time."""
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        width = max(len(ids[i]) for i in chunk)
        x = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            x[row, :len(ids[i])] = torch.tensor(ids[i])
            mask[row, :len(ids[i])] = 1
        y = torch.tensor([labels[i] for i in chunk])
        yield x.to(device), mask.to(device), y.to(device)


def _train(clf: Classifier, s: FinetuneSettings, train_ids: list[list[int]],
           train_labels: list[int], dev_ids: list[list[int]], dev_labels: list[int],
           task: GlueTask, pad: int, device: torch.device) -> list[dict[str, Any]]:
    params = clf.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    steps = s.epochs * math.ceil(len(train_ids) / s.batch_size)
    warm = math.ceil(s.warmup * steps)

    def factor(step: int) -> float:  # linear warmup to lr, then linear decay to 0
        return (step + 1) / warm if step < warm else max(0.0, (steps - step) / max(1, steps - warm))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    rng = np.random.default_rng(s.seed)
    history = []
    for epoch in range(1, s.epochs + 1):
        clf.model.train()
        losses = []
        for x, mask, y in _batches(train_ids, train_labels, rng.permutation(len(train_ids)),
                                   s.batch_size, pad, device):
            loss = F.cross_entropy(clf.logits(x, mask).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        eval_loss, predictions = _evaluate(clf, dev_ids, dev_labels, s.batch_size, pad, device)
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                        "eval_loss": eval_loss,
                        "metrics": task_metrics(task, dev_labels, predictions),
                        "predictions": predictions})
    return history


@torch.no_grad()
def _evaluate(clf: Classifier, ids: list[list[int]], labels: list[int], size: int, pad: int,
              device: torch.device) -> tuple[float, list[int]]:
    clf.model.eval()
    total, predictions = 0.0, []
    for x, mask, y in _batches(ids, labels, np.arange(len(ids)), size, pad, device):
        logits = clf.logits(x, mask).float()
        total += F.cross_entropy(logits, y, reduction="sum").item()
        predictions.extend(logits.argmax(dim=-1).tolist())
    return total / len(ids), predictions


def _write(out: Path, result: dict[str, Any], task: GlueTask, predictions: list[int],
           dev: Examples) -> None:
    lines = ["index\tprediction\tlabel"]
    lines += [f"{n}\t{task.labels[p]}\t{task.labels[y]}"
              for n, (p, y) in enumerate(zip(predictions, dev.labels, strict=True))]
    write_text(out / PREDICTIONS_NAME, "\n".join(lines) + "\n")
    write_json(out / RESULT_NAME, result)  # last: a folder with a result is complete
