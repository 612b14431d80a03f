"""`docs/surrogate.md` from a surrogate's validation report (`agents.surrogate.validate`).

    python -m agents.surrogate.page runs/surrogate/validation.json --out docs/surrogate.md

Each check of the standard gets its table and a verdict: met, not met, or not measurable
from the data (e.g. one seed per agent has no seed standard deviation). The figures
(`IMAGES`, beside the page) are the real and surrogate perplexity curves per agent and the
agents' mean returns, real against surrogate. Nothing is written by hand: the page
carries the validation's command and the commit it ran at.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.benchmark.report import code_version
from tying_env.files import read_json, write_text

Json = dict[str, Any]
# the standard (issue 25): intervals' coverage, per-agent gaps, ranking
COVERAGE = {"coverage_50": (0.45, 0.55), "coverage_90": (0.85, 0.95)}
MAX_GAP_SD = 1.0
MIN_TAU, MAX_TAU_DROP = 0.8, 0.1
MAX_RANK_SHIFT = 2  # a left-out family's agents: ranks from their real place
MIN_SPEEDUP, MAX_TRACK_SECONDS = 1000, 60
# the page's figures, relative to it
IMAGES = {"curves": "img/surrogate-curves.png", "ranks": "img/surrogate-ranks.png"}


def verdict(ok: bool | None) -> str:
    return "not measurable" if ok is None else ("met" if ok else "**not met**")


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def one_step_lines(one: Mapping[str, Any]) -> list[str]:
    change = one.get("by_change") or {}
    rows = [("all held-out decisions", one),
            *((name, change[key]) for key, name in (("changed", "that change the tie map"),
                                                    ("kept", "that keep it")) if key in change),
            *((f"phase {p}", v) for p, v in (one.get("phases") or {}).items())]
    lines = ["| decisions | n | RMSE of the reward | two real replicates | within? | "
             "50% interval covers | 90% interval covers |", "|---|---|---|---|---|---|---|"]
    for name, row in rows:
        lines.append(f"| {name} | {row.get('decisions', 0)} | {_f(row.get('rmse'))} | "
                     f"{_f(row.get('replicate_rmse'))} | {verdict(row.get('within_replicate'))}"
                     f" | {_f(row.get('coverage_50'), 3)} | {_f(row.get('coverage_90'), 3)} |")
    covered = [lo <= one[k] <= hi for k, (lo, hi) in COVERAGE.items()
               if one.get(k) is not None]
    return [*lines, "", "Two real replicates: the RMS difference between two real runs of one "
            "decision from one state, sqrt(2 * mean(training noise^2 + evaluation noise^2)) "
            "over the points of the track's reward-noise file (evaluation noise at the "
            "track's evaluation size; a phase: decisions within 0.05 of it).", "",
            f"One step within replicate error: "
            f"{verdict(one.get('within_replicate'))}; intervals calibrated (50% within "
            f"45-55%, 90% within 85-95%): {verdict(all(covered) if covered else None)}."]


def _gap(value: float | None) -> str:
    """A gap in real seed standard deviations, in bold beyond the standard."""
    text = _f(value, 2)
    return f"**{text}**" if value is not None and abs(value) > MAX_GAP_SD else text


def agent_lines(per_agent: Mapping[str, Json]) -> list[str]:
    lines = ["| agent | real return | surrogate return | gap (real seed sd) | real last ppl | "
             "surrogate last ppl | gap (real seed sd) | seed sd of last ppl: real, surrogate "
             "| real seeds | out-of-data decisions |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    gaps = []
    for agent, row in sorted(per_agent.items(), key=lambda kv: -kv[1]["real_return"]):
        for key in ("return_gap_sd", "ppl_gap_sd"):
            if row.get(key) is not None:
                gaps.append(abs(row[key]) <= MAX_GAP_SD)
        lines.append(f"| `{agent}` | {_f(row['real_return'])} | {_f(row['surrogate_return'])} "
                     f"| {_gap(row.get('return_gap_sd'))} | {_f(row['real_last_val_ppl'], 3)} "
                     f"| {_f(row['surrogate_last_val_ppl'], 3)} | {_gap(row.get('ppl_gap_sd'))} "
                     f"| {_f(row.get('real_ppl_sd'), 3)}, {_f(row.get('surrogate_ppl_sd'), 3)} "
                     f"| {row['real_seeds']} | {row['ood_share']:.1%} |")
    ok = all(gaps) if gaps and len(gaps) == 2 * len(per_agent) else (
        False if gaps and not all(gaps) else None)
    return [*lines, "", f"Every agent within one real seed standard deviation (a gap beyond it in "
            f"bold): {verdict(ok)}."]


def member_lines(members: Mapping[str, Json]) -> list[str]:
    """How far apart the ensemble's members lead each static schedule's episodes."""
    if not members:
        return []
    lines = ["An episode runs one ensemble member, and each member is fitted on its own "
             "bootstrap of the logged episodes: where members lead one schedule to last "
             "perplexities further apart than the real seeds do, the surrogate's episodes vary "
             "more than real ones, and a mean over few seeds depends on which members they "
             "drew. Per static schedule, the mean over the seeds on each member in turn:", "",
             "| agent | last ppl per member | sd over members | real seed sd | ratio |",
             "|---|---|---|---|---|"]
    for agent, row in members.items():
        ratio = (row["member_sd"] / row["real_seed_sd"] if row.get("member_sd") is not None
                 and row["real_seed_sd"] else None)
        lines.append(f"| `{agent}` | {', '.join(f'{v:.3f}' for v in row['member_last_val_ppl'])}"
                     f" | {_f(row.get('member_sd'), 3)} | {_f(row['real_seed_sd'], 3)} | "
                     f"{_f(ratio, 1)} |")
    return [*lines, ""]


def ranking_lines(report: Mapping[str, Any]) -> list[str]:
    rank = report["ranking"]
    halves = report.get("halves_tau")
    tau = rank["tau_b"]
    ok = None if tau is None else (tau >= MIN_TAU and (halves is None or
                                                       tau >= halves - MAX_TAU_DROP))
    lines = [f"- Kendall's tau_b between the agents' mean returns, surrogate against real: "
             f"{_f(tau, 3)} ({rank['agents']} agents).",
             f"- Pairs the real runs decide (95% intervals apart): {rank['decided_pairs']}; "
             f"the surrogate orders {_f(rank.get('decided_agreement'), 3)} of them the same "
             f"way.",
             f"- tau_b between two halves of the real seeds: {_f(halves, 3)}.", "",
             f"Ranking (tau_b >= {MIN_TAU} and at most {MAX_TAU_DROP} below the halves' "
             f"tau): {verdict(ok)}."]
    versus = report.get("reference_vs_random")
    if versus:
        def said(test: Json) -> str:
            return (f"{'beats' if test['beats'] else 'does not beat'} it (mean difference "
                    f"{_f(test['mean_difference'])}, one-sided signed-rank p "
                    f"{_f(test['p'], 3)}, {test['pairs']} seeds)")

        lines += ["", f"The paper's Q-learner `{versus['reference']}` against its random "
                      f"agent `{versus['random']}`: for real it {said(versus['real'])}; on the "
                      f"surrogate it {said(versus['surrogate'])}. The surrogate says it beats "
                      f"random only if the real track does: {verdict(versus['met'])}."]
    left = report.get("left_out") or {}
    if left:
        lines += ["", f"Refit without one policy family (the standard: tau_b at most "
                      f"{MAX_TAU_DROP} below the full model's, and the family's agents within "
                      f"{MAX_RANK_SHIFT} ranks of their real place):", "",
                  "| left out | tau_b | its agents: real rank -> surrogate rank | met? |",
                  "|---|---|---|---|"]
        verdicts = []
        for family, row in left.items():
            ranks = ", ".join(f"`{a}` {r['real']} -> {r['surrogate']}"
                              for a, r in row["ranks"].items())
            ok = (tau is not None and row["tau_b"] >= tau - MAX_TAU_DROP
                  and all(abs(r["real"] - r["surrogate"]) <= MAX_RANK_SHIFT
                          for r in row["ranks"].values()))
            verdicts.append(ok)
            lines.append(f"| {family} | {_f(row['tau_b'], 3)} | {ranks} | {verdict(ok)} |")
        lines += ["", f"Every family left out fairly: {verdict(all(verdicts))}."]
    return lines


def speed_lines(report: Mapping[str, Any], per_agent: list[float]) -> list[str]:
    timed = report.get("speed") or {}
    lines = []
    if timed:
        fast = timed["speedup"] >= MIN_SPEEDUP
        lines += [f"Side by side in one process: a real decision took "
                  f"{timed['real_seconds']:.3f} s ({timed['real_decisions']} decisions), a "
                  f"surrogate decision {timed['surrogate_seconds'] * 1e6:.0f} us "
                  f"({timed['surrogate_decisions']} decisions): {timed['speedup']:.0f}x "
                  f"faster; at least {MIN_SPEEDUP}x: {verdict(fast)}.", ""]
    whole = report["track_seconds"]
    seeds = len(report.get("seeds") or []) or "the"
    lines.append(f"The whole surrogate track ({len(report['per_agent'])} agents x {seeds} "
                 f"seeds) took {whole:.1f} s, the agents' own computation included (a "
                 f"decision took {min(per_agent) * 1e3:.2f} to {max(per_agent) * 1e3:.2f} ms "
                 f"with the agent); at most {MAX_TRACK_SECONDS} s: "
                 f"{verdict(whole <= MAX_TRACK_SECONDS)}.")
    return lines


def plot_curves(report: Mapping[str, Any], path: Path) -> Path:
    """Per agent, the mean validation perplexity after every sweep: real and surrogate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["per_agent"].items(), key=lambda kv: -kv[1]["real_return"])
    cols = 5
    fig, axes = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(3.2 * cols, 2.6 * (
        math.ceil(len(rows) / cols))), sharex=True, sharey=True, squeeze=False)
    for ax, (agent, row) in zip(axes.ravel(), rows, strict=False):
        sweeps = range(1, len(row["real_curve"]) + 1)
        ax.plot(sweeps, row["real_curve"], color="black", label="real")
        ax.plot(sweeps, row["surrogate_curve"], color="tab:orange", ls="--", label="surrogate")
        ax.set_title(agent, fontsize=9)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(rows):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8)
    fig.supxlabel("sweep")
    fig.supylabel("validation perplexity (subset), mean over seeds")
    fig.suptitle(f"{report['track']}: real runs against the surrogate, per agent")
    fig.tight_layout()
    return _save(fig, path)


