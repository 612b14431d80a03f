"""Show that a refactor changed no behaviour: the same runs give the same results, bit for bit.

Each agent is trained for one episode (`train_agent.py`, same seed) on two versions of the
code, "before" and "after", and the runs are compared:

- `result.json`: every key and value, as this version reads it (a file written before
  the format had an id reads as this version writes it, `agents.runs.result`), except
  the timing fields (`agents.runs.result.TIMING_FIELDS`);
- `log.jsonl`: every line, except its timing fields (`wall_s`, `timestamp`);
- `compact/*.safetensors`: every tensor, by name, dtype, shape and value (`torch.equal`).

JSON values must be exactly equal after parsing (floats bit for bit, `1` is not `1.0`).
A key present only on the after side is a difference unless it is named in `--allow-added`
(then it is reported as "added (allowed)"). Exit status: 0 when every agent is equal, 1 when
one differs or a run fails, 2 for bad options.

A side given as a git revision is extracted with `git archive REV | tar -x` into the work
folder (nothing is written into the repository); the default after side is the working tree
of the repository this script lives in. Each side runs with its own root first on
PYTHONPATH, and the script checks that it really imports its own `agents` and
`tying_env` (the virtualenv's editable install points at this repository). Both sides
run on the CPU with one thread and their own fresh corpus cache, so that runs repeat exactly.

Run it from anywhere, with the project's Python:

    .venv/bin/python scripts/same_behaviour.py                       # 9e5acf6 vs working tree
    .venv/bin/python scripts/same_behaviour.py --before 9e5acf6 --after HEAD --agents cycle
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from agents.runs.result import FILE as RESULT_FILE
from agents.runs.result import TIMING_FIELDS, RunResult

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = "9e5acf6"  # the commit before the package restructure
DEFAULT_AGENTS = "qlearning,maskable-ppo,cycle"
DEFAULT_ALLOW_ADDED = "budget"
LOG_TIMING_FIELDS = frozenset({"wall_s", "timestamp"})
PACKAGES = ("agents", "tying_env")  # must be imported from the side's own root
MAX_SHOWN = 5  # differences printed per agent
STDERR_TAIL = 40  # lines of a failed run's stderr that are printed
# the same on both sides: CPU only, one thread (the thread count changes the last bits)
RUN_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ written into the compared trees
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
# prints every loaded module file; train_agent.py is run without calling main()
IMPORT_PROBE = """\
import runpy, sys
runpy.run_path("train_agent.py", run_name="import_probe")
for name, module in sorted(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if path:
        print(name, path, sep="\\t")
"""


class CheckFailed(Exception):
    """The comparison cannot be made (a run failed, a side imports the wrong code, ...)."""


@dataclass(frozen=True)
class Side:
    """One version of the code: a name, where it came from and the folder it runs in."""

    name: str  # "before" or "after"
    label: str  # the revision, or "working tree"
    root: Path


@dataclass(frozen=True)
class Difference:
    """One difference between the two sides, at a key path such as `log.jsonl:3.reward`."""

    path: str
    kind: str  # "changed", "added", "removed" or "added (allowed)"
    before: Any = None
    after: Any = None

    @property
    def counts(self) -> bool:
        return self.kind != "added (allowed)"

    def __str__(self) -> str:
        if self.kind == "changed":
            return f"{self.path}: before {_show(self.before)}, after {_show(self.after)}"
        value = self.after if self.kind.startswith("added") else self.before
        return f"{self.path}: {self.kind} ({_show(value)})"


@dataclass
class Comparison:
    """Everything found for one agent."""

    differences: list[Difference] = field(default_factory=list)
    log_lines: int = 0
    tensors: int = 0

    @property
    def real(self) -> list[Difference]:
        return [d for d in self.differences if d.counts]

    @property
    def allowed(self) -> list[Difference]:
        return [d for d in self.differences if not d.counts]


def _show(value: Any, limit: int = 120) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- comparing values
def same_value(a: Any, b: Any) -> bool:
    """Exact equality of parsed JSON leaves: same type, floats bit for bit (NaN included)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def compare_json(before: Any, after: Any, path: str, allow_added: frozenset[str],
                 ignore: frozenset[str] = frozenset()) -> list[Difference]:
    """The differences between two parsed JSON values; `ignore` names top-level keys."""
    if isinstance(before, dict) and isinstance(after, dict):
        return _compare_dicts(before, after, path, allow_added, ignore)
    if isinstance(before, list) and isinstance(after, list):
        return _compare_lists(before, after, path, allow_added)
    return [] if same_value(before, after) else [Difference(path, "changed", before, after)]


def _compare_dicts(before: dict[str, Any], after: dict[str, Any], path: str,
                   allow_added: frozenset[str], ignore: frozenset[str]) -> list[Difference]:
    found: list[Difference] = []
    for key in before.keys() | after.keys():
        if key in ignore:
            continue
        where = f"{path}.{key}" if path else key
        if key not in after:
            found.append(Difference(where, "removed", before=before[key]))
        elif key not in before:
            kind = "added (allowed)" if key in allow_added else "added"
            found.append(Difference(where, kind, after=after[key]))
        else:
            found += compare_json(before[key], after[key], where, allow_added)
    return sorted(found, key=lambda d: d.path)


def _compare_lists(before: list[Any], after: list[Any], path: str,
                   allow_added: frozenset[str]) -> list[Difference]:
    found: list[Difference] = []
    for i, (a, b) in enumerate(zip(before, after, strict=False)):
        found += compare_json(a, b, f"{path}[{i}]", allow_added)
    found += [Difference(f"{path}[{i}]", "removed", before=v)
              for i, v in enumerate(before[len(after):], start=len(after))]
    found += [Difference(f"{path}[{i}]", "added", after=v)
              for i, v in enumerate(after[len(before):], start=len(before))]
    return found


# ---------------------------------------------------------------- comparing run folders
def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare_results(before: Path, after: Path, allow_added: frozenset[str]) -> list[Difference]:
    """`result.json` of two run folders."""
    return compare_json(_result(before), _result(after), RESULT_FILE, allow_added,
                        TIMING_FIELDS)


def _result(folder: Path) -> dict[str, Any]:
    """`result.json` as this version writes it: a file written before the format had an
    id reads as the same result (`agents.runs.result`)."""
    return RunResult.from_json(json.loads((folder / RESULT_FILE).read_text())).to_json()


def compare_logs(before: Path, after: Path,
                 allow_added: frozenset[str]) -> tuple[list[Difference], int]:
    """Every line of `log.jsonl`; also returns the number of line pairs compared."""
    lines_before = read_jsonl(before / "log.jsonl")
    lines_after = read_jsonl(after / "log.jsonl")
    found: list[Difference] = []
    for number, (a, b) in enumerate(zip(lines_before, lines_after, strict=False), start=1):
        found += compare_json(a, b, f"log.jsonl:{number}", allow_added, LOG_TIMING_FIELDS)
    if len(lines_before) != len(lines_after):
        found.append(Difference("log.jsonl (lines)", "changed",
                                len(lines_before), len(lines_after)))
    return found, min(len(lines_before), len(lines_after))


def compare_weights(before: Path, after: Path) -> tuple[list[Difference], int]:
    """Every tensor of `compact/*.safetensors`; also returns the number compared."""
    files_before = sorted(p.name for p in (before / "compact").glob("*.safetensors"))
    files_after = sorted(p.name for p in (after / "compact").glob("*.safetensors"))
    if not files_before and not files_after:
        raise CheckFailed(f"no compact/*.safetensors in {before} or {after}: nothing to compare")
    found = compare_json(files_before, files_after, "compact (files)", frozenset())
    compared = 0
    for name in sorted(set(files_before) & set(files_after)):
        a = load_file(before / "compact" / name)
        b = load_file(after / "compact" / name)
        found += compare_json(sorted(a), sorted(b), f"compact/{name} (tensor names)", frozenset())
        for key in sorted(a.keys() & b.keys()):
            compared += 1
            x, y = a[key], b[key]
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                found.append(Difference(f"compact/{name}:{key}", "changed",
                                        _describe_tensor(x), _describe_tensor(y)))
    return found, compared


def _describe_tensor(t: Any) -> str:
    flat = t.flatten()[:3].tolist()
    return f"{t.dtype} {tuple(t.shape)} starting {flat}"


def compare_runs(before: Path, after: Path, allow_added: frozenset[str]) -> Comparison:
    result = Comparison(differences=compare_results(before, after, allow_added))
    log_diffs, result.log_lines = compare_logs(before, after, allow_added)
    weight_diffs, result.tensors = compare_weights(before, after)
    result.differences += log_diffs + weight_diffs
    return result


# ---------------------------------------------------------------- sides and runs
def resolve(rev: str) -> str:
    """The full commit id of `rev` in this repository."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet",
                           f"{rev}^{{commit}}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckFailed(f"{rev!r} is not a commit of {REPO}")
    return done.stdout.strip()


def materialize(rev: str, dest: Path) -> Path:
    """Extract the tree of `rev` into `dest` with git archive (the repository is untouched)."""
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", rev],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert archive.stdout is not None
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout,
                           capture_output=True, text=True)
    archive.stdout.close()
    git_err = archive.stderr.read().decode() if archive.stderr else ""
    if archive.wait() != 0 or untar.returncode != 0:
        raise CheckFailed(f"cannot extract revision {rev!r}: {git_err.strip()} "
                          f"{untar.stderr.strip()}".strip())
    return dest


def make_side(name: str, rev: str | None, work: Path) -> Side:
    if rev is None:
        return Side(name, "working tree", REPO)
    commit = resolve(rev)
    label = rev if commit.startswith(rev) else f"{rev} = {commit[:12]}"
    return Side(name, label, materialize(commit, work / "tree" / name))


def side_env(side: Side, work: Path) -> dict[str, str]:
    """The environment of a side's processes: its root first on PYTHONPATH, RUN_ENV."""
    env = dict(os.environ)
    env.update(RUN_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(side.root), env.get("PYTHONPATH")) if p)
    env["LAYER_TYING_CACHE"] = str(work / "cache" / side.name)  # fresh, one per side
    return env


