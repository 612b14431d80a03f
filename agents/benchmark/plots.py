"""Figures of a benchmark, drawn from results.json's content (and the cells' logs).

| file           | figure                                                                |
|----------------|-----------------------------------------------------------------------|
| `intervals.png`| one row per agent, one panel per statistic: IQM (or hypervolume, or   |
|                | P(improves on qlearning)) with its 95% interval                       |
| `pareto.png`   | final val ppl against trainable fraction: seeds, IQM with intervals   |
|                | on both axes, conventional training's interval; legend outside        |
| `curves.png`   | validation perplexity over training, one small panel per agent (IQM   |
|                | over seeds, band: interquartile range), the others' IQM in grey       |
| `profiles.png` | score distributions: fraction of seeds below each final val ppl       |

Each agent keeps one colour and marker across the figures. The intervals and the profiles
are drawn by rliable's `plot_utils` (`plot_interval_estimates`, `plot_performance_profiles`),
imported only when they are drawn. `plot_interval_estimates` makes its figure with pyplot:
it is closed once saved, and the backend is left as it was. The other figures are made
without pyplot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from agents.benchmark.stats import iqm
from agents.benchmark.tracks import judged_by
from agents.runs.plots import read_log
from agents.runs.result import cell_result
from tying_env.files import atomic_write

Json = dict[str, Any]
INTERVALS_PNG, PARETO_PNG, CURVES_PNG, PROFILES_PNG = (
    "intervals.png", "pareto.png", "curves.png", "profiles.png")
MARKERS = "oDs^vP*Xh<>p"
LINESTYLES = ("-", "--", "-.", ":")
# panels of intervals.png: (label, where the estimate is in an agent's row)
PANELS = (("final val ppl (IQM)", ("iqm", "final_val_ppl")),
          ("final test ppl (IQM)", ("iqm", "final_test_ppl")),
          ("episode return (IQM)", ("iqm", "episode_return")),
          ("trainable fraction, end (IQM)", ("iqm", "trainable_fraction")),
          ("layers tied, end (IQM)", ("iqm", "layers_tied_fraction")),
          ("hypervolume (ppl, trainable)", ("hypervolume",)),
          ("P(val ppl below {reference}'s)", ("improvement",)))  # the track's reference


def styles(agents: Sequence[str]) -> dict[str, Json]:
    """A colour, marker and line style per agent, the same in every figure (no grey: grey
    and black draw the other agents and `qlearning` in the small multiples)."""
    if len(agents) <= 10:
        colors = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7] + ["navy"]
    else:
        colors = [c for i, c in enumerate(colormaps["tab20"].colors) if i not in (14, 15)]
    return {a: {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[(i // len(colors) + i) % len(LINESTYLES)]}
            for i, a in enumerate(agents)}


def _save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG (atomically)."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110,
                                               bbox_inches="tight"))
    return path


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes)


def _estimate(row: Json, where: Sequence[str]) -> Json:
    value: Any = row
    for key in where:
        value = (value or {}).get(key)
    return value or {}


def _finished(cells: Sequence[Json], agent: str) -> list[Json]:
    return [c for c in cells if c["agent"] == agent and c["status"] == "finished"]


# ---------------------------------------------------------------- intervals
def plot_intervals(meta: Json, path: Path) -> Path:
    """IQM and intervals per agent and statistic (rliable's `plot_interval_estimates`: one
    panel per statistic that some agent has); agents sorted by final val ppl IQM, best on
    top."""
    table = meta["agents"]
    style = styles(list(table))

    def key(agent: str) -> float:
        value = _estimate(table[agent], ("iqm", "final_val_ppl")).get("value")
        return math.inf if value is None else value

    order = sorted(table, key=key)
    reference = judged_by(_track(meta))[0]
    panels = [(label.format(reference=reference), where) for label, where in PANELS
              if any(_estimate(table[a], where).get("value") is not None for a in order)]
    stats = meta.get("statistics") or {}
    method = stats.get("method") or {}
    note = (f"bar: {int(100 * method.get('confidence', 0.95))}% stratified-bootstrap interval "
            f"over seeds ({method.get('reps', '?')} reps); tick: estimate\nsorted by final "
            "val ppl IQM; ppl, trainable: lower is better; return, hypervolume, P: higher")
    title = _title(meta, "interquartile means and intervals over seeds")
    if not panels or not order:
        fig = Figure(figsize=(8, 3))
        ax = fig.subplots()
        _no_data(ax)
        ax.axis("off")
        fig.suptitle(title)
        return _save(fig, path)

    points, intervals = {}, {}
    for agent in order:
        est = [_estimate(table[agent], where) for _, where in panels]
        points[agent] = np.array([e.get("value", np.nan) for e in est], dtype=float)
        intervals[agent] = np.array([[e.get("low", np.nan) for e in est],
                                     [e.get("high", np.nan) for e in est]], dtype=float)
    import matplotlib.pyplot as plt  # rliable draws with pyplot: imported only here
    from rliable import plot_utils

    fig, axes = plot_utils.plot_interval_estimates(
        points, intervals, [label for label, _ in panels], algorithms=order[::-1],
        colors={a: style[a]["color"] for a in order}, subfigure_width=2.7,
        row_height=max(0.45, 3.2 / len(order)), xlabel="", max_ticks=4)
    try:
        for ax, (_, where) in zip(np.atleast_1d(axes), panels, strict=True):
            ax.title.set_fontsize(10)
            ax.tick_params(labelsize=9)
            for ticks in ax.collections:  # the estimates: visible on an interval of width 0
                if not isinstance(ticks, PolyCollection):
                    ticks.set(linewidth=2, alpha=0.9)
            if where == ("improvement",):
                ax.axvline(0.5, color="gray", linestyle="--", linewidth=1)
                ax.set_xlim(-0.02, 1.02)
        np.atleast_1d(axes)[0].tick_params(axis="y", labelsize=10)
        fig.suptitle(title)
        fig.supxlabel(note, fontsize=9)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def _track(meta: Json) -> Json:
    """The results' track (`{"name", "version", ...}`): top-level, or in the request."""
    return meta.get("track") or (meta.get("request") or {}).get("track") or {}


