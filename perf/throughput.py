"""Throughput of the inner training step against this machine's matrix-product peak.

For each preset (default `tiny` and `small`), in one process:

1. the machine's fp32 matmul throughput, measured now: the median time of a
   2048 x 2048 `torch.mm` (`--peak-size`), as GFLOP/s;
2. the median time of one inner step (forward, backward, clip, AdamW; the
   preset's dropout) of the untied model and of the 75%-tied model in copy
   and share mode, measured interleaved (A B C A B C ...) on one batch;
3. each step's achieved GFLOP/s: the matrix-product FLOPs that step really
   performs (`step_flops`) over its median time, and that as a share of (1);
4. optionally (`--profile`), torch.profiler's top operations of the untied step.

Targets (issue 16) are printed as PASS/FAIL, never asserted: tiny >= 30% and
small >= 40% of the matmul peak untied; 75%-tied copy <= 0.85x untied on small.
Run from the repository root:

    python -m perf.throughput [--presets tiny,small] [--threads 2] [--rounds 5] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from perf.memory import tie_map
from tying_env.files import write_json
from tying_env.models import TiedModel, gpt2_config
from tying_env.presets import EnvConfig, make_config
from tying_env.training import InnerOptimizer

TIED_FRACTION = 0.75
TARGET_SHARE = {"tiny": 0.30, "small": 0.40}
TARGET_TIED_RATIO = 0.85  # on `small`
VARIANTS = (("untied", "copy", False), ("75% copy", "copy", True), ("75% share", "share", True))


def step_flops(cfg: EnvConfig, ties: list[int], mode: str) -> int:
    """Matrix-product FLOPs of one training step (2 per multiply-add).

    Per layer and token the forward pass runs 2 * 12 d^2 in weight products
    (attention in/out 4 d^2, MLP 8 d^2) and 2 * 2 T d in attention products
    (scores, weighted values); the LM head 2 d V. The backward pass runs each
    product again for the input gradient and once more for a weight gradient
    where one is computed: everywhere when untied or in share mode, at root
    positions only in copy mode (a tied position's weights receive none).
    Attention products have two backward products and no weights.
    """
    tokens = cfg.batch_size * cfg.seq_len
    d, t, v = cfg.n_embd, cfg.seq_len, cfg.vocab_size
    weights = 2 * 12 * d * d * tokens
    attention = 2 * 2 * t * d * tokens
    total = 3 * 2 * d * v * tokens  # LM head (tied to the trained embedding)
    for position, root in enumerate(ties):
        weight_grad = mode == "share" or root == position
        total += weights * (3 if weight_grad else 2) + 3 * attention
    return total


def matmul_peak(size: int, repeats: int = 10) -> float:
    """GFLOP/s of a `size` x `size` fp32 `torch.mm` (median over `repeats`)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen) for _ in range(2))
    torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(seconds) / 1e9


def build(cfg: EnvConfig, mode: str, tied: bool) -> tuple[TiedModel, InnerOptimizer, list[int]]:
    torch.manual_seed(0)
    ties = tie_map(cfg.n_layer, TIED_FRACTION) if tied else list(range(cfg.n_layer))
    config = gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, cfg.vocab_size,
                         cfg.dropout, cfg.activation)
    model = TiedModel(config, mode, ties=ties).train()
    optim = InnerOptimizer(model.trainable_parameters(), cfg.lr, weight_decay=cfg.weight_decay,
                           grad_clip=cfg.grad_clip)
    return model, optim, ties


def measure_preset(preset: str, rounds: int, steps: int, warmup: int,
                   peak_gflops: float) -> dict[str, Any]:
    """Step times (interleaved), GFLOP/s and share of the peak, per variant of one preset."""
    cfg = make_config(preset)
    built = {name: build(cfg, mode, tied) for name, mode, tied in VARIANTS}
    batch = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1),
                          generator=torch.Generator().manual_seed(0))
    x, y = batch[:, :-1], batch[:, 1:]
    times: dict[str, list[float]] = {name: [] for name in built}
    for round_ in range(warmup + rounds):
        for name, (model, optim, _) in built.items():
            for _ in range(steps):
                start = time.perf_counter()
                optim.step(model.loss(x, y))
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
    rows = {}
    for (name, mode, _), (_, _, ties) in zip(VARIANTS, built.values(), strict=True):
        median = statistics.median(times[name])
        flops = step_flops(cfg, ties, mode)
        gflops = flops / median / 1e9
        rows[name] = dict(step_ms=1e3 * median, min_ms=1e3 * min(times[name]),
                          gflop_per_step=flops / 1e9, gflops=gflops,
                          share_of_peak=gflops / peak_gflops, n=len(times[name]), ties=ties)
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_embd", "n_head", "seq_len",
                                          "vocab_size", "batch_size", "dropout")}
    return dict(preset=preset, shape=shape, rows=rows,
                tied_copy_over_untied=rows["75% copy"]["step_ms"] / rows["untied"]["step_ms"])


