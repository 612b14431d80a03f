"""``python -m agents.benchmark``: agents x seeds on one environment, with tables and plots.

Every (agent, seed) *cell* is one ``train_agent.py`` run (:func:`agents.cli.main`) in its
own process, writing its run folder to ``OUT/cells/<agent>-s<seed>/``. Cells run
``--workers`` at a time, each with ``--threads`` torch/OpenMP threads (default: the
available cores divided by the workers), so the workers share the cores instead of
fighting over them. The processes are forked from a server process that has imported
``agents.cli`` once (multiprocessing's ``forkserver``; ``spawn`` where that does not
exist), so a cell pays for its run, not for importing torch and transformers again.

Outputs in ``OUT``:

| path            | content                                                            |
|-----------------|--------------------------------------------------------------------|
| ``results.json``| the request (and its equivalent command), date, machine, every     |
|                 | cell's status and ``result.json``, per-agent aggregates            |
| ``results.md``  | one row per agent: final val/test perplexity (mean ± std over      |
|                 | seeds), trainable fraction, memory, wall time; failed cells        |
| ``pareto.png``  | final validation perplexity against final trainable fraction       |
| ``curves.png``  | validation perplexity over optimizer steps, per agent, over seeds  |
| ``cells/*/``    | the run folders, plus ``stdout.txt``, ``stderr.txt`` and, for a    |
|                 | failed cell, ``failure.json`` (exit status, tail of stderr)        |

**Re-running** the same command skips finished cells. A cell is finished when its
``result.json`` parses, is complete (written after the run's outputs were saved) and
records the requested agent, seed, env id, env settings and agent kwargs; any other
cell folder is deleted and run again. A failed cell is therefore retried by the next
run. Adding agents or seeds to an existing ``OUT`` is fine.

**A changed request is refused**: if any cell in ``OUT`` holds a result of another
environment configuration (env id or resolved env settings), or of another agent kwargs
for a requested agent, nothing runs and the error (naming ``--out``) lists the cells and
the differing settings. Results of two configurations never end up in one table, and
finished work is never deleted silently; use another ``--out`` or delete those cells.

Exit status: 0 when every cell finished, 1 when any cell failed (the others still run
and are summarized), 2 for bad options (including a refused ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
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

import numpy as np
from matplotlib.ticker import FuncFormatter
from tqdm.auto import tqdm

from agents import cli
from agents.base import names as agent_names
from agents.plots import plt, read_log  # plt: matplotlib with the Agg backend
from tying_env.export import atomic_write, to_jsonable, write_json
from tying_env.presets import make_config

CELLS = "cells"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
PARETO_PNG, CURVES_PNG = "pareto.png", "curves.png"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STDERR_TAIL_LINES = 20
STDERR_KEEP_BYTES = 256 * 1024  # a failed cell's stderr.txt keeps at most its last 256 KiB
MIB = 2.0 ** 20

Json = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """A validated benchmark request."""

    env_id: str
    env_kwargs: Json  # as given (what each cell's ``--env-kwargs`` receives)
    env_config: Json  # resolved settings: what each cell's result.json must record
    agents: tuple[str, ...]
    seeds: tuple[int, ...]
    agent_kwargs: dict[str, Json]
    workers: int
    threads: int
    out: Path
    cache_dir: Path | None

    def cells(self) -> list[tuple[str, int]]:
        return list(itertools.product(self.agents, self.seeds))

    def expected(self, agent: str, seed: int) -> Json:
        """What a finished cell's result.json records about its request."""
        return {"agent": agent, "seed": seed, "env_id": self.env_id,
                "env_kwargs": self.env_config, "agent_kwargs": self.agent_kwargs.get(agent, {})}

    def cell_argv(self, agent: str, seed: int) -> list[str]:
        """The ``train_agent.py`` arguments of one cell."""
        argv = ["--agent", agent, "--env", self.env_id, "--env-kwargs",
                json.dumps(self.env_kwargs), "--seed", str(seed),
                "--out", str(cell_dir(self.out, agent, seed)), "--no-progress"]
        if self.agent_kwargs.get(agent):
            argv += ["--agent-kwargs", json.dumps(self.agent_kwargs[agent])]
        if self.cache_dir is not None:
            argv += ["--cache-dir", str(self.cache_dir)]
        return argv

    def command(self) -> list[str]:
        """The equivalent ``python -m agents.benchmark`` command line."""
        argv = ["python", "-m", "agents.benchmark", "--env", self.env_id,
                "--env-kwargs", json.dumps(self.env_kwargs), "--agents", ",".join(self.agents),
                "--seeds", ",".join(map(str, self.seeds)), "--workers", str(self.workers),
                "--threads", str(self.threads), "--out", str(self.out)]
        if self.agent_kwargs:
            argv += ["--agent-kwargs", json.dumps(self.agent_kwargs)]
        if self.cache_dir is not None:
            argv += ["--cache-dir", str(self.cache_dir)]
        return argv

    def to_json(self) -> Json:
        return {"env_id": self.env_id, "env_kwargs": self.env_kwargs,
                "env_config": self.env_config, "agents": list(self.agents),
                "seeds": list(self.seeds), "agent_kwargs": self.agent_kwargs,
                "workers": self.workers, "threads": self.threads, "out": str(self.out),
                "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
                "command": shlex.join(self.command())}