def _title(meta: Json, what: str) -> str:
    track = _track(meta)
    env = (meta.get("request") or {}).get("env_id", "")
    name = f"track {track['name']} v{track.get('version')}" if track.get("name") else env
    return f"{name}: {what}" if name else what


# ---------------------------------------------------------------- pareto
def plot_pareto(meta: Json, path: Path) -> Path:
    """Final val ppl against trainable fraction: seeds (small), IQM with both intervals."""
    cells, table = meta["cells"], meta["agents"]
    style = styles(list(table))
    fig = Figure(figsize=(8.5, 5.5))
    ax = fig.subplots()
    plotted = False
    agent_name = judged_by(_track(meta))[1].conventional_agent
    conventional = _estimate(table.get(agent_name) or {}, ("iqm", "final_val_ppl"))
    if conventional.get("low") is not None:
        ax.axhspan(conventional["low"], conventional["high"], color="gray", alpha=0.15,
                   label=f"{agent_name}: val ppl interval")
    for agent in table:
        results = [cell_result(c) for c in _finished(cells, agent)]
        points = [(r.trainable_fraction, r.final_val_ppl) for r in results if r is not None]
        points = [p for p in points if None not in p]
        if not points:
            continue
        s = style[agent]
        x, y = np.array(points, dtype=float).T
        ax.scatter(x, y, s=14, alpha=0.35, color=s["color"], marker=s["marker"],
                   linewidths=0)
        fx = _estimate(table[agent], ("iqm", "trainable_fraction"))
        fy = _estimate(table[agent], ("iqm", "final_val_ppl"))
        ax.errorbar([fx["value"]], [fy["value"]],
                    xerr=[[fx["value"] - fx["low"]], [fx["high"] - fx["value"]]],
                    yerr=[[fy["value"] - fy["low"]], [fy["high"] - fy["value"]]],
                    fmt=s["marker"], markersize=9, color=s["color"], markeredgecolor="black",
                    ecolor=s["color"], elinewidth=1.5, capsize=3, zorder=3,
                    label=f"{agent} ({len(points)} seed{'' if len(points) == 1 else 's'})")
        plotted = True
    if not plotted:
        _no_data(ax)
    optimal = (meta.get("optimal") or {}).get("optimal_val_ppl")
    if optimal is not None:
        low, high = ax.get_ylim()
        off = "" if plotted and low <= optimal <= high else " (below the axis)"
        ax.axhline(optimal, linestyle="--", color="gray", label=f"optimal {optimal:.3f}{off}")
        ax.set_ylim(low, high)  # the data's range: a far optimum would squash the agents
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("trainable fraction of parameters (end of run)")
    ax.set_ylabel("final validation perplexity (full split)")
    ax.set_title(_title(meta, "perplexity against trainable parameters") +
                 "\nsmall: seeds; large: IQM with 95% intervals on both axes", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0)
    return _save(fig, path)