def top_operations(preset: str, steps: int, limit: int) -> list[dict[str, Any]]:
    """torch.profiler's operations of the untied step, by self CPU time."""
    cfg = make_config(preset)
    model, optim, _ = build(cfg, "copy", False)
    batch = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len + 1),
                          generator=torch.Generator().manual_seed(1))
    x, y = batch[:, :-1], batch[:, 1:]
    for _ in range(3):  # first steps allocate; they are not typical
        optim.step(model.loss(x, y))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            optim.step(model.loss(x, y))
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [dict(op=e.key, share=e.self_cpu_time_total / total, calls_per_step=e.count / steps,
                 ms_per_step=e.self_cpu_time_total / 1e3 / steps) for e in events[:limit]]


def targets(presets: list[dict[str, Any]]) -> dict[str, bool]:
    out = {}
    for p in presets:
        name = p["preset"]
        if name in TARGET_SHARE:
            out[f"{name}: untied >= {TARGET_SHARE[name]:.0%} of the matmul peak"] = (
                p["rows"]["untied"]["share_of_peak"] >= TARGET_SHARE[name])
        if name == "small":
            out[f"small: 75%-tied copy <= {TARGET_TIED_RATIO}x untied"] = (
                p["tied_copy_over_untied"] <= TARGET_TIED_RATIO)
    return out


def format_report(result: dict[str, Any]) -> str:
    lines = [f"matmul peak ({result['peak_size']}^2 fp32 mm): {result['peak_gflops']:.1f} "
             f"GFLOP/s", "",
             "| preset | ties | step ms (median) | min ms | GFLOP/step | GFLOP/s | "
             "share of peak |", "|---|---|---|---|---|---|---|"]
    for p in result["presets"]:
        for name, r in p["rows"].items():
            lines.append(f"| {p['preset']} | {name} | {r['step_ms']:.1f} | {r['min_ms']:.1f} | "
                         f"{r['gflop_per_step']:.2f} | {r['gflops']:.1f} | "
                         f"{r['share_of_peak']:.1%} |")
    lines += ["", "| preset | 75% copy / untied |", "|---|---|"]
    lines += [f"| {p['preset']} | {p['tied_copy_over_untied']:.3f} |" for p in result["presets"]]
    for preset, ops in result.get("profiles", {}).items():
        lines += ["", f"top operations, {preset} untied (self CPU time):", "",
                  "| op | share | calls/step | ms/step |", "|---|---|---|---|"]
        lines += [f"| {o['op']} | {o['share']:.1%} | {o['calls_per_step']:.0f} | "
                  f"{o['ms_per_step']:.2f} |" for o in ops]
    lines += ["", "| target | result |", "|---|---|"]
    lines += [f"| {name} | {'PASS' if ok else 'FAIL'} |"
              for name, ok in result["targets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument("--profile", action="store_true", help="print the top operations")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    peak = matmul_peak(args.peak_size)
    presets = [measure_preset(p, args.rounds, args.steps, args.warmup, peak)
               for p in args.presets.split(",")]
    peak_after = matmul_peak(args.peak_size)  # a drift here means the machine was busy
    result: dict[str, Any] = dict(
        torch=torch.__version__, threads=args.threads, load_average_before=load_before,
        peak_size=args.peak_size, peak_gflops=peak, peak_gflops_after=peak_after,
        presets=presets, targets=targets(presets))
    if args.profile:
        result["profiles"] = {p["preset"]: top_operations(p["preset"], 5, 10) for p in presets}
    result["load_average_after"] = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, load average before "
          f"{load_before[0]:.2f}, after {result['load_average_after'][0]:.2f}; matmul peak "
          f"after the steps {peak_after:.1f} GFLOP/s")
    print(format_report(result))
    if args.json is not None:
        write_json(args.json, result)  # atomic: never half-written
    return result


if __name__ == "__main__":
    main()