def cell_name(agent: str, seed: int) -> str:
    return f"{agent}-s{seed}"


def cell_dir(out: Path, agent: str, seed: int) -> Path:
    return out / CELLS / cell_name(agent, seed)


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ---------------------------------------------------------------- validation
def parse_agents(value: str | Sequence[str]) -> tuple[str, ...]:
    """Registered agent names from ``"a,b"`` or a sequence (``--agents``)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(a).strip() for a in items]
    if not names or any(not a for a in names):
        raise cli.UsageError("--agents", f"{value!r} is not a comma-separated list of "
                                         "agent names, e.g. 'vanilla,albert'")
    unknown = [a for a in names if a not in agent_names()]
    if unknown:
        raise cli.UsageError("--agents", f"{', '.join(map(repr, unknown))} not registered; "
                                         f"allowed: {', '.join(agent_names())}")
    _no_duplicates("--agents", names)
    return tuple(names)


def parse_seeds(value: str | Sequence[int]) -> tuple[int, ...]:
    """Non-negative, distinct seeds from ``"0,1,2"`` or a sequence (``--seeds``)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    seeds = []
    for item in items:
        try:
            seed = int(str(item).strip()) if not isinstance(item, bool) else -1
        except ValueError:
            seed = -1
        if seed < 0:
            raise cli.UsageError("--seeds", f"{item!r} in {value!r} is not a seed; expected "
                                            "non-negative ints separated by commas, e.g. 0,1,2")
        seeds.append(seed)
    if not seeds:
        raise cli.UsageError("--seeds", "no seeds given; expected e.g. 0,1,2")
    _no_duplicates("--seeds", seeds)
    return tuple(seeds)


def _no_duplicates(option: str, values: Sequence[Any]) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise cli.UsageError(option, f"{', '.join(repeated)} given more than once")


def _json_object(option: str, value: str | Mapping[str, Any]) -> Json:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise cli.UsageError(option, f"{value!r} is not valid JSON ({e.msg} at character "
                                         f"{e.pos}); expected a JSON object") from None
    if not isinstance(value, Mapping):
        raise cli.UsageError(option, f"{value!r} is a {type(value).__name__}, not a JSON object")
    return dict(value)


