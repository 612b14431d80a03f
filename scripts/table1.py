"""Table 1 of Hay & Wolf (GPT-2 on WikiText-2) on one GPU, both ways: the published tie
mechanics and ours, against conventional training at the published baseline's budget.

Three rows, 3 seeds each, one run after another; each row says what it reproduces:

| row (agent) | mechanics | budget | what it reproduces |
|---|---|---|---|
| `qlearning-published` | published | 300 sweeps | the published Q-learning run (`dqn_trainer.py`) |
| `qlearning-ours` | ours | 300 sweeps | nothing published: the same settings, our mechanics |
| `vanilla` | (no ties) | 100 epochs | the published baseline's budget (`train.py --gpt`) |

The first two run `qlearning` under `tie_semantics="published"` and `"ours"`; `vanilla` is
conventional training of an untied model (not the published `--vnl`, which in the causal-LM
loop only starts the Q-learner untied).

The settings every row shares (the published launch scripts and `dqn_trainer.py`):

| setting | value |
|---|---|
| model | `preset="paper"`: GPT-2 48 x 1600, 16 heads, sequence 256, dropout 0.2 |
| data | `dataset="wikitext-2-v1"` (with `<unk>` tokens), GPT-2's tokenizer |
| inner training | batch 16, AdamW lr 1e-4, weight decay 0.01, clipping 1.0 |
| precision | `precision="bf16"`: the whole model in bfloat16 (weights, gradients, AdamW) |
| start | `initial_ties="frozen"` for the Q-learner (the published start); `"none"` for vanilla |
| reward | `reward="paper"`: minus the perplexity of one training batch |
| metric | `test_eval_every=1`: best test perplexity over sweeps (selected on the test split) |

The Q-learner makes 47 decisions a sweep with 4 training steps each, 300 sweeps (`--sweeps`;
every committed published Q-learning launch used `--epochs=300`, which counts sweeps).
The published baseline trains for 100 full epochs (`--baseline-epochs`): an epoch is the
train split cut into blocks of 255 tokens (plus a BOS token), in batches of 16, so
`ceil(blocks / 16)` steps (`baseline_budget`, from the loaded split). `vanilla` runs that
budget as sweeps of about one epoch: `steps_per_decision = ceil(steps of an epoch / 47)`
and as many sweeps as it takes to reach the budget (at most one sweep more), so the
test split is evaluated about once an epoch, as `train.py` does.

    python scripts/table1.py --estimate                  # expected time and memory per run
    python scripts/table1.py --out runs/table1           # the 9 runs, then table1.md
    python scripts/table1.py --out runs/table1 --data-dir FOLDER --tokenizer FOLDER  # offline
    python scripts/table1.py --out runs/table1 --rows qlearning-published vanilla
    python scripts/table1.py --smoke --out /tmp/table1   # the same code path, tiny, on a CPU

Run folders are `OUT/<row>-s<seed>/` (see `agents.runs.driver`); a finished run is
skipped and a stopped one resumed from its checkpoint, so the command can simply be
started again (a run in the folder with other settings, e.g. from an older version of this
script, is moved aside and run anew). `OUT/table1.json` and `OUT/table1.md` summarise
the runs per row. `--smoke` runs the same function at a tiny shape on the synthetic
corpus, batch 16, one sweep (vanilla: 0.01 epochs, 12 steps), on the CPU (two seeds in
about half a minute on 2 cores); the test suite runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/table1.py` from anywhere
    sys.path.insert(0, str(ROOT))

from agents.runs.driver import run  # noqa: E402
from agents.runs.folder import RUN_MARKERS  # noqa: E402
from agents.runs.result import RunResult, read_result  # noqa: E402
from agents.runs.spec import RunSpec  # noqa: E402
from perf.gpu import BF16_PEAK_TFLOPS, expected_run_cost  # noqa: E402
from tying_env import ties as tm  # noqa: E402
from tying_env.data.corpus import load_corpus  # noqa: E402
from tying_env.errors import SettingError  # noqa: E402
from tying_env.files import write_json, write_text  # noqa: E402
from tying_env.memory import estimate_bytes, format_bytes  # noqa: E402
from tying_env.presets import ADDED_SETTINGS, make_config  # noqa: E402

SEEDS = (0, 1, 2)
SWEEPS = 300  # the Q-learner's: every committed published Q-learning launch (--epochs=300)
BASELINE_EPOCHS = 100.0  # the published baseline: train.py --gpt --epochs=100
ENV_ID = "LayerTying-GPT2-v0"
# the published protocol, on top of the `paper` preset (shape, data, tokenizer, lr, dropout)
PUBLISHED = dict(preset="paper", dataset="wikitext-2-v1", tokenizer="gpt2", precision="bf16",
                 reward="paper", steps_per_decision=4, test_eval_every=1)
# --smoke: the same protocol at a tiny shape on the synthetic corpus, on the CPU
SMOKE_ENV_ID = "LayerTying-GPT2-Tiny-v0"
SMOKE = dict(preset="tiny", dataset="synthetic", tokenizer=None, n_layer=4, n_embd=32,
             n_head=2, seq_len=32, batch_size=16, eval_batches=1, device="cpu")
SMOKE_SWEEPS = 1
SMOKE_BASELINE_EPOCHS = 0.01  # 11 steps of the synthetic corpus's 1,009 an epoch
# GPT-2 tokens of the WikiText-2 splits, for the estimate without loading the corpus (the
# run counts the loaded train split): test about 0.29 M; train about 2.4 M, i.e. about
# 9,400 blocks of 255 an epoch, 0.94 M sequences in 100 epochs (approximate figures; the
# raw and the <unk> versions differ by a few percent)
WT2_TEST_TOKENS = 290_000
WT2_TRAIN_TOKENS = 2_400_000


@dataclass(frozen=True)
class Row:
    """One row of the table: an agent under one tie mechanics, and what it reproduces."""

    name: str  # the row's key in table1.json and the prefix of its run folders
    agent: str
    settings: dict[str, Any]  # environment settings on top of the shared protocol
    budget: str  # "sweeps": the Q-learner's; "epochs": the published baseline's

    def reproduces(self, sweeps: int, epochs: float, smoke: bool = False) -> str:
        """What the row reproduces, in words (a smoke run reproduces nothing)."""
        if self.budget == "epochs":
            label = ("conventional training of an untied model for the published baseline's "
                     f"budget (`train.py --gpt`, {BASELINE_EPOCHS:g} epochs)")
            if epochs != BASELINE_EPOCHS:
                label += f", here {epochs:g} epochs"
        elif self.settings["tie_semantics"] == "published":
            label = ("published mechanics, published settings: the published Q-learning run "
                     f"(`dqn_trainer.py --epochs={SWEEPS}`), its data windows and test blocks "
                     "aside")
            if sweeps != SWEEPS:
                label += f", here {sweeps} sweep{'s' if sweeps != 1 else ''}"
        else:
            label = (f"our mechanics, published settings otherwise ({sweeps} "
                     f"sweep{'s' if sweeps != 1 else ''}): reproduces nothing published")
        return f"smoke (tiny shape, synthetic corpus, CPU), the code path of: {label}" \
            if smoke else label


ROWS = {row.name: row for row in (
    Row("qlearning-published", "qlearning",
        dict(tie_semantics="published", initial_ties="frozen"), "sweeps"),
    Row("qlearning-ours", "qlearning", dict(tie_semantics="ours", initial_ties="frozen"),
        "sweeps"),
    Row("vanilla", "vanilla", dict(tie_semantics="ours", initial_ties="none"), "epochs"),
)}


@dataclass(frozen=True)
class Budget:
    """The published baseline's training budget, and the sweeps `vanilla` runs it in."""

    epochs: float
    train_tokens: int
    blocks: int  # sequences in an epoch: the train split in blocks of seq_len - 1 tokens
    steps_per_epoch: int  # ceil(blocks / batch_size): the last batch of an epoch is short
    steps: int  # the published baseline's optimizer steps, ceil(epochs * steps_per_epoch)
    steps_per_decision: int
    sweeps: int
    run_steps: int  # what `vanilla` trains: sweeps * (n_layer - 1) * steps_per_decision


