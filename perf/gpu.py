"""GPU benchmark: tokens per second, peak memory and the share of the GPU's bf16 peak of
training steps, untied vs tied, in bf16 autocast and in pure bf16.

On CUDA: the `gpt2` (124M) and `paper` (the published 48 x 1600, sequence 256, batch 16)
preset shapes, in each `--precisions` (default: `bf16-autocast`, float32 weights with
bfloat16 compute, and `bf16`, the whole model in bfloat16 as published), our `TiedModel`
(copy mode by default) with `InnerOptimizer`, random token batches, untied and 75% tied.
Warm-up steps are excluded from the timing, which is bracketed by
`torch.cuda.synchronize()`; peak memory is `torch.cuda.max_memory_allocated` over the
warm-up and timed steps. An out-of-memory row is reported, not raised.

`TFLOP/s` counts the matrix-multiply FLOPs one step needs (`step_flops`: forward, the
activations' gradients, and weight gradients where they are computed, so fewer for tied
positions in copy mode); `% peak` divides it by the GPU's dense bf16 peak
(`BF16_PEAK_TFLOPS` by device name, or `--peak-tflops`). `expected_run_cost` turns a
step time (measured here, or an assumed share of the peak) into the expected time of a
whole run; `scripts/table1.py --estimate` uses it.

`--smoke` runs a tiny shape for a few steps and works on the CPU (peak memory and % peak
n/a there). The default run takes a few minutes on one H200.

    python -m perf.gpu [--shapes paper] [--precisions bf16 bf16-autocast] [--json OUT]
    python -m perf.gpu --smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch

from perf.memory import tie_map
from tying_env import ties as tm
from tying_env.models import TiedModel, gpt2_config
from tying_env.presets import PRECISIONS, EnvConfig, make_config
from tying_env.training import InnerOptimizer, autocast, model_dtype

TIED_FRACTION = 0.75
DEFAULT_BATCH = {"gpt2": 8, "paper": 16}  # sized for one H200 (seq 1024 / seq 256)
SMOKE_SHAPE = dict(n_layer=4, n_embd=32, n_head=2, seq_len=32, vocab_size=128, batch_size=2)
COLUMNS = ("shape", "ties", "trainable params", "batch", "seq", "dtype", "step ms", "tokens/s",
           "TFLOP/s", "% peak", "peak GiB", "status")
# dense bfloat16 peak of one GPU, TFLOP/s, by a substring of its name (SXM figures)
BF16_PEAK_TFLOPS = {"B200": 2250.0, "H200": 989.0, "H100": 989.0, "A100": 312.0,
                    "L40S": 362.0, "A10": 125.0, "L4": 121.0}
ASSUMED_PEAK_SHARE = 0.35  # planning figure when no step time was measured (see run cost)


# ------------------------------------------------------------------ FLOPs and run cost
def step_flops(shape: dict[str, Any], ties: tm.TieMap | None, mode: str = "copy") -> float:
    """Matrix-multiply FLOPs of one training step (forward and backward) of `shape`.

    Forward per token: `L (24E² + 4SE) + 2EV` (the block's projections, attention's two
    products over the full window, the LM head). Backward: the activations' gradients,
    `L (24E² + 8SE) + 2EV`, plus the weight gradients, `24E²` per position that computes
    them (roots in `copy` mode, every position in `share` mode) and `2EV` for the
    embeddings. Untied, the total is the usual `6N + 12LSE` per token.
    """
    E, S, L, V = shape["n_embd"], shape["seq_len"], shape["n_layer"], shape["vocab_size"]
    ties = tm.untied(L) if ties is None else ties
    weighted = L if mode == "share" else len(tm.roots(ties))
    per_token = (L * (24 * E * E + 4 * S * E) + 2 * E * V  # forward
                 + L * (24 * E * E + 8 * S * E) + 2 * E * V  # gradients of activations
                 + weighted * 24 * E * E + 2 * E * V)  # gradients of weights
    return float(per_token * shape["batch_size"] * S)


def forward_flops(shape: dict[str, Any], tokens: int) -> float:
    """Matrix-multiply FLOPs of evaluating `tokens` tokens (forward only)."""
    E, S, L, V = shape["n_embd"], shape["seq_len"], shape["n_layer"], shape["vocab_size"]
    return float(tokens * (L * (24 * E * E + 4 * S * E) + 2 * E * V))


def bf16_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named `device_name`, or None when it is not listed."""
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return peak
    return None


