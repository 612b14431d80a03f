"""Table 1 of Hay & Wolf (GPT-2 on WikiText-2) on one GPU, with the published settings.

The paper's Q-learner (`qlearning`, its published defaults: the raw last choice per layer
as its state) against conventional training (`vanilla`: an independently initialised
model, every block trained, never tied), 3 seeds each, one run after another:

| setting | value (the published launch scripts and `dqn_trainer.py`) |
|---|---|
| model | `preset="paper"`: GPT-2 48 x 1600, 16 heads, sequence 256, dropout 0.2 |
| data | `dataset="wikitext-2-v1"` (with `<unk>` tokens), GPT-2's tokenizer |
| inner training | batch 16, AdamW lr 1e-4, weight decay 0.01, clipping 1.0, 4 steps a decision |
| precision | `precision="bf16"`: the whole model in bfloat16 (weights, gradients, AdamW) |
| start | `initial_ties="frozen"` for the Q-learner (the published start); `"none"` for vanilla |
| reward | `reward="paper"`: minus the perplexity of one training batch |
| metric | `test_eval_every=1`: best test perplexity over sweeps (selected on the test split) |
| sweeps | 100 (`--sweeps`; the launch scripts used 100 to 300) |

    python scripts/table1.py --estimate                  # expected time and memory per run
    python scripts/table1.py --out runs/table1           # the 6 runs, then table1.md
    python scripts/table1.py --out runs/table1 --data-dir FOLDER --tokenizer FOLDER  # offline
    python scripts/table1.py --smoke --out /tmp/table1   # the same code path, tiny, on a CPU

Run folders are `OUT/<agent>-s<seed>/` (see `agents.runs.driver`); a finished run is
skipped and a stopped one resumed from its checkpoint, so the command can simply be
started again. `OUT/table1.json` and `OUT/table1.md` summarise the runs per agent.
`--smoke` runs the same function at a tiny shape on the synthetic corpus, 2 sweeps,
on the CPU (about a minute on 2 cores); the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/table1.py` from anywhere
    sys.path.insert(0, str(ROOT))

from agents.runs.driver import run  # noqa: E402
from agents.runs.result import RunResult, read_result  # noqa: E402
from agents.runs.spec import RunSpec  # noqa: E402
from perf.gpu import BF16_PEAK_TFLOPS, expected_run_cost  # noqa: E402
from tying_env import ties as tm  # noqa: E402
from tying_env.files import write_json  # noqa: E402
from tying_env.memory import estimate_bytes, format_bytes  # noqa: E402
from tying_env.presets import make_config  # noqa: E402

AGENTS = ("qlearning", "vanilla")
SEEDS = (0, 1, 2)
SWEEPS = 100
ENV_ID = "LayerTying-GPT2-v0"
# the published protocol, on top of the `paper` preset (shape, data, tokenizer, lr, dropout)
PUBLISHED = dict(preset="paper", dataset="wikitext-2-v1", tokenizer="gpt2", precision="bf16",
                 reward="paper", steps_per_decision=4, test_eval_every=1)
START = {"qlearning": "frozen", "vanilla": "none"}  # initial_ties per agent
# --smoke: the same protocol at a tiny shape on the synthetic corpus, on the CPU
SMOKE_ENV_ID = "LayerTying-GPT2-Tiny-v0"
SMOKE = dict(preset="tiny", dataset="synthetic", tokenizer=None, n_layer=4, n_embd=32,
             n_head=2, seq_len=32, batch_size=4, eval_batches=1, device="cpu")
SMOKE_SWEEPS = 2
# GPT-2 tokens of the WikiText-2 test split, for the estimate without loading the corpus
# (about 0.29 M; the raw and the <unk> versions differ by a few percent)
WT2_TEST_TOKENS = 290_000


def specs(out: Path, *, smoke: bool = False, sweeps: int | None = None,
          seeds: tuple[int, ...] = SEEDS, agents: tuple[str, ...] = AGENTS,
          data_dir: str | None = None, tokenizer: str | None = None,
          cache_dir: Path | None = None, progress: bool = True) -> list[RunSpec]:
    """The run of every (agent, seed), in the order they run (seed by seed)."""
    base = {**PUBLISHED, **(SMOKE if smoke else {})}
    if data_dir is not None:
        base["data_dir"] = data_dir
    if tokenizer is not None:
        base["tokenizer"] = tokenizer
    base["max_sweeps"] = sweeps or (SMOKE_SWEEPS if smoke else SWEEPS)
    env_id = SMOKE_ENV_ID if smoke else ENV_ID
    return [RunSpec(agent=agent, env_id=env_id, env_kwargs={**base, "initial_ties": START[agent]},
                    seed=seed, out=out / f"{agent}-s{seed}", cache_dir=cache_dir,
                    progress=progress, overwrite=True).check()
            for seed in seeds for agent in agents]


def run_all(runs: list[RunSpec]) -> list[RunResult]:
    """Run (or resume, or skip when finished) every spec; returns their results."""
    results = []
    for spec in runs:
        done = read_result(spec.folder)
        if done is not None and done.complete:
            print(f"{spec.folder}: finished, skipped", file=sys.stderr)
            results.append(done)
            continue
        if (spec.folder / "checkpoint").is_dir():
            spec = RunSpec.from_folder(spec.folder, cache_dir=spec.cache_dir,
                                       progress=spec.progress)
        print(f"{spec.folder}: {'resuming' if spec.resume else 'running'} {spec.agent} "
              f"seed {spec.seed}", file=sys.stderr)
        results.append(run(spec))
    return results


def summarize(results: list[RunResult]) -> dict[str, Any]:
    """Per agent: mean and standard deviation over seeds of every reported number."""
    keys = ("best_test_ppl", "final_test_ppl", "final_val_ppl", "trainable_fraction",
            "peak_memory_bytes", "wall_seconds")
    rows = {}
    for agent in dict.fromkeys(r.agent for r in results):
        mine = [r for r in results if r.agent == agent]
        row: dict[str, Any] = {"seeds": [r.seed for r in mine]}
        for key in keys:
            values = [float(v) for v in (getattr(r, key) for r in mine)
                      if isinstance(v, (int, float)) and math.isfinite(v)]
            row[key] = _mean_sd(values)
        rows[agent] = row
    return {"agents": rows, "settings": {r.agent: r.env_kwargs for r in results},
            "notes": ["best_test_ppl is the published metric: the best test perplexity over "
                      "sweeps, selected on the test split (optimistic); final_test_ppl is "
                      "the final model's",
                      "peak_memory_bytes counts parameters, gradients and AdamW state "
                      "(not activations)"]}


def _mean_sd(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values)}


def markdown(summary: dict[str, Any]) -> str:
    """The per-agent table of `summarize`."""
    def cell(stat: dict[str, Any], fmt: str = ".2f", scale: float = 1.0) -> str:
        if stat["mean"] is None:
            return "n/a"
        return f"{stat['mean'] / scale:{fmt}} ± {stat['sd'] / scale:{fmt}}"

    lines = ["| agent | seeds | best test ppl (selected on test) | final test ppl | "
             "final val ppl | trainable fraction | params+grads+AdamW GiB | hours |",
             "|---|---|---|---|---|---|---|---|"]
    for agent, r in summary["agents"].items():
        lines.append(f"| `{agent}` | {len(r['seeds'])} | {cell(r['best_test_ppl'])} | "
                     f"{cell(r['final_test_ppl'])} | {cell(r['final_val_ppl'])} | "
                     f"{cell(r['trainable_fraction'], '.3f')} | "
                     f"{cell(r['peak_memory_bytes'], '.2f', 2**30)} | "
                     f"{cell(r['wall_seconds'], '.2f', 3600)} |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in summary["notes"]) + "\n"


def estimate(sweeps: int = SWEEPS, *, measured: Path | None = None,
             peak_tflops: float = BF16_PEAK_TFLOPS["H100"],
             test_tokens: int = WT2_TEST_TOKENS) -> dict[str, Any]:
    """Expected time and peak memory of each run on one GPU (see `perf.gpu`).

    Time: `perf.gpu.expected_run_cost`, from the untied step time of `python -m perf.gpu
    --shapes paper --precisions bf16 --json FILE` when `measured` is that FILE, else from
    an assumed share of `peak_tflops`. Memory: `tying_env.memory.estimate_bytes` in pure
    bf16 on CUDA, untied (vanilla, and the most a Q-learner can untie) and at the
    Q-learner's frozen start.
    """
    step_seconds = None
    if measured is not None:
        rows = json.loads(measured.read_text())["rows"]
        match = [r for r in rows if r["shape"] == "paper" and r["dtype"] == "bf16"
                 and r["ties"] == "untied" and r["status"] == "ok"]
        if not match:
            raise SystemExit(f"{measured} has no ok 'paper' 'bf16' 'untied' row")
        step_seconds = match[0]["step ms"] / 1e3
    out: dict[str, Any] = {"measured_step_seconds": step_seconds, "runs": {}}
    for agent in AGENTS:
        cfg = make_config(**{**PUBLISHED, "max_sweeps": sweeps, "initial_ties": START[agent]})
        cost = expected_run_cost(cfg, test_tokens, step_seconds=step_seconds,
                                 peak_tflops=peak_tflops)
        untied = estimate_bytes(cfg, cfg.vocab_size, "cuda", ties=tm.untied(cfg.n_layer))
        start = estimate_bytes(cfg, cfg.vocab_size, "cuda")
        out["runs"][agent] = {"hours": cost["seconds"] / 3600, **cost,
                              "peak_bytes": max(untied.total, start.total),
                              "start_bytes": start.total}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/table1"), help="run folders")
    parser.add_argument("--smoke", action="store_true",
                        help="the same code path at a tiny shape, 2 sweeps, on the CPU")
    parser.add_argument("--estimate", action="store_true",
                        help="print the expected time and peak memory per run; run nothing")
    parser.add_argument("--measured", type=Path, default=None,
                        help="with --estimate: a `python -m perf.gpu --json` file to take "
                             "the step time from")
    parser.add_argument("--sweeps", type=int, default=None,
                        help=f"sweeps per run (default {SWEEPS}; smoke {SMOKE_SWEEPS})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--data-dir", default=None,
                        help="local WikiText-2 split files (e.g. the offline split; report "
                             "it under that name)")
    parser.add_argument("--tokenizer", default=None,
                        help="GPT-2's tokenizer as a local folder (default: 'gpt2' from "
                             "$LAYER_TYING_TOKENIZERS or the HF cache)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    if args.estimate:
        est = estimate(args.sweeps or SWEEPS, measured=args.measured)
        how = (f"measured step {est['measured_step_seconds'] * 1e3:.0f} ms"
               if est["measured_step_seconds"] else "assumed 35% of an H100/H200's 989 "
               "TFLOP/s bf16 peak")
        print(f"per run on one GPU ({how}):")
        for agent, r in est["runs"].items():
            print(f"  {agent}: {r['hours']:.1f} h ({int(r['train_steps'])} training steps, "
                  f"{int(r['decisions'])} decisions), peak memory about "
                  f"{format_bytes(r['peak_bytes'])} (at the start "
                  f"{format_bytes(r['start_bytes'])})")
        total = sum(r["hours"] for r in est["runs"].values()) * len(args.seeds)
        print(f"all {len(AGENTS) * len(args.seeds)} runs, one after another: {total:.1f} h")
        return 0

    runs = specs(args.out, smoke=args.smoke, sweeps=args.sweeps, seeds=tuple(args.seeds),
                 data_dir=args.data_dir, tokenizer=args.tokenizer, cache_dir=args.cache_dir,
                 progress=not args.no_progress)
    results = run_all(runs)
    summary = summarize(results)
    write_json(args.out / "table1.json", summary)
    table = markdown(summary)
    (args.out / "table1.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
