"""Running the cells of a benchmark: each one run spec in its own process.

Cells run `workers` at a time, each with `threads` torch/OpenMP threads (default:
the available cores divided by the workers), so the workers share the cores instead
of fighting over them. The processes are forked from a server process that has
imported the run driver once (multiprocessing's `forkserver`; `spawn` where that
does not exist), so a cell pays for its run, not for importing torch again. A cell
calls `agents.runs.driver.run` on its `RunSpec`; its
stdout and stderr go to `stdout.txt` and `stderr.txt` in its folder, and a cell
that fails gets a `failure.json` (exit status, tail of stderr, the equivalent
`train_agent.py` command).

`run_benchmark` is the whole sweep: check the request, refuse an `out` that
holds another configuration's results, run the missing cells, summarize. Interrupted
(Ctrl-C), it stops its cells with SIGTERM: each writes a checkpoint and the next run of
the same command resumes them (`cell_run`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.benchmark import report
from agents.benchmark.cells import (
    Json,
    Request,
    cell_dir,
    cell_name,
    cell_status,
    conflicts,
    make_request,
)
from agents.runs import cli
from agents.runs.spec import RUN_FILE, RunSpec
from tying_env.errors import SettingError
from tying_env.files import read_json, write_json

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STDERR_TAIL_LINES = 20
STDERR_KEEP_BYTES = 256 * 1024  # a failed cell's stderr.txt keeps at most its last 256 KiB


def run_cell(spec: RunSpec) -> int:
    """Run one cell in this process; returns train_agent.py's exit status for it."""
    return cli.run_and_report(spec, "train-agent",
                              lambda e: cli.option_of(e.argument, spec.env_kwargs))


def _cell_process(spec: RunSpec, threads: int) -> None:
    """Body of a cell's process: one run, its output in the cell's folder."""
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        target = os.open(spec.folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update({var: str(threads) for var in THREAD_VARS})
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    torch.set_num_threads(threads)
    sys.exit(run_cell(spec))


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["agents.runs.driver"])  # torch, transformers, ...
        return ctx
    return mp.get_context("spawn")


@dataclass
class Running:
    agent: str
    seed: int
    process: mp.process.BaseProcess
    started: float


def cell_run(request: Request, agent: str, seed: int) -> RunSpec:
    """The spec to run for a cell that is not finished: a stopped run of the same cell
    (stopped by a signal, or killed after a checkpoint) is resumed; anything else in
    its folder (a failure, a run without a checkpoint) is deleted and run afresh."""
    spec = request.spec(agent, seed)
    folder = spec.folder
    saved = read_json(folder / RUN_FILE)
    if (saved is not None and saved.get("settings") == spec.settings()
            and (folder / "checkpoint" / "manifest.json").is_file()):
        return RunSpec.from_folder(folder, cache_dir=spec.cache_dir, progress=False)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return spec


def _start(ctx: mp.context.BaseContext, request: Request, agent: str, seed: int) -> Running:
    process = ctx.Process(target=_cell_process, name=cell_name(agent, seed),
                          args=(cell_run(request, agent, seed), request.threads))
    process.start()
    return Running(agent, seed, process, time.perf_counter())


def _finish(request: Request, cell: Running) -> tuple[bool, str]:
    """Record how a cell ended; returns (finished, a one-line status)."""
    name, folder = cell_name(cell.agent, cell.seed), cell_dir(request.out, cell.agent, cell.seed)
    seconds = time.perf_counter() - cell.started
    code = cell.process.exitcode
    if code == 0 and cell_status(request.out, cell.agent, cell.seed,
                                 request.expected(cell.agent, cell.seed)) == "finished":
        result = read_json(folder / "result.json") or {}
        return True, (f"done {name}: val ppl {report.fmt(result.get('final_val_ppl'))}, trainable "
                      f"{report.fmt(result.get('trainable_fraction'), 3)} ({seconds:.0f} s)")
    tail = _keep_tail(folder / "stderr.txt")
    reason = (f"exit status {code}" if code != 0
              else "exit status 0 but no complete result.json matching the request")
    write_json(folder / "failure.json", {
        "agent": cell.agent, "seed": cell.seed, "returncode": code, "reason": reason,
        "seconds": seconds, "stderr_tail": tail,
        "command": shlex.join(["python", "train_agent.py",
                               *cli.to_argv(request.spec(cell.agent, cell.seed))])})
    last = tail[-1] if tail else "(no stderr)"
    return False, f"FAILED {name} ({reason}): {last}"


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


