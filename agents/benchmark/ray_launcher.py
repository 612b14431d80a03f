"""`--launcher ray`: each benchmark cell as a Ray task, on a cluster or a local instance.

`RayPool` submits a cell as a task that asks for `num_cpus` = the request's threads and,
for a CUDA cell, `num_gpus=1` (Ray then sets the task's `CUDA_VISIBLE_DEVICES`). A cell
whose device is `"auto"` is a CUDA cell when the cluster has GPUs. Without an address
the pool starts a local Ray instance (bound to the loopback interface, no dashboard, no
usage reporting) and stops it at the end; with `"auto"` or `"HOST:PORT"` it joins that
cluster and leaves it running. When this process has already called `ray.init`, that
connection is used as it is.

**Results travel through the shared folder, not the object store.** A task writes its
cell's run folder under `--out`, exactly as a local cell does, and returns only its exit
status. The cluster therefore needs `--out` (and `--cache-dir`) on a file system that
every node mounts at the same path (NFS, Lustre, a cloud file share). The checkpoints
decide this: a cell must be able to continue from its last checkpoint on *another*
node after its node died, and a checkpoint in a dead node's object store (or on its
local disk) is gone with it, while one on the shared folder is not. The same folder
is what the claims, `--shard` and a later gathering run work with. A task checks that it
sees its cell's claim before it writes anything, so a node without the shared folder
fails its cells with a message that says so instead of writing results nobody reads.

**Retries.** A task whose worker process or node dies is retried by Ray (`retries`
times, default `RAY_RETRIES`), and the retry resumes from the cell's last checkpoint
(`agents.benchmark.attempt.cell_run`). A cell stopped by a signal (a node drained
with SIGTERM) writes a checkpoint and is retried the same way. Past the retries the cell
is reported failed, with Ray's error, and the other cells go on. A cell that fails by
itself (a bad setting, a diverged run does not count) is not retried: it would fail again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from agents.benchmark.attempt import Ended, Running, attempt
from agents.benchmark.cells import Request, available_cores, cell_dir, cell_name
from agents.benchmark.claims import read_claim
from tying_env.errors import SettingError

RAY_RETRIES = 2  # retries of a cell whose worker or node died (then it is reported failed)
STOP_WAIT_S = 120.0  # how long an interrupted run waits for its cancelled cells' checkpoints
INSTALL = ("--launcher ray needs Ray, an optional dependency: pip install "
           "'layer-tying-gym[ray]' (or pip install 'ray>=2.9')")
# a local instance: every server on the loopback interface only (read when ray is imported;
# its name says Windows and macOS, but it is what makes a single-node instance local-only
# on any system), and no usage statistics
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class CellPreempted(Exception):
    """A cell stopped by a signal after writing its checkpoint: Ray retries it."""


@contextlib.contextmanager
def _local_env() -> Iterator[None]:
    """`LOCAL_ENV` set while inside (for `import ray` and the processes `ray.init` starts)."""
    saved = {name: os.environ.get(name) for name in LOCAL_ENV}
    os.environ.update(LOCAL_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def import_ray(local: bool = False) -> ModuleType:
    """`ray`, or a `SettingError` that says how to install it. `local`: for a local
    instance, whose servers then listen on the loopback interface only (Ray reads that at
    its import: a process that imported ray before, or that joins a cluster, leaves it)."""
    try:
        with _local_env() if local else contextlib.nullcontext():
            import ray
    except ImportError:
        raise SettingError("launcher", INSTALL) from None
    return ray


def start_local(num_cpus: int | None = None) -> None:
    """Start a local Ray instance for this process: loopback only, no dashboard, no usage
    reporting, workers' output kept out of this process's (`num_cpus`: the cores here)."""
    ray = import_ray(local=True)
    with _local_env():
        ray.init(address="local", num_cpus=num_cpus or available_cores(),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def is_loopback(address: str) -> bool:
    """Whether `HOST:PORT` names this machine's loopback interface (a local-only instance,
    which a driver joins as a local one)."""
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]") or address
    return host == "localhost" or host == "::1" or host.startswith("127.")


def connect(address: str | None) -> bool:
    """Connect this process to Ray: `address` (`"auto"`, `"HOST:PORT"`), or a new local
    instance when None. Returns whether the caller must `ray.shutdown()` at the end
    (False when this process was already connected: that connection is used as it is)."""
    ray = import_ray(local=address is None or is_loopback(address))
    if ray.is_initialized():
        return False
    if address is None:
        start_local()
        return True
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise SettingError("ray_address", f"cannot connect to a Ray cluster at {address!r}: "
                                          f"{e}. Start one with `ray start --head` and pass its "
                                          "address (HOST:PORT), or 'auto' on one of its "
                                          "nodes") from None
    return True


def cell_gpus(request: Request, resources: dict[str, float]) -> int:
    """GPUs a cell's task asks for: 1 for a CUDA cell, else 0."""
    device = str(request.env_config.get("device", "auto"))
    if device.startswith("cuda"):
        return 1
    return 1 if device == "auto" and resources.get("GPU", 0) >= 1 else 0