def plot_ranks(report: Mapping[str, Any], path: Path) -> Path:
    """Each agent's mean episode return, real against surrogate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    rows = report["per_agent"]
    real = [r["real_return"] for r in rows.values()]
    sur = [r["surrogate_return"] for r in rows.values()]
    ax.scatter(real, sur, color="tab:blue")
    for agent, x, y in zip(rows, real, sur, strict=True):
        ax.annotate(agent, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    low, high = min(real + sur), max(real + sur)
    ax.plot([low, high], [low, high], color="grey", lw=0.8, ls=":", label="equal")
    ax.set_xlabel("real mean episode return")
    ax.set_ylabel("surrogate mean episode return")
    ax.set_title(f"{report['track']}: tau_b {report['ranking']['tau_b']:.2f}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.png")
    fig.savefig(partial, dpi=110)
    plt.close(fig)
    partial.replace(path)
    return path


def provisional_lines(report: Mapping[str, Any]) -> list[str]:
    """A warning when the real track has fewer seeds per agent than it defines."""
    wanted = len(report.get("track_seeds") or [])
    have = [row["real_seeds"] for row in report["per_agent"].values()]
    if not wanted or min(have) >= wanted:
        return []
    return [f"**Provisional:** the real track has {min(have)} to {max(have)} of its {wanted} "
            "seeds per agent so far (its benchmark is still running), so the real seed "
            "standard deviations, the intervals and the verdicts below are rough; the page "
            "is regenerated when the track completes.", ""]


def _lag_line(meta: Mapping[str, Any]) -> str:
    """The shipped model's one-step residual autocorrelation, and its rates of reverting."""
    lag = meta.get("residual_lag1")
    if lag is None:
        return ""
    kappa = (meta.get("level") or {}).get("kappa")
    rates = (f" Reverting to the level (at rates {min(kappa):.2f} to {max(kappa):.2f} a "
             "decision, per tenth of the episode) acts on every step and raises it." if kappa
             else "")
    return (f" Its one-step residuals' lag-1 autocorrelation within the logged episodes: "
            f"{lag:.3f} (near 0 when the features carry what persists).{rates}")


