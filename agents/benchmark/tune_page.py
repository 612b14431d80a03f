"""The equal-tuning page: what each learner's tuning tried and found, and how the tuned
agents did when trained on the surrogate and tested on the real environment.

    python -m agents.benchmark.tune_page docs/results/tuning/*-tuning.json \\
        --sim-to-real docs/results/tuning/sim-to-real-*.json --out docs/results/tuning.md

The tuning records are `agents.benchmark.tune`'s output files (one per agent, the same
budget for each); the sim-to-real files are benchmark results files of the train-then-test
protocol (`--train-episodes`, `--eval-episodes`, `--train-env`), and may include a
train-then-test track's results (e.g. `deep-transfer`), whose cells then serve as
comparators. A row trained on a surrogate names its model (`train_env_model`, the first
digits of its SHA-256): a refit surrogate is another training environment. An agent's row
is "tuned" when the values it ran with are its tuning
record's best values, "defaults" when it ran without agent_kwargs.

The cells are grouped by the environment they were tested on (a track's, when their
settings are that track's). Within a group every cell's evaluation episodes use the same
test seeds (`eval_seed(seed, k)`), so the page pairs each agent trained on a surrogate
with `random`, with the paper's Q-learner trained on the real environment and with the
best static schedule, by test seed: the mean difference of returns, with a 95% bootstrap
interval over the seeds from `MIN_SEEDS_FOR_VERDICT` seeds on. Below that a difference is
orientation, not a verdict, and the page says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agents
from agents.benchmark.paired import paired_differences, paired_interval
from agents.benchmark.report import ci, code_version, fmt
from agents.benchmark.stats import MIN_SEEDS_FOR_VERDICT
from agents.benchmark.tracks import REFERENCE_AGENT, TRACKS
from tying_env import SURROGATE_IDS
from tying_env.files import read_json, write_text

Json = dict[str, Any]


def _read(path: Path) -> Json:
    value = read_json(path)
    if value is None:
        raise SystemExit(f"{path}: missing, unreadable or not a JSON object")
    return value


def tuning_lines(records: Sequence[Json]) -> list[str]:
    """One row per tuning record: budget, where it tuned, the best values and the spread
    of the trials' scores."""
    lines = ["| agent | tuned on | trials x training episodes (+ validation) | sampler | best "
             "values | best score | trial scores (min / median / max) | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for record in sorted(records, key=lambda r: r["agent"]):
        budget, scores = record["budget"], [t["score"] for t in record["trials"]]
        values = ", ".join(f"{k} {f'{v:.3g}' if isinstance(v, float) else v}"
                           for k, v in record["best"]["values"].items())
        lines.append(
            f"| `{record['agent']}` | `{record.get('env') or record['track']}`"
            + (f" (data `{record['env_model'][:8]}`)" if record.get("env_model") else
               " (which fit: not recorded)" if record.get("env") in SURROGATE_IDS else "")
            + " | "
            f"{budget['trials']} x {budget['train_episodes']} (+ "
            f"{budget['validation_episodes']}) | {record['sampler']['name']}, seed "
            f"{record['sampler']['seed']} | {values} | {fmt(record['best']['score'], 3)} | "
            f"{fmt(min(scores), 3)} / {fmt(statistics.median(scores), 3)} / "
            f"{fmt(max(scores), 3)} | {record['seconds']:.0f} |")
    return lines


def _label(result: Json, best: dict[str, Json]) -> str:
    kwargs = result.get("agent_kwargs") or {}
    agent = result["agent"]
    if not kwargs:
        return f"`{agent}` (defaults)"
    if agent in best and all(kwargs.get(k) == v for k, v in best[agent].items()):
        return f"`{agent}` (tuned)"
    return f"`{agent}` ({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


def _static_agents() -> set[str]:
    return {a for track in TRACKS.values() for a in track.static_agents}


def _where(result: Json) -> str:
    """The evaluation environment of a result: the track whose settings it ran with, else
    its id and settings (`initial_ties` aside: `vanilla` starts untied on the same env)."""
    kwargs = result.get("env_kwargs") or {}
    for track in TRACKS.values():
        if track.env_id == result.get("env_id") and all(
                kwargs.get(k) == v for k, v in track.env_kwargs.items()):
            return f"the `{track.label}` track's environment"
    settings = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if k != "initial_ties")
    return f"`{result.get('env_id')}`" + (f" ({settings})" if settings else "")


def _trained(result: Json) -> str:
    if not agents.factory(result["agent"]).learns:
        return "— (does not learn)"
    model = (f" (model `{result['train_env_model'][:8]}`)" if result.get("train_env_model")
             else " (model: not recorded)" if result.get("train_env_id") in SURROGATE_IDS
             else "")
    return f"`{result.get('train_env_id') or result['env_id']}`{model}, " \
           f"{result.get('train_episodes', 0)} episodes"


def _difference(returns: dict[int, float], other: dict[int, float] | None, name: str) -> str:
    """The mean paired difference of returns on the shared test seeds, with its 95%
    bootstrap interval from `MIN_SEEDS_FOR_VERDICT` seeds on."""
    if other is None or returns is other:
        return "—"
    shared = paired_differences(returns, other, relative=False)
    if not shared:
        return "—"
    if len(shared) < MIN_SEEDS_FOR_VERDICT:
        return fmt(statistics.mean(shared.values()), 4)
    return ci(paired_interval(shared, name), 4)


