"""Per-family speed: tied/untied step time and env overhead for GPT-2, Llama, BERT, ViT and
causal BERT.

For each family on its tiny preset (`tiny`, `llama-tiny`, `bert-tiny`, `vit-tiny`,
`bert-causal-tiny`), in one process, float32 on the CPU:

1. The median time of one inner optimizer step (forward, backward, clip, AdamW; the
   preset's dropout) of the untied model and of the 75%-tied model (`perf.memory.tie_map`,
   as perf/speed.py) in `copy` and in `share` mode, measured interleaved (every round
   runs `--steps` steps of each in turn: A B C A B C ...) after `--warmup` untimed steps,
   on one batch made by the family's own task from its training split; the ratios
   copy / untied and share / untied of the medians.
2. The environment's overhead per decision: `--sweeps` sweeps of `LayerTyingEnv` (seed 0;
   even sweeps tie to the 75% map, odd sweeps untie every layer, so tie, untie and the
   optimizer's sync all run), each `env.step` timed; the mean step, the mean training and
   evaluation time per step (deltas of the training run's own clock,
   `TrainingRun.seconds`), and the overhead = step - train - evaluate, in ms and as a
   fraction of the step.
3. The trainable parameters untied and 75% tied, so the ratio can be read against the
   work the ties remove.

Targets are not asserted. The only documented one, perf/speed.py's
`TARGET_TIED_RATIO` (75%-tied copy <= 0.85x untied, set on the `small` GPT-2 shape), is
printed as met / not met. Run from the repository root:

    python -m perf.families [--rounds 3] [--steps 10] [--threads 2] [--sweeps 1]
        [--families gpt2,vit] [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perf.memory import tie_map
from perf.speed import TARGET_TIED_RATIO, Contender, interleaved
from tying_env.data.corpus import Corpus
from tying_env.data.images import ImageSet
from tying_env.env import LayerTyingEnv
from tying_env.files import write_json
from tying_env.presets import EnvConfig
from tying_env.training import InnerOptimizer, build_model, sample_windows

FAMILY_PRESETS = {"gpt2": "tiny", "llama": "llama-tiny", "bert": "bert-tiny",
                  "vit": "vit-tiny", "bert-causal": "bert-causal-tiny"}
TIED_FRACTION = 0.75
VARIANTS = (("untied", "copy", False), ("75% copy", "copy", True),
            ("75% share", "share", True))
ROOT = Path(__file__).resolve().parent.parent


def parse_families(text: str) -> list[str]:
    """`gpt2,vit` as a list; an argparse error names the allowed families."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if name not in FAMILY_PRESETS]
    if bad or not names:
        what = f"unknown family {', '.join(map(repr, bad))}" if bad else "no family given"
        raise argparse.ArgumentTypeError(
            f"{what}; allowed: {', '.join(FAMILY_PRESETS)} (comma-separated)")
    return list(dict.fromkeys(names))


def git_commit() -> str | None:
    """The short commit of the checkout, None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ------------------------------------------------------------------ step time
def contenders(cfg: EnvConfig, data: Corpus | ImageSet) -> list[Contender]:
    """Untied, 75% copy and 75% share models of `cfg`'s family, same initial weights."""
    ties = tie_map(cfg.n_layer, TIED_FRACTION)
    out = []
    for name, mode, tied in VARIANTS:
        torch.manual_seed(0)
        model = build_model(replace(cfg, tie_mode=mode), data, ties if tied else None).train()
        optim = InnerOptimizer(model.trainable_parameters(), cfg.lr,
                               weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)
        out.append(Contender(name, model, optim))
    return out


