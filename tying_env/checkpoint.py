"""Checkpoints that are safe to load: tensors in safetensors, everything else in JSON.

A checkpoint is a folder of named *parts*. Each part is a dict of tensors
(`<part>.safetensors`) and a JSON-able dict (`<part>.json`); nothing is
pickled, so loading one never runs code from the file. `manifest.json`,
written last, lists the size and sha256 of every file; `read_checkpoint`
checks them all before parsing anything, and refuses a truncated or changed
file with a `CheckpointError` that names it.

Writing is atomic at the folder level (`write_checkpoint`): the new
checkpoint is written into `RUN/checkpoint.tmp-*`, the previous
`RUN/checkpoint` is renamed to `RUN/checkpoint.old`, the new one is renamed
into place, and only then is the old one deleted. A kill at any instant leaves
either a complete `checkpoint` or (between the two renames) a complete
`checkpoint.old`, which `find_checkpoint` falls back to.

The helpers below turn the state that a run needs into parts exactly: module
and optimizer state, numpy and global random generators, and floats that may
be NaN or inf (stored as `float.hex` strings, which round-trip bit for bit).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from tying_env.errors import WriteFailedError
from tying_env.files import dumps, fsync_dir, write_bytes, write_failed

FORMAT = "layer-tying-gym/checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint"
OLD = "checkpoint.old"
TMP_PREFIX = "checkpoint.tmp-"
MANIFEST = "manifest.json"

Tensors = dict[str, torch.Tensor]
Part = tuple[Tensors, dict[str, Any]]


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or does not match the run it should continue."""