def baseline_budget(train_tokens: int, *, seq_len: int, batch_size: int, n_layer: int,
                    epochs: float = BASELINE_EPOCHS) -> Budget:
    """`train.py --gpt`'s budget in optimizer steps, and sweeps of about one epoch for it.

    The published loader cuts the train split into blocks of `seq_len - 1` tokens (a BOS
    token is put in front; the remainder is dropped) and iterates over them in shuffled
    batches of `batch_size`, the last one short: `ceil(blocks / batch_size)` steps an
    epoch. `vanilla` runs `steps_per_decision = ceil(min(epoch, budget) / (n_layer - 1))`,
    so that a sweep is about an epoch, for `ceil(steps / steps of a sweep)` sweeps: the
    budget, exceeded by less than one sweep.
    """
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise SettingError("baseline_epochs", f"baseline_epochs={epochs!r} must be a positive "
                                              "number of epochs")
    blocks = train_tokens // (seq_len - 1)
    if blocks < 1:
        raise SettingError("seq_len", f"seq_len={seq_len} leaves no block of {seq_len - 1} "
                                      f"tokens in a train split of {train_tokens} tokens")
    per_epoch = math.ceil(blocks / batch_size)
    steps = math.ceil(epochs * per_epoch)
    decisions = n_layer - 1
    per_decision = math.ceil(min(per_epoch, steps) / decisions)
    sweeps = math.ceil(steps / (decisions * per_decision))
    return Budget(epochs=float(epochs), train_tokens=int(train_tokens), blocks=blocks,
                  steps_per_epoch=per_epoch, steps=steps, steps_per_decision=per_decision,
                  sweeps=sweeps, run_steps=sweeps * decisions * per_decision)


