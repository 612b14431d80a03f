"""Claims: a benchmark runner's ownership of a cell's folder, on any host that shares it.

A runner (one benchmark invocation) claims a cell's folder (`try_claim`) before any run
starts in it, for as long as it wants the cell, across the runs it starts there. A claim
is the file `DIR/.claim`, created exclusively (`O_EXCL`, under a short `flock` on
`DIR/.claim.lock`), holding the runner's `owner` token, host, pid and a heartbeat time
that `Heartbeat` refreshes every `HEARTBEAT_S` seconds. Another runner skips a live
claim. A claim is *stale* when its process is gone (same host) or its heartbeat is older
than `STALE_AFTER_S` (any host: the hosts' clocks must agree to within that, as NTP keeps
them); a stale claim is taken over, unless a run still holds the folder's lock
(`agents.runs.folder`: an orphaned run still writing). `clear_folder` empties a folder
only for the holder of its claim: a runner never deletes another runner's work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.runs.folder import LOCK, FolderLock
from tying_env.files import write_failed, write_json

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

CLAIM = ".claim"
CLAIM_GUARD = ".claim.lock"
HEARTBEAT_S = 30.0  # a held claim's heartbeat is refreshed this often
STALE_AFTER_S = 300.0  # a claim whose heartbeat is older than this is stale, on any host


class NotClaimed(RuntimeError):
    """A folder operation that needs a claim the caller does not hold (see `clear_folder`)."""


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says: which runner holds the folder, where, and since when."""

    owner: str
    host: str
    pid: int
    started: float  # time.time() of the claim
    heartbeat: float  # time.time() of the latest heartbeat

    def describe(self, now: float | None = None) -> str:
        age = (time.time() if now is None else now) - self.heartbeat
        return f"process {self.pid} on {self.host} (last heartbeat {age:.0f} s ago)"


