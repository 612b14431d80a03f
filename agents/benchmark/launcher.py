"""Running the cells of a benchmark: each one run spec, on this machine or on a Ray cluster.

**Launchers.** `local` (the default, `agents.benchmark.local_launcher`) runs cells
`workers` at a time, each in its own process, optionally pinned to `gpus`. `ray`
submits each cell as a Ray task (`agents.benchmark.ray_launcher`), retried from its
checkpoint when its worker or node dies. Either way a cell is one `attempt`
(`agents.benchmark.attempt`): `agents.runs.driver.run` on its `RunSpec`, its output in
its folder, and a `failure.json` when it fails.

**Claims.** Before a cell starts, this runner claims its folder
(`agents.benchmark.claims.try_claim`: host, pid, heartbeat), so that several invocations
(on one machine or many sharing the folder) can work on overlapping cells at once: a cell
claimed by a live runner is not started but waited for, and its result gathered; a stale
claim (its runner died) is taken over and the cell resumed from its checkpoint. Only the
holder of a cell's claim deletes anything in the cell's folder.

**Any scheduler.** `shard=(i, n)` runs a deterministic 1/n of the cells (the cells sorted by
name, every n-th from the i-th) and writes no report: a later plain run gathers them.
`cell_commands` gives one self-contained command per cell (`--print-commands`).

`run_benchmark` is the whole sweep: check the request, refuse an `out` that
holds another configuration's results, run the missing cells, summarize. Interrupted
(Ctrl-C, or SIGTERM as a scheduler sends it), it stops its cells with the other of the two
signals: each writes a checkpoint and the next run of the same command resumes it
(`agents.benchmark.attempt.cell_run`).
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from agents.benchmark import report
from agents.benchmark.attempt import Ended, Running, finish
from agents.benchmark.cells import (
    Json,
    Request,
    cell_dir,
    cell_name,
    cell_status,
    conflicts,
    make_request,
)
from agents.benchmark.claims import (
    Heartbeat,
    new_owner,
    read_claim,
    signals_to_main_thread,
    try_claim,
)
from agents.benchmark.local_launcher import LocalPool, check_gpus, parse_gpus
from agents.hyperparams import SHIPPED
from agents.runs.folder import FolderLock
from tying_env.errors import SettingError
from tying_env.files import read_json, write_json

LAUNCHERS = ("local", "ray")
POLL_S = 2.0  # how often cells claimed by another runner are looked at again


# ---------------------------------------------------------------- options
def parse_shard(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """`"i/n"` (or `(i, n)`) as `(i, n)` with n >= 1 and 0 <= i < n (`--shard`)."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            first, _, second = value.partition("/")
            index, count = int(first), int(second)
        else:
            index, count = (int(v) for v in value)
        ok = count >= 1 and 0 <= index < count
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SettingError("shard", f"{value!r} is not allowed; expected i/n with n >= 1 and "
                                    "0 <= i < n, e.g. 0/4 (the first of 4 shards)")
    return index, count


def shard_cells(cells: Sequence[tuple[str, int]],
                shard: tuple[int, int] | None) -> list[tuple[str, int]]:
    """The cells of shard `(i, n)`: sorted by name, every n-th from the i-th (request order)."""
    if shard is None:
        return list(cells)
    index, count = shard
    ordered = sorted(cells, key=lambda c: cell_name(*c))
    chosen = {c for k, c in enumerate(ordered) if k % count == index}
    return [c for c in cells if c in chosen]


def cell_commands(request: Request, shard: tuple[int, int] | None = None) -> list[str]:
    """One self-contained shell command per cell (of `shard`, if given), in name order:
    the benchmark's own command with `--shard k/N`, N the number of cells."""
    ordered = sorted(request.cells(), key=lambda c: cell_name(*c))
    chosen = set(shard_cells(ordered, shard))
    base = [sys.executable, *request.command()[1:]]
    return [shlex.join([*base, "--shard", f"{k}/{len(ordered)}", "--no-progress"])
            for k, cell in enumerate(ordered) if cell in chosen]


# ---------------------------------------------------------------- pools
class Pool(Protocol):
    """Where cells run: `LocalPool` or `agents.benchmark.ray_launcher.RayPool`."""

    running: list[Running]

    def has_room(self) -> bool: ...

    def start(self, cell: Running) -> str: ...

    def wait(self, timeout: float | None) -> list[Ended]: ...

    def stop(self, signum: int) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- the sweep
