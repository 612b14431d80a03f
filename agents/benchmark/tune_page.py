"""The equal-tuning page: what each learner's tuning tried and found, and how the tuned
agents did when trained on the surrogate and tested on the real environment.

    python -m agents.benchmark.tune_page docs/results/tuning/*-tuning.json \\
        --sim-to-real docs/results/tuning/sim-to-real-*.json --out docs/results/tuning.md

The tuning records are `agents.benchmark.tune`'s output files (one per agent, the same
budget for each); the sim-to-real files are benchmark results files of the train-then-test
protocol (`--train-episodes`, `--eval-episodes`, `--train-env`). An agent's row is
"tuned" when the values it ran with are its tuning record's best values, "defaults" when
it ran without agent_kwargs. The evaluation episodes of every sim-to-real cell use the
same test seeds (`eval_seed(seed, k)`), so the page pairs each agent with the random
agent by test seed. A handful of episodes gives orientation, not a verdict: the page
says how many there are and draws no conclusion from them.
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
from agents.benchmark.report import code_version, fmt
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
               " (which fit: not recorded)" if "Surrogate" in str(record.get("env")) else "")
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


def sim_to_real_lines(files: Sequence[Json], best: dict[str, Json]) -> list[str]:
    """Per sim-to-real cell: its test episodes' returns, and the paired difference to the
    random agent on the same test seeds."""
    rows = [cell["result"] for meta in files for cell in meta.get("cells") or []
            if cell.get("status") == "finished" and cell.get("result")]
    if not rows:
        return ["No sim-to-real results were given."]
    random = {e["seed"]: e["return"] for r in rows if r["agent"] == "random"
              for e in r.get("eval") or []}
    seeds = sorted({e["seed"] for r in rows for e in r.get("eval") or []})
    lines = ["| agent | trained on | test episodes | return per test seed | mean return | "
             "− `random` (same seeds) | final val ppl (mean) | trainable fraction (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -statistics.mean(e["return"] for e in r["eval"])):
        returns = {e["seed"]: e["return"] for e in r["eval"]}
        shared = [s for s in seeds if s in returns and s in random]
        diff = (fmt(statistics.mean(returns[s] - random[s] for s in shared), 4)
                if shared and r["agent"] != "random" else "—")
        trained = (f"`{r.get('train_env_id') or r['env_id']}`, {r.get('train_episodes', 0)} "
                   "episodes" if agents.factory(r["agent"]).learns else "— (does not learn)")
        lines.append(
            f"| {_label(r, best)} | {trained} | {len(returns)} | "
            f"{', '.join(fmt(returns[s], 3) for s in sorted(returns))} | "
            f"{fmt(statistics.mean(returns.values()), 4)} | {diff} | "
            f"{fmt(statistics.mean(e['final_val_ppl'] for e in r['eval']), 3)} | "
            f"{fmt(statistics.mean(e['trainable_fraction'] for e in r['eval']), 3)} |")
    commands = [(meta.get("request") or {}).get("command") for meta in files]
    return [*lines, "", f"Test seeds {', '.join(map(str, seeds))}: {len(seeds)} episodes per "
                        "agent, paired by seed with `random`. Too few for an interval or a "
                        "test: read the differences as orientation only.", "",
            "The runs:", "", "```bash", *(c for c in commands if c), "```"]


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