def _owner(path: Path, roots: Iterable[Path]) -> Path | None:
    """The innermost of `roots` that holds `path`."""
    holders = [r for r in roots if path.is_relative_to(r)]
    return max(holders, key=lambda r: len(r.parts), default=None)


def check_imports(side: Side, sides: Sequence[Side], work: Path) -> str:
    """Fail unless the side's train_agent.py loads project code only from the side's root."""
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=side.root,
                          env=side_env(side, work), capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckFailed(f"{side.name}: importing train_agent.py failed:\n"
                          + _tail(done.stderr))
    modules = {name: Path(path).resolve() for name, path in
               (line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
               if Path(path).is_absolute()}  # torch.ops and torch.classes name no real file
    roots = {s.root.resolve() for s in sides} | {REPO}
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}  # .venv may be in REPO
    own = side.root.resolve()
    wrong = [f"{p} from {modules.get(p, 'nowhere')}" for p in PACKAGES
             if p not in modules or _owner(modules[p], roots) != own]
    wrong += [f"{name} from {path}" for name, path in sorted(modules.items())
              if name not in PACKAGES and _owner(path, installed) is None
              and _owner(path, roots) not in (None, own)]
    if wrong:
        shown = "; ".join(wrong[:MAX_SHOWN]) + ("; ..." if len(wrong) > MAX_SHOWN else "")
        raise CheckFailed(f"{side.name} ({side.root}) does not import its own code "
                          f"({len(wrong)} modules): {shown}")
    return str(modules["agents"])