def run_benchmark(env_id: str, env_kwargs: str | Mapping[str, Any],
                  agents: str | Sequence[str], seeds: str | Sequence[int], workers: int | None,
                  out: str | Path, *, agent_kwargs: str | Mapping[str, Any] | None = None,
                  cache_dir: str | Path | None = None, threads: int | None = None,
                  progress: bool = True, train_episodes: int = 0,
                  eval_episodes: int = 3, launcher: str = "local",
                  ray_address: str | None = None, gpus: str | Sequence[int] | None = None,
                  shard: str | Sequence[int] | None = None,
                  tracker: str | None = None,
                  hyperparams: str | Path | None = SHIPPED,
                  train_env_id: str | None = None) -> Json:
    """Run the missing cells of agents x seeds, then summarize; returns results.json's content.

    `workers=None`: one at a time locally; with `launcher="ray"` every cell at once (the
    cluster's resources decide) with `threads` 1 unless given. `ray_address`: a running
    cluster (`"auto"` or `"HOST:PORT"`); None starts a local Ray instance for this run
    (or uses the one this process has already started). With `shard` only that shard's
    cells run and no report is written (see `run_request`). `tracker`: log each cell it runs
    to that experiment tracker too (`agents.runs.tracking`), grouped by `out`'s name.
    `hyperparams`: the agents' hyperparameter files (`agents.hyperparams`; None: none).
    `train_env_id` (with `train_episodes`): the cells train there, e.g. on a surrogate.

    Bad settings and a refused `out` raise `SettingError`
    before anything runs. Failed cells do not raise: see `result["run"]["failed"]`.
    """
    request = build_request(env_id, env_kwargs, agents, seeds, workers, out,
                            agent_kwargs=agent_kwargs, cache_dir=cache_dir, threads=threads,
                            train_episodes=train_episodes, eval_episodes=eval_episodes,
                            launcher=launcher, tracker=tracker, hyperparams=hyperparams,
                            train_env_id=train_env_id)
    return run_request(request, progress=progress, launcher=launcher, ray_address=ray_address,
                       gpus=gpus, shard=shard)


def build_request(env_id: str, env_kwargs: str | Mapping[str, Any], agents: str | Sequence[str],
                  seeds: str | Sequence[int], workers: int | None, out: str | Path, *,
                  launcher: str = "local", threads: int | None = None,
                  **options: Any) -> Request:
    """`make_request` with the launcher's defaults for `workers` and `threads` (None):
    locally one worker with every core; on Ray every cell at once, with one thread each."""
    if launcher != "ray":
        return make_request(env_id, env_kwargs, agents, seeds, 1 if workers is None else workers,
                            out, threads=threads, **options)
    request = make_request(env_id, env_kwargs, agents, seeds, 1 if workers is None else workers,
                           out, threads=1 if threads is None else threads, **options)
    return request if workers is not None else replace(request, workers=len(request.cells()))


