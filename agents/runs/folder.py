"""The run folder: held by one run at a time, and never overwritten by accident.

`lock(spec)` is the first thing a run does to its folder. It takes the folder's lock
(`DIR/.lock`, an advisory `flock` held until the run ends, so a second run on the same
folder is refused while the first one runs), then:

| the folder holds            | a new run                   | `resume=True`        |
|-----------------------------|-----------------------------|----------------------|
| nothing of a run            | starts                      | refused              |
| a run (finished or stopped) | refused; `overwrite=True` moves the old run aside | continues it |
| a running run               | refused                     | refused              |

The old run moved aside goes to `DIR.old-<time>/` beside the folder: it is never deleted.
A refusal is a `SettingError` with `argument="out"` (or `"resume"`) that names the
folder, what it holds and the choices. (A benchmark runner's hold on a cell's folder,
across the runs it starts there, is a *claim*: `agents.benchmark.claims`.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO

from agents.runs.result import FILE as RESULT_FILE
from agents.runs.result import read_result
from agents.runs.spec import RUN_FILE, RunSpec
from tying_env.errors import SettingError
from tying_env.files import read_json, write_failed

LOCK = ".lock"
# what a run writes into its folder: any of these means the folder holds a run
RUN_MARKERS = (RUN_FILE, RESULT_FILE, "log.jsonl", "checkpoint", "checkpoint.old")

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are still never overwritten
    fcntl = None  # type: ignore[assignment]


class FolderLock:
    """An exclusive advisory lock on `folder/.lock`, held until `release()`."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock; False when another process holds it."""
        try:
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as e:
            raise write_failed(self.path, e) from e
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def holder(self) -> str:
        """The pid written by the process that holds the lock, as text ("?" if unknown)."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        """Let go of the lock (again: nothing)."""
        if self._file is not None:
            self._file.close()  # closing the file releases the flock
            self._file = None


def holds_run(folder: Path) -> bool:
    """Whether `folder` holds (part of) a run."""
    return any((folder / name).exists() for name in RUN_MARKERS)


def describe(folder: Path) -> str:
    """What run `folder` holds, in words: agent, seed, finished or stopped."""
    found = read_result(folder)
    settings = (read_json(folder / RUN_FILE) or {}).get("settings") or {}
    agent = settings.get("agent", found.agent if found else "?")
    seed = settings.get("seed", found.seed if found else "?")
    who = f"agent {agent!r}, seed {seed}"
    if found is not None and found.complete:
        return f"a finished run ({who})"
    return f"a stopped run ({who}; it may be resumed)"


def lock(spec: RunSpec) -> FolderLock:
    """Lock the run folder and check that `spec` may write there (see the module doc)."""
    folder = spec.folder
    option = "resume" if spec.resume else "out"
    if folder.exists() and not folder.is_dir():
        raise SettingError(option, f"{str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(folder, e) from e
    held = FolderLock(folder)
    if not held.acquire():
        raise SettingError(option, f"{folder} is being written by a running run (process "
                                   f"{held.holder()} holds {held.path}); wait for it to end, "
                                   "or choose another --out")
    try:
        if not spec.resume and holds_run(folder):
            if not spec.overwrite:
                raise SettingError(
                    "out", f"{folder} holds {describe(folder)}; refusing to overwrite it. "
                           f"Choose --resume {folder} to continue a stopped run, another "
                           "--out, or --overwrite to move the old run aside (it is kept in "
                           f"{folder.name}.old-<time>/ beside it)")
            move_aside(folder)
    except BaseException:
        held.release()
        raise
    return held


def remove_if_empty(folder: Path) -> None:
    """Remove `folder` when it holds nothing but its lock (a run refused before writing)."""
    try:
        entries = list(folder.iterdir())
        if all(entry.name == LOCK for entry in entries):
            for entry in entries:
                entry.unlink()
            folder.rmdir()
    except OSError:
        pass


def move_aside(folder: Path) -> Path:
    """Move everything in `folder` but its lock into a new `folder.old-<time>/`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    try:
        aside.mkdir()
        for entry in sorted(folder.iterdir()):
            if entry.name != LOCK:
                os.replace(entry, aside / entry.name)
    except OSError as e:
        raise write_failed(aside, e) from e
    return aside