def run_benchmark(env_id: str, env_kwargs: str | Mapping[str, Any],
                  agents: str | Sequence[str], seeds: str | Sequence[int], workers: int,
                  out: str | Path, *, agent_kwargs: str | Mapping[str, Any] | None = None,
                  cache_dir: str | Path | None = None, threads: int | None = None,
                  progress: bool = True, train_episodes: int = 0,
                  eval_episodes: int = 3) -> Json:
    """Run the missing cells of agents x seeds, then summarize; returns results.json's content.

    Bad settings and a refused `out` raise `SettingError`
    before anything runs. Failed cells do not raise: see `result["run"]["failed"]`.
    """
    request = make_request(env_id, env_kwargs, agents, seeds, workers, out,
                           agent_kwargs=agent_kwargs, cache_dir=cache_dir, threads=threads,
                           train_episodes=train_episodes, eval_episodes=eval_episodes)
    found = conflicts(request)
    if found:
        raise SettingError("out", f"{request.out} holds results of another configuration "
                             "(found -> requested), which this run would mix with its own:\n  "
                             + "\n  ".join(found)
                             + "\nuse another --out, or delete those cell folders")
    todo, skipped = [], []
    for agent, seed in request.cells():
        expected = request.expected(agent, seed)
        finished = cell_status(request.out, agent, seed, expected) == "finished"
        (skipped if finished else todo).append((agent, seed))
    started = datetime.now(timezone.utc)
    header = {"request": request.to_json(), "started": started.isoformat(timespec="seconds"),
              "machine": report.machine_info(request.threads),
              "run": {"skipped": [cell_name(*c) for c in skipped], "ran": [], "failed": []}}
    write_json(request.out / report.RESULTS_JSON, header)

    t0 = time.perf_counter()
    ran, failed = _run_cells(request, todo, skipped, progress)
    header["run"] |= {"ran": ran, "failed": failed, "seconds": time.perf_counter() - t0}
    write_json(request.out / report.RESULTS_JSON, header)
    report.summarize(request.out)
    return read_json(request.out / report.RESULTS_JSON) or {}


def _run_cells(request: Request, todo: list[tuple[str, int]], skipped: list[tuple[str, int]],
               progress: bool) -> tuple[list[str], list[str]]:
    """Run `todo` with `request.workers` processes at a time; returns (ran, failed)."""
    ran: list[str] = []
    failed: list[str] = []
    total = len(todo) + len(skipped)
    bar = tqdm(total=total, initial=len(skipped), desc="benchmark", unit="cell",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    if skipped:
        bar.write(f"skipping {len(skipped)} finished cell(s) of {total}", file=sys.stderr)
    ctx = _context() if todo else None
    pending, running = list(todo), []
    try:
        while pending or running:
            while pending and len(running) < request.workers:
                agent, seed = pending.pop(0)
                running.append(_start(ctx, request, agent, seed))
                bar.write(f"start {cell_name(agent, seed)} ({request.threads} thread(s))",
                          file=sys.stderr)
            bar.set_postfix_str("running: " + ", ".join(
                cell_name(c.agent, c.seed) for c in running))
            wait([c.process.sentinel for c in running])
            for cell in [c for c in running if not c.process.is_alive()]:
                cell.process.join()
                running.remove(cell)
                ok, line = _finish(request, cell)
                ran.append(cell_name(cell.agent, cell.seed))
                if not ok:
                    failed.append(cell_name(cell.agent, cell.seed))
                bar.write(line, file=sys.stderr)
                bar.update(1)
    finally:
        for cell in running:  # interrupted: stop what still runs (its folder is rerun later)
            cell.process.terminate()
            cell.process.join()
        bar.close()
    return ran, failed


