"""The report of a benchmark: results.json, results.md and the plots, from the cells on disk.

| path             | content                                                           |
|------------------|-------------------------------------------------------------------|
| `results.json`   | the request (and its equivalent command), date, machine, every    |
|                  | cell's status and `result.json`, per-agent aggregates             |
| `results.md`     | one row per agent: final val/test perplexity (mean ± std over     |
|                  | seeds), trainable fraction, memory, wall time; failed cells       |
| `pareto.png`     | final validation perplexity against final trainable fraction      |
| `curves.png`     | validation perplexity over optimizer steps, per agent, over seeds |

`summarize` rebuilds all of them from `OUT/cells` at any time.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter

from agents.benchmark.cells import CELLS, Json, available_cores, cell_dir, cell_name, cell_status
from agents.runs.plots import plt, read_log  # plt: matplotlib with the Agg backend
from tying_env.files import atomic_write, read_json, write_json, write_text

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
PARETO_PNG, CURVES_PNG = "pareto.png", "curves.png"
MIB = 2.0 ** 20


def machine_info(threads: int | None = None) -> Json:
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "available_cores": available_cores(), "torch": torch.__version__,
            "threads_per_worker": threads, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------- summary
def collect(out: Path, request: Json | None) -> list[Json]:
    """One entry per cell: the request's cells, or every cell folder when there is none."""
    if request is not None:
        pairs = list(itertools.product(request["agents"], request["seeds"]))
    else:
        pairs = []
        for folder in sorted((out / CELLS).glob("*/")):
            record = read_json(folder / "result.json") or read_json(folder / "failure.json")
            if record and isinstance(record.get("agent"), str) and \
                    isinstance(record.get("seed"), int):
                pairs.append((record["agent"], record["seed"]))
    cells = []
    for agent, seed in pairs:
        folder = cell_dir(out, agent, seed)
        expected = None
        if request is not None:
            expected = {"agent": agent, "seed": seed, "env_id": request["env_id"],
                        "env_kwargs": request["env_config"],
                        "agent_kwargs": request["agent_kwargs"].get(agent, {}),
                        "train_episodes": request.get("train_episodes") or None}
            if request.get("train_episodes"):
                expected["eval_episodes"] = request.get("eval_episodes")
        status = cell_status(out, agent, seed, expected)
        cells.append({
            "name": cell_name(agent, seed), "agent": agent, "seed": seed, "status": status,
            "path": str(folder.relative_to(out)),
            "result": read_json(folder / "result.json") if status == "finished" else None,
            "failure": read_json(folder / "failure.json") if status == "failed" else None,
        })
    return cells