def make_request(env_id: str, env_kwargs: str | Mapping[str, Any], agents: str | Sequence[str],
                 seeds: str | Sequence[int], workers: int, out: str | Path, *,
                 agent_kwargs: str | Mapping[str, Any] | None = None,
                 cache_dir: str | Path | None = None,
                 threads: int | None = None) -> Request:
    """Check every option up front; a bad one raises :class:`agents.cli.UsageError`."""
    names = parse_agents(agents)
    seed_list = parse_seeds(seeds)
    env_kwargs = _json_object("--env-kwargs", env_kwargs)
    per_agent = _json_object("--agent-kwargs", agent_kwargs or {})
    for name, kwargs in per_agent.items():
        if name not in names:
            raise cli.UsageError("--agent-kwargs", f"key {name!r} is not one of --agents "
                                                   f"({', '.join(names)})")
        if not isinstance(kwargs, Mapping):
            raise cli.UsageError("--agent-kwargs", f"the value for {name!r} must be a JSON "
                                                   f"object of hyperparameters, not {kwargs!r}")
    for option, number in (("--workers", workers), ("--threads", threads)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                                   or number < 1):
            raise cli.UsageError(option, f"{number!r} is not allowed; expected an int >= 1")
    if threads is None:
        threads = max(1, available_cores() // workers)
    env_config = _resolve_env(env_id, env_kwargs, cache_dir)
    return Request(env_id=env_id, env_kwargs=env_kwargs, env_config=env_config, agents=names,
                   seeds=seed_list, agent_kwargs={k: dict(v) for k, v in per_agent.items()},
                   workers=workers, threads=threads, out=Path(out).absolute(),
                   cache_dir=None if cache_dir is None else Path(cache_dir).absolute())


def _resolve_env(env_id: str, env_kwargs: Json, cache_dir: str | Path | None) -> Json:
    """The env settings a cell will record, checked the way ``train_agent.py`` checks them."""
    argv = ["--agent", agent_names()[0], "--env", env_id, "--env-kwargs", json.dumps(env_kwargs)]
    if cache_dir is not None:
        argv += ["--cache-dir", str(cache_dir)]
    spec = cli.resolve(cli.build_parser().parse_args(argv))  # UsageError names --env(-kwargs)
    config = {k: v for k, v in spec.make_kwargs.items() if k not in cli.NOT_CONFIG}
    return _plain(make_config(**config).to_dict())


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (for comparisons with files on disk)."""
    return json.loads(json.dumps(to_jsonable(value)))


# ---------------------------------------------------------------- cells on disk
def read_json(path: Path) -> Json | None:
    """The JSON object in ``path``, or None when it is missing or does not parse."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_complete(result: Json) -> bool:
    """Whether ``train_agent.py`` got past saving its outputs (its second, final write)."""
    return "total_seconds" in result


def differences(result: Json, expected: Json) -> list[str]:
    """``key: found -> expected`` for every request setting ``result`` records otherwise."""
    diffs = []
    for key, want in expected.items():
        got = result.get(key)
        if isinstance(want, dict) and isinstance(got, dict):
            diffs += [f"{key}.{k}: {got.get(k, '(absent)')!r} -> {want.get(k, '(absent)')!r}"
                      for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)]
        elif got != want:
            diffs.append(f"{key}: {got!r} -> {want!r}")
    return diffs


def conflicts(request: Request) -> list[str]:
    """Cells in ``request.out`` whose results belong to another configuration."""
    found = []
    for folder in sorted((request.out / CELLS).glob("*/")):
        result = read_json(folder / "result.json")
        if result is None:
            continue  # no result: nothing to mix up, the folder is rerun or left alone
        agent, seed = result.get("agent"), result.get("seed")
        expected = {"env_id": request.env_id, "env_kwargs": request.env_config}
        if agent in request.agents:
            expected["agent_kwargs"] = _plain(request.agent_kwargs.get(agent, {}))
        diffs = differences(result, expected)
        if folder.name != f"{agent}-s{seed}":
            diffs.append(f"agent {agent!r} seed {seed!r} do not match the folder name")
        if diffs:
            found.append(f"{folder.name}: {'; '.join(diffs)}")
    return found