def base_settings(smoke: bool = False, data_dir: str | None = None,
                  tokenizer: str | None = None) -> dict[str, Any]:
    """The environment settings every row shares."""
    base = {**PUBLISHED, **(SMOKE if smoke else {})}
    if data_dir is not None:
        base["data_dir"] = data_dir
    if tokenizer is not None:
        base["tokenizer"] = tokenizer
    return base


def train_tokens(base: dict[str, Any], cache_dir: Path | None = None) -> int:
    """Tokens of the train split the runs train on (loads, and caches, the corpus)."""
    cfg = make_config(**base)
    corpus = load_corpus(cfg.dataset, data_dir=cfg.data_dir, tokenizer=cfg.tokenizer,
                         vocab_size=cfg.vocab_size, seed=0, cache_dir=cache_dir)
    return len(corpus.train)


def row_settings(row: Row, base: dict[str, Any], sweeps: int,
                 budget: Budget | None) -> dict[str, Any]:
    """The environment settings of one row's runs."""
    settings = {**base, **row.settings, "max_sweeps": sweeps}
    if row.budget == "epochs":
        assert budget is not None
        settings |= dict(max_sweeps=budget.sweeps, steps_per_decision=budget.steps_per_decision)
    return settings


def specs(out: Path, *, smoke: bool = False, sweeps: int | None = None,
          epochs: float | None = None, seeds: tuple[int, ...] = SEEDS,
          rows: tuple[str, ...] = tuple(ROWS), data_dir: str | None = None,
          tokenizer: str | None = None, cache_dir: Path | None = None,
          progress: bool = True) -> tuple[list[tuple[str, RunSpec]], Budget | None]:
    """The run of every (row, seed), in the order they run (seed by seed), and the
    baseline's budget (None without the `vanilla` row)."""
    unknown = [name for name in rows if name not in ROWS]
    if unknown:
        raise SettingError("rows", f"rows={unknown!r} unknown; allowed: {', '.join(ROWS)}")
    base = base_settings(smoke, data_dir, tokenizer)
    sweeps = sweeps or (SMOKE_SWEEPS if smoke else SWEEPS)
    epochs = epochs or (SMOKE_BASELINE_EPOCHS if smoke else BASELINE_EPOCHS)
    budget = None
    if any(ROWS[name].budget == "epochs" for name in rows):
        cfg = make_config(**base)
        budget = baseline_budget(train_tokens(base, cache_dir), seq_len=cfg.seq_len,
                                 batch_size=cfg.batch_size, n_layer=cfg.n_layer, epochs=epochs)
    env_id = SMOKE_ENV_ID if smoke else ENV_ID
    planned = [(name, RunSpec(agent=ROWS[name].agent, env_id=env_id,
                              env_kwargs=row_settings(ROWS[name], base, sweeps, budget),
                              seed=seed, out=out / f"{name}-s{seed}", cache_dir=cache_dir,
                              progress=progress, overwrite=True).check())
               for seed in seeds for name in rows]
    return planned, budget