# ------------------------------------------------------------------ folder I/O
def find_checkpoint(run_dir: str | Path) -> Path | None:
    """`RUN/checkpoint`, else `RUN/checkpoint.old` (a write killed between renames)."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, OLD):
        if (run_dir / name).is_dir():
            return run_dir / name
    return None


def remove_checkpoints(run_dir: str | Path) -> None:
    """Delete every checkpoint folder of `run_dir` (complete, old, or half-written)."""
    run_dir = Path(run_dir)
    for path in [run_dir / CHECKPOINT, run_dir / OLD, *run_dir.glob(TMP_PREFIX + "*")]:
        if path.is_dir():
            shutil.rmtree(path)


def write_checkpoint(run_dir: str | Path, parts: Mapping[str, Part]) -> Path:
    """Atomically replace `RUN/checkpoint` with `parts` (see the module docstring)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(TMP_PREFIX + "*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    files: dict[str, bytes] = {}
    for name, (tensors, meta) in parts.items():
        if not name.isidentifier():
            raise ValueError(f"checkpoint part name {name!r} must be an identifier")
        plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        files[f"{name}.safetensors"] = save_tensors(plain)
        files[f"{name}.json"] = dumps(meta)
    manifest = {
        "format": FORMAT, "version": VERSION, "parts": list(parts),
        "files": {f: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for f, data in files.items()},
    }
    tmp = run_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    current, old = run_dir / CHECKPOINT, run_dir / OLD
    try:
        tmp.mkdir()
        for name, data in files.items():
            write_bytes(tmp / name, data)
        write_bytes(tmp / MANIFEST, dumps(manifest))  # last: its presence means complete
        fsync_dir(tmp)
        if current.is_dir():
            if old.is_dir():
                shutil.rmtree(old)
            os.replace(current, old)
        os.replace(tmp, current)
        fsync_dir(run_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        size = sum(len(data) for data in files.values()) / 2**20
        kept = find_checkpoint(run_dir)
        previous = (f"the previous checkpoint ({kept}) is intact" if kept is not None
                    else "there is no earlier checkpoint")
        failed = write_failed(tmp, e)
        raise WriteFailedError(failed.path, f"{failed}; a checkpoint of this run needs about "
                                            f"{size:.1f} MiB; {previous}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(run_dir / OLD, ignore_errors=True)
    return current


def read_checkpoint(run_dir: str | Path) -> dict[str, Part]:
    """The verified parts of `RUN`'s checkpoint; `CheckpointError` names any damage."""
    folder = find_checkpoint(run_dir)
    if folder is None:
        expected = Path(run_dir) / CHECKPOINT / MANIFEST
        raise CheckpointError(f"{run_dir} holds no checkpoint (expected {expected}); was the run "
                              "started with --checkpoint-every 0, or killed before its first "
                              "checkpoint?")
    manifest = _read_manifest(folder)
    data: dict[str, bytes] = {}
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {folder / MANIFEST})")
        blob = path.read_bytes()
        if len(blob) != entry["bytes"]:
            raise CheckpointError(f"{path} has {len(blob)} bytes, the manifest lists "
                                  f"{entry['bytes']}: the file was truncated or changed")
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise CheckpointError(f"{path}: sha256 does not match {MANIFEST}: the file was "
                                  "changed or corrupted")
        data[name] = blob
    parts: dict[str, Part] = {}
    for part in manifest["parts"]:
        tensor_file, meta_file = f"{part}.safetensors", f"{part}.json"
        if tensor_file not in data or meta_file not in data:
            raise CheckpointError(f"{folder / MANIFEST} lists part {part!r} without "
                                  f"{tensor_file} and {meta_file}")
        try:
            tensors = load_tensors(data[tensor_file])
        except (SafetensorError, ValueError) as e:
            raise CheckpointError(f"{folder / tensor_file} is not a valid safetensors file "
                                  f"({e})") from None
        try:
            meta = json.loads(data[meta_file])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{folder / meta_file} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{folder / meta_file} must hold a JSON object")
        parts[part] = (tensors, meta)
    return parts


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {folder} is not a complete checkpoint")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}): truncated or changed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path} has version {manifest.get('version')!r}; this code reads "
                              f"version {VERSION}")
    files, parts = manifest.get("files"), manifest.get("parts")
    ok_files = isinstance(files, dict) and all(
        isinstance(name, str) and "/" not in name and name not in (".", "..")
        and isinstance(e, dict) and isinstance(e.get("bytes"), int)
        and isinstance(e.get("sha256"), str) for name, e in files.items())
    ok_parts = isinstance(parts, list) and all(isinstance(p, str) and p.isidentifier()
                                               for p in parts)
    if not (ok_files and ok_parts):
        raise CheckpointError(f"{path} is malformed (expected 'parts' and 'files' with bytes "
                              "and sha256 per file)")
    return manifest


# ------------------------------------------------------------------ exact values
def exact(x: float) -> str:
    """A float as a JSON string that round-trips exactly, NaN and inf included."""
    return float(x).hex()


def from_exact(s: str) -> float:
    """Inverse of `exact`."""
    return float.fromhex(s)


def prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> Tensors:
    """`tensors` with `prefix` added to every key."""
    return {prefix + k: v for k, v in tensors.items()}


def sub(tensors: Mapping[str, torch.Tensor], prefix: str) -> Tensors:
    """The entries of `tensors` under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def differences(expected: Mapping[str, Any], found: Mapping[str, Any],
                names: tuple[str, str] = ("the run", "the checkpoint")) -> list[str]:
    """`key: A in <first>, B in <second>` for every key whose values differ."""
    out = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key, "<absent>"), found.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: {a!r} in {names[0]}, {b!r} in {names[1]}")
    return out


# ------------------------------------------------------------------ modules and optimizers
def module_state(module: nn.Module) -> Part:
    """`module.state_dict()` with aliases (one tensor under two keys) stored once."""
    tensors: Tensors = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, value in module.state_dict().items():
        ident = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(),
                 tuple(value.shape), value.dtype)
        if value.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    return tensors, {"aliases": aliases}


def load_module_state(module: nn.Module, tensors: Mapping[str, torch.Tensor],
                      meta: Mapping[str, Any], what: str = "module") -> None:
    """Load a `module_state` part strictly; ValueError naming missing or odd keys."""
    state = dict(tensors)
    for alias, key in meta.get("aliases", {}).items():
        if key in state:
            state[alias] = state[key]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"the {what} weights do not fit: {e}") from None


def optimizer_state(optimizer: torch.optim.Optimizer) -> Part:
    """A torch optimizer's `state_dict()` as tensors plus JSON (per-parameter state by index)."""
    sd = optimizer.state_dict()
    tensors: Tensors = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}/{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


IMPLEMENTATION_FLAGS = ("fused", "foreach")  # kept from the optimizer that loads a state


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                         meta: Mapping[str, Any]) -> None:
    """Inverse of `optimizer_state` (tuples such as AdamW's `betas` come back as tuples).

    The optimizer gets copies: `Optimizer.load_state_dict` keeps a given tensor of the
    right dtype and device as it is, and its steps would then change the saved state.
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition("/")
        state.setdefault(int(index), {})[name] = value.clone()
    for index, entries in meta.get("plain_state", {}).items():
        state.setdefault(int(index), {}).update(entries)
    groups = [dict(g) for g in meta["param_groups"]]
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"the optimizer state has {len(groups)} parameter groups, "
                              f"the optimizer {len(optimizer.param_groups)}")
    for saved, current in zip(groups, optimizer.param_groups, strict=True):
        for key, value in current.items():
            if isinstance(value, tuple) and isinstance(saved.get(key), list):
                saved[key] = tuple(saved[key])
            if key in IMPLEMENTATION_FLAGS:  # how this process computes the update, not what
                saved[key] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"the optimizer state does not fit: {e}") from None


# ------------------------------------------------------------------ random generators
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    """The JSON-able state of a numpy `Generator`."""
    return generator.bit_generator.state


def make_generator(state: Mapping[str, Any]) -> np.random.Generator:
    """A numpy `Generator` in the state written by `generator_state`."""
    kind = state.get("bit_generator")
    if kind not in BIT_GENERATORS:
        raise CheckpointError(f"bit_generator={kind!r} is unknown; allowed: "
                              f"{', '.join(BIT_GENERATORS)}")
    generator = np.random.Generator(getattr(np.random, kind)())
    generator.bit_generator.state = dict(state)
    return generator


def global_rng_state() -> Part:
    """Python's, NumPy's and torch's global generators (and CUDA's, when initialised)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(),
               "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s
    meta = {"python": [version, list(words), None if gauss is None else exact(gauss)],
            "numpy": [kind, int(pos), int(has_gauss), exact(cached)],
            "cuda": cuda}
    return tensors, meta