def cell_status(out: Path, agent: str, seed: int, expected: Json | None = None) -> str:
    """``finished``, ``failed`` (failure.json), ``incomplete`` (other folder) or ``missing``."""
    folder = cell_dir(out, agent, seed)
    result = read_json(folder / "result.json")
    if result is not None and is_complete(result):
        if expected is None or not differences(result, expected):
            return "finished"
    if (folder / "failure.json").is_file():
        return "failed"
    return "incomplete" if folder.exists() else "missing"


# ---------------------------------------------------------------- running
def _cell_process(argv: list[str], threads: int, folder: str) -> None:
    """Body of a cell's process: one ``train_agent.py`` run, its output in ``folder``."""
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        target = os.open(Path(folder) / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.update({var: str(threads) for var in THREAD_VARS})
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    torch.set_num_threads(threads)
    sys.exit(cli.main(argv))


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["agents.cli"])  # torch, transformers, the agents, ...
        return ctx
    return mp.get_context("spawn")


@dataclass
class Running:
    agent: str
    seed: int
    process: mp.process.BaseProcess
    started: float


def _start(ctx: mp.context.BaseContext, request: Request, agent: str, seed: int) -> Running:
    folder = cell_dir(request.out, agent, seed)
    shutil.rmtree(folder, ignore_errors=True)  # a broken or incomplete cell starts afresh
    folder.mkdir(parents=True)
    process = ctx.Process(target=_cell_process, name=cell_name(agent, seed),
                          args=(request.cell_argv(agent, seed), request.threads, str(folder)))
    process.start()
    return Running(agent, seed, process, time.perf_counter())


def _finish(request: Request, cell: Running) -> tuple[bool, str]:
    """Record how a cell ended; returns (finished, a one-line status)."""
    name, folder = cell_name(cell.agent, cell.seed), cell_dir(request.out, cell.agent, cell.seed)
    seconds = time.perf_counter() - cell.started
    code = cell.process.exitcode
    if code == 0 and cell_status(request.out, cell.agent, cell.seed,
                                 _plain(request.expected(cell.agent, cell.seed))) == "finished":
        result = read_json(folder / "result.json") or {}
        return True, (f"done {name}: val ppl {_fmt(result.get('final_val_ppl'))}, trainable "
                      f"{_fmt(result.get('trainable_fraction'), 3)} ({seconds:.0f} s)")
    tail = _keep_tail(folder / "stderr.txt")
    reason = (f"exit status {code}" if code != 0
              else "exit status 0 but no complete result.json matching the request")
    write_json(folder / "failure.json", {
        "agent": cell.agent, "seed": cell.seed, "returncode": code, "reason": reason,
        "seconds": seconds, "stderr_tail": tail,
        "command": shlex.join(["python", "train_agent.py", *request.cell_argv(cell.agent,
                                                                             cell.seed)])})
    last = tail[-1] if tail else "(no stderr)"
    return False, f"FAILED {name} ({reason}): {last}"


def _keep_tail(path: Path) -> list[str]:
    """Trim ``path`` to its last bytes; return its last lines."""
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
                  progress: bool = True) -> Json:
    """Run the missing cells of agents x seeds, then summarize; returns results.json's content.

    Bad options and a refused ``out`` raise :class:`agents.cli.UsageError` before anything
    runs. Failed cells do not raise: see ``result["run"]["failed"]``.
    """
    request = make_request(env_id, env_kwargs, agents, seeds, workers, out,
                           agent_kwargs=agent_kwargs, cache_dir=cache_dir, threads=threads)
    found = conflicts(request)
    if found:
        raise cli.UsageError("--out", f"{request.out} holds results of another configuration "
                             "(found -> requested), which this run would mix with its own:\n  "
                             + "\n  ".join(found)
                             + "\nuse another --out, or delete those cell folders")
    todo, skipped = [], []
    for agent, seed in request.cells():
        expected = _plain(request.expected(agent, seed))
        finished = cell_status(request.out, agent, seed, expected) == "finished"
        (skipped if finished else todo).append((agent, seed))
    started = datetime.now(timezone.utc)
    header = {"request": request.to_json(), "started": started.isoformat(timespec="seconds"),
              "machine": machine_info(request.threads),
              "run": {"skipped": [cell_name(*c) for c in skipped], "ran": [], "failed": []}}
    write_json(request.out / RESULTS_JSON, header)

    t0 = time.perf_counter()
    ran, failed = _run_cells(request, todo, skipped, progress)
    header["run"] |= {"ran": ran, "failed": failed, "seconds": time.perf_counter() - t0}
    write_json(request.out / RESULTS_JSON, header)
    summarize(request.out)
    return read_json(request.out / RESULTS_JSON) or {}


