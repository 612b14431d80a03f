"""Pictures of a running episode: what `LayerTyingEnv.render()` returns.

`render_mode="rgb_array"` gives an RGB image, `uint8` of shape `(FRAME_HEIGHT, FRAME_WIDTH, 3)`:

- the tie map so far, layers (y, layer 0 at the bottom) by decisions (x): column `d`
  is the map after decision `d` (column 0 the map at reset), each cell coloured by the
  root block the layer runs (the colours of `agents.runs.plots.plot_tie_map`), the
  decisions still to come in light grey, thin white lines between sweeps, the last
  decision's column outlined and the cell of the next decision outlined (in vector
  mode, its whole column);
- above it, the sweep, the decision and the layer to decide; below it, the validation
  perplexity (and the corpus's optimal one, on the synthetic corpus), the trainable
  fraction, the number of root blocks and the reward of the last step.

`render_mode="ansi"` gives one line of text (`ansi_line`).

Plain functions over an `EpisodeView` (plain numbers, no environment); `Canvas` keeps
one Matplotlib figure (Agg, no pyplot) per environment and redraws only what changes,
so that a frame costs about 10 to 40 ms on a CPU, not a new figure.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_WIDTH = 480  # multiples of 16: video encoders want even sizes, most want 16
FRAME_HEIGHT = 320
_DPI = 80
_UNDECIDED = "#e6e6e6"


@dataclass(frozen=True)
class EpisodeView:
    """What one frame shows: the tie maps so far and the current numbers."""

    maps: np.ndarray  # [n_layer, budget + 1] ints; -1 where not decided (or not recorded)
    ties: tuple[int, ...]  # the tie map now
    decision: int  # decisions made
    budget: int  # decisions in the episode
    sweep: int  # sweeps completed
    max_sweeps: int
    layer: int  # the layer of the next decision (`info["layer"]`)
    vector: bool  # vector mode: a step sets a whole tie map
    val_ppl: float
    optimal_ppl: float | None
    trainable_fraction: float
    last_reward: float | None  # None before the first step
    diverged: bool
    decisions_per_sweep: int  # L - 1 in layer mode, 1 in vector mode

    @property
    def n_layer(self) -> int:
        return int(self.maps.shape[0])


class TieLog:
    """The tie map after each decision of the current episode, for the frames' grid.

    `note` is called with the episode's training run whenever the environment's state
    changes (reset, step, restore); a different run starts a new log, so that a
    restored episode shows the decisions from its restore point on.
    """

    def __init__(self) -> None:
        self._run: weakref.ref[Any] | None = None
        self.maps: dict[int, tuple[int, ...]] = {}
        self.last_reward: float | None = None

    def note(self, run: Any, decision: int, ties: Sequence[int]) -> None:
        if self._run is None or self._run() is not run:
            self._run = weakref.ref(run)
            self.maps = {}
            self.last_reward = None
        self.maps[decision] = tuple(int(t) for t in ties)

    def grid(self, n_layer: int, budget: int) -> np.ndarray:
        """`[n_layer, budget + 1]` ints: column `d` the map after decision `d`, else -1."""
        out = np.full((n_layer, budget + 1), -1, dtype=np.int64)
        for decision, ties in self.maps.items():
            if 0 <= decision <= budget and len(ties) == n_layer:
                out[:, decision] = ties
        return out


def ansi_line(view: EpisodeView) -> str:
    """`sweep S layer I ties [...] val_ppl P`: the text of `render_mode="ansi"`."""
    return (f"sweep {view.sweep} layer {view.layer} ties {list(view.ties)} "
            f"val_ppl {view.val_ppl:.3f}")


def root_colors(n_layer: int) -> np.ndarray:
    """RGBA colour of each root block `0..n_layer-1` (tab10, tab20 above 10 layers)."""
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n_layer > 10 else "tab10"]
    return np.asarray(cmap(np.arange(n_layer) % 20), dtype=np.float64)


def header_text(view: EpisodeView) -> str:
    """The line above the grid: where the episode is."""
    where = (f"sweep {view.sweep}/{view.max_sweeps}   decision {view.decision}/{view.budget}")
    if view.diverged:
        return f"{where}   DIVERGED"
    if view.decision >= view.budget:
        return f"{where}   done"
    if view.vector:
        return f"{where}   next: a whole tie map"
    return f"{where}   next: layer {view.layer}"


def metrics_text(view: EpisodeView) -> tuple[str, str]:
    """The two lines below the grid: perplexity and reward; parameters and roots."""
    ppl = _number(view.val_ppl)
    if view.optimal_ppl is not None:
        ppl += f" (optimal {_number(view.optimal_ppl)})"
    reward = "-" if view.last_reward is None else f"{view.last_reward:+.4f}"
    roots = sum(1 for i, t in enumerate(view.ties) if t == i)
    return (f"val ppl {ppl}   last reward {reward}",
            f"trainable {100 * view.trainable_fraction:.1f}% of params   "
            f"roots {roots}/{view.n_layer}")


def _number(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.2f}" if x < 1e5 else f"{x:.3g}"


class Canvas:
    """One Matplotlib figure (Agg) for the frames of one environment's shape.

    The axes, ticks, labels and colour bar are drawn once and kept as a background; a
    frame restores it and draws only what changes (the grid, the outlines, the text).
    """

    def __init__(self, n_layer: int, budget: int, decisions_per_sweep: int) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import BoundaryNorm, ListedColormap
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
        from matplotlib.ticker import MaxNLocator

        self.shape = (n_layer, budget, decisions_per_sweep)
        fig = Figure(figsize=(FRAME_WIDTH / _DPI, FRAME_HEIGHT / _DPI), dpi=_DPI,
                     facecolor="white")
        self.agg = FigureCanvasAgg(fig)
        self.fig = fig
        cmap = ListedColormap(root_colors(n_layer)).with_extremes(bad=_UNDECIDED)
        norm = BoundaryNorm(np.arange(n_layer + 1) - 0.5, n_layer)

        ax = fig.add_axes((0.085, 0.30, 0.80, 0.58))
        self.ax = ax
        empty = np.ma.masked_all((n_layer, budget + 1))
        self.image = ax.imshow(empty, cmap=cmap, norm=norm, aspect="auto", origin="lower",
                               interpolation="nearest", animated=True,
                               extent=(-0.5, budget + 0.5, -0.5, n_layer - 0.5))
        sweeps = range(decisions_per_sweep, budget, decisions_per_sweep)
        self.sweep_lines = [ax.axvline(b + 0.5, color="white", linewidth=0.8, animated=True)
                            for b in (sweeps if len(sweeps) <= 60 else ())]  # while apart
        step = max(1, math.ceil(n_layer / 12))
        ax.set_yticks(range(0, n_layer, step))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.set_ylabel("layer", fontsize=9)
        ax.set_xlabel("decision (column d: the tie map after decision d)", fontsize=9,
                      labelpad=1)
        ax.tick_params(labelsize=8, length=2, pad=1)
        # the last decision's column, and the cell the next decision fills
        self.column = Rectangle((-0.5, -0.5), 1.0, n_layer, fill=False, edgecolor="black",
                                linewidth=1.2, animated=True)
        self.next_cell = Rectangle((0.5, 0.5), 1.0, 1.0, fill=False, edgecolor="black",
                                   linewidth=1.5, animated=True)
        ax.add_patch(self.column)
        ax.add_patch(self.next_cell)

        cax = fig.add_axes((0.90, 0.30, 0.022, 0.58))
        bar = fig.colorbar(self.image, cax=cax, ticks=range(0, n_layer, step))
        bar.ax.tick_params(labelsize=8, length=2, pad=1)
        bar.set_label("root block", fontsize=9, labelpad=2)

        self.header = fig.text(0.02, 0.955, "", fontsize=11, weight="bold", va="top",
                               animated=True)
        self.lines = tuple(fig.text(0.02, y, "", fontsize=10, va="center", family="monospace",
                                    animated=True) for y in (0.115, 0.045))
        self.agg.draw()  # everything but the animated artists
        self.background = self.agg.copy_from_bbox(fig.bbox)

    def draw(self, view: EpisodeView) -> np.ndarray:
        """The frame of `view`: RGB `uint8`, shape `(FRAME_HEIGHT, FRAME_WIDTH, 3)`."""
        n_layer, budget, _ = self.shape
        if view.maps.shape != (n_layer, budget + 1):
            raise ValueError(f"a view of shape {view.maps.shape} does not fit a canvas made "
                             f"for {(n_layer, budget + 1)}")
        self.image.set_data(np.ma.masked_less(view.maps, 0))
        self.column.set_x(min(view.decision, budget) - 0.5)
        upcoming = not view.diverged and view.decision < budget
        self.next_cell.set_visible(upcoming)
        if view.vector:  # a whole column comes next
            self.next_cell.set_bounds(view.decision + 0.5, -0.5, 1.0, n_layer)
        else:
            self.next_cell.set_bounds(view.decision + 0.5, view.layer - 0.5, 1.0, 1.0)
        self.header.set_text(header_text(view))
        self.header.set_color("#b00000" if view.diverged else "black")
        for artist, text in zip(self.lines, metrics_text(view), strict=True):
            artist.set_text(text)

        self.agg.restore_region(self.background)
        for artist in (self.image, *self.sweep_lines, *self.ax.spines.values(), self.column,
                       self.next_cell):
            self.ax.draw_artist(artist)
        for artist in (self.header, *self.lines):
            self.fig.draw_artist(artist)
        rgba = np.asarray(self.agg.buffer_rgba())
        return np.ascontiguousarray(rgba[..., :3])


def rgb_frame(view: EpisodeView, canvas: Canvas | None = None) -> np.ndarray:
    """The frame of `view`, drawn on `canvas` (or on a new one when it does not fit)."""
    if canvas is None or canvas.shape != (view.n_layer, view.budget, view.decisions_per_sweep):
        canvas = Canvas(view.n_layer, view.budget, view.decisions_per_sweep)
    return canvas.draw(view)