def global_rng_setter(tensors: Mapping[str, torch.Tensor],
                      meta: Mapping[str, Any]) -> Callable[[], None]:
    """Check a `global_rng_state` part now; the returned function applies it later."""
    try:
        version, words, gauss = meta["python"]
        python = (int(version), tuple(int(w) for w in words),
                  None if gauss is None else from_exact(gauss))
        kind, pos, has_gauss, cached = meta["numpy"]
        numpy = (str(kind), tensors["numpy"].numpy().astype(np.uint32), int(pos),
                 int(has_gauss), from_exact(cached))
        torch_state = tensors["torch"]
        cuda_keys = sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k[5:]))
        cuda = [tensors[k] for k in cuda_keys] if meta.get("cuda") else []
        if torch_state.dtype != torch.uint8 or len(python[1]) != 625 or len(numpy[1]) != 624:
            raise ValueError("wrong sizes or types")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"the saved random generator states are malformed ({e})") from None

    def apply() -> None:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(torch_state)
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)

    return apply


def require(meta: Mapping[str, Any], keys: Iterable[str], what: str) -> None:
    """CheckpointError unless every key is present in `meta`."""
    missing = [k for k in keys if k not in meta]
    if missing:
        raise CheckpointError(f"the {what} state lacks {', '.join(missing)}")
