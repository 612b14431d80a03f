"""Speed benchmark: one inner optimizer step, ours vs a nanoGPT-style reference, and env overhead.

(a) The median time of one inner step (forward, backward, clip, AdamW step;
float32 on the CPU) on the `small` preset's shape for our `TiedModel`
untied, 75%-tied in copy and share mode, and the reference model
(`perf.reference`) untied and tied the published way. The five are
measured interleaved in one process (A B C D E A B C D E ...) on the same
batch, so their ratios hold on a noisy machine.

(b) The environment's own overhead per decision on the `small` preset: the
time of `env.step` minus its inner training and evaluation (as counted by the
training run's own clock, `TrainingRun.seconds`), as a fraction of the step.

Targets are printed as pass/fail, never asserted. Run from the repository root:

    python -m perf.speed [--rounds 3] [--steps 10] [--threads 2] [--json OUT] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from perf.memory import tie_map
from perf.reference import ReferenceGPT, tie_published
from tying_env.files import write_json
from tying_env.models import TiedModel, gpt2_config
from tying_env.presets import EnvConfig, make_config
from tying_env.training import InnerOptimizer

TIED_FRACTION = 0.75
TARGET_TIED_RATIO = 0.85  # 75%-tied copy mode must take at most this fraction of untied
TARGET_ENV_OVERHEAD = 0.05
SHAPE_OPTIONS = ("n_layer", "n_embd", "n_head", "seq_len", "vocab_size", "batch_size")


@dataclass
class Contender:
    """One model with its optimizer, timed on the shared batch."""

    name: str
    model: torch.nn.Module
    optim: InnerOptimizer

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Seconds of one inner step."""
        start = time.perf_counter()
        self.optim.step(self.model.loss(x, y))
        return time.perf_counter() - start