def _run_cells(request: Request, todo: list[tuple[str, int]], skipped: list[tuple[str, int]],
               progress: bool) -> tuple[list[str], list[str]]:
    """Run ``todo`` with ``request.workers`` processes at a time; returns (ran, failed)."""
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


def machine_info(threads: int | None = None) -> Json:
    import torch

    info = {"platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "available_cores": available_cores(), "torch": torch.__version__,
            "threads_per_worker": threads, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------- summary
def collect(out: Path, request: Json | None) -> list[Json]:
    """One entry per cell: the request's cells, or every cell folder when there is none."""
    if request is not None:
        pairs = list(itertools.product(request["agents"], request["seeds"]))
    else:
        pairs = []
        for folder in sorted((out / CELLS).glob("*/")):
            record = read_json(folder / "result.json") or read_json(folder / "failure.json")
            if record and isinstance(record.get("agent"), str) and \
                    isinstance(record.get("seed"), int):
                pairs.append((record["agent"], record["seed"]))
    cells = []
    for agent, seed in pairs:
        folder = cell_dir(out, agent, seed)
        expected = None
        if request is not None:
            expected = {"agent": agent, "seed": seed, "env_id": request["env_id"],
                        "env_kwargs": request["env_config"],
                        "agent_kwargs": request["agent_kwargs"].get(agent, {})}
        status = cell_status(out, agent, seed, expected)
        cells.append({
            "name": cell_name(agent, seed), "agent": agent, "seed": seed, "status": status,
            "path": str(folder.relative_to(out)),
            "result": read_json(folder / "result.json") if status == "finished" else None,
            "failure": read_json(folder / "failure.json") if status == "failed" else None,
        })
    return cells


def _stats(values: Sequence[Any]) -> Json:
    """Mean, sample std (None for one value) and count of the finite numbers in ``values``."""
    finite = [float(v) for v in values
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def aggregate(cells: Sequence[Json], agents: Sequence[str]) -> dict[str, Json]:
    """Per agent: statistics over the seeds of its finished cells."""
    table = {}
    for agent in agents:
        mine = [c for c in cells if c["agent"] == agent]
        results = [c["result"] for c in mine if c["status"] == "finished"]
        memory = [r.get("memory_bytes") or {} for r in results]
        table[agent] = {
            "seeds": [c["seed"] for c in mine if c["status"] == "finished"],
            "failed_seeds": [c["seed"] for c in mine if c["status"] == "failed"],
            "missing_seeds": [c["seed"] for c in mine
                              if c["status"] in ("missing", "incomplete")],
            "diverged_seeds": [c["seed"] for c in mine
                               if c["status"] == "finished" and c["result"].get("diverged")],
            "final_val_ppl": _stats([r.get("final_val_ppl") for r in results]),
            "final_test_ppl": _stats([r.get("final_test_ppl") for r in results]),
            "trainable_fraction": _stats([r.get("trainable_fraction") for r in results]),
            "mean_trainable_fraction": _stats([r.get("mean_trainable_fraction")
                                               for r in results]),
            **{f"{k}_mib": _stats([m[k] / MIB for m in memory if k in m])
               for k in ("params", "grads", "optimizer", "total")},
            "wall_seconds": _stats([r.get("total_seconds", r.get("wall_seconds"))
                                    for r in results]),
        }
    return table


def _optimal(cells: Sequence[Json]) -> Json | None:
    for cell in cells:
        result = cell["result"] or {}
        if result.get("optimal_ppl") is not None:
            return {k: result.get(k) for k in ("optimal_ppl", "optimal_val_ppl",
                                               "optimal_test_ppl")}
    return None


def summarize(out: str | Path) -> str:
    """Rebuild results.json's cells, results.md and the plots from the cells on disk.

    Covers the request recorded in ``out/results.json`` (every cell folder when there is
    none); returns the text of results.md.
    """
    out = Path(out)
    meta = read_json(out / RESULTS_JSON) or {}
    request = meta.get("request")
    cells = collect(out, request)
    agents = request["agents"] if request else sorted({c["agent"] for c in cells})
    table = aggregate(cells, agents)
    optimal = _optimal(cells)
    meta.setdefault("machine", machine_info())
    meta |= {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "counts": {s: sum(c["status"] == s for c in cells)
                        for s in ("finished", "failed", "incomplete", "missing")},
             "optimal": optimal, "agents": table, "cells": cells}
    write_json(out / RESULTS_JSON, meta)
    text = markdown(meta)
    atomic_write(out / RESULTS_MD, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    plot_pareto(cells, agents, out / PARETO_PNG, optimal)
    plot_curves(out, cells, agents, out / CURVES_PNG, optimal)
    return text


def _fmt(value: Any, digits: int = 2) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def _pm(stats: Json, digits: int = 2) -> str:
    if stats["mean"] is None:
        return "—"
    if stats["std"] is None:
        return f"{_fmt(stats['mean'], digits)} (n=1)"
    return f"{_fmt(stats['mean'], digits)} ± {_fmt(stats['std'], digits)}"


def _seeds(row: Json) -> str:
    text = ", ".join(map(str, row["seeds"])) or "none"
    for key, label in (("failed_seeds", "failed"), ("missing_seeds", "missing"),
                       ("diverged_seeds", "diverged")):
        if row[key]:
            text += f" ({label}: {', '.join(map(str, row[key]))})"
    return text


def markdown(meta: Json) -> str:
    """results.md from results.json's content."""
    request, machine, counts = meta.get("request") or {}, meta.get("machine") or {}, meta["counts"]
    lines = [f"# Benchmark on {request.get('env_id', '(unknown env)')}", ""]
    if request:
        lines += [f"- command: `{request['command']}`",
                  f"- env kwargs: `{json.dumps(request['env_kwargs'])}`"]
    lines += [f"- date: {meta['date']}; machine: {machine.get('platform')}, "
              f"{machine.get('cpu_count')} CPUs, torch {machine.get('torch')}"
              + (f", {request['workers']} worker(s) x {request['threads']} thread(s)"
                 if request else ""),
              "- cells: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
              + f" (of {sum(counts.values())})"]
    optimal = meta.get("optimal")
    if optimal:
        lines.append(f"- optimal perplexity of the synthetic source: "
                     f"{_fmt(optimal['optimal_val_ppl'], 3)} (validation), "
                     f"{_fmt(optimal['optimal_test_ppl'], 3)} (test)")
    lines += ["", "Final perplexities are on the full validation and test splits, as mean ± "
              "sample std over the finished seeds. Trainable fraction at the end of the run and "
              "averaged over its decisions; memory (MiB) of parameters, gradients and optimizer "
              "state at the end; wall time per cell in seconds.", "",
              "| agent | val ppl | test ppl | trainable (end) | trainable (run mean) | "
              "params MiB | grads MiB | optimizer MiB | total MiB | wall s | seeds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for agent, row in meta["agents"].items():
        lines.append(
            f"| {agent} | {_pm(row['final_val_ppl'])} | {_pm(row['final_test_ppl'])} | "
            f"{_pm(row['trainable_fraction'], 3)} | {_pm(row['mean_trainable_fraction'], 3)} | "
            + " | ".join(_fmt(row[f"{k}_mib"]["mean"], 3)
                         for k in ("params", "grads", "optimizer", "total"))
            + f" | {_fmt(row['wall_seconds']['mean'], 1)} | {_seeds(row)} |")
    if optimal:
        lines.append(f"| *optimal (source)* | {_fmt(optimal['optimal_val_ppl'])} | "
                     f"{_fmt(optimal['optimal_test_ppl'])} |  |  |  |  |  |  |  |  |")
    failed = [c for c in meta["cells"] if c["status"] == "failed"]
    if failed:
        lines += ["", "## Failed cells", "", "| cell | exit status | last line of stderr |",
                  "|---|---|---|"]
        for cell in failed:
            failure = cell["failure"] or {}
            tail = failure.get("stderr_tail") or ["(no stderr)"]
            last = tail[-1].replace("|", "\\|")
            lines.append(f"| {cell['name']} | {failure.get('returncode')} | {last} |")
        lines += ["", f"Each failed cell keeps its stderr in `{CELLS}/<cell>/stderr.txt`."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots
def _colors(agents: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(agents) <= 10 else "tab20")
    return {a: cmap(i % cmap.N) for i, a in enumerate(agents)}


def _finish_plot(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend the axes, then write the figure atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no finished cells", ha="center", va="center", transform=ax.transAxes)


def plot_pareto(cells: Sequence[Json], agents: Sequence[str], path: Path,
                optimal: Json | None = None) -> Path:
    """Final validation perplexity against final trainable fraction; agent means larger."""
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = _colors(agents)
    plotted = False
    for agent in agents:
        points = [(c["result"]["trainable_fraction"], c["result"]["final_val_ppl"])
                  for c in cells if c["agent"] == agent and c["status"] == "finished"
                  and c["result"].get("final_val_ppl") is not None]
        if not points:
            continue
        x, y = np.array(points, dtype=float).T
        ax.scatter(x, y, s=25, alpha=0.6, color=colors[agent])
        ax.scatter([x.mean()], [y.mean()], s=160, marker="D", color=colors[agent],
                   edgecolor="black", label=f"{agent} (mean of {len(x)})", zorder=3)
        plotted = True
    if optimal and optimal.get("optimal_val_ppl") is not None:
        ax.axhline(optimal["optimal_val_ppl"], linestyle="--", color="gray",
                   label=f"optimal {optimal['optimal_val_ppl']:.3f}")
    if not plotted:
        _no_data(ax)
    ax.set_xlim(0, 1.05)
    return _finish_plot(fig, ax, path, "trainable fraction of parameters (end of run)",
                        "final validation perplexity (full split)",
                        "perplexity against trainable parameters (small: seeds, large: mean)")


def curve(out: Path, cells: Sequence[Json]) -> tuple[np.ndarray, ...]:
    """(steps, mean, min, max) of validation perplexity over ``cells``' log.jsonl files.

    Step 0 is each run's initial perplexity; a step enters with the seeds that reached it.
    """
    by_step: dict[int, list[float]] = {}
    for cell in cells:
        result = cell["result"] or {}
        try:
            records = read_log(out / cell["path"] / "log.jsonl")
        except (OSError, ValueError):
            continue
        points = [(0, result.get("initial_val_ppl"))]
        points += [(r.get("train_steps"), r.get("val_ppl")) for r in records]
        for step, ppl in points:
            if isinstance(step, int) and isinstance(ppl, (int, float)) and math.isfinite(ppl):
                by_step.setdefault(step, []).append(float(ppl))
    steps = np.array(sorted(by_step), dtype=float)
    values = [by_step[int(s)] for s in steps]
    return (steps, np.array([np.mean(v) for v in values]), np.array([min(v) for v in values]),
            np.array([max(v) for v in values]))


def _minor_label(y: float, _: Any) -> str:
    """Plain labels at 2, 3 and 5 times a power of ten (log axes), none elsewhere."""
    mantissa = round(y / 10 ** math.floor(math.log10(y)), 6) if y > 0 else 0
    return f"{y:g}" if mantissa in (2, 3, 5) else ""


def plot_curves(out: Path, cells: Sequence[Json], agents: Sequence[str], path: Path,
                optimal: Json | None = None) -> Path:
    """Validation perplexity over optimizer steps: mean over seeds and min-max band."""
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = _colors(agents)
    plotted = False
    for agent in agents:
        mine = [c for c in cells if c["agent"] == agent and c["status"] == "finished"]
        steps, mean, low, high = curve(out, mine)
        if not steps.size:
            continue
        ax.plot(steps, mean, marker=".", color=colors[agent],
                label=f"{agent} (mean of {len(mine)} seed(s))")
        ax.fill_between(steps, low, high, color=colors[agent], alpha=0.2, linewidth=0)
        plotted = True
    if optimal and optimal.get("optimal_ppl") is not None:
        ax.axhline(optimal["optimal_ppl"], linestyle="--", color="gray",
                   label=f"optimal {optimal['optimal_ppl']:.3f}")
    if plotted:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    else:
        _no_data(ax)
    return _finish_plot(fig, ax, path, "optimizer steps",
                        "validation perplexity (evaluation subset)",
                        "validation perplexity over training (band: min-max over seeds)")


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.benchmark",
        description="Run agents x seeds on one layer-tying environment (each cell one "
                    "train_agent.py run in its own process) and write results.json, "
                    "results.md, pareto.png and curves.png. Re-running skips finished cells.")
    parser.add_argument("--env", default=cli.DEFAULT_ENV, dest="env_id",
                        help=f"registered environment id (default {cli.DEFAULT_ENV})")
    parser.add_argument("--env-kwargs", default="{}", metavar="JSON",
                        help='environment settings for every cell, e.g. \'{"n_layer": 4}\'')
    parser.add_argument("--agents", required=True, metavar="A,B,...",
                        help="comma-separated registered agent names")
    parser.add_argument("--seeds", default="0,1,2", metavar="S,S,...",
                        help="comma-separated non-negative seeds (default 0,1,2)")
    parser.add_argument("--workers", default="1", metavar="N",
                        help="cells run at the same time (default 1)")
    parser.add_argument("--threads", metavar="N",
                        help="torch threads per worker (default: cores // workers, at least 1)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="benchmark folder (cells go to DIR/cells/<agent>-s<seed>)")
    parser.add_argument("--agent-kwargs", default="{}", metavar="JSON",
                        help='per-agent hyperparameters, e.g. \'{"qlearning": {"lr": 0.01}}\'')
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="cache for tokenizers and tokenized corpora (shared by cells)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _count(option: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise cli.UsageError(option, f"{value!r} is not allowed; expected an int >= 1") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m agents.benchmark``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        results = run_benchmark(
            args.env_id, args.env_kwargs, args.agents, args.seeds,
            _count("--workers", args.workers), args.out, agent_kwargs=args.agent_kwargs,
            cache_dir=args.cache_dir, threads=_count("--threads", args.threads),
            progress=not args.no_progress)
    except cli.UsageError as e:
        parser.error(str(e))  # exits with status 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command again to go on",
              file=sys.stderr)
        return 130
    run, counts = results["run"], results["counts"]
    print(f"{counts['finished']} of {len(results['cells'])} cells finished "
          f"({len(run['ran'])} run now, {len(run['skipped'])} skipped), "
          f"{counts['failed']} failed -> {args.out / RESULTS_MD}")
    return 1 if counts["failed"] or run["failed"] else 0


if __name__ == "__main__":
    # run the imported module's main, so that cell processes find their function by its
    # real module name (agents.benchmark) rather than as __main__
    from agents.benchmark import main as _main

    raise SystemExit(_main())
