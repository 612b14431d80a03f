"""Write the student copy of the course notebook: every solution replaced by an empty cell.

    python scripts/student_copy.py              # docs/tutorial.ipynb -> tutorial-student.ipynb
    python scripts/student_copy.py IN.ipynb -o OUT.ipynb

A solution is a cell whose metadata tags include `solution`. Each run of consecutive solution
cells becomes one code cell `# your code here` tagged `stub`. Everything else is kept as it is,
the exercise prompts (markdown cells tagged `exercise`) and the given helper cells included,
except that outputs and execution counts are cleared. The copy is refused (exit status 1) when
the notebook has no solution cell, or when an exercise prompt has no solution after it: a
missing tag would otherwise hand the students the answers.

Only the standard library is used, so the script runs without Jupyter installed.

The file is also an MkDocs hook (`hooks:` in mkdocs.yml). mkdocs-jupyter turns each course
notebook (`docs/tutorial.ipynb`, the surrogate lab `docs/surrogate-lab.ipynb`) into a page;
the hook keeps the notebook file itself on the site under its name, and adds its student copy
(`tutorial-student.ipynb`, `surrogate-lab-student.ipynb`).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
STUDENT_NAME = "tutorial-student.ipynb"
# the course notebooks on the site (under docs/), each with the name of its student copy
SITE_NOTEBOOKS = {"tutorial.ipynb": STUDENT_NAME,
                  "surrogate-lab.ipynb": "surrogate-lab-student.ipynb"}
SOLUTION, EXERCISE, STUB = "solution", "exercise", "stub"
STUB_SOURCE = "# your code here\n"


def tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_solution(cell: dict[str, Any]) -> bool:
    return SOLUTION in tags(cell)


def check(nb: dict[str, Any]) -> None:
    """Raise ValueError unless every exercise prompt has a solution after it (before the next
    prompt or section heading), and there is at least one solution."""
    cells = nb.get("cells", [])
    if not any(is_solution(c) for c in cells):
        raise ValueError(f"no cell is tagged {SOLUTION!r}: nothing to remove")
    for k, cell in enumerate(cells):
        if EXERCISE not in tags(cell):
            continue
        answered = False
        for later in cells[k + 1:]:
            if is_solution(later):
                answered = True
                break
            if EXERCISE in tags(later) or is_heading(later):
                break
        if not answered:
            first = "".join(cell.get("source", [])).strip().splitlines()[0]
            raise ValueError(f"the exercise {first!r} has no cell tagged {SOLUTION!r} after it")


def is_heading(cell: dict[str, Any]) -> bool:
    """A markdown cell that opens a section."""
    return cell["cell_type"] == "markdown" and "".join(cell.get("source", [])).startswith("#")


def stub_cell(solution: dict[str, Any], nbformat_minor: int) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": "code", "execution_count": None,
                            "metadata": {"tags": [STUB]}, "outputs": [],
                            "source": [STUB_SOURCE]}
    if nbformat_minor >= 5:  # cell ids: unique, [a-zA-Z0-9-_]{1,64}
        base = solution.get("id") or hashlib.sha1(
            "".join(solution.get("source", [])).encode()).hexdigest()[:8]
        cell["id"] = f"{base[:59]}-stub"
    return cell


def student_copy(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook `nb` (nbformat 4 JSON) without its solution cells; `nb` is not changed."""
    check(nb)
    minor = int(nb.get("nbformat_minor", 0))
    out = copy.deepcopy(nb)
    cells: list[dict[str, Any]] = []
    for cell in nb["cells"]:
        if is_solution(cell):
            if not (cells and STUB in tags(cells[-1])):
                cells.append(stub_cell(cell, minor))
            continue
        cell = copy.deepcopy(cell)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    out["cells"] = cells
    return out


def dumps(nb: dict[str, Any]) -> str:
    """As Jupyter writes notebooks: indent 1, UTF-8, a final newline."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def write_student_copy(source: Path, target: Path) -> dict[str, Any]:
    nb = json.loads(Path(source).read_text(encoding="utf-8"))
    student = student_copy(nb)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(dumps(student), encoding="utf-8")
    return student


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/student_copy.py",
        description="Write the student copy of a course notebook: the cells tagged "
                    f"{SOLUTION!r} replaced by empty '# your code here' cells.")
    parser.add_argument("notebook", nargs="?", type=Path, default=NOTEBOOK,
                        help="the full notebook (default docs/tutorial.ipynb)")
    parser.add_argument("-o", "--out", type=Path, default=Path(STUDENT_NAME),
                        help=f"where to write the copy (default ./{STUDENT_NAME})")
    args = parser.parse_args(argv)
    if args.out.resolve() == args.notebook.resolve():
        parser.error("--out is the notebook itself: that would delete its solutions")
    try:
        nb = json.loads(args.notebook.read_text(encoding="utf-8"))
        removed = sum(is_solution(c) for c in nb.get("cells", []))
        student = write_student_copy(args.notebook, args.out)
    except (OSError, ValueError) as e:
        print(f"student_copy: error: {args.notebook}: {e}", file=sys.stderr)
        return 1
    prompts = sum(EXERCISE in tags(c) for c in student["cells"])
    print(f"{args.out}: {prompts} exercises, {removed} solution cells replaced by "
          f"{sum(STUB in tags(c) for c in student['cells'])} empty cells")
    return 0


# ------------------------------------------------------------------ MkDocs hook
_generated: tempfile.TemporaryDirectory | None = None


def on_files(files: Any, config: Any) -> Any:
    """Add the student copy of each course notebook (`SITE_NOTEBOOKS`) as a plain file."""
    from mkdocs.structure.files import File

    global _generated
    _generated = tempfile.TemporaryDirectory(prefix="student-copy-")
    for name, student in SITE_NOTEBOOKS.items():
        write_student_copy(Path(config["docs_dir"]) / name, Path(_generated.name) / student)
        files.append(File(student, _generated.name, config["site_dir"],
                          config["use_directory_urls"]))
    return files


def on_post_build(config: Any) -> None:
    """Keep each notebook file at its name: mkdocs-jupyter made it a page."""
    global _generated
    for name in SITE_NOTEBOOKS:
        source = Path(config["docs_dir"]) / name
        (Path(config["site_dir"]) / name).write_bytes(source.read_bytes())
    if _generated is not None:
        _generated.cleanup()
        _generated = None


if __name__ == "__main__":
    raise SystemExit(main())