def _checked(request: Request, launcher: str, ray_address: str | None,
             gpus: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Check the launcher options against the request; returns the GPUs."""
    if launcher not in LAUNCHERS:
        raise SettingError("launcher", f"{launcher!r} is unknown; allowed: "
                                       f"{', '.join(LAUNCHERS)}")
    if ray_address is not None and launcher != "ray":
        raise SettingError("ray_address", f"{ray_address!r} is for --launcher ray (the "
                                          f"launcher is {launcher!r})")
    pinned = parse_gpus(gpus)
    if pinned is not None:
        check_gpus(pinned, request, launcher)
    device = str(request.env_config.get("device"))
    if launcher == "ray" and device.startswith("cuda:") and device != "cuda:0":
        raise SettingError("env_kwargs.device", f"device={device!r}: with --launcher ray each "
                                                "CUDA cell gets one GPU from Ray, which it sees "
                                                "as cuda:0; use 'cuda' or 'auto'")
    check_out(request)
    return pinned


def check_out(request: Request) -> None:
    """Refuse an `out` that holds results of another configuration."""
    found = conflicts(request)
    if found:
        raise SettingError("out", f"{request.out} holds results of another configuration "
                             "(found -> requested), which this run would mix with its own:\n  "
                             + "\n  ".join(found)
                             + "\nuse another --out, or delete those cell folders")


def run_request(request: Request, *, progress: bool = True, launcher: str = "local",
                ray_address: str | None = None, gpus: str | Sequence[int] | None = None,
                shard: str | Sequence[int] | None = None) -> Json:
    """Run the missing cells of `request` (of `shard` only, if given) with `launcher`.

    Without `shard`: writes results.json, results.md and the plots, and returns
    results.json's content. With `shard`: writes nothing but the cells, and returns
    `{"request", "shard", "cells", "run", "counts"}` for the shard's cells.
    """
    pinned = _checked(request, launcher, ray_address, gpus)
    part = parse_shard(shard)
    todo, skipped = [], []
    mine = shard_cells(request.cells(), part)
    for agent, seed in mine:
        expected = request.expected(agent, seed)
        finished = cell_status(request.out, agent, seed, expected) == "finished"
        (skipped if finished else todo).append((agent, seed))
    pool: Pool | None = None
    if todo:  # first: a launcher that cannot start leaves nothing behind
        if launcher == "ray":
            from agents.benchmark.ray_launcher import RayPool

            pool = RayPool(request, ray_address)
        else:
            pool = LocalPool(request, pinned)
    try:
        started = datetime.now(timezone.utc)
        header: Json = {"request": request.to_json(),
                        "started": started.isoformat(timespec="seconds"),
                        "machine": report.machine_info(request.threads),
                        "run": {"skipped": [cell_name(*c) for c in skipped], "ran": [],
                                "failed": [], "elsewhere": [], "launcher": launcher}}
        if part is None:
            write_json(request.out / report.RESULTS_JSON, header)
        t0 = time.perf_counter()
        ran, failed, elsewhere = (_run_cells(request, todo, skipped, progress, pool)
                                  if pool is not None else ([], [], []))
    finally:
        if pool is not None:
            pool.close()
    header["run"] |= {"ran": ran, "failed": failed, "elsewhere": elsewhere,
                      "seconds": time.perf_counter() - t0}
    if part is not None:
        names = [cell_name(*c) for c in mine]
        statuses = [cell_status(request.out, a, s, request.expected(a, s)) for a, s in mine]
        return {"request": header["request"], "shard": list(part), "cells": names,
                "run": header["run"],
                "counts": {s: statuses.count(s)
                           for s in ("finished", "failed", "incomplete", "missing")}}
    write_json(request.out / report.RESULTS_JSON, header)
    report.summarize(request.out)
    return read_json(request.out / report.RESULTS_JSON) or {}


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption), raised in the main thread like Ctrl-C."""


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` and SIGINT `KeyboardInterrupt` (main thread
    only), the latter also where this process started with SIGINT ignored (a background
    job of a script), as `train_agent.py` handles both itself."""
    def raise_terminated(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _run_cells(request: Request, todo: list[tuple[str, int]], skipped: list[tuple[str, int]],
               progress: bool, pool: Pool) -> tuple[list[str], list[str], list[str]]:
    """Claim and run `todo` in `pool`; wait for cells that other runners hold.

    Returns (ran, failed, elsewhere): cells run here, those of them that failed, and
    cells another runner finished (or failed) while this one waited for them.
    """
    ran: list[str] = []
    failed: list[str] = []
    elsewhere: list[str] = []
    total = len(todo) + len(skipped)
    with signals_to_main_thread():  # tqdm's monitor thread takes no signal
        bar = tqdm(total=total, initial=len(skipped), desc="benchmark", unit="cell",
                   disable=not progress, dynamic_ncols=True, file=sys.stderr)
    if skipped:
        bar.write(f"skipping {len(skipped)} finished cell(s) of {total}", file=sys.stderr)
    owner = new_owner()
    pending, waiting = deque(todo), []
    waited: set[tuple[str, int]] = set()
    with Heartbeat() as heartbeat, _stop_signals_interrupt():
        try:
            while pending or waiting or pool.running:
                while pending and pool.has_room():
                    agent, seed = pending.popleft()
                    name = cell_name(agent, seed)
                    claim = try_claim(cell_dir(request.out, agent, seed), owner)
                    if claim is None:
                        if (agent, seed) not in waited:
                            bar.write(f"waiting for {name}: {_holder(request, agent, seed)}",
                                      file=sys.stderr)
                        waited.add((agent, seed))
                        waiting.append((agent, seed))
                        continue
                    if claim.took_over is not None:
                        bar.write(f"taking over {name} from a stale claim "
                                  f"({claim.took_over.describe()})", file=sys.stderr)
                    status = cell_status(request.out, agent, seed, request.expected(agent, seed))
                    if status == "finished" or ((agent, seed) in waited and status == "failed"):
                        claim.release()  # done by another runner meanwhile: gathered
                        elsewhere.append(name)
                        bar.write(f"{name} {status} by another runner", file=sys.stderr)
                        bar.update(1)
                        continue
                    heartbeat.add(claim)
                    cell = Running(agent, seed, claim, time.perf_counter())
                    try:
                        how = pool.start(cell)
                    except BaseException:
                        heartbeat.discard(claim)
                        claim.release()
                        raise
                    bar.write(f"start {name} ({how})", file=sys.stderr)
                bar.set_postfix_str("running: " + ", ".join(
                    cell_name(c.agent, c.seed) for c in pool.running))
                for cell, code, error in pool.wait(POLL_S if waiting else None):
                    ok, line = finish(request, cell, code, error)
                    heartbeat.discard(cell.claim)
                    cell.claim.release()
                    ran.append(cell_name(cell.agent, cell.seed))
                    if not ok:
                        failed.append(cell_name(cell.agent, cell.seed))
                    bar.write(line, file=sys.stderr)
                    bar.update(1)
                pending.extend(waiting)  # look at the cells others hold again
                waiting.clear()
        except KeyboardInterrupt as e:
            # stop what still runs with the other signal than the one we got (the cells may
            # have had it too): each writes a checkpoint; the next run resumes them
            pool.stop(signal.SIGINT if isinstance(e, Terminated) else signal.SIGTERM)
            raise
        finally:
            for cell in pool.running:
                heartbeat.discard(cell.claim)
                cell.claim.release()
            bar.close()
    return ran, failed, elsewhere


def _holder(request: Request, agent: str, seed: int) -> str:
    """Who holds a cell, in words."""
    folder = cell_dir(request.out, agent, seed)
    info = read_claim(folder)
    if info is not None:
        return f"claimed by {info.describe()}"
    lock = FolderLock(folder)
    return f"a run is writing it (process {lock.holder()} holds {lock.path})"