def _stats(values: Sequence[Any]) -> Json:
    """Mean, sample std (None for one value) and count of the finite numbers in `values`."""
    finite = [float(v) for v in values
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def aggregate(cells: Sequence[Json], agents: Sequence[str]) -> dict[str, Json]:
    """Per agent: statistics over the seeds of its finished cells."""
    table = {}
    for agent in agents:
        mine = [c for c in cells if c["agent"] == agent]
        results = [c["result"] for c in mine if c["status"] == "finished"]
        memory = [r.get("memory_bytes") or {} for r in results]
        table[agent] = {
            "seeds": [c["seed"] for c in mine if c["status"] == "finished"],
            "failed_seeds": [c["seed"] for c in mine if c["status"] == "failed"],
            "missing_seeds": [c["seed"] for c in mine
                              if c["status"] in ("missing", "incomplete")],
            "diverged_seeds": [c["seed"] for c in mine
                               if c["status"] == "finished" and c["result"].get("diverged")],
            "final_val_ppl": _stats([r.get("final_val_ppl") for r in results]),
            "final_test_ppl": _stats([r.get("final_test_ppl") for r in results]),
            "trainable_fraction": _stats([r.get("trainable_fraction") for r in results]),
            "mean_trainable_fraction": _stats([r.get("mean_trainable_fraction")
                                               for r in results]),
            **{f"{k}_mib": _stats([m[k] / MIB for m in memory if k in m])
               for k in ("params", "grads", "optimizer", "total")},
            "wall_seconds": _stats([r.get("total_seconds", r.get("wall_seconds"))
                                    for r in results]),
        }
    return table


def _optimal(cells: Sequence[Json]) -> Json | None:
    for cell in cells:
        result = cell["result"] or {}
        if result.get("optimal_ppl") is not None:
            return {k: result.get(k) for k in ("optimal_ppl", "optimal_val_ppl",
                                               "optimal_test_ppl")}
    return None


def summarize(out: str | Path) -> str:
    """Rebuild results.json's cells, results.md and the plots from the cells on disk.

    Covers the request recorded in `out/results.json` (every cell folder when there is
    none); returns the text of results.md.
    """
    out = Path(out)
    meta = read_json(out / RESULTS_JSON) or {}
    request = meta.get("request")
    cells = collect(out, request)
    agents = request["agents"] if request else sorted({c["agent"] for c in cells})
    table = aggregate(cells, agents)
    optimal = _optimal(cells)
    meta.setdefault("machine", machine_info())
    meta |= {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "counts": {s: sum(c["status"] == s for c in cells)
                        for s in ("finished", "failed", "incomplete", "missing")},
             "optimal": optimal, "agents": table, "cells": cells}
    write_json(out / RESULTS_JSON, meta)
    text = markdown(meta)
    write_text(out / RESULTS_MD, text)
    plot_pareto(cells, agents, out / PARETO_PNG, optimal)
    plot_curves(out, cells, agents, out / CURVES_PNG, optimal)
    return text


def fmt(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _pm(stats: Json, digits: int = 2) -> str:
    if stats["mean"] is None:
        return "—"
    if stats["std"] is None:
        return f"{fmt(stats['mean'], digits)} (n=1)"
    return f"{fmt(stats['mean'], digits)} ± {fmt(stats['std'], digits)}"


def _seeds(row: Json) -> str:
    text = ", ".join(map(str, row["seeds"])) or "none"
    for key, label in (("failed_seeds", "failed"), ("missing_seeds", "missing"),
                       ("diverged_seeds", "diverged")):
        if row[key]:
            text += f" ({label}: {', '.join(map(str, row[key]))})"
    return text


def markdown(meta: Json) -> str:
    """results.md from results.json's content."""
    request, machine, counts = meta.get("request") or {}, meta.get("machine") or {}, meta["counts"]
    lines = [f"# Benchmark on {request.get('env_id', '(unknown env)')}", ""]
    if request:
        lines += [f"- command: `{request['command']}`",
                  f"- env kwargs: `{json.dumps(request['env_kwargs'])}`"]
        if request.get("train_episodes"):
            lines.append(f"- protocol: train then evaluate: each cell trains its agent over "
                         f"{request['train_episodes']} episodes, then runs it frozen on "
                         f"{request['eval_episodes']} held-out seeds; the perplexities and "
                         "trainable fractions are means over those held-out episodes")
        else:
            lines.append("- protocol: online (the paper's): one episode, one training run, "
                         "learned while it is played")
    lines += [f"- date: {meta['date']}; machine: {machine.get('platform')}, "
              f"{machine.get('cpu_count')} CPUs, torch {machine.get('torch')}"
              + (f", {request['workers']} worker(s) x {request['threads']} thread(s)"
                 if request else ""),
              "- cells: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
              + f" (of {sum(counts.values())})"]
    optimal = meta.get("optimal")
    if optimal:
        lines.append(f"- optimal perplexity of the synthetic source: "
                     f"{fmt(optimal['optimal_val_ppl'], 3)} (validation), "
                     f"{fmt(optimal['optimal_test_ppl'], 3)} (test)")
    lines += ["", "Final perplexities are on the full validation and test splits, as mean ± "
              "sample std over the finished seeds. Trainable fraction at the end of the run and "
              "averaged over its decisions; memory (MiB) of parameters, gradients and optimizer "
              "state at the end; wall time per cell in seconds.", "",
              "| agent | val ppl | test ppl | trainable (end) | trainable (run mean) | "
              "params MiB | grads MiB | optimizer MiB | total MiB | wall s | seeds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for agent, row in meta["agents"].items():
        lines.append(
            f"| {agent} | {_pm(row['final_val_ppl'])} | {_pm(row['final_test_ppl'])} | "
            f"{_pm(row['trainable_fraction'], 3)} | {_pm(row['mean_trainable_fraction'], 3)} | "
            + " | ".join(fmt(row[f"{k}_mib"]["mean"], 3)
                         for k in ("params", "grads", "optimizer", "total"))
            + f" | {fmt(row['wall_seconds']['mean'], 1)} | {_seeds(row)} |")
    if optimal:
        lines.append(f"| *optimal (source)* | {fmt(optimal['optimal_val_ppl'])} | "
                     f"{fmt(optimal['optimal_test_ppl'])} |  |  |  |  |  |  |  |  |")
    failed = [c for c in meta["cells"] if c["status"] == "failed"]
    if failed:
        lines += ["", "## Failed cells", "", "| cell | exit status | last line of stderr |",
                  "|---|---|---|"]
        for cell in failed:
            failure = cell["failure"] or {}
            tail = failure.get("stderr_tail") or ["(no stderr)"]
            last = tail[-1].replace("|", "\\|")
            lines.append(f"| {cell['name']} | {failure.get('returncode')} | {last} |")
        lines += ["", f"Each failed cell keeps its stderr in `{CELLS}/<cell>/stderr.txt`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots
def _colors(agents: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(agents) <= 10 else "tab20")
    return {a: cmap(i % cmap.N) for i, a in enumerate(agents)}


def _finish_plot(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend the axes, then write the figure atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes)


def plot_pareto(cells: Sequence[Json], agents: Sequence[str], path: Path,
                optimal: Json | None = None) -> Path:
    """Final validation perplexity against final trainable fraction; agent means larger."""
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = _colors(agents)
    plotted = False
    for agent in agents:
        points = [(c["result"]["trainable_fraction"], c["result"]["final_val_ppl"])
                  for c in cells if c["agent"] == agent and c["status"] == "finished"
                  and c["result"].get("final_val_ppl") is not None]
        if not points:
            continue
        x, y = np.array(points, dtype=float).T
        ax.scatter(x, y, s=25, alpha=0.6, color=colors[agent])
        ax.scatter([x.mean()], [y.mean()], s=160, marker="D", color=colors[agent],
                   edgecolor="black", label=f"{agent} (mean of {len(x)})", zorder=3)
        plotted = True
    if optimal and optimal.get("optimal_val_ppl") is not None:
        ax.axhline(optimal["optimal_val_ppl"], linestyle="--", color="gray",
                   label=f"optimal {optimal['optimal_val_ppl']:.3f}")
    if not plotted:
        _no_data(ax)
    ax.set_xlim(0, 1.05)
    return _finish_plot(fig, ax, path, "trainable fraction of parameters (end of run)",
                        "final validation perplexity (full split)",
                        "perplexity against trainable parameters (small: seeds, large: mean)")


def curve(out: Path, cells: Sequence[Json]) -> tuple[np.ndarray, ...]:
    """(steps, mean, min, max) of validation perplexity over `cells`' log.jsonl files.

    Step 0 is each run's initial perplexity; a step enters with the seeds that reached it.
    """
    by_step: dict[int, list[float]] = {}
    for cell in cells:
        result = cell["result"] or {}
        try:
            records = read_log(out / cell["path"] / "log.jsonl")
        except (OSError, ValueError):
            continue
        points = [(0, result.get("initial_val_ppl"))]
        points += [(r.get("train_steps"), r.get("val_ppl")) for r in records]
        for step, ppl in points:
            if isinstance(step, int) and isinstance(ppl, (int, float)) and math.isfinite(ppl):
                by_step.setdefault(step, []).append(float(ppl))
    steps = np.array(sorted(by_step), dtype=float)
    values = [by_step[int(s)] for s in steps]
    return (steps, np.array([np.mean(v) for v in values]), np.array([min(v) for v in values]),
            np.array([max(v) for v in values]))


def _minor_label(y: float, _: Any) -> str:
    """Plain labels at 2, 3 and 5 times a power of ten (log axes), none elsewhere."""
    mantissa = round(y / 10 ** math.floor(math.log10(y)), 6) if y > 0 else 0
    return f"{y:g}" if mantissa in (2, 3, 5) else ""


def plot_curves(out: Path, cells: Sequence[Json], agents: Sequence[str], path: Path,
                optimal: Json | None = None) -> Path:
    """Validation perplexity over optimizer steps: mean over seeds and min-max band."""
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = _colors(agents)
    plotted = False
    for agent in agents:
        mine = [c for c in cells if c["agent"] == agent and c["status"] == "finished"]
        steps, mean, low, high = curve(out, mine)
        if not steps.size:
            continue
        ax.plot(steps, mean, marker=".", color=colors[agent],
                label=f"{agent} (mean of {len(mine)} seed(s))")
        ax.fill_between(steps, low, high, color=colors[agent], alpha=0.2, linewidth=0)
        plotted = True
    if optimal and optimal.get("optimal_ppl") is not None:
        ax.axhline(optimal["optimal_ppl"], linestyle="--", color="gray",
                   label=f"optimal {optimal['optimal_ppl']:.3f}")
    if plotted:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    else:
        _no_data(ax)
    return _finish_plot(fig, ax, path, "optimizer steps",
                        "validation perplexity (evaluation subset)",
                        "validation perplexity over training (band: min-max over seeds)")
