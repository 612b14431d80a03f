"""The course notebook's exercises and its student copy (scripts/student_copy.py).

- every exercise prompt (a markdown cell tagged `exercise`) is followed by its solution (cells
  tagged `solution`);
- the student copy has no solution cell, is a valid notebook, keeps every prompt and every
  other cell in order, with one empty cell per solution;
- no cell outside the solutions uses a name that only a solution defines, so the student copy
  runs top to bottom too;
- the command is documented, refuses to overwrite the notebook and to copy a notebook with
  no solutions, and the MkDocs hook puts both notebook files on the site;
- the notebook runs top to bottom without an error, once for the module (`executed`), and
  the grader (agents.course) gives its solutions full marks, the student copy 0 on every
  exercise, and a wrong answer injected into an exercise less than full marks there only;
- the grading command grades small notebooks and a folder of them (the points table).
  Grading the real student copy end to end (about a minute) is marked slow.
"""

from __future__ import annotations

import ast
import copy
import csv
import dataclasses
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import docs_env

from agents.course import checks
from agents.course import grade as grader

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
LAB = ROOT / "docs" / "surrogate-lab.ipynb"  # lab 2, ungraded: exercises 8 and 9
LAB_EXERCISES = [8, 9]
SCRIPT = ROOT / "scripts" / "student_copy.py"
N_EXERCISES = 7
NOTEBOOK_TIMEOUT_S = 300  # per cell
RL_EXERCISES = {4: "exploration", 5: "reward", 6: "mask", 7: "seeds"}


