"""Figures of one run, drawn from its per-decision records (`log.jsonl` lines).

Both figures share their x axis, the decision (0 is the state at reset):

- `plot_tie_map`: layers (y) by decisions (x), each cell coloured by the
  root block the layer runs, like the figures of Hay & Wolf (ICLR 2024).
- `plot_curves`: three panels: validation perplexity (log scale with plain number
  ticks, the source's optimal perplexity as a dashed line when known, optimizer steps
  on the top axis), the reward of every decision, and the trainable fraction of
  parameters; a dotted red line marks the decision where training diverged.

Titles of any length are wrapped to the figure's width.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from tying_env.files import atomic_write

Record = dict[str, Any]
TIE_MAP_LEGEND = "colour = the root block each layer runs (its own index: trained independently)"
TITLE_SIZE = 11.0
CURVES_WIDTH = 8.0  # inches; also the tie map's least width, so that short runs line up


def read_log(path: str | Path) -> list[Record]:
    """The records of a `log.jsonl` file."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _points(records: Sequence[Record], start: Record | None) -> list[Record]:
    return ([start] if start is not None else []) + list(records)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG (atomically). Figures are made without pyplot: no backend is
    chosen or changed (a notebook keeps its own), and nothing is left open."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return path


def wrap_title(title: str, width_in: float, fontsize: float = TITLE_SIZE) -> str:
    """`title` broken into lines that fit `width_in` inches at `fontsize` points
    (existing line breaks are kept; words longer than a line are cut)."""
    chars = max(16, int(width_in * 72 / (0.5 * fontsize)))  # a generous average glyph width
    return "\n".join(line for paragraph in title.splitlines() or [""]
                     for line in textwrap.wrap(paragraph, chars, break_on_hyphens=False)
                     or [""])


def _numbers(points: Sequence[Record], key: str) -> np.ndarray:
    return np.array([np.nan if p.get(key) is None else float(p[key]) for p in points])


def _decisions(points: Sequence[Record]) -> np.ndarray:
    return np.array([int(p.get("decision", i)) for i, p in enumerate(points)])


def plot_tie_map(records: Sequence[Record], path: str | Path, *,
                 start: Record | None = None, title: str | None = None) -> Path:
    """Draw the tie map over the run: column `d` is the map after decision `d`.

    `start` (the reset info) adds column 0, the map before any decision. The title
    (default "tie map over the run") is wrapped to the width; the line below it says
    what the colours mean.
    """
    points = _points(records, start)
    if not points:
        raise ValueError("no records to plot")
    maps = np.array([p["tie_map"] for p in points], dtype=int).T  # [layers, decisions]
    n_layer, n_cols = maps.shape
    first = int(_decisions(points)[0])
    if n_layer <= 10:
        colors = colormaps["tab10"](np.arange(n_layer))
    elif n_layer <= 20:
        colors = colormaps["tab20"](np.arange(n_layer))
    else:
        colors = colormaps["turbo"](np.linspace(0.05, 0.95, n_layer))
    cmap = ListedColormap(colors)
    norm = BoundaryNorm(np.arange(n_layer + 1) - 0.5, n_layer)

    width = min(14.0, max(CURVES_WIDTH, 4.0 + 0.08 * n_cols))
    head = wrap_title(title or "tie map over the run", width - 0.4)
    title_lines = head.count("\n") + 1
    height = 1.3 + 0.3 * n_layer + 0.22 * title_lines
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(maps, cmap=cmap, norm=norm, aspect="auto", origin="lower",
                      interpolation="nearest",
                      extent=(first - 0.5, first + n_cols - 0.5, -0.5, n_layer - 0.5))
    ax.set_xlabel("decision")
    ax.set_ylabel("layer")
    every = max(1, math.ceil(n_layer / 24))  # at most about 24 labels on a long axis
    ax.set_yticks(range(0, n_layer, every))
    ax.xaxis.set_major_locator(_decision_ticks())
    fig.suptitle(head, fontsize=TITLE_SIZE)
    ax.set_title(wrap_title(TIE_MAP_LEGEND, width - 0.4, 9), fontsize=9)
    bar = fig.colorbar(image, ax=ax, ticks=range(0, n_layer, every), pad=0.01,
                       fraction=0.04)
    bar.set_label("root block")
    return _save(fig, path)


def _decision_ticks() -> MaxNLocator:
    """Whole decisions in steps of 1, 2 or 5 times a power of ten (both figures alike)."""
    return MaxNLocator(nbins=10, integer=True, steps=[1, 2, 5, 10])


def plain_log_ticks(ax: Axes) -> None:
    """Label a log-scaled y axis with plain numbers (`20`, `30`, `50`, not `2×10¹`).

    Ticks are the nicest of 1-2-5, 1-1.5-2-3-5-7 or every integer mantissa within the
    axis' limits, so that a few of them are shown; call it after the limits are set.
    """
    lo, hi = ax.get_ylim()
    ticks: list[float] = []
    for subs in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7), tuple(range(1, 10))):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)),
                                            math.ceil(math.log10(hi)) + 1)
                 for m in subs if lo <= m * 10.0**k <= hi]
        if len(ticks) >= 3:
            break
    if len(ticks) < 3:  # a narrow range: evenly spaced round numbers
        ticks = [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _plain(value: float, _pos: int | None = None) -> str:
    return f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:g}"


