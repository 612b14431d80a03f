"""GLUE tasks: their files, columns, labels and metrics, and reading their examples.

A task's examples come from one of two places:

- a local folder in GLUE's own layout (`read_tsv_split`): the folder the GLUE download
  script makes (`DIR/SST-2/train.tsv`, `DIR/RTE/dev.tsv`, ...) or one task's folder
  itself (`DIR/train.tsv`). Each task's files keep their own columns, found by the
  header's names (`sentence`, `label` for SST-2; `#1 String`, `#2 String`, `Quality`
  for MRPC; ...); CoLA's files have no header (source, label, original label, sentence).
  Fields are split on tabs only, with no quoting, so a `"` in a sentence is text;
- Hugging Face `datasets` (`read_hf_split`), from the local cache only: nothing is
  downloaded, and a task that is not cached raises `DataUnavailableError` saying to pass
  a folder instead.

The model is evaluated on the labelled development split (`dev.tsv`; MNLI's
`dev_matched.tsv`; `validation` / `validation_matched` in `datasets`). GLUE's `test.tsv`
has no labels (they are held by the GLUE server) and is never read.

Labels are numbered as in `datasets` (`GlueTask.labels` in that order), so both sources
give the same ids. STS-B (a regression) and MNLI's mismatched split are not supported.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tying_env.errors import DataUnavailableError, MissingDataError, SettingError

HF_DATASET = "nyu-mll/glue"  # the GLUE benchmark on the Hugging Face Hub


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    - `name`: the `--task` value and the `datasets` config name (`"sst2"`);
    - `folder`: its folder in GLUE's download layout (`"SST-2"`);
    - `text_columns`: the one or two text columns of its TSV files;
    - `label_column`: the label's column in its TSV files;
    - `labels`: the label values as written in the TSV files, in the order of their ids
      (the order of `datasets`' class names);
    - `metrics`: what is reported, the headline first;
    - `dev_file`: the labelled evaluation file; `columns`: the column names of a file
      without a header (CoLA), None when the files have one;
    - `hf_columns`, `hf_eval_split`: the text columns and evaluation split in `datasets`.
    """

    name: str
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...]
    metrics: tuple[str, ...]
    hf_columns: tuple[str, ...]
    dev_file: str = "dev.tsv"
    columns: tuple[str, ...] | None = None
    hf_eval_split: str = "validation"

    @property
    def pair(self) -> bool:
        """Whether an example is a pair of texts."""
        return len(self.text_columns) == 2


BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("sst2", "SST-2", ("sentence",), "label", BINARY, ("accuracy",), ("sentence",)),
    GlueTask("cola", "CoLA", ("sentence",), "label", BINARY,
             ("matthews_correlation", "accuracy"), ("sentence",),
             columns=("source", "label", "original_label", "sentence")),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", BINARY, ("f1", "accuracy"),
             ("sentence1", "sentence2")),
    GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", BINARY,
             ("f1", "accuracy"), ("question1", "question2")),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", ENTAILMENT, ("accuracy",),
             ("sentence1", "sentence2")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ENTAILMENT, ("accuracy",),
             ("question", "sentence")),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", BINARY, ("accuracy",),
             ("sentence1", "sentence2")),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
             ("entailment", "neutral", "contradiction"), ("accuracy",),
             ("premise", "hypothesis"), dev_file="dev_matched.tsv",
             hf_eval_split="validation_matched"),
)}
NOT_SUPPORTED = {"stsb": "STS-B is a regression (a similarity score), not a classification",
                 "ax": "AX is a diagnostic set with no training split"}


@dataclass(frozen=True)
class Examples:
    """One split of a task: texts (one tuple of 1 or 2 strings per example) and label ids."""

    texts: list[tuple[str, ...]]
    labels: list[int]
    source: str  # the file or `datasets` split it was read from

    def __len__(self) -> int:
        return len(self.labels)


def get_task(name: str) -> GlueTask:
    """The task `name` (case-insensitive; `SST-2` and `sst2` both work); a `SettingError`
    lists the supported tasks."""
    key = str(name).lower().replace("-", "")
    if key in TASKS:
        return TASKS[key]
    why = f" ({NOT_SUPPORTED[key]})" if key in NOT_SUPPORTED else ""
    raise SettingError("task", f"task={name!r} is not supported{why}; supported GLUE tasks: "
                               f"{', '.join(TASKS)}")


def task_folder(task: GlueTask, data_dir: str | Path) -> Path:
    """The folder holding `task`'s TSV files: `data_dir/<task.folder>` in GLUE's layout, or
    `data_dir` itself when it holds `train.tsv`."""
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise MissingDataError("data_dir", f"data_dir={str(data_dir)!r} does not exist")
    if not root.is_dir():
        raise SettingError("data_dir", f"data_dir={str(data_dir)!r} is not a folder")
    for folder in (root / task.folder, root):
        if (folder / "train.tsv").is_file() and (folder / task.dev_file).is_file():
            return folder
    raise MissingDataError("data_dir", f"data_dir={str(data_dir)!r} holds no {task.name} data "
                                       f"in GLUE's layout: looked for {task.folder}/train.tsv "
                                       f"and {task.folder}/{task.dev_file} there, or train.tsv "
                                       f"and {task.dev_file} in it")


