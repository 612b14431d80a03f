"""Atomic writes and JSON, in one place.

Every file this project writes goes through `atomic_write` (or a helper
built on it): the content is written to a temporary file in the same folder,
flushed to disk, and moved onto the target with `os.replace`, so a reader
never sees half a file and a crash leaves the previous version intact.

JSON has one convention: `to_jsonable` turns numpy and torch values
into plain ones and non-finite floats into `null`; `dumps` writes
strict JSON (a NaN that slipped through is an error, never `NaN`).
Floats that must survive bit for bit (checkpoints) are stored as `float.hex`
strings by `tying_env.checkpoint.exact`.

On-disk caches carry a manifest (`write_manifest`): the size and sha256 of each
file of a cache entry, written last. A reader checks an entry with
`check_manifest` and rebuilds it, warning once with `warn_rebuilt`, when
anything is wrong.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tying_env.errors import WriteFailedError

UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then move it onto `path`.

    A write that fails for a reason of the file system (full disk, read-only or missing
    location, a path under a file) raises `WriteFailedError` naming `path` and the
    cause; the temporary file is removed and the previous `path` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise write_failed(path, e) from e
    tmp = Path(name)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # as open() would make it, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_failed(path: str | Path, error: OSError) -> WriteFailedError:
    """`error`, met while writing `path`, as a `WriteFailedError` that says what to do."""
    if isinstance(error, WriteFailedError):
        return error
    path = Path(path)
    causes = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOENT: "a folder on the way does not exist",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a part of the path is a file, not a folder",
    }
    cause = causes.get(error.errno, error.strerror or str(error))
    where = next((p for p in (path, *path.parents) if p.exists()), None)
    free = ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT) and where is not None:
        free = f" ({shutil.disk_usage(where).free / 2**20:.1f} MiB free there)"
    return WriteFailedError(str(path), f"cannot write {path}: {cause}{free} "
                                       f"[{type(error).__name__}: {error}]")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically write `data` to `path`."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """`value` with numpy/torch values made plain, paths made strings, NaN/inf made None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(value.tolist())  # numpy arrays and scalars, torch tensors
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(obj: Any) -> bytes:
    """Strict JSON text of `obj` as bytes (a NaN or inf left in `obj` is an error)."""
    return (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write `obj` as strict JSON (see `to_jsonable`)."""
    return write_bytes(path, dumps(to_jsonable(obj)))


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (renames into it) to disk, where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# ------------------------------------------------------------------ cache manifests

MANIFEST_VERSION = 1


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of the bytes of `path`, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(manifest: str | Path, names: Iterable[str]) -> Path:
    """Atomically write `manifest`, listing the size and sha256 of the files `names` beside it.

    Write it *after* the files it lists: a cache entry counts as complete only once its
    manifest exists. The format is
    `{"version": 1, "files": {"train.npy": {"bytes": 1234, "sha256": "ab12..."}, ...}}`.
    """
    manifest = Path(manifest)
    files = {}
    for name in names:
        path = manifest.parent / name
        files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return write_json(manifest, {"version": MANIFEST_VERSION, "files": files})


def check_manifest(manifest: str | Path, names: Iterable[str]) -> list[str]:
    """What is wrong with the files `names` beside `manifest`, one line each naming the path.

    An empty list means every file is there with the size and sha256 the manifest records.
    A missing or malformed manifest, a file it does not list, a missing file, a size that
    differs (a truncated file) and a checksum that differs (changed bytes) are problems.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        return [f"{manifest} is missing (an unfinished entry or one from an older version)"]
    recorded = read_json(manifest)
    files = recorded.get("files") if recorded is not None else None
    if not isinstance(files, dict) or recorded.get("version") != MANIFEST_VERSION:
        return [f"{manifest} is not a valid manifest"]
    problems = []
    for name in names:
        path, entry = manifest.parent / name, files.get(name)
        if not isinstance(entry, dict) or not {"bytes", "sha256"} <= entry.keys():
            problems.append(f"{manifest} does not list {name}")
        elif not path.is_file():
            problems.append(f"{path} is missing")
        elif (size := path.stat().st_size) != entry["bytes"]:
            problems.append(f"{path} has {size} bytes, its manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            problems.append(f"{path} does not match its manifest's sha256")
    return problems


def warn_rebuilt(entry: str | Path, problems: list[str]) -> None:
    """Warn, in one line, that the cache entry `entry` was damaged and is being rebuilt."""
    why = "; ".join(p.replace("\n", " ") for p in problems)
    warnings.warn(f"cache entry {entry} is damaged, rebuilding it: {why}", stacklevel=3)