def expected_run_cost(cfg: EnvConfig, test_tokens: int, *, step_seconds: float | None = None,
                      peak_tflops: float = BF16_PEAK_TFLOPS["H100"],
                      peak_share: float = ASSUMED_PEAK_SHARE) -> dict[str, float]:
    """Expected FLOPs and seconds of one whole run of `cfg` on one GPU.

    Counts every training step untied (an upper bound: tied positions in `copy` mode skip
    their weight gradients), the validation subset after every decision, one training
    batch more for `reward="paper"`, and the whole test split (`test_tokens`) every
    `test_eval_every` sweeps. The speed is `step_flops / step_seconds` when a measured
    untied step time is given (evaluation assumed as efficient), else `peak_share` of
    `peak_tflops`.
    """
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_embd", "seq_len", "vocab_size",
                                          "batch_size")}
    decisions = cfg.max_sweeps * (cfg.n_layer - 1) if cfg.action_mode == "layer" \
        else cfg.max_sweeps
    steps = cfg.max_sweeps * (cfg.n_layer - 1) * cfg.steps_per_decision
    window = cfg.batch_size * cfg.seq_len
    eval_tokens = decisions * window * (cfg.eval_batches + (cfg.reward == "paper"))
    tests = cfg.max_sweeps // cfg.test_eval_every if cfg.test_eval_every else 0
    train = steps * step_flops(shape, None)
    evaluate = forward_flops(shape, eval_tokens) + tests * forward_flops(shape, test_tokens)
    speed = (step_flops(shape, None) / step_seconds if step_seconds
             else peak_share * peak_tflops * 1e12)
    return {"train_steps": float(steps), "decisions": float(decisions),
            "train_flops": train, "eval_flops": evaluate, "flops_per_s": speed,
            "seconds": (train + evaluate) / speed}


# ------------------------------------------------------------------ measurements
def shape_settings(name: str) -> dict[str, Any]:
    """Model shape and inner-training settings of a preset (`smoke`: a tiny `tiny`)."""
    cfg = make_config("tiny", **SMOKE_SHAPE) if name == "smoke" else make_config(
        name, batch_size=DEFAULT_BATCH[name])
    keys = ("n_layer", "n_embd", "n_head", "seq_len", "vocab_size", "batch_size", "lr",
            "weight_decay", "grad_clip", "dropout")
    return {k: getattr(cfg, k) for k in keys}


