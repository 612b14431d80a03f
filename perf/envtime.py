"""Environment timing: start-up with a cold and a warm cache, and seconds per sweep.

Cold: a new, empty cache folder, so the corpus is generated or tokenized (and the
BPE tokenizer trained) from scratch. Warm: a second environment on the same corpus
in the same process. A sweep is one decision for each of the layers 1..L-1,
with random valid choices.

    python -m perf.envtime [--presets tiny small] [--sweeps 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tying_env.data.corpus import offline_wikitext2
from tying_env.env import LayerTyingEnv


def time_preset(preset: str, sweeps: int, data_dir: Path | None, cache: Path) -> dict:
    kwargs = {"data_dir": str(data_dir)} if preset != "tiny" and data_dir else {}
    t0 = time.perf_counter()
    env = LayerTyingEnv(preset, cache_dir=cache, max_sweeps=sweeps, **kwargs)
    env.reset(seed=0)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    LayerTyingEnv(preset, cache_dir=cache, max_sweeps=sweeps, **kwargs).reset(seed=0)
    warm = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    per_sweep = []
    for _ in range(sweeps):
        t0 = time.perf_counter()
        for _ in range(env.decisions_per_sweep):
            env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        per_sweep.append(time.perf_counter() - t0)
    return dict(preset=preset, cold_s=cold, warm_s=warm, sweep_s=statistics.median(per_sweep),
                sweeps=per_sweep, n_layer=env.cfg.n_layer, steps=env.cfg.steps_per_decision)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--sweeps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = offline_wikitext2(Path(tmp) / "wikitext-2-offline")
        for preset in args.presets:
            rows.append(time_preset(preset, args.sweeps, data_dir, Path(tmp) / f"cache-{preset}"))
    print(f"{args.threads} torch thread(s); start = construct + reset(seed=0)")
    print("| preset | layers | start, cold cache s | start, warm cache s | s per sweep "
          "(median) | sweeps s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sweeps = ", ".join(f"{s:.2f}" for s in r["sweeps"])
        print(f"| {r['preset']} | {r['n_layer']} | {r['cold_s']:.2f} | {r['warm_s']:.3f} | "
              f"{r['sweep_s']:.2f} | {sweeps} |")
    return rows


if __name__ == "__main__":
    main()
