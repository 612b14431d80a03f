"""The report of a benchmark: results.json, results.md and the plots, from the cells on disk.

| path             | content                                                           |
|------------------|-------------------------------------------------------------------|
| `results.json`   | the request (and its equivalent command), date, machine, commit,  |
|                  | every cell's status, `result.json` and episode return, per-agent  |
|                  | aggregates and statistics (`agents.benchmark.stats`)              |
| `results.md`     | one row per agent: IQM [95% CI] over seeds of final val/test      |
|                  | perplexity, return, trainable fraction, layers tied; memory, wall |
|                  | time; P(improves on qlearning); hypervolume; the paper's claim;   |
|                  | failed cells                                                      |
| `*.png`          | `agents.benchmark.plots`: intervals, Pareto, curves, profiles     |

`summarize` rebuilds all of them from `OUT/cells` at any time. A results.json may carry
a top-level `track` (`{"name", "version"}`, shown in the page's heading; an optional
`hypervolume_reference` `{"ideal_val_ppl", "final_val_ppl", "trainable_fraction"}` fixes
the hypervolume's box).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agents.benchmark import plots
from agents.benchmark.cells import (
    CELLS,
    Json,
    available_cores,
    cell_dir,
    cell_name,
    cell_status,
    expected_record,
)
from agents.benchmark.stats import Bootstrap
from agents.benchmark.tracks import judged_by
from agents.runs.plots import read_log
from agents.runs.result import cell_result, read_result
from tying_env.files import read_json, write_json, write_text

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
PARETO_PNG, CURVES_PNG = plots.PARETO_PNG, plots.CURVES_PNG
INTERVALS_PNG, PROFILES_PNG = plots.INTERVALS_PNG, plots.PROFILES_PNG
MIB = 2.0 ** 20
ROOT = Path(__file__).resolve().parents[2]


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
            found = read_result(folder)
            record = read_json(folder / "failure.json") or {}
            if found is not None:
                pairs.append((found.agent, found.seed))
            elif isinstance(record.get("agent"), str) and isinstance(record.get("seed"), int):
                pairs.append((record["agent"], record["seed"]))
    cells = []
    for agent, seed in pairs:
        folder = cell_dir(out, agent, seed)
        expected = None if request is None else expected_record(request, agent, seed)
        status = cell_status(out, agent, seed, expected)
        found = read_result(folder) if status == "finished" else None
        cells.append({
            "name": cell_name(agent, seed), "agent": agent, "seed": seed, "status": status,
            "path": str(folder.relative_to(out)),
            "result": found.to_json() if found is not None else None,
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
        results = [r for r in map(cell_result, mine) if r is not None]
        memory = [r.memory_bytes or {} for r in results]
        table[agent] = {
            "seeds": [c["seed"] for c in mine if c["status"] == "finished"],
            "failed_seeds": [c["seed"] for c in mine if c["status"] == "failed"],
            "missing_seeds": [c["seed"] for c in mine
                              if c["status"] in ("missing", "incomplete")],
            "diverged_seeds": [c["seed"] for c in mine
                               if c["status"] == "finished" and cell_result(c).diverged],
            "final_val_ppl": _stats([r.final_val_ppl for r in results]),
            "final_test_ppl": _stats([r.final_test_ppl for r in results]),
            "trainable_fraction": _stats([r.trainable_fraction for r in results]),
            "mean_trainable_fraction": _stats([r.mean_trainable_fraction for r in results]),
            **{f"{k}_mib": _stats([m[k] / MIB for m in memory if k in m])
               for k in ("params", "grads", "optimizer", "total")},
            "wall_seconds": _stats([r.seconds for r in results]),
            # the fingerprints of the agent's code its cells ran (`agents.runs.source`)
            "source_sha256": sorted({r.agent_source["sha256"] for r in results
                                     if r.agent_source}),
        }
    return table


def _optimal(cells: Sequence[Json]) -> Json | None:
    for cell in cells:
        result = cell_result(cell)
        if result is not None and result.optimum is not None:
            return result.optimum
    return None


def episode_return(out: Path, cell: Json) -> float | None:
    """A finished cell's episode return: the sum of its log's rewards (online), or the
    mean return of its evaluation episodes (train-then-evaluate)."""
    result = cell_result(cell)
    if result is not None and result.eval:
        finite = result.eval_returns
        return float(np.mean(finite)) if finite else None
    try:
        records = read_log(out / cell["path"] / "log.jsonl")
    except (OSError, ValueError):
        return None
    total = sum(float(r.get("reward", 0.0)) for r in records)
    return total if records and math.isfinite(total) else None


def code_version(root: Path = ROOT) -> Json:
    """The git commit of the code (`None` outside a git checkout) and whether files differ."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def summarize(out: str | Path, bootstrap: Bootstrap | None = None) -> str:
    """Rebuild results.json's cells and statistics, results.md and the plots from the
    cells on disk.

    Covers the request recorded in `out/results.json` (every cell folder when there is
    none); returns the text of results.md. `bootstrap` sets the replications, interval
    size and seed of every interval (default `Bootstrap()`: deterministic).
    """
    from agents.benchmark.paired import paired_statistics
    from agents.benchmark.stats import benchmark_statistics

    out = Path(out)
    meta = read_json(out / RESULTS_JSON) or {}
    request = meta.get("request")
    cells = collect(out, request)
    for cell in cells:
        cell["episode_return"] = episode_return(out, cell) if cell["status"] == "finished" \
            else None
    agents = request["agents"] if request else sorted({c["agent"] for c in cells})
    table = aggregate(cells, agents)
    track = track_of(meta)
    baseline, hypothesis = judged_by(track)
    per_agent, statistics = benchmark_statistics(
        cells, agents, baseline=baseline, hypothesis=hypothesis,
        reference=track.get("hypervolume_reference"), bootstrap=bootstrap or Bootstrap())
    for agent in agents:
        table[agent] |= per_agent[agent]
    if track.get("objective"):  # Benchmark v2: judged by paired statistics
        statistics["paired"] = paired_statistics(
            cells, agents, reference=baseline, hypothesis=hypothesis,
            random_for=track.get("random_for") or {},
            static_agents=track.get("static_agents") or [],
            metric=track.get("rank_metric", "final_val_ppl"),
            lower_is_better=track.get("rank_metric", "final_val_ppl") != "episode_return",
            margin=track.get("margin", 0.01), bootstrap=bootstrap or Bootstrap())
    if "machine" not in meta:
        meta["machine"] = machine_info()
    if "code" not in meta:
        meta["code"] = code_version()
    meta |= {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "counts": {s: sum(c["status"] == s for c in cells)
                        for s in ("finished", "failed", "incomplete", "missing")},
             "optimal": _optimal(cells), "agents": table, "statistics": statistics,
             "cells": cells}
    write_json(out / RESULTS_JSON, meta)
    text = markdown(meta)
    write_text(out / RESULTS_MD, text)
    plots.plot_all(out, meta)
    return text


