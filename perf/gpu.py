"""GPU benchmark: tokens per second and peak memory of training steps, untied vs 75% tied.

On CUDA: the `gpt2` (124M) and `paper` preset shapes, bf16 autocast, our
`TiedGPT2` (copy mode by default) with `InnerOptimizer`, random token
batches. Warm-up steps are excluded from the timing, which is bracketed by
`torch.cuda.synchronize()`; peak memory is `torch.cuda.max_memory_allocated`
over the warm-up and timed steps. An out-of-memory row is reported, not raised.
`--smoke` runs a tiny shape for a few steps and works on the CPU (float32, peak
memory n/a there). The default run takes a few minutes on one H200.

    python -m perf.gpu [--batch-size N] [--steps 20] [--json OUT]
    python -m perf.gpu --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from pathlib import Path
from typing import Any

import torch

from perf.memory import tie_map
from tying_env.model import TiedGPT2, gpt2_config
from tying_env.presets import make_config
from tying_env.training import InnerOptimizer

TIED_FRACTION = 0.75
DEFAULT_BATCH = {"gpt2": 8, "paper": 16}  # sized for one H200 (seq 1024 / seq 256)
SMOKE_SHAPE = dict(n_layer=4, n_embd=32, n_head=2, seq_len=32, vocab_size=128, batch_size=2)
COLUMNS = ("shape", "ties", "trainable params", "batch", "seq", "dtype", "step ms", "tokens/s",
           "peak GiB", "status")


def shape_settings(name: str) -> dict[str, Any]:
    """Model shape and inner-training settings of a preset (`smoke`: a tiny `tiny`)."""
    cfg = make_config("tiny", **SMOKE_SHAPE) if name == "smoke" else make_config(
        name, batch_size=DEFAULT_BATCH[name])
    keys = ("n_layer", "n_embd", "n_head", "seq_len", "vocab_size", "batch_size", "lr",
            "weight_decay", "grad_clip", "dropout")
    return {k: getattr(cfg, k) for k in keys}


def run_row(shape: dict[str, Any], ties: list[int] | None, mode: str, steps: int, warmup: int,
            device: torch.device) -> dict[str, Any]:
    """One table row: the timing of `train_steps`, or its out-of-memory status."""
    cuda = device.type == "cuda"
    row: dict[str, Any] = {"batch": shape["batch_size"], "seq": shape["seq_len"],
                           "dtype": "bf16 autocast" if cuda else "fp32", "status": "ok",
                           "peak GiB": None}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        row.update(train_steps(shape, ties, mode, steps, warmup, device))
    except torch.OutOfMemoryError:
        row["status"] = "OOM"
    gc.collect()  # the model and optimizer of this row are gone before the next one
    if cuda:
        torch.cuda.empty_cache()
        if row["status"] == "ok":
            row["peak GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def train_steps(shape: dict[str, Any], ties: list[int] | None, mode: str, steps: int,
                warmup: int, device: torch.device) -> dict[str, float]:
    """Train `warmup + steps` steps on random tokens; time the last `steps`."""
    cuda = device.type == "cuda"
    batch, seq = shape["batch_size"], shape["seq_len"]
    torch.manual_seed(0)
    config = gpt2_config(shape["n_layer"], shape["n_embd"], shape["n_head"], seq,
                         shape["vocab_size"], shape["dropout"])
    model = TiedGPT2(config, mode, ties=ties).to(device).train()
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
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
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
            f"{cell(r.get('tokens/s'), ',.0f')} | {cell(r.get('peak GiB'), '.2f')} | "
            f"{r['status']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny shape and few steps (runs on the CPU too)")
    parser.add_argument("--shapes", nargs="+", default=["gpt2", "paper"],
                        choices=sorted(DEFAULT_BATCH), help="preset shapes (not with --smoke)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size for every shape (default: gpt2 8, paper 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20, smoke 2)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 3, smoke 1)")
    parser.add_argument("--tie-modes", nargs="+", default=["copy"], choices=["copy", "share"],
                        help="tie modes of the 75%%-tied rows")
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
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, {warmup} warm-up + {steps} timed steps per row")

    rows = []
    for shape_name in names:
        shape = shape_settings(shape_name)
        if args.batch_size is not None:
            shape["batch_size"] = args.batch_size
        ties = tie_map(shape["n_layer"], TIED_FRACTION)
        runs = [("untied", None, "copy")] + [(f"75% {m}", ties, m) for m in args.tie_modes]
        for label, tmap, mode in runs:
            row = run_row(shape, tmap, mode, steps, warmup, device)
            rows.append({"shape": shape_name, "ties": label, **row})
            print(f"  {shape_name} {label}: {row['status']}", flush=True)
    print(format_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(device=name, steps=steps, warmup=warmup,
                                             rows=rows), indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
