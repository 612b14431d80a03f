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
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