def plot_curves(records: Sequence[Record], path: str | Path, *, start: Record | None = None,
                optimal_ppl: float | None = None, final_val_ppl: float | None = None,
                title: str | None = None) -> Path:
    """Validation perplexity, reward and trainable fraction against the decision.

    `start` (the reset info) adds decision 0; `optimal_ppl` draws the source's optimal
    perplexity, `final_val_ppl` the final full-split perplexity at the last decision.
    The perplexity panel's top axis counts optimizer steps.
    """
    points = _points(records, start)
    if not points:
        raise ValueError("no records to plot")
    x = _decisions(points)
    ppl = _numbers(points, "val_ppl")
    frac = _numbers(points, "trainable_fraction")
    steps = _numbers(points, "train_steps")
    decided = [p for p in points if "reward" in p]  # the reset info has no reward
    x_reward = _decisions(decided) if decided else np.array([], dtype=int)
    reward = _numbers(decided, "reward")

    width = CURVES_WIDTH
    head = wrap_title(title or "validation perplexity, reward and trainable fraction",
                      width - 0.4)
    fig = Figure(figsize=(width, 7.4 + 0.22 * head.count("\n")), layout="constrained")
    top, middle, bottom = fig.subplots(3, 1, sharex=True,
                                       gridspec_kw={"height_ratios": [2.2, 1.2, 1]})
    fig.suptitle(head, fontsize=TITLE_SIZE)

    small = len(points) <= 60
    top.plot(x, ppl, marker="." if small else None, label="validation ppl (eval subset)")
    if optimal_ppl is not None:
        top.axhline(optimal_ppl, linestyle="--", color="gray",
                    label=f"optimal ppl {optimal_ppl:.3f}")
    if final_val_ppl is not None:
        top.scatter([x[-1]], [final_val_ppl], color="black", zorder=3,
                    label=f"final ppl, full split {final_val_ppl:.3f}")
    shown = np.concatenate([ppl, [v for v in (optimal_ppl, final_val_ppl) if v is not None]])
    shown = shown[np.isfinite(shown)]
    if shown.size and shown.min() > 0:
        top.set_yscale("log")
        plain_log_ticks(top)
    diverged = [int(p["decision"]) for p in decided if p.get("diverged")]
    for ax in (top, middle, bottom) if diverged else ():
        ax.axvline(diverged[0], color="tab:red", linestyle=":", linewidth=1.2,
                   label=f"training diverged (decision {diverged[0]})")
    top.set_ylabel("perplexity")
    top.legend(loc="best", fontsize="small")
    top.grid(alpha=0.3)
    _steps_axis(top, x, steps)

    colors = np.where(np.nan_to_num(reward) >= 0, "tab:green", "tab:red")
    middle.bar(x_reward, np.nan_to_num(reward), width=0.8 if len(x_reward) <= 200 else 1.0,
               color=colors)
    middle.axhline(0, color="black", linewidth=0.6)
    middle.set_ylabel("reward")
    middle.grid(alpha=0.3)
    if reward.size:
        middle.text(0.99, 0.95, f"return {np.nansum(reward):.4g}", transform=middle.transAxes,
                    ha="right", va="top", fontsize="small",
                    bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))

    bottom.step(x, frac, where="pre")  # a fraction holds during the decision that set it
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("trainable\nfraction")
    bottom.set_xlabel("decision")
    bottom.grid(alpha=0.3)
    bottom.set_xlim(x[0] - 0.5, x[-1] + 0.5)  # the tie map's range: the same ticks
    bottom.xaxis.set_major_locator(_decision_ticks())
    return _save(fig, path)


def _steps_axis(ax: Axes, decisions: np.ndarray, steps: np.ndarray) -> None:
    """Optimizer steps on the top axis (when they grow with every decision)."""
    ok = np.isfinite(steps)
    d, s = decisions[ok].astype(float), steps[ok]
    if len(d) < 2 or np.any(np.diff(d) <= 0) or np.any(np.diff(s) <= 0):
        return
    top = ax.secondary_xaxis("top", functions=(lambda v: _interp(v, d, s),
                                               lambda v: _interp(v, s, d)))
    top.set_xlabel("optimizer steps")
    top.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True, steps=[1, 2, 4, 5, 10]))
    top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "" if v < 0 else _plain(v)))


def _interp(v: Any, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """`np.interp`, extended linearly beyond both ends (so that it stays invertible)."""
    v = np.asarray(v, dtype=float)
    left = fp[0] + (v - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    right = fp[-1] + (v - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return np.where(v < xp[0], left, np.where(v > xp[-1], right, np.interp(v, xp, fp)))