def shipped_lines(report: Mapping[str, Any]) -> list[str]:
    """Whether the model that the track's surrogate id ships is fitted on the validated
    data (the validation's `all` model is fitted the same way), and how it was fitted."""
    from tying_env import SURROGATE_IDS
    from tying_env.surrogate.env import HERE

    for env_id, model in SURROGATE_IDS.items():
        meta = read_json(HERE / f"{model}.json") or {}
        if str(meta.get("track", "")).split("/")[0] != report["track"]:
            continue
        same = meta.get("data_sha256") == report["data_sha256"]
        return [f"The model that `{env_id}` ships (`tying_env/surrogate/{model}`) is fitted on "
                + ("the same data, as the validation's model of every episode is: "
                   if same else f"**other data** (`{str(meta.get('data_sha256'))[:16]}`): "
                                "this page does not validate it; it was fitted by ")
                + f"`{meta.get('command', '(not recorded)')}`. The data are the transitions "
                "of the real track's finished cells (`python -m agents.surrogate.transitions "
                "BENCHMARK_FOLDER --out DATA.npz`)." + _lag_line(meta), ""]
    return [f"No surrogate id ships a model of track `{report['track']}`.", ""]


def render(report: Mapping[str, Any], source: str) -> str:
    code = code_version()
    head = code.get("commit")
    speed = [row["seconds_per_decision"] for row in report["per_agent"].values()]
    lines = [
        "# The surrogate track", "",
        f"Generated from `{source}` by `python -m agents.surrogate.page {source} --out "
        f"docs/surrogate.md`" + (f" at commit `{head[:12]}`" if head else "")
        + "; do not edit it by hand. The validation ran as: "
        f"`{report.get('command', '(not recorded)')}`.", "",
        f"Track `{report['track']}`: {report['episodes']} real episodes (data "
        f"`{report['data_sha256'][:16]}`), the one-step model fitted without seeds "
        f"{report['holdout_seeds']}. See `tying_env.surrogate` for the model and "
        "`agents.surrogate.validate` for how each number is measured.", "",
        *shipped_lines(report), *provisional_lines(report),
        "## One step: the predicted reward against real outcomes", "", *one_step_lines(
            report["one_step"]), "",
        "## Per agent: whole episodes on the surrogate against the real track", "",
        *agent_lines(report["per_agent"]), "",
        *member_lines(report.get("members") or {}),
        f"![real and surrogate validation perplexity per agent]({IMAGES['curves']})", "",
        "## Ranking", "", *ranking_lines(report), "",
        f"![real and surrogate mean returns]({IMAGES['ranks']})", "",
        "## Speed", "", *speed_lines(report, speed), "",
        *USING]
    return "\n".join(lines)