def run_row(shape: dict[str, Any], ties: list[int] | None, mode: str, steps: int, warmup: int,
            device: torch.device, precision: str = "bf16-autocast",
            peak_tflops: float | None = None) -> dict[str, Any]:
    """One table row: the timing of `train_steps`, or its out-of-memory status."""
    cuda = device.type == "cuda"
    row: dict[str, Any] = {"batch": shape["batch_size"], "seq": shape["seq_len"],
                           "dtype": precision, "status": "ok", "peak GiB": None,
                           "TFLOP/s": None, "% peak": None}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        row.update(train_steps(shape, ties, mode, steps, warmup, device, precision))
    except torch.OutOfMemoryError:
        row["status"] = "OOM"
    gc.collect()  # the model and optimizer of this row are gone before the next one
    if cuda:
        torch.cuda.empty_cache()
        if row["status"] == "ok":
            row["peak GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    if row["status"] == "ok":
        row["TFLOP/s"] = step_flops(shape, ties, mode) / (row["step ms"] / 1e3) / 1e12
        if peak_tflops:
            row["% peak"] = 100.0 * row["TFLOP/s"] / peak_tflops
    return row


def train_steps(shape: dict[str, Any], ties: list[int] | None, mode: str, steps: int,
                warmup: int, device: torch.device,
                precision: str = "bf16-autocast") -> dict[str, float]:
    """Train `warmup + steps` steps on random tokens in `precision`; time the last `steps`."""
    cuda = device.type == "cuda"
    batch, seq = shape["batch_size"], shape["seq_len"]
    torch.manual_seed(0)
    config = gpt2_config(shape["n_layer"], shape["n_embd"], shape["n_head"], seq,
                         shape["vocab_size"], shape["dropout"])
    model = TiedModel(config, mode, ties=ties).to(device, model_dtype(precision)).train()
    optim = InnerOptimizer(model.trainable_parameters(), shape["lr"],
                           weight_decay=shape["weight_decay"], grad_clip=shape["grad_clip"])
    tokens = torch.randint(0, shape["vocab_size"], (warmup + steps, batch, seq + 1),
                           device=device)
    start = 0.0
    for k in range(warmup + steps):
        if k == warmup:
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        x, y = tokens[k, :, :-1], tokens[k, :, 1:]
        with autocast(precision, device):
            loss = model.loss(x, y)
        optim.step(loss)
    if cuda:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"trainable params": model.param_counts()[0], "step ms": 1e3 * elapsed / steps,
            "tokens/s": batch * seq * steps / elapsed}


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['ties']} | {cell(r.get('trainable params'), ',d')} | "
            f"{r['batch']} | {r['seq']} | {r['dtype']} | {cell(r.get('step ms'), '.1f')} | "
            f"{cell(r.get('tokens/s'), ',.0f')} | {cell(r.get('TFLOP/s'), '.1f')} | "
            f"{cell(r.get('% peak'), '.1f')} | {cell(r.get('peak GiB'), '.2f')} | "
            f"{r['status']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny shape and few steps (runs on the CPU too)")
    parser.add_argument("--shapes", nargs="+", default=["gpt2", "paper"],
                        choices=sorted(DEFAULT_BATCH), help="preset shapes (not with --smoke)")
    parser.add_argument("--precisions", nargs="+", default=None,
                        choices=[p for p in PRECISIONS if p != "auto"],
                        help="default: bf16-autocast and bf16 (smoke on the CPU: fp32, bf16)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size for every shape (default: gpt2 8, paper 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, smoke 2)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 3, smoke 1)")
    parser.add_argument("--tie-modes", nargs="+", default=["copy"], choices=["copy", "share"],
                        help="tie modes of the 75%%-tied rows")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak (default: by device name)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "cuda" or (
        args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cpu" and not args.smoke:
        parser.error("the preset shapes need CUDA; use --smoke on the CPU")
    steps = args.steps or (2 if args.smoke else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    names = ["smoke"] if args.smoke else args.shapes
    precisions = args.precisions or (["bf16-autocast", "bf16"] if device.type == "cuda"
                                     else ["fp32", "bf16"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = args.peak_tflops or (bf16_peak_tflops(name) if device.type == "cuda" else None)
    print(f"device {name} (bf16 peak {peak or 'unknown'} TFLOP/s), {warmup} warm-up + "
          f"{steps} timed steps per row")

    rows = []
    for shape_name in names:
        shape = shape_settings(shape_name)
        if args.batch_size is not None:
            shape["batch_size"] = args.batch_size
        ties = tie_map(shape["n_layer"], TIED_FRACTION)
        runs = [("untied", None, "copy")] + [(f"75% {m}", ties, m) for m in args.tie_modes]
        for precision in precisions:
            for label, tmap, mode in runs:
                row = run_row(shape, tmap, mode, steps, warmup, device, precision, peak)
                rows.append({"shape": shape_name, "ties": label, **row})
                print(f"  {shape_name} {precision} {label}: {row['status']}", flush=True)
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(device=name, peak_tflops=peak, steps=steps,
                                             warmup=warmup, rows=rows), indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