def contenders(cfg: EnvConfig, dropout: float) -> list[Contender]:
    """Ours untied / copy / share and the reference untied / tied, on the same shape."""
    ties = tie_map(cfg.n_layer, TIED_FRACTION)
    built: list[tuple[str, torch.nn.Module]] = []
    for name, mode, tmap in (("ours untied", "copy", None), ("ours 75% copy", "copy", ties),
                             ("ours 75% share", "share", ties)):
        torch.manual_seed(0)
        config = gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, cfg.vocab_size,
                             dropout, cfg.activation)
        built.append((name, TiedModel(config, mode, ties=tmap)))
    for name, tmap in (("reference untied", None), ("reference 75% tied", ties)):
        torch.manual_seed(0)
        ref = ReferenceGPT(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, cfg.vocab_size,
                           dropout)
        if tmap is not None:
            tie_published(ref, tmap)
        built.append((name, ref))
    out = []
    for name, model in built:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optim = InnerOptimizer(params, cfg.lr, weight_decay=cfg.weight_decay,
                               grad_clip=cfg.grad_clip)
        out.append(Contender(name, model, optim))
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    """Median, quartiles and range in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else ms * 3
    return dict(median_ms=statistics.median(ms), q1_ms=q1, q3_ms=q3, min_ms=ms[0],
                max_ms=ms[-1], n=len(ms))


def measure_steps(cfg: EnvConfig, dropout: float, rounds: int, steps: int,
                  warmup: int) -> tuple[list[Contender], dict[str, dict[str, float]]]:
    """Interleaved timing: every round runs `steps` steps of each contender in turn."""
    group = contenders(cfg, dropout)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1), generator=gen)
    return group, interleaved(group, batch[:, :-1], batch[:, 1:], rounds, steps, warmup)


def interleaved(group: list[Contender], x: torch.Tensor, y: torch.Tensor, rounds: int,
                steps: int, warmup: int) -> dict[str, dict[str, float]]:
    """`warmup` untimed steps of each contender, then `rounds` rounds of `steps` timed steps
    of each in turn (A A B B C C A A ...), all on the batch `x`, `y`; `summary` per name."""
    for c in group:
        for _ in range(warmup):
            c.step(x, y)
    times: dict[str, list[float]] = {c.name: [] for c in group}
    for _ in range(rounds):
        for c in group:
            times[c.name].extend(c.step(x, y) for _ in range(steps))
    return {name: summary(t) for name, t in times.items()}


def step_ratios(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    med = {name: s["median_ms"] for name, s in stats.items()}
    return {
        "tied-copy / untied": med["ours 75% copy"] / med["ours untied"],
        "tied-share / untied": med["ours 75% share"] / med["ours untied"],
        "ours untied / reference untied": med["ours untied"] / med["reference untied"],
        "reference tied / reference untied": med["reference 75% tied"] / med["reference untied"],
    }


def profile(group: list[Contender], cfg: EnvConfig, names: tuple[str, ...], steps: int,
            row_limit: int) -> None:
    """Print torch.profiler's ops by self CPU time for the named contenders."""
    batch = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1),
                          generator=torch.Generator().manual_seed(1))
    x, y = batch[:, :-1], batch[:, 1:]
    for c in (c for c in group if c.name in names):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                c.step(x, y)
        print(f"\n## profile: {c.name} ({steps} steps)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))


# ---------------------------------------------------------------- env overhead
def measure_env(sweeps: int, cache_dir: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overhead of `env.step` beyond training and evaluation, per decision.

    Sweep 1 ties to the 75% map, later sweeps alternate untying everything and
    tying again, so tie, untie (clone) and optimizer sync are all exercised.
    """
    from tying_env.data.corpus import offline_wikitext2
    from tying_env.env import LayerTyingEnv

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = offline_wikitext2(Path(tmp) / "wikitext-2")
        env = LayerTyingEnv("small", cache_dir=cache_dir or Path(tmp) / "cache",
                            data_dir=str(data_dir), device="cpu", max_sweeps=sweeps,
                            **overrides)
        env.reset(seed=0)
        L = env.cfg.n_layer
        assert env.run is not None
        seconds = env.run.seconds  # the training run's own clock: training and evaluation
        ties = tie_map(L, TIED_FRACTION)
        rows = []
        for sweep in range(sweeps):
            for layer in range(1, L):
                action = ties[layer] if sweep % 2 == 0 else layer
                train0, eval0 = seconds["train"], seconds["evaluate"]
                start = time.perf_counter()
                env.step(action)
                total = time.perf_counter() - start
                train, evaluate = seconds["train"] - train0, seconds["evaluate"] - eval0
                rows.append(dict(step=total, train=train, eval=evaluate,
                                 overhead=total - train - evaluate))
        env.close()
    fractions = [r["overhead"] / r["step"] for r in rows]
    q1, _, q3 = (statistics.quantiles(fractions, n=4, method="inclusive")
                 if len(fractions) > 1 else fractions * 3)
    return dict(decisions=len(rows), median_fraction=statistics.median(fractions),
                q1_fraction=q1, q3_fraction=q3, min_fraction=min(fractions),
                max_fraction=max(fractions),
                median_step_ms=1e3 * statistics.median(r["step"] for r in rows),
                median_train_ms=1e3 * statistics.median(r["train"] for r in rows),
                median_eval_ms=1e3 * statistics.median(r["eval"] for r in rows),
                median_overhead_ms=1e3 * statistics.median(r["overhead"] for r in rows))


# --------------------------------------------------------------------- report
def format_report(stats: dict[str, dict[str, float]], ratios: dict[str, float],
                  env: dict[str, Any] | None, targets: dict[str, bool]) -> str:
    lines = ["| model | median ms | IQR ms | min-max ms | steps |", "|---|---|---|---|---|"]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['median_ms']:.1f} | {s['q1_ms']:.1f}-{s['q3_ms']:.1f} | "
                     f"{s['min_ms']:.1f}-{s['max_ms']:.1f} | {s['n']} |")
    lines += ["", "| ratio of medians | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in ratios.items()]
    if env is not None:
        lines += ["", "| env per decision | median | IQR |", "|---|---|---|",
                  f"| overhead / step | {env['median_fraction']:.2%} | "
                  f"{env['q1_fraction']:.2%}-{env['q3_fraction']:.2%} |"]
        lines += [f"| {key} ms | {env[f'median_{key}_ms']:.1f} | |"
                  for key in ("step", "train", "eval", "overhead")]
    lines += ["", "| target | result |", "|---|---|"]
    lines += [f"| {name} | {'PASS' if ok else 'FAIL'} |" for name, ok in targets.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per contender per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout (default: the small preset's)")
    for name in SHAPE_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"override the small preset's {name}")
    parser.add_argument("--env-sweeps", type=int, default=2,
                        help="sweeps of env.step for the overhead; 0 skips it")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="tokenizer/corpus cache (default: a temporary folder)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler tables (ours vs reference)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in SHAPE_OPTIONS if getattr(args, k) is not None}
    cfg = make_config("small", **overrides)
    dropout = cfg.dropout if args.dropout is None else args.dropout
    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"{args.threads} threads, shape L={cfg.n_layer} n={cfg.n_embd} heads={cfg.n_head} "
          f"seq={cfg.seq_len} vocab={cfg.vocab_size} batch={cfg.batch_size}, dropout {dropout}, "
          f"ties 75%: {tie_map(cfg.n_layer, TIED_FRACTION)}")

    group, stats = measure_steps(cfg, dropout, args.rounds, args.steps, args.warmup)
    ratios = step_ratios(stats)
    env = measure_env(args.env_sweeps, args.cache_dir, overrides) if args.env_sweeps else None
    targets = {
        f"75%-tied copy <= {TARGET_TIED_RATIO}x untied":
            ratios["tied-copy / untied"] <= TARGET_TIED_RATIO,
        "ours untied <= reference untied": ratios["ours untied / reference untied"] <= 1.0,
    }
    if env is not None:
        targets[f"env overhead < {TARGET_ENV_OVERHEAD:.0%}"] = (
            env["median_fraction"] < TARGET_ENV_OVERHEAD)
    load_after = os.getloadavg()
    print(format_report(stats, ratios, env, targets))
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.profile:
        profile(group, cfg, ("ours untied", "ours 75% copy", "reference untied"), 3, 25)

    result = dict(load_average_before=load_before, load_average_after=load_after,
                  threads=args.threads, config={k: getattr(cfg, k) for k in SHAPE_OPTIONS},
                  dropout=dropout, rounds=args.rounds, steps=args.steps, steps_ms=stats,
                  ratios=ratios, env=env, targets=targets)
    if args.json is not None:
        write_json(args.json, result)  # atomic: never half-written
    return result


if __name__ == "__main__":
    main()