def _same_settings(recorded: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a run recorded with `recorded` settings ran the `wanted` ones (a setting
    added since reads as its old value, `ADDED_SETTINGS`)."""
    return all(recorded.get(k, ADDED_SETTINGS.get(k)) == v for k, v in wanted.items())


def run_all(planned: list[tuple[str, RunSpec]]) -> list[tuple[str, RunResult]]:
    """Run (or resume, or skip when finished) every spec; returns their results by row.

    A finished or stopped run whose settings differ from the spec's is not reused: the
    spec runs anew and the old run is moved aside (`RunSpec.overwrite`)."""
    results = []
    for name, spec in planned:
        done = read_result(spec.folder)
        if done is not None and done.complete and _same_settings(done.env_kwargs,
                                                                  spec.env_kwargs):
            print(f"{spec.folder}: finished, skipped", file=sys.stderr)
            results.append((name, done))
            continue
        if (spec.folder / "checkpoint").is_dir() and (done is None or not done.complete):
            stopped = RunSpec.from_folder(spec.folder, cache_dir=spec.cache_dir,
                                          progress=spec.progress)
            if _same_settings(stopped.env_kwargs, spec.env_kwargs):
                spec = stopped
        if not spec.resume and any((spec.folder / m).exists() for m in RUN_MARKERS):
            print(f"{spec.folder}: holds a run with other settings, moved aside",
                  file=sys.stderr)
        print(f"{spec.folder}: {'resuming' if spec.resume else 'running'} {name} "
              f"seed {spec.seed}", file=sys.stderr)
        results.append((name, run(spec)))
    return results


def summarize(results: list[tuple[str, RunResult]], *, sweeps: int, epochs: float,
              budget: Budget | None = None, smoke: bool = False) -> dict[str, Any]:
    """Per row: what it reproduces, and mean and standard deviation over seeds of every
    reported number."""
    keys = ("best_test_ppl", "final_test_ppl", "final_val_ppl", "trainable_fraction",
            "published_trainable_fraction", "blocks_stored", "peak_memory_bytes",
            "train_steps", "wall_seconds")
    rows = {}
    for name in dict.fromkeys(name for name, _ in results):
        mine = [r for n, r in results if n == name]
        row: dict[str, Any] = {
            "agent": ROWS[name].agent, "tie_semantics": mine[0].env_kwargs.get(
                "tie_semantics", ADDED_SETTINGS["tie_semantics"]),
            "reproduces": ROWS[name].reproduces(sweeps, epochs, smoke),
            "seeds": [r.seed for r in mine]}
        for key in keys:
            values = [float(v) for v in (_value(r, key) for r in mine)
                      if isinstance(v, (int, float)) and math.isfinite(v)]
            row[key] = _mean_sd(values)
        rows[name] = row
    notes = ["best_test_ppl is the published metric: the best test perplexity over sweeps, "
             "selected on the test split (optimistic); final_test_ppl is the final model's",
             "trainable_fraction counts unique tensors (ours); published_trainable_fraction "
             "is the published count (numel over requires_grad Parameters, an aliased block "
             "once per position), recorded under tie_semantics='published' only (under ours "
             "no tensor is aliased, so it would equal the unique count); blocks_stored: the "
             "distinct block storages at the end",
             "peak_memory_bytes counts parameters, gradients and AdamW state (not "
             "activations)",
             "every row trains on windows at random offsets of the token stream and "
             "evaluates the test split in non-overlapping windows (the published code: "
             "shuffled blocks of 255 tokens plus BOS; see docs/method.md)"]
    if budget is not None:
        notes.append(f"vanilla: the published baseline's {budget.epochs:g} epochs of "
                     f"{budget.blocks:,} blocks ({budget.steps_per_epoch:,} steps an epoch) "
                     f"are {budget.steps:,} steps; run as {budget.sweeps} sweep(s) of "
                     f"{budget.steps_per_decision} steps a decision: {budget.run_steps:,} "
                     "steps")
    return {"rows": rows, "settings": {name: r.env_kwargs for name, r in results},
            "baseline_budget": asdict(budget) if budget is not None else None,
            "notes": notes}


def _value(result: RunResult, key: str) -> float | int | None:
    """A reported number of one run (derived ones from its counts and tie map)."""
    if key == "published_trainable_fraction":
        n, total = result.published_trainable_params, result.total_params
        return n / total if n is not None and total else None
    if key == "blocks_stored":
        return len(set(result.tie_map)) if result.tie_map is not None else None
    return getattr(result, key)


def _mean_sd(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "sd": sd, "n": len(values)}


def markdown(summary: dict[str, Any]) -> str:
    """The per-row table of `summarize`."""
    def cell(stat: dict[str, Any], fmt: str = ".2f", scale: float = 1.0) -> str:
        if stat["mean"] is None:
            return "n/a"
        return f"{stat['mean'] / scale:{fmt}} ± {stat['sd'] / scale:{fmt}}"

    lines = ["| row | what it reproduces | seeds | best test ppl (selected on test) | "
             "final test ppl | final val ppl | trainable fraction | published count "
             "fraction | blocks stored | params+grads+AdamW GiB | training steps | hours |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in summary["rows"].items():
        lines.append(f"| `{name}` | {r['reproduces']} | {len(r['seeds'])} | "
                     f"{cell(r['best_test_ppl'])} | {cell(r['final_test_ppl'])} | "
                     f"{cell(r['final_val_ppl'])} | {cell(r['trainable_fraction'], '.3f')} | "
                     f"{cell(r['published_trainable_fraction'], '.3f')} | "
                     f"{cell(r['blocks_stored'], '.1f')} | "
                     f"{cell(r['peak_memory_bytes'], '.2f', 2**30)} | "
                     f"{cell(r['train_steps'], '.0f')} | "
                     f"{cell(r['wall_seconds'], '.2f', 3600)} |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in summary["notes"]) + "\n"


def estimate(sweeps: int = SWEEPS, epochs: float = BASELINE_EPOCHS, *,
             measured: Path | None = None, peak_tflops: float = BF16_PEAK_TFLOPS["H100"],
             test_tokens: int = WT2_TEST_TOKENS,
             train_tokens: int = WT2_TRAIN_TOKENS) -> dict[str, Any]:
    """Expected time and peak memory of each row's run on one GPU (see `perf.gpu`).

    Time: `perf.gpu.expected_run_cost`, from the untied step time of `python -m perf.gpu
    --shapes paper --precisions bf16 --json FILE` when `measured` is that FILE, else from
    an assumed share of `peak_tflops`; the same FLOPs under both mechanics (the published
    optimizer's one-Parameter-at-a-time update is not counted). Memory:
    `tying_env.memory.estimate_bytes` in pure bf16 on CUDA at the run's start and untied:
    the most our mechanics can reach, and under the published ones too (storages only
    merge, but every trainable position holds a block's gradient and AdamW state).
    """
    step_seconds = None
    if measured is not None:
        rows = json.loads(measured.read_text())["rows"]
        match = [r for r in rows if r["shape"] == "paper" and r["dtype"] == "bf16"
                 and r["ties"] == "untied" and r["status"] == "ok"]
        if not match:
            raise SystemExit(f"{measured} has no ok 'paper' 'bf16' 'untied' row")
        step_seconds = match[0]["step ms"] / 1e3
    base = base_settings()
    shape = make_config(**base)
    budget = baseline_budget(train_tokens, seq_len=shape.seq_len, batch_size=shape.batch_size,
                             n_layer=shape.n_layer, epochs=epochs)
    out: dict[str, Any] = {"measured_step_seconds": step_seconds, "budget": asdict(budget),
                           "runs": {}}
    for name, row in ROWS.items():
        cfg = make_config(**row_settings(row, base, sweeps, budget))
        cost = expected_run_cost(cfg, test_tokens, step_seconds=step_seconds,
                                 peak_tflops=peak_tflops)
        untied = estimate_bytes(cfg, cfg.vocab_size, "cuda", ties=tm.untied(cfg.n_layer))
        start = estimate_bytes(cfg, cfg.vocab_size, "cuda")
        out["runs"][name] = {"reproduces": row.reproduces(sweeps, epochs),
                             "hours": cost["seconds"] / 3600, **cost,
                             "sweeps": cfg.max_sweeps,
                             "steps_per_decision": cfg.steps_per_decision,
                             "peak_bytes": max(untied.total, start.total),
                             "start_bytes": start.total}
    return out


def print_estimate(est: dict[str, Any], n_seeds: int) -> None:
    """The estimate in words, one line a row."""
    how = (f"measured step {est['measured_step_seconds'] * 1e3:.0f} ms"
           if est["measured_step_seconds"] else "assumed 35% of an H100/H200's 989 "
           "TFLOP/s bf16 peak")
    b = est["budget"]
    print(f"per run on one GPU ({how}):")
    for name, r in est["runs"].items():
        print(f"  {name}: {r['hours']:.1f} h ({int(r['train_steps']):,} training steps: "
              f"{r['sweeps']} sweeps x {int(r['decisions']) // r['sweeps']} decisions x "
              f"{r['steps_per_decision']}), peak memory about {format_bytes(r['peak_bytes'])} "
              f"(at the start {format_bytes(r['start_bytes'])})")
        print(f"    reproduces: {r['reproduces']}")
    print(f"the baseline's budget: {b['epochs']:g} epochs of about {b['blocks']:,} blocks "
          f"(WikiText-2's train split, about {b['train_tokens'] / 1e6:.1f} M GPT-2 tokens, "
          f"in blocks of 255) = {b['steps']:,} steps of 16; the run counts the loaded split")
    print("the published mechanics' optimizer updates one Parameter at a time (aliased "
          "storages): not counted above, so expect those runs slower")
    total = sum(r["hours"] for r in est["runs"].values()) * n_seeds
    print(f"all {len(est['runs']) * n_seeds} runs, one after another: {total:.1f} h")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/table1"), help="run folders")
    parser.add_argument("--smoke", action="store_true",
                        help="the same code path at a tiny shape, 1 sweep, on the CPU")
    parser.add_argument("--estimate", action="store_true",
                        help="print the expected time and peak memory per run; run nothing")
    parser.add_argument("--measured", type=Path, default=None,
                        help="with --estimate: a `python -m perf.gpu --json` file to take "
                             "the step time from")
    parser.add_argument("--sweeps", type=int, default=None,
                        help=f"the Q-learner's sweeps (default {SWEEPS}; smoke {SMOKE_SWEEPS})")
    parser.add_argument("--baseline-epochs", type=float, default=None,
                        help=f"vanilla's budget in epochs of the train split (default "
                             f"{BASELINE_EPOCHS:g}; smoke {SMOKE_BASELINE_EPOCHS:g})")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS),
                        help="the rows to run (default all)")
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
        print_estimate(estimate(args.sweeps or SWEEPS, args.baseline_epochs or BASELINE_EPOCHS,
                                measured=args.measured), len(args.seeds))
        return 0

    sweeps = args.sweeps or (SMOKE_SWEEPS if args.smoke else SWEEPS)
    epochs = args.baseline_epochs or (SMOKE_BASELINE_EPOCHS if args.smoke else BASELINE_EPOCHS)
    planned, budget = specs(args.out, smoke=args.smoke, sweeps=sweeps, epochs=epochs,
                            seeds=tuple(args.seeds), rows=tuple(args.rows),
                            data_dir=args.data_dir, tokenizer=args.tokenizer,
                            cache_dir=args.cache_dir, progress=not args.no_progress)
    results = run_all(planned)
    summary = summarize(results, sweeps=sweeps, epochs=epochs, budget=budget, smoke=args.smoke)
    write_json(args.out / "table1.json", summary)
    table = markdown(summary)
    write_text(args.out / "table1.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