def train(side: Side, agent: str, seed: int, work: Path) -> float:
    """Run train_agent.py for one agent on one side; returns its wall time in seconds."""
    out = work / side.name / agent
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "train_agent.py", "--agent", agent, "--seed", str(seed),
               "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=side.root, env=side_env(side, work),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (out.parent / f"{agent}.stderr.txt").write_text(done.stderr)
    if done.returncode != 0:
        raise CheckFailed(f"{side.name} ({side.label}): {agent} exited with status "
                          f"{done.returncode}; stderr ends with:\n" + _tail(done.stderr))
    return seconds


def _tail(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-STDERR_TAIL:])


# ---------------------------------------------------------------- report
def report(agent: str, comparison: Comparison) -> None:
    counts = (f"result.json, {comparison.log_lines} log lines, "
              f"{comparison.tensors} tensors compared")
    real, allowed = comparison.real, comparison.allowed
    print(f"[{agent}] {'equal' if not real else f'{len(real)} DIFFERENCES'} ({counts})")
    for difference in allowed[:MAX_SHOWN]:
        print(f"    {difference}")
    if len(allowed) > MAX_SHOWN:
        print(f"    ... {len(allowed) - MAX_SHOWN} more added (allowed)")
    for difference in real[:MAX_SHOWN]:
        print(f"    {difference}")
    if len(real) > MAX_SHOWN:
        print(f"    ... {len(real) - MAX_SHOWN} more differences")