def ray_cell(request: Request, agent: str, seed: int, owner: str) -> dict[str, Any]:
    """The task: one attempt at a cell claimed by `owner`, on whichever node Ray chose."""
    folder = cell_dir(request.out, agent, seed)
    held = read_claim(folder)
    if held is None or held.owner != owner:
        raise RuntimeError(
            f"node {socket.gethostname()} does not see this benchmark's claim on {folder}: "
            "--launcher ray needs --out on a folder that every node mounts at the same path "
            "(a shared file system); see docs/scaling.md")
    code = attempt(request, agent, seed, owner)
    if code > 128:  # stopped by a signal after writing a checkpoint
        raise CellPreempted(f"{cell_name(agent, seed)} stopped with exit status {code}; it "
                            "resumes from its checkpoint")
    return {"code": code, "host": socket.gethostname(), "pid": os.getpid()}


class RayPool:
    """Cells as Ray tasks, at most `request.workers` submitted at a time."""

    def __init__(self, request: Request, address: str | None = None,
                 retries: int | None = None):
        self.request = request
        self.shutdown = connect(address)
        import ray

        self.ray = ray
        self.gpus = cell_gpus(request, ray.cluster_resources())
        self.task = ray.remote(ray_cell)
        retries = RAY_RETRIES if retries is None else retries
        self.options = dict(num_cpus=request.threads, num_gpus=self.gpus, max_retries=retries,
                            retry_exceptions=[CellPreempted])
        self.running: list[Running] = []

    def has_room(self) -> bool:
        return len(self.running) < self.request.workers

    def start(self, cell: Running) -> str:
        cell.handle = self.task.options(name=cell_name(cell.agent, cell.seed),
                                        **self.options).remote(
            self.request, cell.agent, cell.seed, cell.claim.owner)
        self.running.append(cell)
        return (f"Ray task, {self.request.threads} CPU(s)"
                + (", 1 GPU" if self.gpus else ""))

    def wait(self, timeout: float | None) -> list[Ended]:
        if not self.running:  # only cells that other runners hold: look again later
            time.sleep(timeout or 0.0)
            return []
        refs = [c.handle for c in self.running]
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # everything that is done by now
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        done = {id(ref) for ref in ready}
        ended: list[Ended] = []
        for cell in [c for c in self.running if id(c.handle) in done]:
            self.running.remove(cell)
            try:
                ended.append((cell, int(self.ray.get(cell.handle)["code"]), None))
            except self.ray.exceptions.RayError as e:
                ended.append((cell, None, _error_line(e)))
        return ended

    def stop(self, signum: int) -> None:
        """Cancel the running cells (each writes a checkpoint) and wait for them a while."""
        refs = [c.handle for c in self.running]
        for ref in refs:
            self.ray.cancel(ref)
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=STOP_WAIT_S)

    def close(self) -> None:
        if self.shutdown:
            self.ray.shutdown()


def _error_line(error: BaseException) -> str:
    """A Ray error in one line: its kind and the first line of its message."""
    text = str(error).strip().splitlines()
    cause = getattr(error, "cause", None)
    if cause is not None:
        text = [f"{type(cause).__name__}: {cause}"]
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]