def sim_to_real_lines(files: Sequence[Json], best: dict[str, Json]) -> list[str]:
    """Per evaluation environment, the agents trained on a surrogate and tested there, beside
    the comparators tested on the same seeds: `random`, the paper's Q-learner trained on the
    real environment, the best static schedule, and the same agents trained for real. Each
    difference is paired by test seed."""
    rows = [cell["result"] for meta in files for cell in meta.get("cells") or []
            if cell.get("status") == "finished" and cell.get("result")]
    if not rows:
        return ["No sim-to-real results were given."]
    groups: dict[str, list[Json]] = {}
    for r in rows:
        groups.setdefault(_where(r), []).append(r)
    statics, lines = _static_agents(), []
    for where, group in groups.items():
        returns = [{e["seed"]: e["return"] for e in r.get("eval") or []} for r in group]
        means = [statistics.mean(v.values()) if v else float("-inf") for v in returns]
        pairs = list(zip(group, returns, strict=True))
        random = next((v for r, v in pairs if r["agent"] == "random"), None)
        qlearning = next((v for r, v in pairs
                          if r["agent"] == REFERENCE_AGENT and not r.get("train_env_id")), None)
        best_static = max((k for k, r in enumerate(group) if r["agent"] in statics),
                          key=lambda k: (means[k], group[k]["agent"]), default=None)
        static = None if best_static is None else group[best_static]["agent"]
        static_returns = None if best_static is None else returns[best_static]
        sim = {r["agent"] for r in group if r.get("train_env_id")}
        keep = [k for k, r in enumerate(group)
                if r.get("train_env_id") or r["agent"] in {*sim, "random", REFERENCE_AGENT,
                                                           static}]
        seeds = sorted({s for k in keep for s in returns[k]})
        lines += [f"### Tested on {where}", "",
                  "| agent | trained on | test episodes | mean return | − `random` | "
                  f"− `{REFERENCE_AGENT}` trained for real | − the best static"
                  + (f" (`{static}`)" if static else "") + " | final val ppl (mean) | "
                  "trainable fraction (mean) |", "|---|---|---|---|---|---|---|---|---|"]
        for k in sorted(keep, key=lambda k: -means[k]):
            r, v = group[k], returns[k]
            name = "/".join([where, r["agent"], str(r.get("train_env_id")),
                             json.dumps(r.get("agent_kwargs"), sort_keys=True)])
            lines.append(
                f"| {_label(r, best)} | {_trained(r)} | {len(v)} | {fmt(means[k], 4)} | "
                f"{_difference(v, random, f'{name}/random')} | "
                f"{_difference(v, qlearning, f'{name}/{REFERENCE_AGENT}')} | "
                f"{_difference(v, static_returns, f'{name}/static')} | "
                f"{fmt(statistics.mean(e['final_val_ppl'] for e in r['eval']), 3)} | "
                f"{fmt(statistics.mean(e['trainable_fraction'] for e in r['eval']), 3)} |")
        lines += ["", f"Test seeds {', '.join(map(str, seeds))}, the same for every row; "
                  "each difference is the mean over the test seeds of the row's return "
                  "minus the other agent's on the same seed"
                  + (", with its 95% bootstrap interval over seeds (not adjusted for "
                     "multiplicity)" if len(seeds) >= MIN_SEEDS_FOR_VERDICT else
                     f": {len(seeds)} episodes are too few for an interval or a test, so "
                     "read them as orientation only") + ".", ""]
    commands = [(meta.get("request") or {}).get("command") for meta in files]
    return [*lines, "The runs:", "", "```bash", *(c for c in commands if c), "```"]


def render(records: Sequence[Json], sim_to_real: Sequence[Json], command: str) -> str:
    commit = (code_version().get("commit") or "")[:12]
    best = {r["agent"]: r["best"]["values"] for r in records}
    budgets = {json.dumps(r["budget"], sort_keys=True) for r in records}
    same = ("the same budget for every agent" if len(budgets) == 1
            else "**budgets differ between agents**")
    lines = ["# Equal tuning", "",
             f"Generated by `{command}`" + (f" at commit `{commit}`" if commit else "")
             + "; do not edit it by hand.", "",
             f"Every learning agent tuned by `agents.benchmark.tune` with {same}: Optuna's "
             "seeded TPE sampler over the search space of `agents.benchmark.tune."
             "SEARCH_SPACE`; each trial trains the agent on training-range seeds "
             "(`train_seed(99, i)`), then scores it frozen on validation seeds by the "
             "track's rank metric (higher is better). No test seed and no seed of a track "
             "cell is played. A best score is the maximum of noisy trials, so it is "
             "optimistic.", "", *tuning_lines(records), "",
             "## Trained on the surrogate, tested for real", "",
             *sim_to_real_lines(sim_to_real, best), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.benchmark.tune_page",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="agents.benchmark.tune outputs")
    parser.add_argument("--sim-to-real", nargs="*", type=Path, default=[],
                        help="benchmark results files of train-then-test runs")
    parser.add_argument("--out", type=Path, required=True, help="the page to write")
    args = parser.parse_args(argv)
    records = [_read(p) for p in args.records]
    missing = [str(p) for p, r in zip(args.records, records, strict=True)
               if not {"agent", "budget", "trials", "best"} <= set(r)]
    if missing:
        parser.error(f"not a tuning record (agents.benchmark.tune's output): "
                     f"{', '.join(missing)}")
    command = " ".join(["python -m agents.benchmark.tune_page",
                        *(argv if argv is not None else sys.argv[1:])])
    write_text(args.out, render(records, [_read(p) for p in args.sim_to_real], command))
    print(f"{len(records)} tuning records -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
