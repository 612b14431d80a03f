"""Grade course notebooks: run each in a fresh kernel, check its answers, write the points.

    python -m agents.course.grade tutorial-student.ipynb          # a student: one notebook
    python -m agents.course.grade submissions/ --out grades/      # a teacher: a folder

Each notebook runs top to bottom in a fresh Jupyter kernel (nbclient), in a temporary
folder that is deleted afterwards (temporary files included: the kernel's `TMPDIR` is
inside it). A cell that raises does not stop the run; it is listed, and the exercises
that needed it lose their points. A last cell, added by the grader, reads the graded names
(`agents.course.checks.snapshot`); the checks then run here. Nothing needs a network: the
kernel runs with the Hugging Face libraries offline.

Writes `OUT/NAME.grade.json` per notebook (the points per exercise and check, and why a
check failed) and, for a folder or several notebooks, `OUT/grades.csv` and `OUT/grades.md`:
one row per notebook (student), one column per exercise. Grading again replaces these files.
Exit status 1 when a notebook could not be graded at all (it is listed with 0 points).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.course.checks import EXERCISES, ExerciseResult, grade
from tying_env.files import write_json, write_text

GRADE_SUFFIX = ".grade.json"
TABLE_CSV, TABLE_MD = "grades.csv", "grades.md"
CELL_TIMEOUT_S = 600
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `agents` and `tying_env` are
SNAPSHOT_CELL = """\
# added by the grader: the graded names, as JSON
import agents.course.checks as _grader_checks
from tying_env.files import write_json as _grader_write_json
_grader_write_json({path}, _grader_checks.snapshot(globals()))
"""
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class GradingError(RuntimeError):
    """A notebook that could not be graded at all (not a notebook, its kernel died, ...)."""


@dataclass
class Execution:
    """What running a notebook gave: the graded names as JSON, and the cells that raised."""

    answers: dict[str, Any]
    errors: list[str] = field(default_factory=list)  # "cell K: Name: message"


@dataclass
class Grade:
    """The points of one notebook."""

    notebook: str
    exercises: list[ExerciseResult]
    errors: list[str]
    failure: str | None = None  # why the notebook could not be graded
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> int:
        return sum(e.max_points for e in self.exercises)

    def to_json(self) -> dict[str, Any]:
        """The grade file's content (no timing: grading the same notebook gives the same)."""
        return {"notebook": self.notebook, "points": self.points,
                "max_points": self.max_points,
                "exercises": [{"number": e.number, "title": e.title, "points": e.points,
                               "max_points": e.max_points,
                               "checks": [asdict(c) for c in e.checks]}
                              for e in self.exercises],
                "cell_errors": self.errors, "failure": self.failure}


