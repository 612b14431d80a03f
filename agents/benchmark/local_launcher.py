"""`--launcher local`: the cells of a benchmark in processes on this machine.

`LocalPool` runs cells `workers` at a time, each in its own process with `threads`
torch/OpenMP threads (default: the available cores divided by the workers), so the
workers share the cores instead of fighting over them. The processes are forked from a
server process that has imported the run driver once (multiprocessing's `forkserver`;
`spawn` where that does not exist), so a cell pays for its run, not for importing torch
again. With `gpus` (`--gpus 0,1`) worker slot k runs its cells on GPU
`gpus[k % len(gpus)]` (its `CUDA_VISIBLE_DEVICES`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import wait

from agents.benchmark.attempt import Ended, Running, attempt
from agents.benchmark.cells import Request, cell_name, parse_indices
from tying_env.errors import SettingError

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def parse_gpus(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """`"0,1"` (or a sequence) as distinct GPU indices (`--gpus`); visibility is checked
    by `check_gpus`."""
    return None if value is None else parse_indices("gpus", value, "GPU index", "0,1,2,3")


def visible_gpus() -> int:
    """CUDA GPUs this process can use."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(gpus: tuple[int, ...], request: Request, launcher: str) -> None:
    """Refuse `gpus` that this machine lacks or that the request cannot use."""
    if launcher != "local":
        raise SettingError("gpus", f"--gpus {','.join(map(str, gpus))} is for the local "
                                   f"launcher; with --launcher {launcher} the cluster gives each "
                                   "CUDA cell its GPU: drop --gpus")
    device = request.env_config.get("device")
    if device not in ("auto", "cuda"):
        raise SettingError("gpus", f"--gpus pins each cell to a GPU, so the cells' device must "
                                   f"be 'auto' or 'cuda', not {device!r}")
    count = visible_gpus()
    missing = [g for g in gpus if g >= count]
    if missing:
        here = (f"allowed here: 0..{count - 1}" if count else
                "this machine has no CUDA GPU that torch can use")
        raise SettingError("gpus", f"GPU {', '.join(map(str, missing))} of "
                                   f"{','.join(map(str, gpus))} is not here; {here}")


def cuda_visible(gpu: int) -> str:
    """`CUDA_VISIBLE_DEVICES` for GPU index `gpu` of this process (which may itself be
    restricted by `CUDA_VISIBLE_DEVICES`)."""
    mine = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return mine[gpu] if gpu < len(mine) else str(gpu)


def _cell_process(request: Request, agent: str, seed: int, owner: str,
                  gpu: str | None) -> None:
    """Body of a local cell's process."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ.update({var: str(request.threads) for var in THREAD_VARS})
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    sys.exit(attempt(request, agent, seed, owner))


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # what every cell imports (torch, transformers, SB3): once, not once per cell
        ctx.set_forkserver_preload(["agents.runs.driver", "tying_env.env", "agents.sb3"])
        return ctx
    return mp.get_context("spawn")


class LocalPool:
    """`request.workers` processes at a time on this machine, worker slot k on GPU
    `gpus[k % len(gpus)]` when `gpus` are given."""

    def __init__(self, request: Request, gpus: tuple[int, ...] | None = None):
        self.request = request
        self.gpus = gpus
        self.ctx = _context()
        self.running: list[Running] = []

    def has_room(self) -> bool:
        return len(self.running) < self.request.workers

    def start(self, cell: Running) -> str:
        taken = {c.slot for c in self.running}
        cell.slot = min(set(range(self.request.workers)) - taken)
        gpu = None if not self.gpus else self.gpus[cell.slot % len(self.gpus)]
        cell.handle = self.ctx.Process(
            target=_cell_process, name=cell_name(cell.agent, cell.seed),
            args=(self.request, cell.agent, cell.seed, cell.claim.owner,
                  None if gpu is None else cuda_visible(gpu)))
        cell.handle.start()
        self.running.append(cell)
        return f"{self.request.threads} thread(s)" + ("" if gpu is None else f", GPU {gpu}")

    def wait(self, timeout: float | None) -> list[Ended]:
        if not self.running:
            time.sleep(timeout or 0.0)
            return []
        wait([c.handle.sentinel for c in self.running], timeout)
        ended = []
        for cell in [c for c in self.running if not c.handle.is_alive()]:
            cell.handle.join()
            self.running.remove(cell)
            ended.append((cell, cell.handle.exitcode, None))
        return ended

    def stop(self, signum: int) -> None:
        for cell in self.running:
            if cell.handle.is_alive():
                os.kill(cell.handle.pid, signum)
        for cell in self.running:
            cell.handle.join()

    def close(self) -> None:
        pass