def load_script():
    spec = importlib.util.spec_from_file_location("student_copy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sc = load_script()


def notebook(path: Path = NOTEBOOK) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


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


def test_the_lab_has_a_prompt_and_a_solution_per_exercise() -> None:
    nb = notebook(LAB)
    found = prompts(nb)
    assert [int(re.match(r"### Exercise (\d+):", source(c)).group(1)) for c in found] == (
        LAB_EXERCISES)
    sc.check(nb)
    solutions = [c for c in nb["cells"] if sc.is_solution(c)]
    assert len(solutions) == len(LAB_EXERCISES)
    assert all(source(c).startswith("# Solution") for c in solutions)
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    # it trains on the surrogate and checks on the real track's environment
    text = "\n".join(source(c) for c in nb["cells"])
    assert '"LayerTying-Surrogate-Deep-v0"' in text and 'get_track("deep")' in text


def code_tree(cell: dict) -> ast.Module:
    """A code cell's Python (its IPython magics and shell lines left out)."""
    return ast.parse("\n".join(line for line in source(cell).splitlines()
                               if not line.lstrip().startswith(("%", "!"))))


def bound_names(cell: dict) -> set[str]:
    """The names a code cell binds (assigned, defined, imported, or arguments)."""
    names = set()
    for node in ast.walk(code_tree(cell)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def solution_only_names(nb: dict) -> set[str]:
    """Names that only solution cells bind: the student copy defines none of them."""
    bound: dict[bool, set[str]] = {True: set(), False: set()}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            bound[sc.is_solution(cell)] |= bound_names(cell)
    return bound[True] - bound[False]


@pytest.mark.parametrize("path", [NOTEBOOK, LAB], ids=["tutorial", "lab"])
def test_no_cell_depends_on_a_solution(path: Path) -> None:
    """Names bound only in solution cells are not read by any other cell."""
    nb = notebook(path)
    loads = [(k, {n.id for n in ast.walk(code_tree(cell))
                  if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)})
             for k, cell in enumerate(nb["cells"])
             if cell["cell_type"] == "code" and not sc.is_solution(cell)]
    only_in_solutions = solution_only_names(nb)
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
    files = list(sc.on_files(files_module.Files([]), config))
    assert [f.src_uri for f in files] == [sc.STUDENT_NAME, "surrogate-lab-student.ipynb"]
    for student in files:
        assert student.dest_uri == student.src_uri
        student.copy_file()
    sc.on_post_build(config)
    for path, student in ((NOTEBOOK, sc.STUDENT_NAME), (LAB, "surrogate-lab-student.ipynb")):
        assert json.loads((site / student).read_text()) == sc.student_copy(notebook(path))
        assert (site / path.name).read_bytes() == path.read_bytes()


# ------------------------------------------------------------------ running and grading it
@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> grader.Execution:
    """The notebook run top to bottom once, in a fresh kernel, and its graded names."""
    pytest.importorskip("nbclient", reason="nbclient comes with nbmake (dev extra)")
    cache = tmp_path_factory.mktemp("course-cache")
    return grader.execute(NOTEBOOK, timeout=NOTEBOOK_TIMEOUT_S, env=docs_env(cache))


def points(results: list[checks.ExerciseResult]) -> dict[int, tuple[int, int]]:
    return {r.number: (r.points, r.max_points) for r in results}


def test_notebook_runs_and_its_solutions_score_full_marks(executed) -> None:
    assert executed.errors == []  # no cell raised
    results = checks.grade(executed.answers)
    assert [r.number for r in results] == list(range(1, N_EXERCISES + 1))
    failed = [(r.number, c.what, c.why) for r in results for c in r.checks if c.why]
    assert not failed
    assert all(p == m > 0 for p, m in points(results).values())


def test_the_answers_are_defined_only_by_their_solutions() -> None:
    """Each exercise's graded names are bound by its own solution cells and by no other cell,
    so the student copy (solutions replaced by empty cells) defines none of them."""
    nb = notebook()
    only = solution_only_names(nb)
    current, by_exercise = None, {}
    for cell in nb["cells"]:
        if "exercise" in sc.tags(cell):
            current = int(re.match(r"### Exercise (\d+):", source(cell)).group(1))
        elif sc.is_solution(cell):
            by_exercise.setdefault(current, set()).update(bound_names(cell))
    for exercise in checks.EXERCISES:
        names = set(exercise.answers)
        assert names <= only, (exercise.number, names - only)
        assert names <= by_exercise[exercise.number], exercise.number
        prompt = source(prompts(nb)[exercise.number - 1])
        assert "**Graded:**" in prompt and all(f"`{n}`" in prompt for n in names), names
    assert not set(checks.CONTEXT) & only  # the given names the checks read


def test_the_student_copy_scores_zero(executed) -> None:
    """The namespace of the student copy: the solution notebook's without the names only
    solutions bind."""
    only = solution_only_names(notebook())
    student = {k: v for k, v in executed.answers.items() if k not in only}
    assert set(student) == set(checks.CONTEXT)
    assert all(p == 0 for p, _ in points(checks.grade(student)).values())
    assert all(p == 0 for p, _ in points(checks.grade({})).values())


def _flip_better(value):
    return "maskable-ppo" if value is None else None


WRONG = {  # exercise: (name, a wrong answer made from the right one)
    1: ("predicted_bytes", lambda v: v - 4 * 16),  # the AdamW step counters forgotten
    2: ("faster_mode", lambda v: {"copy": "share", "share": "copy"}[v]),
    3: ("break_even", lambda v: v * 1.1),
    4: ("fast_decay", lambda v: 0.6),
    5: ("telescoping", lambda v: ["log_ppl_delta"]),
    6: ("p_own_unmasked", lambda v: {n: [1 - q for q in p] for n, p in v.items()}),
    7: ("better", _flip_better),
}


@pytest.mark.parametrize("number", sorted(WRONG))
def test_a_wrong_answer_loses_that_exercises_points(executed, number: int) -> None:
    name, wrong = WRONG[number]
    answers = copy.deepcopy(executed.answers)
    answers[name] = wrong(answers[name])
    after = points(checks.grade(answers))
    assert after[number][0] < after[number][1]
    assert all(p == m for n, (p, m) in after.items() if n != number)


def test_snapshot_reads_plain_values_and_run_logs() -> None:
    import numpy as np

    @dataclasses.dataclass
    class Config:
        tie_mode: str = "share"

    class Log:  # what the checks read of a RunLog
        start = {"val_ppl": np.float64(60.0)}
        records = [{"reward": 0.5, "tie_map": np.array([0, 0])}]
        unwrapped = type("Env", (), {"cfg": Config()})()

    namespace = {"share_run": Log(), "telescoping": {"ppl_delta", "log_ppl_delta"},
                 "last_epsilon": {3: np.float32(0.5)}, "fast_decay": float("nan"),
                 "bench": object(), "unrelated": 1}
    got = checks.snapshot(namespace)
    assert got == {"share_run": {"config": {"tie_mode": "share"}, "start": {"val_ppl": 60.0},
                                 "records": [{"reward": 0.5, "tie_map": [0, 0]}]},
                   "telescoping": ["log_ppl_delta", "ppl_delta"],
                   "last_epsilon": {"3": 0.5}, "fast_decay": None,
                   "bench": {checks.UNREADABLE: "object"}}
    json.dumps(got, allow_nan=False)
    result = checks.run_check(checks.EXERCISES[6].checks[0], checks.Answers(got))
    assert result.points == 0 and "cannot read" in result.why


TINY_ANSWERS = """\
last_epsilon = {s: max(0.01, 0.95 ** (s - 1)) for s in (3, 10, 100)}  # right
fast_decay = 0.9  # wrong
"""


def test_grading_command_on_a_folder(tmp_path: Path, monkeypatch) -> None:
    """A folder with a small notebook: its points (JSON) and the table of the folder."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat comes with nbmake (dev extra)")
    pytest.importorskip("nbclient", reason="nbclient comes with nbmake (dev extra)")
    for key, value in docs_env(tmp_path / "cache").items():
        monkeypatch.setenv(key, value)
    folder, out = tmp_path / "submissions", tmp_path / "grades"
    folder.mkdir()
    v4 = nbformat.v4
    alice = v4.new_notebook(cells=[v4.new_markdown_cell("# Alice"), v4.new_code_cell("1 / 0"),
                                   v4.new_code_cell(TINY_ANSWERS)])
    nbformat.write(alice, folder / "alice.ipynb")
    assert grader.main([str(folder), "--out", str(out), "--timeout", "60"]) == 0

    graded = json.loads((out / "alice.grade.json").read_text(encoding="utf-8"))
    assert graded["notebook"] == "alice.ipynb" and graded["failure"] is None
    assert graded["cell_errors"] == ["cell 2 (1 / 0): ZeroDivisionError: division by zero"]
    by_number = {e["number"]: e for e in graded["exercises"]}
    assert graded["points"] == 1 and by_number[4]["points"] == 1
    assert [c["points"] for c in by_number[4]["checks"]] == [1, 0, 0]
    assert "is not defined" in by_number[1]["checks"][0]["why"]
    rows = list(csv.reader(io.StringIO((out / "grades.csv").read_text(encoding="utf-8"))))
    maximum = [str(e.max_points) for e in checks.EXERCISES]
    assert rows[0][:N_EXERCISES + 2] == ["student", *(f"ex{n}" for n in range(1, 8)), "total"]
    assert rows[1][1:N_EXERCISES + 1] == maximum
    assert rows[2] == ["alice", "0", "0", "0", "1", "0", "0", "0", "1", "1", ""]
    assert len(rows) == 3
    assert (out / "grades.md").read_text(encoding="utf-8").startswith("| student |")


def test_grading_command_refuses_what_is_not_a_notebook(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for bad, says in ((tmp_path / "notes.txt", "not a .ipynb file"),
                      (tmp_path / "empty", "has no .ipynb file"),
                      (tmp_path / "missing.ipynb", "no such file or folder")):
        with pytest.raises(SystemExit) as stop:
            grader.main([str(bad)])
        assert stop.value.code == 2 and says in capsys.readouterr().err
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    result = grader.grade_notebook(broken)
    assert result.failure and "not a readable notebook" in result.failure
    assert result.points == 0
    assert "| broken | 0 |" in grader.table_markdown([result])
    assert not list(tmp_path.glob("*.grade.json"))


@pytest.mark.slow
def test_the_real_student_copy_scores_zero(tmp_path: Path) -> None:
    """The student copy, made by the script, run and graded end to end (about a minute)."""
    pytest.importorskip("nbclient", reason="nbclient comes with nbmake (dev extra)")
    student = tmp_path / "student.ipynb"
    sc.write_student_copy(NOTEBOOK, student)
    result = grader.grade_notebook(student, timeout=NOTEBOOK_TIMEOUT_S,
                                   env=docs_env(tmp_path / "cache"))
    assert result.failure is None and result.errors == []  # it runs top to bottom
    assert result.points == 0 and result.max_points > 0


@pytest.mark.slow
def test_the_lab_runs_top_to_bottom(tmp_path: Path) -> None:
    """Lab 2 trains on the surrogate and plays two real episodes (about 10 minutes)."""
    pytest.importorskip("nbclient", reason="nbclient comes with nbmake (dev extra)")
    execution = grader.execute(LAB, timeout=900, env=docs_env(tmp_path))
    assert execution.errors == []