# ---------------------------------------------------------------- running a notebook
def kernel_env(folder: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: `env` (default: this process's), offline, temporary files
    in `folder`, and this checkout's packages importable."""
    base = dict(os.environ if env is None else env)
    path = [str(PACKAGE_ROOT), *filter(None, base.get("PYTHONPATH", "").split(os.pathsep))]
    return {**base, **OFFLINE, "TMPDIR": str(folder), "PYTHONPATH": os.pathsep.join(path)}


def cell_errors(cells: Sequence[Any]) -> list[str]:
    """'cell K (its first line): Name: message' for each code cell whose output is an error
    (K counts every cell from 1, as the notebook shows them)."""
    found = []
    for k, cell in enumerate(cells, start=1):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") == "error":
                first = (str(cell.get("source", "")).strip().splitlines() or [""])[0][:40]
                message = (str(output.get("evalue", "")).strip().splitlines() or [""])[0]
                found.append(f"cell {k} ({first}): {output.get('ename')}: {message}")
    return found


def execute(notebook: str | Path, *, timeout: int = CELL_TIMEOUT_S,
            env: Mapping[str, str] | None = None) -> Execution:
    """Run `notebook` top to bottom in a fresh kernel and read its graded names.

    `timeout`: seconds per cell (a cell that runs longer is interrupted, as an error);
    `env`: the kernel's environment (default this process's, see `kernel_env`).
    """
    try:
        import nbclient
        import nbformat
    except ImportError as e:
        raise GradingError(f"grading needs nbclient and ipykernel ({e}): pip install "
                           "nbclient ipykernel") from e
    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except (OSError, ValueError) as e:  # nbformat's read errors are ValueErrors
        raise GradingError(f"{notebook}: not a readable notebook ({e})") from e
    with tempfile.TemporaryDirectory(prefix="course-grade-") as name:
        folder = Path(name)
        out = folder / "answers.json"
        nb.cells.append(nbformat.v4.new_code_cell(SNAPSHOT_CELL.format(
            path=json.dumps(str(out)))))
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         allow_errors=True, interrupt_on_timeout=True,
                                         resources={"metadata": {"path": name}})
        try:
            client.execute(env=kernel_env(folder, env))
        except Exception as e:  # the kernel died or could not start
            raise GradingError(f"{notebook}: the kernel stopped ({type(e).__name__}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})"
                               ) from e
        if not out.is_file():
            last = cell_errors(nb.cells[-1:])
            raise GradingError(f"{notebook}: the grader's cell failed: "
                               f"{last[0] if last else 'no answers written'}")
        answers = json.loads(out.read_text(encoding="utf-8"))
    return Execution(answers, cell_errors(nb.cells[:-1]))


def grade_notebook(notebook: str | Path, *, timeout: int = CELL_TIMEOUT_S,
                   env: Mapping[str, str] | None = None) -> Grade:
    """Run and grade one notebook; a notebook that cannot be run gets 0 points and a
    `failure`."""
    start = time.perf_counter()
    try:
        run = execute(notebook, timeout=timeout, env=env)
    except GradingError as e:
        return Grade(Path(notebook).name, grade({}), [], failure=str(e),
                     seconds=time.perf_counter() - start)
    return Grade(Path(notebook).name, grade(run.answers), run.errors,
                 seconds=time.perf_counter() - start)


# ---------------------------------------------------------------- reports
def report(result: Grade) -> str:
    """One notebook's points, exercise by exercise, and why each failed check failed."""
    lines = [f"{result.notebook}: {result.points} / {result.max_points} points"
             f" (graded in {result.seconds:.0f} s)"]
    if result.failure:
        lines.append(f"  not graded: {result.failure}")
    for error in result.errors:
        lines.append(f"  raised: {error}")
    for ex in result.exercises:
        lines.append(f"  Exercise {ex.number} ({ex.title}): {ex.points} / {ex.max_points}")
        for check in ex.checks:
            mark = "ok " if check.points == check.max_points else "-- "
            why = f": {check.why}" if check.why else ""
            lines.append(f"    {mark}{check.what}{why}")
    return "\n".join(lines)


def table_rows(results: Sequence[Grade]) -> list[list[str]]:
    """Header, a row of maximum points, then one row per notebook."""
    numbers = [e.number for e in EXERCISES]
    rows = [["student", *(f"ex{n}" for n in numbers), "total", "cells raised", "not graded"],
            ["(max)", *(str(e.max_points) for e in EXERCISES),
             str(sum(e.max_points for e in EXERCISES)), "", ""]]
    for r in results:
        rows.append([Path(r.notebook).stem, *(str(e.points) for e in r.exercises),
                     str(r.points), str(len(r.errors)), r.failure or ""])
    return rows


def table_csv(results: Sequence[Grade]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table_rows(results))
    return buffer.getvalue()


def table_markdown(results: Sequence[Grade]) -> str:
    header, *rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command line
def notebooks(paths: Sequence[Path]) -> list[Path]:
    """The notebooks named, a folder standing for its `*.ipynb` (not its subfolders)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        if path.is_dir():
            inside = sorted(path.glob("*.ipynb"))
            if not inside:
                raise ValueError(f"{path}: the folder has no .ipynb file")
            found.extend(inside)
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise ValueError(f"{path}: not a .ipynb file or a folder of them")
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems:
            raise ValueError(f"{stems[path.stem]} and {path} have the same name: their grade "
                             "files would collide; rename one")
        stems[path.stem] = path
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agents.course.grade",
        description="Run course notebooks in a fresh kernel and grade their exercises.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="NOTEBOOK_OR_FOLDER",
                        help="notebooks, or folders of notebooks (one per student)")
    parser.add_argument("-o", "--out", type=Path, default=Path("."),
                        help="folder for NAME.grade.json and, for a folder or several "
                             "notebooks, "
                             f"{TABLE_CSV} and {TABLE_MD} (default: the current folder)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S,
                        help=f"seconds per cell before it is interrupted (default "
                             f"{CELL_TIMEOUT_S})")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks graded at once, each in its own kernel (default 1)")
    args = parser.parse_args(argv)
    if args.timeout < 1:
        parser.error(f"--timeout {args.timeout}: must be at least 1 second")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be at least 1")
    try:
        todo = notebooks(args.paths)
    except ValueError as e:
        parser.error(str(e))

    results: list[Grade] = []
    with ExitStack() as stack:
        timeouts = [args.timeout] * len(todo)
        if args.jobs == 1 or len(todo) == 1:
            graded = map(_grade_one, todo, timeouts)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(
                min(args.jobs, len(todo)), mp_context=multiprocessing.get_context("spawn")))
            graded = pool.map(_grade_one, todo, timeouts)
        for path, result in zip(todo, graded, strict=True):
            write_json(args.out / f"{path.stem}{GRADE_SUFFIX}", result.to_json())
            print(report(result), flush=True)
            results.append(result)
    if len(results) > 1 or any(path.is_dir() for path in args.paths):
        write_text(args.out / TABLE_CSV, table_csv(results))
        write_text(args.out / TABLE_MD, table_markdown(results))
        print(f"\n{table_markdown(results)}\nwritten: {args.out / TABLE_CSV}, "
              f"{args.out / TABLE_MD}")
    return 1 if any(r.failure for r in results) else 0


def _grade_one(path: Path, timeout: int) -> Grade:  # for the process pool
    return grade_notebook(path, timeout=timeout)


if __name__ == "__main__":
    sys.exit(main())