def read_tsv_split(task: GlueTask, data_dir: str | Path, split: str) -> Examples:
    """The `train` or `dev` split of `task` from a folder in GLUE's layout (`task_folder`).

    A file whose header lacks a needed column, a row with too few fields, or a label that
    is not one of the task's raises `SettingError` naming the file and line.
    """
    if split not in ("train", "dev"):
        raise SettingError("split", f"split={split!r} is unknown; allowed: train, dev")
    path = task_folder(task, data_dir) / ("train.tsv" if split == "train" else task.dev_file)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task.columns is None:
        if not rows:
            raise SettingError("data_dir", f"{path} is empty; expected a header naming "
                                           f"{', '.join(_needed(task))}")
        header, rows, first = rows[0], rows[1:], 2
        missing = [c for c in _needed(task) if c not in header]
        if missing:
            raise SettingError("data_dir", f"{path}: the header {header} lacks the column(s) "
                                           f"{missing} of {task.name} (GLUE's layout: "
                                           f"{', '.join(_needed(task))})")
    else:
        header, first = list(task.columns), 1
    where = [header.index(c) for c in (*task.text_columns, task.label_column)]
    texts, labels = [], []
    for line, row in enumerate(rows, start=first):
        if not row:  # a blank line
            continue
        if len(row) <= max(where):
            raise SettingError("data_dir", f"{path} line {line}: {len(row)} tab-separated "
                                           f"field(s), {task.name} needs "
                                           f"{max(where) + 1} ({', '.join(header)})")
        *text, label = (row[i] for i in where)
        texts.append(tuple(text))
        labels.append(_label_id(task, label.strip(), f"{path} line {line}"))
    if not labels:
        raise SettingError("data_dir", f"{path} has no examples")
    return Examples(texts, labels, str(path))


def _needed(task: GlueTask) -> tuple[str, ...]:
    return (*task.text_columns, task.label_column)


def _label_id(task: GlueTask, label: str, where: str) -> int:
    if label not in task.labels:
        raise SettingError("data_dir", f"{where}: label {label!r} is not one of {task.name}'s "
                                       f"labels {list(task.labels)}")
    return task.labels.index(label)


def read_hf_split(task: GlueTask, split: str) -> Examples:
    """The `train` or `dev` split of `task` from the local `datasets` cache (never the
    network); `DataUnavailableError` when it is not there."""
    from tying_env.data.corpus import _forced_offline

    hf_split = "train" if split == "train" else task.hf_eval_split
    try:
        import datasets

        with _forced_offline(True):
            ds = datasets.load_dataset(HF_DATASET, task.name, split=hf_split)
        columns = [ds[c] for c in task.hf_columns]
        labels = [int(v) for v in ds["label"]]
    except Exception as e:
        raise DataUnavailableError(
            f"GLUE {task.name} ({HF_DATASET!r}, split {hf_split!r}) is not in the local Hugging "
            f"Face datasets cache, and nothing is downloaded here ({type(e).__name__}: {e}). "
            f"Pass data_dir=FOLDER in GLUE's layout ({task.folder}/train.tsv and "
            f"{task.folder}/{task.dev_file})") from e
    if any(y < 0 or y >= len(task.labels) for y in labels):
        raise SettingError("task", f"{HF_DATASET} {task.name} split {hf_split!r} has labels "
                                   f"outside 0..{len(task.labels) - 1} (a split without labels?)")
    texts = list(zip(*columns, strict=True))
    return Examples(texts, labels, f"{HF_DATASET}/{task.name}:{hf_split}")


def read_split(task: GlueTask, split: str, data_dir: str | Path | None) -> Examples:
    """`split` of `task` from `data_dir` (GLUE's layout) when given, else from `datasets`."""
    if data_dir is not None:
        return read_tsv_split(task, data_dir, split)
    return read_hf_split(task, split)


# ------------------------------------------------------------------ metrics


def task_metrics(task: GlueTask, labels: Sequence[int],
                 predictions: Sequence[int]) -> dict[str, float]:
    """`task.metrics` of `predictions` against `labels` (scikit-learn). F1 is that of the
    positive class (id 1: equivalent, duplicate), as GLUE reports it."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    scores = {"accuracy": lambda: accuracy_score(labels, predictions),
              "f1": lambda: f1_score(labels, predictions, pos_label=1, zero_division=0.0),
              "matthews_correlation": lambda: matthews_corrcoef(labels, predictions)}
    return {m: float(scores[m]()) for m in task.metrics}


def majority_label(labels: Sequence[int]) -> int:
    """The most frequent label (the lowest id among ties)."""
    counts = Counter(labels)
    return min(counts, key=lambda y: (-counts[y], y))