# ---------------------------------------------------------------- text
def fmt(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or \
            not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def ci(estimate: Json | None, digits: int = 2) -> str:
    """`value [low, high]` of an estimate; `value (n=1)` for one seed; `—` for none."""
    if not estimate or estimate.get("value") is None:
        return "—"
    if estimate.get("n") == 1:
        return f"{fmt(estimate['value'], digits)} (n=1)"
    return (f"{fmt(estimate['value'], digits)} "
            f"[{fmt(estimate['low'], digits)}, {fmt(estimate['high'], digits)}]")


def _seeds(row: Json) -> str:
    text = ", ".join(map(str, row["seeds"])) or "none"
    for key, label in (("failed_seeds", "failed"), ("missing_seeds", "missing"),
                       ("diverged_seeds", "diverged")):
        if row[key]:
            text += f" ({label}: {', '.join(map(str, row[key]))})"
    return text


def track_of(meta: Json) -> Json:
    """The results' track (`{"name", "version", ...}`): top-level, or in the request."""
    return meta.get("track") or (meta.get("request") or {}).get("track") or {}


def heading(meta: Json) -> str:
    """The page's title: the track (name and version) when there is one, and the env."""
    env = (meta.get("request") or {}).get("env_id", "(unknown env)")
    track = track_of(meta)
    if track.get("name"):
        return f"Track `{track['name']}` (version {track.get('version', '?')}) on {env}"
    return f"Benchmark on {env}"


def method_text(meta: Json) -> str:
    """One paragraph: how the intervals were computed."""
    method = (meta.get("statistics") or {}).get("method") or {}
    return (f"IQM = interquartile mean over seeds (the mean of the middle 50%); brackets: "
            f"{round(100 * method.get('confidence', 0.95))}% stratified-bootstrap interval over "
            f"seeds ({method.get('reps', '?')} replications, percentile method, seed "
            f"{method.get('seed', '?')}; {method.get('library', 'rliable, pymoo')}).")


def claim_lines(meta: Json) -> list[str]:
    """What the numbers say, as Markdown bullets: who beats the baseline, the paper's claim."""
    statistics = meta.get("statistics") or {}
    claims = statistics.get("claims") or {}
    reference, hypothesis = judged_by(track_of(meta))
    tied = hypothesis.min_tied_fraction
    lines = []
    baseline = claims.get("baseline")
    if baseline is None:
        lines.append(f"- **Beats `{reference}`:** not computed: "
                     f"{statistics.get('note', f'no {reference} results')}.")
    else:
        beats = claims.get("beat_baseline") or []
        listed = ", ".join(f"`{a}`" for a in beats) or "none"
        lines.append(f"- **Beats `{baseline}`** (P(improvement) interval entirely above 0.5): "
                     f"{listed}.")
    paper = claims.get("paper") or {}
    if paper.get("holds") is None:
        lines.append(f"- **The paper's claim** (at least {tied:.0%} of layers tied with "
                     f"perplexity within conventional training's interval): cannot be checked "
                     f"({paper.get('note', 'no data')}).")
        return lines
    bound = paper["conventional_val_ppl"]
    rows = paper.get("agents") or {}
    meeting = paper.get("meeting") or []
    verdict = "holds" if paper["holds"] else "does not hold"
    lines.append(f"- **The paper's claim** (IQM of layers tied at least {tied:.0%}, IQM "
                 f"final val ppl at most the upper end of `{paper['conventional']}`'s interval, "
                 f"{ci(bound)}): **{verdict}** at this scale"
                 + (f"; met by {', '.join(f'`{a}`' for a in meeting)}." if meeting else "."))
    if reference in rows:
        q = rows[reference]
        lines.append(f"  `{reference}`: {q['layers_tied']:.0%} of layers tied, val ppl "
                     f"{fmt(q['val_ppl'])}: " + ("meets it." if q["holds"] else
                     "does not meet it (" + ("too few layers tied" if not q["tied_enough"]
                                             else "perplexity above the interval") + ")."))
    return lines


def markdown(meta: Json) -> str:
    """results.md from results.json's content."""
    request, machine, counts = meta.get("request") or {}, meta.get("machine") or {}, meta["counts"]
    lines = [f"# {heading(meta)}", ""]
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
    code = meta.get("code") or {}
    lines += [f"- date: {meta['date']}; machine: {machine.get('platform')}, "
              f"{machine.get('cpu_count')} CPUs, torch {machine.get('torch')}"
              + (f", {request['workers']} worker(s) x {request['threads']} thread(s)"
                 if request else ""),
              f"- commit: {code.get('commit') or 'unknown'}"
              + (" (with uncommitted changes)" if code.get("dirty") else ""),
              "- cells: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
              + f" (of {sum(counts.values())})"]
    optimal = meta.get("optimal")
    if optimal:
        lines.append(f"- optimal perplexity of the synthetic source: "
                     f"{fmt(optimal['optimal_val_ppl'], 3)} (validation), "
                     f"{fmt(optimal['optimal_test_ppl'], 3)} (test)")
    lines += ["", "Final perplexities are on the full validation and test splits. "
              + method_text(meta) + " Return: the episode's sum of rewards. Trainable "
              "fraction and layers tied at the end of the run; trainable (run mean), memory "
              "(MiB of parameters, gradients and optimizer state at the end) and wall time "
              "per cell (s) are means over seeds.", "",
              "| agent | val ppl | test ppl | return | trainable (end) | layers tied (end) | "
              "trainable (run mean) | total MiB | wall s | seeds |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for agent, row in meta["agents"].items():
        iqm = row.get("iqm") or {}
        lines.append(
            f"| {agent} | {ci(iqm.get('final_val_ppl'))} | {ci(iqm.get('final_test_ppl'))} | "
            f"{ci(iqm.get('episode_return'), 3)} | {ci(iqm.get('trainable_fraction'), 3)} | "
            f"{ci(iqm.get('layers_tied_fraction'), 3)} | "
            f"{fmt(row['mean_trainable_fraction']['mean'], 3)} | "
            f"{fmt(row['total_mib']['mean'], 3)} | {fmt(row['wall_seconds']['mean'], 1)} | "
            f"{_seeds(row)} |")
    if optimal:
        lines.append(f"| *optimal (source)* | {fmt(optimal['optimal_val_ppl'])} | "
                     f"{fmt(optimal['optimal_test_ppl'])} |  |  |  |  |  |  |  |")
    lines += ["", *comparison_section(meta), "", *hypervolume_section(meta), "",
              "## What the numbers say", "", *claim_lines(meta), "", "## Figures", ""]
    lines += [f"![{what}]({name})" for what, name in (
        ("IQM and intervals per agent", INTERVALS_PNG),
        ("final perplexity against trainable fraction", PARETO_PNG),
        ("validation perplexity over training", CURVES_PNG),
        ("performance profiles", PROFILES_PNG))]
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


def comparison_section(meta: Json) -> list[str]:
    """The table of P(improves on the baseline), or a note when it is not there."""
    statistics = meta.get("statistics") or {}
    baseline = statistics.get("baseline")
    reference = judged_by(track_of(meta))[0]
    lines = [f"## Against `{baseline or reference}`", ""]
    if baseline is None:
        return lines + [f"Skipped: {statistics.get('note', f'no {reference} results')}."]
    lines += [f"P(improvement) = probability that a seed of the agent ends with a lower "
              f"final validation perplexity than a seed of `{baseline}` (ties count half), "
              "with its interval (the seeds of both agents resampled independently). "
              "*better*: the interval lies above 0.5; *worse*: below; *undecided*: it "
              "contains 0.5.", "",
              f"| agent | P(improves on {baseline}) | verdict | seeds (agent, {baseline}) |",
              "|---|---|---|---|"]
    for agent, row in meta["agents"].items():
        est = row.get("improvement")
        if agent == baseline or not est:
            continue
        lines.append(f"| {agent} | {ci(est)} | {est.get('verdict') or '—'} | "
                     f"{est.get('n')}, {est.get('n_baseline')} |")
    return lines


def hypervolume_section(meta: Json) -> list[str]:
    """The hypervolume table with its reference point."""
    ref = (meta.get("statistics") or {}).get("hypervolume_reference")
    lines = ["## Two objectives: hypervolume", ""]
    if not ref:
        return lines + ["No finished cell: no hypervolume."]
    lines += [f"Objectives, both lower-better: final validation perplexity and trainable "
              f"fraction. Per seed, the share of the box from (ppl "
              f"{fmt(ref.get('ideal_val_ppl', 1.0))}, fraction 0) to (ppl "
              f"{fmt(ref['final_val_ppl'])}, fraction {fmt(ref['trainable_fraction'])}) "
              f"({ref['source']}) that the seed's result dominates (pymoo's HV); the table "
              "gives the IQM over seeds with its stratified-bootstrap interval, as for every "
              "other metric.", "",
              "| agent | hypervolume | seeds |", "|---|---|---|"]
    for agent, row in meta["agents"].items():
        est = row.get("hypervolume") or {}
        lines.append(f"| {agent} | {ci(est, 4)} | {est.get('n', 0)} |")
    return lines
