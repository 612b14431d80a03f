"""Reading back a W&B offline run (`wandb/offline-run-<time>-<id>/run-<id>.wandb`) in tests.

Offline, W&B keeps everything in that one transaction log: a 7-byte header (`:W&B`, a
2-byte magic number, a version byte), then LevelDB's log format (32 KiB blocks of chunks,
each with a 7-byte header: checksum, length, type) whose records are
`wandb.proto.wandb_internal_pb2.Record` messages. wandb has no public Python reader of it
(`wandb sync` reads it in its Go core), so the tests read the records here. The core may
write the last records a moment after `Run.finish()` returns (seen with wandb 0.31: a few
KiB of a 900 KiB log, once in three tries; a process's exit waits for them), so
`read_offline_run` waits for the run's exit record.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
CHUNK_HEADER = 7  # checksum (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """The protobuf records of a `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, parts = 7, b""
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:  # a block's tail too short for a header
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0:  # zero padding up to the block's end
            pos += BLOCK - pos % BLOCK
            continue
        if pos + CHUNK_HEADER + length > len(data):
            return  # a chunk still being written
        parts += data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _items(items: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in items}


@dataclass
class OfflineRun:
    """What an offline W&B run holds: its identity, config, history rows and summary."""

    id: str = ""
    name: str = ""
    group: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # without W&B's `_` keys
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    def curve(self, key: str, step: str = "step") -> list[tuple[int, float]]:
        """(step, value) of every history row that has `key`."""
        return [(row[step], row[key]) for row in self.history if key in row]


def read_offline_run(run_dir: Path, wait_s: float = 10.0) -> OfflineRun:
    """The run in the W&B run folder `run_dir` (`.../wandb/offline-run-<time>-<id>`), read
    again until it holds the exit record (for at most `wait_s` seconds)."""
    deadline = time.monotonic() + wait_s
    run = _read(run_dir)
    while run.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.05)
        run = _read(run_dir)
    return run


def _read(run_dir: Path) -> OfflineRun:
    (path,) = run_dir.glob("run-*.wandb")
    run = OfflineRun()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info = record.run
            run.id, run.name, run.group = info.run_id, info.display_name, info.run_group
            run.project, run.tags = info.project, list(info.tags)
            run.config.update(_items(info.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            row = _items(record.history.item)
            run.history.append({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "summary":
            run.summary.update({k: v for k, v in _items(record.summary.update).items()
                                if not k.startswith("_")})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def offline_wandb(monkeypatch: Any, tmp_path: Path) -> None:
    """W&B for a test: offline (whatever the user set), silent, without crash reports, its
    caches and settings under `tmp_path` (nothing written to the home folder)."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("CACHE", "CONFIG", "DATA", "ARTIFACT"):
        monkeypatch.setenv(f"WANDB_{name}_DIR", str(tmp_path / f"wandb-{name.lower()}"))
