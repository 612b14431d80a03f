"""The course notebook's exercises and its student copy (scripts/student_copy.py).

- every exercise prompt (a markdown cell tagged `exercise`) is followed by its solution (cells
  tagged `solution`);
- the student copy has no solution cell, is a valid notebook, keeps every prompt and every
  other cell in order, with one empty cell per solution;
- no cell outside the solutions uses a name that only a solution defines, so the student copy
  runs top to bottom too;
- the command is documented, refuses to overwrite the notebook and to copy a notebook with
  no solutions, and the MkDocs hook puts both notebook files on the site.

Nothing here runs the notebook: tests/test_docs.py::test_notebook_runs does.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
SCRIPT = ROOT / "scripts" / "student_copy.py"
N_EXERCISES = 7
RL_EXERCISES = {4: "exploration", 5: "reward", 6: "mask", 7: "seeds"}


def load_script():
    spec = importlib.util.spec_from_file_location("student_copy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sc = load_script()


def notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    return "".join(cell["source"])


def prompts(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if "exercise" in sc.tags(c)]


# ------------------------------------------------------------------ the notebook
def test_every_exercise_has_a_prompt_and_a_solution() -> None:
    nb = notebook()
    found = prompts(nb)
    numbers = [int(re.match(r"### Exercise (\d+):", source(c)).group(1)) for c in found]
    assert numbers == list(range(1, N_EXERCISES + 1))
    assert all(c["cell_type"] == "markdown" for c in found)
    sc.check(nb)  # raises if a prompt has no solution after it
    # every "### Exercise" heading is tagged, so the checks above see them all
    headings = [c for c in nb["cells"] if source(c).lstrip().startswith("### Exercise")]
    assert headings == found
    solutions = [c for c in nb["cells"] if sc.is_solution(c)]
    assert solutions and all(source(c).startswith("# Solution") for c in solutions)
    assert all(c["cell_type"] == "code" for c in solutions)
    for number, word in RL_EXERCISES.items():  # the reinforcement-learning exercises
        assert word in source(found[number - 1]).split("\n")[0].lower(), number


def test_no_cell_depends_on_a_solution() -> None:
    """Names bound only in solution cells are not read by any other cell."""
    bound: dict[bool, set[str]] = {True: set(), False: set()}
    loads: list[tuple[int, set[str]]] = []
    for k, cell in enumerate(notebook()["cells"]):
        if cell["cell_type"] != "code":
            continue
        code = "\n".join(line for line in source(cell).splitlines()
                         if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(code)
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
        bound[sc.is_solution(cell)] |= names
        if not sc.is_solution(cell):
            loads.append((k, {n.id for n in ast.walk(tree)
                              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}))
    only_in_solutions = bound[True] - bound[False]
    for k, names in loads:
        assert not names & only_in_solutions, (k, names & only_in_solutions)


# ------------------------------------------------------------------ the student copy
def test_student_copy_has_no_solutions_and_keeps_the_rest() -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat comes with nbmake (dev extra)")
    nb = notebook()
    student = sc.student_copy(nb)
    assert nb == notebook()  # the input is not changed
    assert not any(sc.is_solution(c) for c in student["cells"])
    assert not any(source(c).startswith("# Solution") for c in student["cells"])
    nbformat.validate(nbformat.from_dict(student))  # a valid notebook (cell ids included)
    assert [source(c) for c in prompts(student)] == [source(c) for c in prompts(nb)]

    # the other cells, in order; one stub where each run of solutions was
    kept = [c for c in student["cells"] if "stub" not in sc.tags(c)]
    assert kept == [c for c in nb["cells"] if not sc.is_solution(c)]
    stubs = [c for c in student["cells"] if "stub" in sc.tags(c)]
    assert len(stubs) == N_EXERCISES
    assert all(source(c) == sc.STUB_SOURCE and c["cell_type"] == "code" for c in stubs)
    for k, cell in enumerate(student["cells"]):  # a stub follows each prompt, before the next
        if "exercise" in sc.tags(cell):
            after = student["cells"][k + 1:]
            following = next(c for c in after if "stub" in sc.tags(c) or "exercise" in sc.tags(c))
            assert "stub" in sc.tags(following), source(cell)[:40]


def test_student_copy_clears_outputs_and_merges_consecutive_solutions() -> None:
    nb = notebook()
    k = next(i for i, c in enumerate(nb["cells"]) if sc.is_solution(c))
    extra = copy.deepcopy(nb["cells"][k])
    extra["id"] = "extra-solution"
    nb["cells"].insert(k + 1, extra)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x\n"]}]
            cell["execution_count"] = 3
    student = sc.student_copy(nb)
    assert sum("stub" in sc.tags(c) for c in student["cells"]) == N_EXERCISES
    code = [c for c in student["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_student_copy_refuses_a_notebook_it_would_not_protect() -> None:
    nb = notebook()
    unmarked = copy.deepcopy(nb)
    for cell in unmarked["cells"]:
        cell["metadata"].pop("tags", None)
    with pytest.raises(ValueError, match="no cell is tagged"):
        sc.student_copy(unmarked)
    one_untagged = copy.deepcopy(nb)
    last = max(i for i, c in enumerate(one_untagged["cells"]) if sc.is_solution(c))
    one_untagged["cells"][last]["metadata"]["tags"] = []
    with pytest.raises(ValueError, match="Exercise 7"):
        sc.student_copy(one_untagged)


def test_student_copy_command(tmp_path: Path) -> None:
    out = tmp_path / "student.ipynb"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(NOTEBOOK), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{N_EXERCISES} exercises" in proc.stdout
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == sc.student_copy(notebook())
    assert out.read_text(encoding="utf-8") == sc.dumps(written)

    same = subprocess.run([sys.executable, str(SCRIPT), str(out), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 2 and "--out is the notebook itself" in same.stderr
    again = subprocess.run([sys.executable, str(SCRIPT), str(out), "-o",
                            str(tmp_path / "again.ipynb")], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 1 and "no cell is tagged" in again.stderr
    assert not (tmp_path / "again.ipynb").exists()


def test_the_command_is_documented() -> None:
    for page in ("course.md", "teachers.md"):
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert "python scripts/student_copy.py" in text, page


def test_mkdocs_hook_puts_both_notebooks_on_the_site(tmp_path: Path) -> None:
    files_module = pytest.importorskip("mkdocs.structure.files")
    site = tmp_path / "site"
    config = {"docs_dir": str(ROOT / "docs"), "site_dir": str(site), "use_directory_urls": True}
    files = sc.on_files(files_module.Files([]), config)
    (student,) = files
    assert student.src_uri == sc.STUDENT_NAME and student.dest_uri == sc.STUDENT_NAME
    student.copy_file()
    sc.on_post_build(config)
    assert json.loads((site / sc.STUDENT_NAME).read_text()) == sc.student_copy(notebook())
    assert (site / "tutorial.ipynb").read_bytes() == NOTEBOOK.read_bytes()