def new_owner() -> str:
    """A token naming one runner: unique across hosts, processes and time."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def read_claim(folder: Path) -> ClaimInfo | None:
    """The claim on `folder`, or None. A damaged claim file reads as an unknown owner
    whose heartbeat is the file's modification time."""
    path = Path(folder) / CLAIM
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ClaimInfo(owner=str(data["owner"]), host=str(data["host"]),
                         pid=int(data["pid"]), started=float(data["started"]),
                         heartbeat=float(data["heartbeat"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        return ClaimInfo(owner="?", host="?", pid=0, started=mtime, heartbeat=mtime)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a zombie has ended, its parent just has not reaped it yet
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(info: ClaimInfo, stale_after: float = STALE_AFTER_S,
             now: float | None = None) -> bool:
    """Whether the runner that holds `info` is gone: its heartbeat is older than
    `stale_after` seconds, or it ran on this host and its process has ended."""
    now = time.time() if now is None else now
    if now - info.heartbeat > stale_after:
        return True
    return info.host == socket.gethostname() and not pid_alive(info.pid)


def run_lock_held(folder: Path) -> bool:
    """Whether a live run holds `folder`'s lock (it is writing the folder right now)."""
    lock = FolderLock(Path(folder))
    if lock.acquire():
        lock.release()
        return False
    return True


@contextlib.contextmanager
def _guarded(folder: Path) -> Iterator[None]:
    """Hold `folder/.claim.lock` (briefly: one claim operation at a time per folder)."""
    path = folder / CLAIM_GUARD
    try:
        handle = path.open("a", encoding="utf-8")
    except OSError as e:
        raise write_failed(path, e) from e
    with handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


class Claim:
    """A claim this process holds on a folder (see the module doc)."""

    def __init__(self, folder: Path, info: ClaimInfo, took_over: ClaimInfo | None = None):
        self.folder = Path(folder)
        self.info = info
        self.took_over = took_over  # the stale claim this one replaced, if any

    @property
    def owner(self) -> str:
        return self.info.owner

    def holds(self) -> bool:
        """Whether the folder's claim file still names this claim's owner."""
        current = read_claim(self.folder)
        return current is not None and current.owner == self.owner

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; False (and nothing written) when the claim was lost."""
        with _guarded(self.folder):
            if not self.holds():
                return False
            self.info = ClaimInfo(**{**asdict(self.info), "heartbeat": time.time()})
            write_json(self.folder / CLAIM, asdict(self.info))
        return True

    def release(self) -> None:
        """Remove the claim file, if it is still this claim's."""
        try:
            with _guarded(self.folder):
                if self.holds():
                    (self.folder / CLAIM).unlink()
        except OSError:
            pass  # the folder is gone, or cannot be written: nothing of ours to remove

    def __repr__(self) -> str:
        return f"Claim({str(self.folder)!r}, {self.owner!r})"


def try_claim(folder: Path, owner: str, *, stale_after: float = STALE_AFTER_S) -> Claim | None:
    """Claim `folder` (created if missing) for `owner`; None when another runner holds a
    live claim on it, or a run is still writing it. A stale claim is taken over
    (`Claim.took_over`); a claim `owner` already holds is returned as it is."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(folder, e) from e
    with _guarded(folder):
        current = read_claim(folder)
        if current is not None and current.owner == owner:
            return Claim(folder, current)
        if current is not None and not is_stale(current, stale_after):
            return None
        if run_lock_held(folder):
            return None
        path = folder / CLAIM
        now = time.time()
        info = ClaimInfo(owner=owner, host=socket.gethostname(), pid=os.getpid(),
                         started=now, heartbeat=now)
        try:
            if current is not None:
                path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None  # a runner that does not take the guard got there first
        except OSError as e:
            raise write_failed(path, e) from e
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(info), handle)
            handle.flush()
            os.fsync(handle.fileno())
    return Claim(folder, info, took_over=current)


def check_claim(folder: Path, owner: str, doing: str = "refusing to write it") -> None:
    """Raise `NotClaimed` unless `owner` holds the claim on `folder`."""
    current = read_claim(folder)
    if current is None or current.owner != owner:
        holder = "none" if current is None else current.describe()
        raise NotClaimed(f"{folder} is not claimed by this runner (its claim: {holder}); "
                         f"{doing}")


def clear_folder(folder: Path, owner: str) -> None:
    """Delete everything in `folder` but its lock and claim files (`.lock`, `.claim*`);
    only for the holder of its claim (`NotClaimed` otherwise, and nothing is deleted)."""
    folder = Path(folder)
    with _guarded(folder):
        check_claim(folder, owner, "refusing to delete anything in it")
    for entry in folder.iterdir():
        if entry.name == LOCK or entry.name.startswith(CLAIM):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as e:
            raise write_failed(entry, e) from e


@contextlib.contextmanager
def signals_to_main_thread() -> Iterator[None]:
    """Threads started inside block SIGINT and SIGTERM, so that the kernel delivers them to
    the main thread. A signal taken by another thread runs Python's handler only when the
    main thread next runs Python code: a main thread waiting for a process would not be
    interrupted (Ctrl-C ignored until the process ends)."""
    if not hasattr(signal, "pthread_sigmask"):  # not on this platform: nothing to do
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Heartbeat:
    """A background thread that refreshes the heartbeat of the claims it holds.

    Use as a context manager; `add` and `discard` claims while inside. A claim found
    lost (taken over after this process stalled past `STALE_AFTER_S`) is reported on
    stderr once and dropped.
    """

    def __init__(self, interval: float = HEARTBEAT_S):
        self.interval = interval
        self._claims: dict[str, Claim] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-heartbeat", daemon=True)
        self.lost: list[Claim] = []

    def add(self, claim: Claim) -> None:
        with self._mutex:
            self._claims[str(claim.folder)] = claim

    def discard(self, claim: Claim) -> None:
        with self._mutex:
            self._claims.pop(str(claim.folder), None)

    def beat(self) -> None:
        """Refresh every held claim now."""
        with self._mutex:
            claims = list(self._claims.values())
        for claim in claims:
            try:
                kept = claim.heartbeat()
            except OSError:
                continue  # the shared file system hiccuped: try again next time
            if not kept:
                self.discard(claim)
                self.lost.append(claim)
                print(f"warning: the claim on {claim.folder} was taken over by another runner "
                      f"({(read_claim(claim.folder) or claim.info).describe()})",
                      file=sys.stderr)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        with signals_to_main_thread():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
