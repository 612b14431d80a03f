"""One attempt at a benchmark cell, in this process, and how a cell's attempt ended.

`attempt` runs a cell whose folder this runner has claimed (`agents.benchmark.claims`):
`cell_run` resumes a stopped run of the same cell from its checkpoint, or clears the
folder and starts afresh; the run's stdout and stderr go to `stdout.txt` and
`stderr.txt` in the cell's folder. A pool (`agents.benchmark.local_launcher`, or
`agents.benchmark.ray_launcher`, which retries a preempted cell) starts it and reports a
`Running` cell as `Ended`; `finish` records how it ended: a cell that fails gets a
`failure.json` (exit status or error, tail of stderr, the equivalent `train_agent.py`
command).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agents.benchmark import report
from agents.benchmark.cells import Request, cell_dir, cell_name, cell_status
from agents.benchmark.claims import Claim, NotClaimed, check_claim, clear_folder
from agents.runs import cli
from agents.runs.result import read_result
from agents.runs.spec import RUN_FILE, RunSpec
from tying_env.errors import SettingError
from tying_env.files import read_json, write_json

STDERR_TAIL_LINES = 20
STDERR_KEEP_BYTES = 256 * 1024  # a failed cell's stderr.txt keeps at most its last 256 KiB


def run_cell(spec: RunSpec) -> int:
    """Run one cell in this process; returns train_agent.py's exit status for it."""
    return cli.run_and_report(spec, "train-agent",
                              lambda e: cli.option_of(e.argument, spec.env_kwargs))


def cell_run(request: Request, agent: str, seed: int, owner: str) -> RunSpec:
    """The spec to run for a cell that is not finished, whose folder `owner` has claimed:
    a stopped run of the same cell (stopped by a signal, or killed after a checkpoint), with
    the same hyperparameters (`RunSpec.same_hyperparameters`), is resumed; anything else in
    its folder (a failure, a run without a checkpoint) is deleted and run afresh. Raises
    `NotClaimed` (touching nothing) unless `owner` holds the claim. Either way the cell logs
    to the request's tracker (none without one), whatever its earlier part did."""
    spec = request.spec(agent, seed)
    folder = spec.folder
    saved = read_json(folder / RUN_FILE)
    if (saved is not None and saved.get("settings") == spec.settings()
            and spec.same_hyperparameters(saved)
            and (folder / "checkpoint" / "manifest.json").is_file()):
        check_claim(folder, owner, "refusing to resume the run in it")
        resumed = RunSpec.from_folder(folder, cache_dir=spec.cache_dir, progress=False)
        return replace(resumed, tracker=spec.tracker, tracker_group=spec.tracker_group)
    clear_folder(folder, owner)
    return spec


@contextlib.contextmanager
def _output_to(folder: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (the file descriptors) to the cell's files."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
            target = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(target, fd)
            os.close(target)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def attempt(request: Request, agent: str, seed: int, owner: str) -> int:
    """One attempt at a cell whose folder `owner` has claimed, in this process; returns
    train_agent.py's exit status (1 when the cell cannot be started here)."""
    folder = cell_dir(request.out, agent, seed)
    name = cell_name(agent, seed)
    try:
        spec = cell_run(request, agent, seed, owner)
    except Exception as e:  # in the cell's stderr.txt, so that its failure.json tells why
        why = (str(e) if isinstance(e, (NotClaimed, SettingError, OSError))
               else traceback.format_exc())
        with contextlib.suppress(OSError), (folder / "stderr.txt").open("a") as handle:
            handle.write(f"benchmark: cannot start {name}: {why}\n")
        return 1
    with _output_to(folder):
        gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(f"benchmark: {name} {'resumes' if spec.resume else 'starts'} on "
              f"{socket.gethostname()}, process {os.getpid()}"
              + (f", CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else ""),
              file=sys.stderr, flush=True)
        import torch

        torch.set_num_threads(request.threads)
        try:
            return run_cell(spec)
        except SystemExit as e:  # run_and_report exits with 2 for a bad setting
            if isinstance(e.code, int):
                return e.code
            print(f"benchmark: {name} exited: {e.code}", file=sys.stderr)
            return 1
        except Exception:  # e.g. an agent that raises: its traceback stays in stderr.txt
            print(f"benchmark: {name} failed with an exception:", file=sys.stderr)
            traceback.print_exc()
            return 1


@dataclass
class Running:
    """A cell this runner has claimed and started."""

    agent: str
    seed: int
    claim: Claim
    started: float
    slot: int = 0  # the local worker slot (its GPU)
    handle: Any = None  # the process, or the Ray object ref


# how a cell ended: the cell, its exit status (None: it did not exit), an error (or None)
Ended = tuple[Running, int | None, str | None]


def finish(request: Request, cell: Running, code: int | None,
           error: str | None = None) -> tuple[bool, str]:
    """Record how a cell ended; returns (finished, a one-line status)."""
    name, folder = cell_name(cell.agent, cell.seed), cell_dir(request.out, cell.agent, cell.seed)
    seconds = time.perf_counter() - cell.started
    if code == 0 and cell_status(request.out, cell.agent, cell.seed,
                                 request.expected(cell.agent, cell.seed)) == "finished":
        result = read_result(folder)
        assert result is not None  # cell_status said finished
        return True, (f"done {name}: val ppl {report.fmt(result.final_val_ppl)}, trainable "
                      f"{report.fmt(result.trainable_fraction, 3)} ({seconds:.0f} s)")
    tail = _keep_tail(folder / "stderr.txt")
    if error is not None:
        reason = error
    elif code != 0:
        reason = f"exit status {code}"
    else:
        reason = "exit status 0 but no complete result.json matching the request"
    write_json(folder / "failure.json", {
        "agent": cell.agent, "seed": cell.seed, "returncode": code, "reason": reason,
        "seconds": seconds, "stderr_tail": tail,
        "command": shlex.join(["python", "train_agent.py",
                               *cli.to_argv(request.spec(cell.agent, cell.seed))])})
    if error is not None:
        return False, f"FAILED {name}: {error}"
    return False, f"FAILED {name} ({reason}): {tail[-1] if tail else '(no stderr)'}"


def _keep_tail(path: Path) -> list[str]:
    """Trim `path` to its last bytes; return its last lines."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if len(data) > STDERR_KEEP_BYTES:
        data = data[-STDERR_KEEP_BYTES:]
        path.write_bytes(b"[... earlier output cut ...]\n" + data)
    lines = data.decode("utf-8", errors="replace").splitlines()
    return [line for line in lines if line.strip()][-STDERR_TAIL_LINES:]