# ---------------------------------------------------------------- curves
def cell_curve(out: Path, cell: Json) -> dict[int, float]:
    """Validation perplexity by optimizer step of one cell (step 0: the initial model).

    A train-then-evaluate cell gives the mean over its evaluation episodes' logs.
    """
    result = cell.get("result") or {}
    folder = out / cell["path"]
    logs = [folder / "log.jsonl"] if (folder / "log.jsonl").is_file() else \
        sorted(folder.glob("eval/seed-*/log.jsonl"))
    by_step: dict[int, list[float]] = {}
    for log in logs:
        try:
            records = read_log(log)
        except (OSError, ValueError):
            continue
        points = [(r.get("train_steps"), r.get("val_ppl")) for r in records]
        if log.parent == folder:
            points.insert(0, (0, result.get("initial_val_ppl")))
        for step, ppl in points:
            if isinstance(step, int) and isinstance(ppl, (int, float)) and math.isfinite(ppl):
                by_step.setdefault(step, []).append(float(ppl))
    return {step: float(np.mean(v)) for step, v in by_step.items()}


def curve(out: Path, cells: Sequence[Json]) -> tuple[np.ndarray, ...]:
    """(steps, IQM, 25th, 75th percentile) of validation perplexity over `cells`.

    A step enters with the seeds that reached it.
    """
    by_step: dict[int, list[float]] = {}
    for cell in cells:
        for step, ppl in cell_curve(out, cell).items():
            by_step.setdefault(step, []).append(ppl)
    steps = np.array(sorted(by_step), dtype=float)
    values = [by_step[int(s)] for s in steps]
    return (steps, np.array([iqm(v) for v in values]),
            np.array([np.percentile(v, 25) for v in values]),
            np.array([np.percentile(v, 75) for v in values]))


def _minor_label(y: float, _: Any) -> str:
    """Plain labels at 2, 3 and 5 times a power of ten (log axes), none elsewhere."""
    mantissa = round(y / 10 ** math.floor(math.log10(y)), 6) if y > 0 else 0
    return f"{y:g}" if mantissa in (2, 3, 5) else ""