def check_agent(agent: str, sides: Sequence[Side], seed: int, work: Path,
                allow_added: frozenset[str]) -> bool:
    for side in sides:
        seconds = train(side, agent, seed, work)
        print(f"[{agent}] {side.name} ran in {seconds:.1f} s", flush=True)
    comparison = compare_runs(work / "before" / agent, work / "after" / agent, allow_added)
    report(agent, comparison)
    return not comparison.real


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE, metavar="REV",
                        help=f"git revision of the old code (default {DEFAULT_BEFORE})")
    parser.add_argument("--after", metavar="REV",
                        help=f"git revision of the new code (default: the working tree {REPO})")
    parser.add_argument("--agents", default=DEFAULT_AGENTS,
                        help=f"comma-separated agent names (default {DEFAULT_AGENTS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument("--work", type=Path, metavar="DIR",
                        help="folder for the trees and the runs (default: a fresh temp folder)")
    parser.add_argument("--allow-added", default=DEFAULT_ALLOW_ADDED, metavar="KEYS",
                        help="comma-separated keys the after side may add "
                             f"(default {DEFAULT_ALLOW_ADDED}; '' for none)")
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def prepare_work(work: Path | None) -> Path:
    if work is None:
        return Path(tempfile.mkdtemp(prefix="same-behaviour-"))
    work = work.resolve()
    taken = [work / n for n in ("before", "after", "tree", "cache") if (work / n).exists()]
    if taken:
        raise CheckFailed(f"{work} already holds {', '.join(map(str, taken))}; "
                          "pass an empty or new --work folder")
    work.mkdir(parents=True, exist_ok=True)
    return work


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    agents, allow_added = _names(args.agents), frozenset(_names(args.allow_added))
    started = time.perf_counter()
    try:
        work = prepare_work(args.work)
        print(f"work folder: {work}")
        sides = [make_side("before", args.before, work), make_side("after", args.after, work)]
        for side in sides:
            print(f"{side.name}: {side.label} at {side.root} "
                  f"(agents from {check_imports(side, sides, work)})", flush=True)
        equal = {agent: check_agent(agent, sides, args.seed, work, allow_added)
                 for agent in agents}
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{a} {'equal' if ok else 'DIFFERENT'}" for a, ok in equal.items())
    print(f"summary: {summary} ({time.perf_counter() - started:.0f} s)")
    return 0 if all(equal.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