USING = [
    "## Using it", "",
    "- **Its own leaderboard section:** `python -m agents.surrogate.board --out "
    "docs/results/leaderboard/deep-surrogate.json` plays every agent of the track on its "
    "seeds on the surrogate, with the track's paired statistics; the "
    "[Leaderboard](leaderboard.md) shows it apart from the real tracks, marks episodes "
    "outside the logged data invalid, and re-checks its top 3 agents on the real track.",
    "- **Sim-to-real:** `--train-env LayerTying-Surrogate-Deep-v0` on `train_agent.py`, "
    "the benchmark and `agents.benchmark.tune` trains (or tunes) on the surrogate and "
    "evaluates on the real environment ([Quick start](quickstart.md)); agents trained "
    "on it and tested on real held-out seeds, paired with the real track's agents, are "
    "on [Equal tuning](results/tuning.md).",
    "- **In class:** [Lab 2](surrogate-lab.ipynb) watches an agent learn over hundreds of "
    "surrogate episodes, then checks the learned policy on the real environment.", ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.surrogate.page",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report = read_json(args.report)
    if not isinstance(report, dict) or "per_agent" not in report:
        parser.error(f"argument report: {args.report} is not a surrogate validation report")
    plot_curves(report, args.out.parent / IMAGES["curves"])
    plot_ranks(report, args.out.parent / IMAGES["ranks"])
    write_text(args.out, render(report, str(args.report)))
    print(f"{args.report} -> {args.out} and its figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