def task_batch(cfg: EnvConfig, data: Corpus | ImageSet, model: torch.nn.Module,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch made by the model's task, as float32 / int64 CPU tensors (as
    `TrainingRun._batch` makes it in fp32)."""
    rng = np.random.default_rng(seed)
    x, y = model.task.batch(sample_windows(data.train, rng, cfg.batch_size, cfg.seq_len), rng)

    def tensor(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.to(torch.float32) if t.is_floating_point() else t.to(torch.int64)

    return tensor(x), tensor(y)


def measure_steps(cfg: EnvConfig, data: Corpus | ImageSet, rounds: int, steps: int,
                  warmup: int) -> dict[str, Any]:
    """Interleaved step times of the three variants, their ratios and parameter counts."""
    group = contenders(cfg, data)
    x, y = task_batch(cfg, data, group[0].model)
    stats = interleaved(group, x, y, rounds, steps, warmup)
    med = {name: s["median_ms"] for name, s in stats.items()}
    untied, tied = (c.model.param_counts() for c in group[:2])
    ties = tie_map(cfg.n_layer, TIED_FRACTION)
    return dict(
        steps_ms=stats,
        ratios={"copy / untied": med["75% copy"] / med["untied"],
                "share / untied": med["75% share"] / med["untied"]},
        ties=ties, layers_tied=sum(1 for i, r in enumerate(ties) if r != i),
        params=dict(total=untied[1], trainable_untied=untied[0], trainable_tied=tied[0],
                    block=group[0].model.block_numel(),
                    trainable_fraction_untied=untied[0] / untied[1],
                    trainable_fraction_tied=tied[0] / tied[1]))


# --------------------------------------------------------------- env overhead
def measure_env(env: LayerTyingEnv, sweeps: int) -> dict[str, Any]:
    """Mean `env.step`, training and evaluation time per decision, and the overhead.

    Even sweeps tie to the 75% map, odd sweeps make every layer independent.
    """
    env.reset(seed=0)
    run = env.unwrapped.run
    assert run is not None
    seconds = run.seconds  # the training run's own clock: training and evaluation
    L = env.cfg.n_layer
    ties = tie_map(L, TIED_FRACTION)
    step = train = evaluate = 0.0
    decisions = 0
    for sweep in range(sweeps):
        for layer in range(1, L):
            train0, eval0 = seconds["train"], seconds["evaluate"]
            start = time.perf_counter()
            env.step(ties[layer] if sweep % 2 == 0 else layer)
            step += time.perf_counter() - start
            train += seconds["train"] - train0
            evaluate += seconds["evaluate"] - eval0
            decisions += 1
    step_ms, train_ms, eval_ms = (1e3 * s / decisions for s in (step, train, evaluate))
    overhead_ms = step_ms - train_ms - eval_ms
    return dict(decisions=decisions, steps_per_decision=env.cfg.steps_per_decision,
                step_ms=step_ms, train_ms=train_ms, evaluate_ms=eval_ms,
                overhead_ms=overhead_ms, overhead_fraction=overhead_ms / step_ms)


def measure_family(family: str, rounds: int, steps: int, warmup: int, sweeps: int,
                   cache_dir: Path) -> dict[str, Any]:
    """Step times, parameter counts and env overhead of one family on its tiny preset."""
    preset = FAMILY_PRESETS[family]
    env = LayerTyingEnv(preset, cache_dir=cache_dir, device="cpu", precision="fp32",
                        max_sweeps=max(1, sweeps))
    try:
        cfg = env.cfg
        row = dict(family=family, preset=preset,
                   shape={k: getattr(cfg, k) for k in ("n_layer", "n_embd", "n_head",
                                                       "seq_len", "batch_size", "dropout")},
                   dataset=cfg.dataset)
        row.update(measure_steps(cfg, env.corpus, rounds, steps, warmup))
        row["copy_target_met"] = row["ratios"]["copy / untied"] <= TARGET_TIED_RATIO
        row["env"] = measure_env(env, sweeps) if sweeps else None
    finally:
        env.close()
    return row


# --------------------------------------------------------------------- report
def format_report(rows: list[dict[str, Any]]) -> str:
    """One row per family: parameters, step medians and ratios, env overhead."""
    lines = ["| family | tied layers | trainable untied | trainable tied (fraction) | "
             "untied ms | copy ms | share ms | copy / untied | share / untied | "
             f"copy <= {TARGET_TIED_RATIO}x | env step ms | train ms | eval ms | "
             "overhead ms | overhead / step |", "|---|" + "---|" * 14]
    for r in rows:
        p, s, q, e = r["params"], r["steps_ms"], r["ratios"], r["env"]
        env = (f"{e['step_ms']:.1f} | {e['train_ms']:.1f} | {e['evaluate_ms']:.1f} | "
               f"{e['overhead_ms']:.2f} | {e['overhead_fraction']:.1%}" if e
               else "n/a | n/a | n/a | n/a | n/a")
        lines.append(
            f"| {r['family']} | {r['layers_tied']}/{r['shape']['n_layer']} | "
            f"{p['trainable_untied']:,} | {p['trainable_tied']:,} "
            f"({p['trainable_fraction_tied']:.1%}) | {s['untied']['median_ms']:.2f} | "
            f"{s['75% copy']['median_ms']:.2f} | {s['75% share']['median_ms']:.2f} | "
            f"{q['copy / untied']:.3f} | {q['share / untied']:.3f} | "
            f"{'met' if r['copy_target_met'] else 'not met'} | {env} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=parse_families, default=list(FAMILY_PRESETS),
                        help=f"comma-separated, of: {', '.join(FAMILY_PRESETS)} (default all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--sweeps", type=int, default=1,
                        help="env sweeps for the overhead; 0 skips it")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="corpus cache (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.warmup < 0 or args.sweeps < 0:
        parser.error("--warmup and --sweeps must be >= 0")

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp) / "cache"
        rows = [measure_family(f, args.rounds, args.steps, args.warmup, args.sweeps, cache)
                for f in args.families]
    load_after = os.getloadavg()
    result = dict(torch=torch.__version__, commit=git_commit(), threads=args.threads,
                  rounds=args.rounds, steps=args.steps, warmup=args.warmup, sweeps=args.sweeps,
                  tied_fraction=TIED_FRACTION, target_tied_ratio=TARGET_TIED_RATIO,
                  load_average_before=load_before, load_average_after=load_after,
                  families=rows)
    print(f"torch {torch.__version__}, commit {result['commit']}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps per variant, {args.sweeps} env sweep(s); "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(format_report(rows))
    print(f"step ms: medians of one inner step (float32, CPU); tied = perf.memory.tie_map(L, "
          f"{TIED_FRACTION}); target {TARGET_TIED_RATIO}x is perf/speed.py's, set on `small`")
    if args.json is not None:
        write_json(args.json, result)  # atomic: never half-written
    return result


if __name__ == "__main__":
    main()
