"""`RunResult`: what one run found, the one writer and reader of its `result.json`.

Every module that needs a run's outcome (the driver, the train-then-evaluate protocol,
the model card, the benchmark's cells, report and leaderboard, the tracker, the scripts)
goes through this module; none reads `result.json`'s keys itself.

The file is a JSON object with `format` (`FORMAT`) and `format_version` (`VERSION`)
first. Files written before the format had an id (version 0) load unchanged: a missing
`protocol` means `"online"`. A key this version does not know is kept in `extra` and
written back, so nothing is lost by reading and writing a file.

A run is **finished** when its `result.json` is complete: `total_seconds`, the time
the whole run took, is written last, after the models and figures were saved
(`RunResult.complete`). That the agent made all its decisions is another thing:
`all_decisions` (the file's key `finished`, kept for old files).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tying_env.files import read_json, write_json

FORMAT = "layer-tying-gym/run-result"
VERSION = 1
FILE = "result.json"
ONLINE, TRAIN_EVALUATE = "online", "train-evaluate"
TIMING_FIELDS = ("wall_seconds", "eval_seconds", "train_seconds", "total_seconds")

# the file's key for a field whose attribute name differs
_KEYS = {"all_decisions": "finished"}
# fields written only when they have a value (they apply to some runs only)
_WHEN_SET = frozenset({
    "track", "final_val_accuracy", "final_test_accuracy", "best_test_ppl", "best_test_sweep",
    "best_test_ppl_selected_on", "train_episodes", "eval_episodes", "train", "eval",
    "train_seconds", "files", "total_seconds", "agent_source", "published_trainable_params",
    "train_env_id", "train_env_model"})


# the published metric, recorded beside the final-checkpoint ones when the environment
# evaluates the test split during the episode (test_eval_every > 0)
PUBLISHED_METRIC_NOTE = (
    "best_test_ppl is the published metric: the best test perplexity over sweeps, selected "
    "on the test split (best_test_ppl_selected_on), so an optimistic number, not a held-out "
    "estimate; final_test_ppl is the final model's, selected on nothing")


def published_metric(info: dict[str, Any]) -> dict[str, Any]:
    """`best_test_ppl` (None if never finite), `best_test_sweep` and the label
    `best_test_ppl_selected_on: "test"`, from an episode's last info or log record; empty
    when the environment did not evaluate the test split (`test_eval_every=0`)."""
    if "best_test_ppl" not in info:
        return {}
    best = info["best_test_ppl"]
    finite = best is not None and math.isfinite(best)
    return {"best_test_ppl": float(best) if finite else None,
            "best_test_sweep": int(info.get("best_test_sweep") or 0),
            "best_test_ppl_selected_on": "test"}


class ResultFormatError(ValueError):
    """A `result.json` that is not a run result this version can read."""


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One run's outcome. Perplexities are None where they were not finite."""

    agent: str
    seed: int
    env_id: str
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    protocol: str = ONLINE  # or TRAIN_EVALUATE (`agents.runs.protocol`)
    track: str | None = None
    device: str | None = None
    # the final model on the full validation and test splits
    final_val_ppl: float | None = None
    final_test_ppl: float | None = None
    final_val_accuracy: float | None = None
    final_test_accuracy: float | None = None
    # the published metric: best test perplexity over sweeps, selected on the test split
    best_test_ppl: float | None = None
    best_test_sweep: int | None = None
    best_test_ppl_selected_on: str | None = None
    n_outputs: int | None = None
    optimal_ppl: float | None = None
    optimal_val_ppl: float | None = None
    optimal_test_ppl: float | None = None
    initial_val_ppl: float | None = None
    last_val_ppl: float | None = None
    trainable_params: int | None = None
    # tie_semantics="published": the published count (an aliased storage once per position)
    published_trainable_params: int | None = None
    total_params: int | None = None
    trainable_fraction: float | None = None
    mean_trainable_fraction: float | None = None
    tie_map: list[int] | None = None
    memory_bytes: dict[str, int] | None = None
    peak_memory_bytes: int | None = None
    train_steps: int | None = None
    decisions: int | None = None
    budget: int | None = None
    all_decisions: bool | None = None
    diverged: bool = False
    # train-then-evaluate: one summary per training and per evaluation episode
    train_episodes: int | None = None
    eval_episodes: int | None = None
    train_env_id: str | None = None  # sim-to-real: the env the training episodes ran on
    train_env_model: str | None = None  # ... and its model's SHA-256, for a surrogate
    train: list[dict[str, Any]] | None = None
    eval: list[dict[str, Any]] | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    eval_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    # the fingerprint of the agent's code (`agents.runs.source.agent_source`)
    agent_source: dict[str, Any] | None = None
    files: list[str] | None = None
    total_seconds: float | None = None  # written last: the run is finished
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    # ------------------------------------------------------------ derived
    @property
    def complete(self) -> bool:
        """Whether the run finished: its result was written to the end."""
        return self.total_seconds is not None

    @property
    def seconds(self) -> float | None:
        """The time the run took (its training time for files without a total)."""
        return self.total_seconds if self.total_seconds is not None else self.wall_seconds

    @property
    def tie_maps(self) -> list[list[int]]:
        """The final tie map, or one per evaluation episode (train-then-evaluate)."""
        if self.tie_map:
            return [self.tie_map]
        return [list(e["tie_map"]) for e in self.eval or [] if e.get("tie_map")]

    @property
    def layers_tied_fraction(self) -> float | None:
        """Fraction of positions that run another block's weights at the end
        (`t[i] != i`); the mean over the evaluation episodes where there are several."""
        maps = self.tie_maps
        if not maps:
            return None
        return float(np.mean([sum(t != i for i, t in enumerate(m)) / len(m) for m in maps]))

    @property
    def eval_returns(self) -> list[float]:
        """The finite returns of the evaluation episodes (train-then-evaluate)."""
        values = [e.get("return") for e in self.eval or []]
        return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]

    def episode_values(self, metric: str) -> dict[int, float | None]:
        """`metric` per held-out evaluation episode, by its seed, of a train-then-evaluate
        run (`final_val_ppl`, `final_test_ppl`, `trainable_fraction`, `episode_return`,
        `layers_tied_fraction`); an online run's own value by its seed (its episode return
        is not in the result: it is the sum of its log's rewards)."""
        keys = {"episode_return": "return"}
        if self.protocol != TRAIN_EVALUATE:
            value = None if metric == "episode_return" else getattr(self, metric)
            return {self.seed: value}
        out: dict[int, float | None] = {}
        for e in self.eval or []:
            if metric == "layers_tied_fraction":
                ties = e.get("tie_map") or []
                value = sum(t != i for i, t in enumerate(ties)) / len(ties) if ties else None
            else:
                value = e.get(keys.get(metric, metric))
            out[int(e["seed"])] = value
        return out

    @property
    def optimum(self) -> dict[str, float | None] | None:
        """The source's optimal perplexities, where the run recorded them."""
        if self.optimal_ppl is None:
            return None
        return {"optimal_ppl": self.optimal_ppl, "optimal_val_ppl": self.optimal_val_ppl,
                "optimal_test_ppl": self.optimal_test_ppl}

    def replace(self, **changes: Any) -> RunResult:
        """A copy with `changes` applied."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ the file
    def to_json(self) -> dict[str, Any]:
        """The JSON object of `result.json` (non-finite numbers become null on writing)."""
        out: dict[str, Any] = {"format": FORMAT, "format_version": VERSION}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in _WHEN_SET:
                continue
            out[_KEYS.get(f.name, f.name)] = value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RunResult:
        """Parse a `result.json` object of this format (or of the format before it had an
        id); raises `ResultFormatError` naming what is wrong."""
        if not isinstance(obj, Mapping):
            raise ResultFormatError(f"a run result is a JSON object, not {type(obj).__name__}")
        fmt, version = obj.get("format", FORMAT), obj.get("format_version", 0)
        if fmt != FORMAT:
            raise ResultFormatError(f"format {fmt!r} is not a run result ({FORMAT!r})")
        if not isinstance(version, int) or not 0 <= version <= VERSION:
            raise ResultFormatError(f"format_version {version!r} is not one this version "
                                    f"reads (0 to {VERSION}); a newer layer-tying-gym "
                                    "wrote it")
        keys = {_KEYS.get(f.name, f.name): f.name for f in dataclasses.fields(cls)
                if f.name != "extra"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in obj.items():
            if key in ("format", "format_version"):
                continue
            if key in keys:
                values[keys[key]] = value
            else:
                extra[key] = value
        missing = [k for k in ("agent", "seed", "env_id") if not values.get(k) and
                   values.get(k) != 0]
        if missing:
            raise ResultFormatError(f"a run result needs {', '.join(missing)}")
        if not isinstance(values["agent"], str) or not isinstance(values["seed"], int):
            raise ResultFormatError(f"agent must be a name and seed an integer, not "
                                    f"{values['agent']!r} and {values['seed']!r}")
        values.setdefault("protocol", ONLINE)
        for key in ("agent_kwargs", "env_kwargs"):
            if values.get(key) is None:
                values[key] = {}
        if values.get("notes") is None:
            values["notes"] = []
        if values.get("diverged") is None:
            values["diverged"] = False
        return cls(**values, extra=extra)

    def write(self, folder: Path) -> Path:
        """Write `folder/result.json` atomically; returns its path."""
        return write_json(Path(folder) / FILE, self.to_json())


def read_result(folder: Path) -> RunResult | None:
    """The run result in `folder`, or None when there is none: missing, unreadable, or
    not a run result this version reads."""
    obj = read_json(Path(folder) / FILE)
    if obj is None:
        return None
    try:
        return RunResult.from_json(obj)
    except ResultFormatError:
        return None


def is_finished(folder: Path) -> bool:
    """Whether `folder` holds a finished run (a complete `result.json`)."""
    result = read_result(folder)
    return result is not None and result.complete


def cell_result(cell: Mapping[str, Any]) -> RunResult | None:
    """The run result embedded in a benchmark report's cell entry, if any."""
    obj = cell.get("result")
    return RunResult.from_json(obj) if obj else None
