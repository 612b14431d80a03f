"""`python -m agents.benchmark.validate`: check a results file by re-running some of its cells.

A leaderboard entry is a benchmark's `results.json`. This command takes nothing in it on
trust: it re-runs a sample of the file's finished cells, each exactly as the benchmark
ran it (the same request, one cell, the recorded threads per worker, through the same
launcher), and compares what the rerun computed with what the file says.

    python -m agents.benchmark.validate docs/results/leaderboard/tiny.json --sample 2
    python -m agents.benchmark.validate RESULTS.json --cells qlearning-s0,random-s3

| check       | passes when                                                              |
|-------------|--------------------------------------------------------------------------|
| reproduced  | every value the cell records (its run result and episode return; times   |
|             | excluded) equals the rerun's: bitwise on the same platform and threads,  |
|             | else within `--rtol` (numbers; everything else must be equal); settings  |
|             | an older file does not record are not compared                           |
| source      | the agent's code fingerprint (`agents.runs.source`) recorded by the cell |
|             | equals today's: the rerun ran the submitted code (files from before      |
|             | fingerprints were recorded say "not recorded", and are not failed)       |

The same platform means the same CPU architecture, PyTorch version, CUDA or not, and
threads per worker as the file's `machine`; results are bitwise equal only then. Elsewhere
the tolerance is `DEFAULT_RTOL` unless `--rtol` says otherwise; an agent that acts on
small differences (an argmax over near-equal values) may still choose other ties there,
and the check then fails honestly. Reruns go to `--out` (default: a new temporary
folder), which must be new or empty; the report is printed and written to
`OUT/validation.json`. The reruns use this checkout's code: to re-run what made an
older file, check out the commit it records (`code.commit`; the report names it).

Exit status: 0 when every sampled cell reproduced with the recorded source, 1 otherwise,
2 for bad options.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.benchmark.cells import make_request
from agents.runs.result import RunResult
from tying_env.errors import SettingError
from tying_env.files import read_json, write_json

Json = dict[str, Any]
DEFAULT_RTOL = 1e-3  # elsewhere than the recorded platform
# what differs between two runs of the same computation: times, and where files went
NOT_COMPARED = ("files", "agent_source")


def finished_cells(results: Json) -> dict[str, Json]:
    """The finished cells of a results file, by name."""
    return {c["name"]: c for c in results.get("cells") or [] if c.get("status") == "finished"}


def choose(cells: Mapping[str, Json], names: Sequence[str] | None, sample: int,
           seed: int) -> list[str]:
    """The cells to re-run: `names` (each must be a finished cell), or `sample` of them
    drawn without replacement by a generator seeded with `seed`."""
    if names:
        unknown = [n for n in names if n not in cells]
        if unknown:
            raise SettingError("cells", f"{', '.join(unknown)} not among the file's finished "
                                        f"cells; allowed: {', '.join(sorted(cells))}")
        return list(names)
    if sample < 1:
        raise SettingError("sample", f"{sample!r} is not allowed; expected an int >= 1")
    ordered = sorted(cells)
    picked = np.random.default_rng(seed).choice(len(ordered), size=min(sample, len(ordered)),
                                                replace=False)
    return [ordered[i] for i in sorted(picked)]


def same_platform(recorded: Mapping[str, Any], threads: int) -> bool:
    """Whether this machine matches a results file's `machine` where results depend on it."""
    import torch

    return (recorded.get("machine") == platform.machine()
            and recorded.get("torch") == torch.__version__
            and bool(recorded.get("cuda")) == torch.cuda.is_available()
            and recorded.get("threads_per_worker") == threads)


def compared(cell: Mapping[str, Any], keys: Mapping[str, Any] | None = None) -> Json:
    """What a cell records that a rerun must reproduce: its result as this version writes
    it (times and file lists excluded; with `keys`, the file's recorded result, only the
    keys the file has) and its episode return."""
    result = RunResult.from_json(cell.get("result") or {}).to_json()
    result = {k: v for k, v in result.items() if k not in NOT_COMPARED
              and (keys is None or k in keys or k in ("format", "format_version"))}
    return {"result": drop_times(result), "episode_return": cell.get("episode_return")}