def plot_curves(out: Path, meta: Json, path: Path) -> Path:
    """Small multiples: one panel per agent, its IQM curve and interquartile band over
    seeds, every other agent's IQM in light grey and the reference agent's (the track's,
    e.g. `qlearning`) dashed, shared axes."""
    cells, agents = meta["cells"], list(meta["agents"])
    reference = judged_by(_track(meta))[0]
    style = styles(agents)
    curves = {a: curve(out, _finished(cells, a)) for a in agents}
    shown = [a for a in agents if curves[a][0].size] or agents[:1]
    fig, axes = _grid(len(shown))
    optimal = (meta.get("optimal") or {}).get("optimal_ppl")
    for ax, agent in zip(axes.flat, shown, strict=False):
        steps, mid, low, high = curves[agent]
        for other in agents:
            o_steps, o_mid = curves[other][0], curves[other][1]
            if other == agent or not o_steps.size:
                continue
            if other == reference:
                ax.plot(o_steps, o_mid, color="black", linestyle="--", linewidth=1, zorder=2)
            else:
                ax.plot(o_steps, o_mid, color="0.75", linewidth=0.8, zorder=1)
        if steps.size:
            color = style[agent]["color"]
            ax.fill_between(steps, low, high, color=color, alpha=0.25, linewidth=0, zorder=3)
            ax.plot(steps, mid, color=color, linewidth=2, zorder=4)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        else:
            _no_data(ax)
        if optimal is not None:
            ax.axhline(optimal, linestyle=":", color="gray", linewidth=1)
        seeds = len(_finished(cells, agent))
        ax.set_title(f"{agent} ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=10)
        ax.grid(alpha=0.3)
    _label_axes(axes, len(shown), "optimizer steps", "val ppl (eval subset)")
    legend = ("coloured line: the panel's agent, IQM over seeds; band: interquartile range; "
              f"dashed black: {reference}; grey: the other agents"
              + ("; dotted: the source's optimal perplexity" if optimal is not None else ""))
    fig.suptitle(_title(meta, "validation perplexity over training") + "\n" + legend,
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- profiles
def _grid(n: int) -> tuple[Any, Any]:
    """Small multiples for `n` agents: at most 5 columns, shared axes."""
    ncols = min(5, max(n, 1))
    nrows = math.ceil(max(n, 1) / ncols)
    fig = Figure(figsize=(3.1 * ncols + 0.6, 2.5 * nrows + 1.0))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
        elif i + ncols >= n:  # nothing below it: its x tick labels show
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, axes


def _label_axes(axes: Any, n: int, xlabel: str, ylabel: str) -> None:
    """x labels on the lowest panel of each column, y labels on the first column."""
    ncols = axes.shape[1]
    for i, ax in enumerate(axes.flat[:n]):
        if i + ncols >= n:
            ax.set_xlabel(xlabel)
        if i % ncols == 0:
            ax.set_ylabel(ylabel)


def plot_profiles(meta: Json, path: Path) -> Path:
    """Score distributions of final val ppl, drawn by rliable's `plot_performance_profiles`:
    one panel per agent with its pointwise interval, the others in light grey and the
    reference agent (the track's) dashed."""
    from rliable import plot_utils  # imports pyplot; the figure here is drawn without it

    profile = (meta.get("statistics") or {}).get("profile") or {}
    reference = judged_by(_track(meta))[0]
    curves = {a: c for a, c in (profile.get("agents") or {}).items() if c}
    taus = np.array(profile.get("thresholds") or [])
    agents = [a for a in meta["agents"] if a in curves] or list(meta["agents"])[:1]
    style = styles(list(meta["agents"]))
    fig, axes = _grid(len(agents))
    for ax, agent in zip(axes.flat, agents, strict=False):
        mine = curves.get(agent)
        if not mine or not taus.size:
            _no_data(ax)
            continue
        # the panel's agent last, so that it is drawn on top
        shown = [*(a for a in curves if a != agent), agent]
        colors = {a: style[a]["color"] if a == agent else "black" if a == reference
                  else "0.75" for a in shown}
        plot_utils.plot_performance_profiles(
            {a: np.asarray(curves[a]["fraction"], dtype=float) for a in shown}, taus,
            performance_profile_cis={agent: (np.asarray(mine["low"], dtype=float),
                                             np.asarray(mine["high"], dtype=float))},
            ax=ax, colors=colors, alpha=0.25, xlabel="", ylabel="",
            linestyles={a: "--" if a == reference and a != agent else "-" for a in shown},
            labelsize="medium", ticklabelsize="small", wrect=4, hrect=4)
        for line in ax.get_lines():  # rliable draws every profile 2 points wide, in order
            label = line.get_label()
            line.set(linewidth=2 if label == agent else 1.0 if label == reference else 0.8,
                     zorder=4 if label == agent else 2 if label == reference else 1)
        ax.set_title(f"{agent} ({mine['n']} seed{'s' if mine['n'] != 1 else ''})",
                     fontsize=10)
        ax.set_ylim(-0.02, 1.02)
    _label_axes(axes, len(agents), "final val ppl threshold τ", "fraction of seeds < τ")
    fig.suptitle(_title(meta, "performance profiles (score distributions of final val ppl)")
                 + "\nhigher and further left is better; band: 95% pointwise interval; "
                 f"dashed black: {reference}; grey: the other agents", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_all(out: Path, meta: Json) -> list[Path]:
    """Every figure of the benchmark in `out`."""
    return [plot_intervals(meta, out / INTERVALS_PNG), plot_pareto(meta, out / PARETO_PNG),
            plot_curves(out, meta, out / CURVES_PNG), plot_profiles(meta, out / PROFILES_PNG)]
