"""Figures of one run, drawn from its per-decision records (`log.jsonl` lines).

- `plot_tie_map`: layers (y) by decisions (x), each cell coloured by the
  root block the layer runs, like the figures of Hay & Wolf (ICLR 2024).
- `plot_curves`: validation perplexity over training steps (with the
  source's optimal perplexity as a dashed line when known) above the trainable
  fraction of parameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from tying_env.files import atomic_write  # noqa: E402

Record = dict[str, Any]


def read_log(path: str | Path) -> list[Record]:
    """The records of a `log.jsonl` file."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _points(records: Sequence[Record], start: Record | None) -> list[Record]:
    return ([start] if start is not None else []) + list(records)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def plot_tie_map(records: Sequence[Record], path: str | Path, *,
                 start: Record | None = None, title: str | None = None) -> Path:
    """Draw the tie map over the run: column `d` is the map after decision `d`.

    `start` (the reset info) adds column 0, the map before any decision.
    """
    points = _points(records, start)
    if not points:
        raise ValueError("no records to plot")
    maps = np.array([p["tie_map"] for p in points], dtype=int).T  # [layers, decisions]
    n_layer = maps.shape[0]
    first = 0 if start is not None else int(points[0]["decision"])
    colors = plt.get_cmap("tab20" if n_layer > 10 else "tab10")(np.arange(n_layer) % 20)
    cmap = ListedColormap(colors)
    norm = BoundaryNorm(np.arange(n_layer + 1) - 0.5, n_layer)

    width = min(14.0, 4.0 + 0.08 * maps.shape[1])
    fig, ax = plt.subplots(figsize=(width, 1.2 + 0.35 * n_layer))
    image = ax.imshow(maps, cmap=cmap, norm=norm, aspect="auto", origin="lower",
                      interpolation="nearest",
                      extent=(first - 0.5, first + maps.shape[1] - 0.5, -0.5, n_layer - 0.5))
    ax.set_xlabel("decision")
    ax.set_ylabel("layer")
    ax.set_yticks(range(n_layer))
    ax.set_title(title or "tie map over the run (colour = root block the layer runs)")
    bar = fig.colorbar(image, ax=ax, ticks=range(n_layer), pad=0.01)
    bar.set_label("root")
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(records: Sequence[Record], path: str | Path, *, start: Record | None = None,
                optimal_ppl: float | None = None, final_val_ppl: float | None = None,
                title: str | None = None) -> Path:
    """Validation perplexity and trainable fraction against optimizer steps."""
    points = _points(records, start)
    if not points:
        raise ValueError("no records to plot")
    steps = [p.get("train_steps", p.get("decision", i)) for i, p in enumerate(points)]
    ppl = [np.nan if p.get("val_ppl") is None else p["val_ppl"] for p in points]
    frac = [np.nan if p.get("trainable_fraction") is None else p["trainable_fraction"]
            for p in points]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    top.plot(steps, ppl, marker=".", label="validation ppl (eval subset)")
    if optimal_ppl is not None:
        top.axhline(optimal_ppl, linestyle="--", color="gray",
                    label=f"optimal ppl {optimal_ppl:.3f}")
    if final_val_ppl is not None:
        top.scatter([steps[-1]], [final_val_ppl], color="black", zorder=3,
                    label=f"final ppl, full split {final_val_ppl:.3f}")
    finite = np.asarray(ppl, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0:
        top.set_yscale("log")
    top.set_ylabel("perplexity")
    top.legend(loc="upper right", fontsize="small")
    top.grid(alpha=0.3)
    top.set_title(title or "validation perplexity and trainable fraction")

    bottom.step(steps, frac, where="pre")  # a fraction holds during the steps up to it
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("trainable fraction")
    bottom.set_xlabel("optimizer steps")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