def recorded_only(rerun: Any, recorded: Any) -> Any:
    """`rerun` without the keys `recorded` lacks, at any depth: a file written by an
    earlier version records fewer settings (e.g. settings added since, at their
    defaults), and what it does not record cannot be checked."""
    if isinstance(rerun, Mapping) and isinstance(recorded, Mapping):
        return {k: recorded_only(v, recorded[k]) for k, v in rerun.items() if k in recorded}
    return rerun


def drop_times(value: Any) -> Any:
    """`value` without the keys that hold times (`*seconds`), at any depth."""
    if isinstance(value, Mapping):
        return {k: drop_times(v) for k, v in value.items() if not str(k).endswith("seconds")}
    if isinstance(value, list):
        return [drop_times(v) for v in value]
    return value


def differences(recorded: Any, rerun: Any, rtol: float, where: str = "") -> list[str]:
    """`path: recorded -> rerun` for every leaf that differs (numbers beyond `rtol`)."""
    if isinstance(recorded, Mapping) and isinstance(rerun, Mapping):
        out = []
        for key in sorted(set(recorded) | set(rerun), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in recorded or key not in rerun:
                out.append(f"{path}: {recorded.get(key, '(absent)')!r} -> "
                           f"{rerun.get(key, '(absent)')!r}")
            else:
                out += differences(recorded[key], rerun[key], rtol, path)
        return out
    if isinstance(recorded, list) and isinstance(rerun, list) and len(recorded) == len(rerun):
        return [d for i, (a, b) in enumerate(zip(recorded, rerun, strict=True))
                for d in differences(a, b, rtol, f"{where}[{i}]")]
    if _number(recorded) and _number(rerun):
        if recorded == rerun or (rtol > 0 and math.isclose(recorded, rerun, rel_tol=rtol)):
            return []
    elif recorded == rerun:
        return []
    return [f"{where}: {recorded!r} -> {rerun!r}"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def source_check(cell: Mapping[str, Any]) -> str:
    """`same`, `changed` or `not recorded`: the cell's agent code against today's."""
    import agents
    from agents.runs.source import agent_source

    recorded = (cell.get("result") or {}).get("agent_source")
    if not recorded:
        return "not recorded"
    try:
        today = agent_source(agents.factory(cell["agent"]))
    except ValueError:
        return "changed"
    return "same" if today["sha256"] == recorded.get("sha256") else "changed"


def rerun(results: Json, cell: Json, out: Path) -> Json | None:
    """Run one cell of `results` again, as its benchmark did, into `out`; the rerun's
    cell entry (None when it did not finish)."""
    from agents.benchmark.launcher import run_request
    from agents.benchmark.tracks import TRACKS, prepare

    request = results["request"]
    track = request.get("track")
    if track and track.get("name") in TRACKS:
        prepare(TRACKS[track["name"]])  # e.g. the offline WikiText-2 split
    agent, seed = cell["agent"], cell["seed"]
    one = make_request(request["env_id"], request["env_kwargs"], [agent], [seed], workers=1,
                       out=out, agent_kwargs={agent: (request.get("agent_kwargs") or {})
                                              .get(agent, {})},
                       cache_dir=request.get("cache_dir"), threads=request["threads"],
                       train_episodes=request.get("train_episodes") or 0,
                       eval_episodes=request.get("eval_episodes") or 3, track=track,
                       train_env_id=request.get("train_env_id"))
    done = run_request(one, progress=False)
    return next((c for c in done["cells"] if c["status"] == "finished"), None)


def validate(path: Path, *, names: Sequence[str] | None = None, sample: int = 2,
             seed: int = 0, rtol: float | None = None, out: Path | None = None) -> Json:
    """Re-run the chosen cells of the results file at `path`; the validation report."""
    results = read_json(path)
    if not isinstance(results, dict) or not isinstance(results.get("request"), dict):
        raise SettingError("results", f"{path} is not a benchmark's results.json (no "
                                      "request recorded)")
    cells = finished_cells(results)
    if not cells:
        raise SettingError("results", f"{path} has no finished cell to re-run")
    chosen = choose(cells, names, sample, seed)
    threads = int(results["request"]["threads"])
    bitwise = same_platform(results.get("machine") or {}, threads)
    tolerance = 0.0 if rtol is None and bitwise else (DEFAULT_RTOL if rtol is None else rtol)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="validate-"))
    elif out.exists() and any(out.iterdir()):
        raise SettingError("out", f"{out} is not empty; give a new folder (reruns never "
                                  "replace earlier files)")
    checks = []
    for name in chosen:
        again = rerun(results, cells[name], out / name)
        recorded = compared(cells[name], cells[name].get("result") or {})
        diffs = (["the rerun did not finish"] if again is None else
                 differences(recorded, recorded_only(compared(again), recorded), tolerance))
        source = source_check(cells[name])
        checks.append({"cell": name, "reproduced": not diffs, "differences": diffs,
                       "source": source, "ok": not diffs and source != "changed"})
    from agents.benchmark.report import code_version

    recorded_commit = (results.get("code") or {}).get("commit")
    return {"results": str(path), "commit": recorded_commit,
            "this_commit": code_version().get("commit"), "same_platform": bitwise,
            "rtol": tolerance, "threads": threads, "sample_seed": seed, "cells": checks,
            "out": str(out),
            "ok": all(c["ok"] for c in checks)}


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The printed report."""
    how = ("bitwise (same platform and threads)" if report["rtol"] == 0 else
           f"within rtol {report['rtol']:g}" + ("" if report["same_platform"]
                                                else " (another platform or thread count)"))
    lines = [f"validating {report['results']}: {len(report['cells'])} cell(s), {how}"]
    if report["commit"] and report["commit"] != report["this_commit"]:
        lines.append(f"  note: the file was made at commit {report['commit'][:12]}, this "
                     f"checkout is {str(report['this_commit'])[:12]}: check that commit out "
                     "to re-run the code that made it")
    for c in report["cells"]:
        verdict = "reproduced" if c["reproduced"] else "DIFFERS"
        lines.append(f"  {c['cell']}: {verdict}; agent source {c['source']}")
        lines += [f"    {d}" for d in c["differences"][:10]]
        if len(c["differences"]) > 10:
            lines.append(f"    ... and {len(c['differences']) - 10} more")
    lines.append("valid" if report["ok"] else "NOT valid")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.benchmark.validate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a benchmark's results.json")
    parser.add_argument("--cells", help="cells to re-run, e.g. qlearning-s0,random-s3 "
                                        "(default: a sample)")
    parser.add_argument("--sample", type=int, default=2, help="cells drawn at random (2)")
    parser.add_argument("--sample-seed", type=int, default=0, help="the draw's seed (0)")
    parser.add_argument("--rtol", type=float, help="relative tolerance for numbers (default: "
                        f"0 on the recorded platform, else {DEFAULT_RTOL:g})")
    parser.add_argument("--out", type=Path, help="where the reruns go (default: a new "
                                                 "temporary folder)")
    args = parser.parse_args(argv)
    if args.rtol is not None and not (args.rtol >= 0):
        parser.error(f"argument --rtol: {args.rtol!r} is not allowed; expected a number >= 0")
    names = [n.strip() for n in args.cells.split(",")] if args.cells else None
    try:
        report = validate(args.results, names=names, sample=args.sample,
                          seed=args.sample_seed, rtol=args.rtol, out=args.out)
    except SettingError as e:
        parser.error(f"argument --{e.argument}: {e}" if e.argument != "results" else str(e))
    write_json(Path(report["out"]) / "validation.json", report)
    print("\n".join(report_lines(report)))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
