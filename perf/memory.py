"""Memory benchmark: bytes of parameters, gradients and optimizer state under tying.

For the `small` preset the model is built and *measured*: one real AdamW
step, then the real tensors are walked. For the GPT-2 shapes (small, medium,
large, XL) and the published run's shape the model is built on PyTorch's
`meta` device, so nothing is allocated, and counted. Every row is checked
against the analytic count of unique trainable tensors.

    python bench/memory.py [--out docs/results/memory.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tying_env.model import MemoryBytes, TiedGPT2, gpt2_config
from tying_env.presets import PRESETS
from tying_env.training import InnerOptimizer

SHAPES = {  # name: (n_layer, n_embd, n_head, seq_len, vocab)
    "small preset": None,
    "GPT-2 small": (12, 768, 12, 1024, 50257),
    "GPT-2 medium": (24, 1024, 16, 1024, 50257),
    "GPT-2 large": (36, 1280, 20, 1024, 50257),
    "GPT-2 XL": (48, 1600, 25, 1024, 50257),
    "paper": (12, 1600, 16, 256, 50257),
}
FRACTIONS = (0.0, 0.5, 0.75, 0.875, 1.0)  # 1.0 stands for the largest possible: L-1 tied
TOLERANCE = 0.01


def tie_map(n_layer: int, fraction: float) -> list[int]:
    """A map with `round(fraction * L)` tied layers, roots spread evenly.

    Each root is followed by the layers that copy it (SEQUENCE sharing);
    `fraction=1` stands for the largest possible: one root, L - 1 tied.
    """
    n_roots = max(1, n_layer - round(fraction * n_layer)) if fraction < 1 else 1
    starts = sorted({round(k * n_layer / n_roots) for k in range(n_roots)})
    ties, root = [], 0
    for i in range(n_layer):
        if i in starts:
            root = i
        ties.append(root)
    return ties


def analytic(n_layer: int, n_embd: int, seq_len: int, vocab: int, n_roots: int) -> MemoryBytes:
    """Closed-form count of unique trainable float32 tensors of a tied GPT-2.

    Embeddings (`V n`, tied to the LM head, counted once), positions (`S n`),
    the final norm (`2 n`) and per root block `12 n^2 + 13 n` elements in 12
    tensors. Gradients equal parameters; AdamW keeps two moments and a 4-byte step
    per tensor.
    """
    elements = vocab * n_embd + seq_len * n_embd + 2 * n_embd + n_roots * (
        12 * n_embd**2 + 13 * n_embd)
    tensors = 4 + 12 * n_roots
    p = 4 * elements
    return MemoryBytes(p, p, 2 * p + 4 * tensors)


def measure_small(ties: list[int], mode: str) -> tuple[MemoryBytes, MemoryBytes]:
    cfg = PRESETS["small"]
    torch.manual_seed(0)
    config = gpt2_config(cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["seq_len"],
                         cfg["vocab_size"])
    model = TiedGPT2(config, mode, ties=ties).train()
    opt = InnerOptimizer(model.trainable_parameters(), lr=1e-3)
    x = torch.randint(0, cfg["vocab_size"], (2, cfg["seq_len"]))
    opt.step(model.loss(x, x))
    want = analytic(cfg["n_layer"], cfg["n_embd"], cfg["seq_len"], cfg["vocab_size"],
                    len(set(ties)))
    return model.memory_bytes(opt.optimizer), want


def count_meta(shape: tuple[int, int, int, int, int], ties: list[int],
               mode: str) -> tuple[MemoryBytes, MemoryBytes]:
    n_layer, n_embd, n_head, seq_len, vocab = shape
    with torch.device("meta"):
        model = TiedGPT2(gpt2_config(n_layer, n_embd, n_head, seq_len, vocab), mode, ties=ties)
    tensors = model.trainable_parameters()  # walk the (meta) tensors: shapes, no storage
    params = sum(p.nbytes for p in tensors)
    walked = MemoryBytes(params, params, 2 * params + 4 * len(tensors))
    return walked, analytic(n_layer, n_embd, seq_len, vocab, len(set(ties)))


def run(out: Path | None) -> list[dict]:
    rows = []
    for name, shape in SHAPES.items():
        n_layer = PRESETS["small"]["n_layer"] if shape is None else shape[0]
        for mode in ("copy", "share"):
            base = None
            for fraction in FRACTIONS:
                ties = tie_map(n_layer, fraction)
                if shape is None:
                    got, want = measure_small(ties, mode)
                else:
                    got, want = count_meta(shape, ties, mode)
                err = abs(got.total - want.total) / want.total
                if err > TOLERANCE:
                    raise AssertionError(f"{name} {mode} {fraction}: measured {got} vs {want}")
                base = base or got.total
                tied = sum(1 for i, r in enumerate(ties) if r != i) / n_layer
                rows.append(dict(shape=name, mode=mode, tied=tied, roots=len(set(ties)),
                                 params=got.params, grads=got.grads, optimizer=got.optimizer,
                                 total=got.total, analytic_total=want.total,
                                 ratio=base / got.total,
                                 measured="measured" if shape is None else "meta"))
    table = format_table(rows)
    print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(table + "\n")
        tmp.replace(out)
    return rows


def format_table(rows: list[dict]) -> str:
    mib = 2**20
    lines = ["| shape | tie mode | layers tied | roots | params MiB | grads MiB | "
             "optimizer MiB | total MiB | untied / tied | how |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['mode']} | {r['tied']:.1%} | {r['roots']} | "
                     f"{r['params'] / mib:.2f} | {r['grads'] / mib:.2f} | "
                     f"{r['optimizer'] / mib:.2f} | {r['total'] / mib:.2f} | "
                     f"{r['ratio']:.2f}x | {r['measured']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the table (Markdown) to this file")
    run(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
