"""The package layout: who may import whom, no cycles, and light imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tying_env", "agents")
HARNESS = ("agents.runs", "agents.benchmark", "agents.surrogate")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Project modules imported by `path` (at module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    known = modules()
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # a submodule, or a name from the module itself
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in known else node.module)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body + node.orelse)
            elif isinstance(node, (ast.Try,)):
                visit(node.body + node.orelse + node.finalbody)
            elif not top_level_only:
                visit([n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)])

    visit(tree.body)
    return {name for name in found if name in known}


def test_tying_env_imports_nothing_from_agents():
    offenders = {name: sorted(i for i in imports(path, top_level_only=False)
                              if i.startswith("agents"))
                 for name, path in modules().items() if name.startswith("tying_env")}
    assert not {k: v for k, v in offenders.items() if v}


def test_agent_modules_import_nothing_from_the_harness():
    agent_modules = {name: path for name, path in modules().items()
                     if name.startswith("agents") and not name.startswith(HARNESS)}
    assert {"agents.base", "agents.qlearning", "agents.sb3"} <= set(agent_modules)
    offenders = {name: sorted(i for i in imports(path, top_level_only=False)
                              if i.startswith(HARNESS))
                 for name, path in agent_modules.items()}
    assert not {k: v for k, v in offenders.items() if v}


# deferred imports (inside a function) that close a cycle, left for now: (importer, imported)
DEFERRED_CYCLE_EDGES: set[tuple[str, str]] = set()


def test_one_run_imports_nothing_from_the_benchmark():
    offenders = {name: sorted(i for i in imports(path, top_level_only=False)
                              if i.startswith("agents.benchmark"))
                 for name, path in modules().items() if name.startswith("agents.runs")}
    assert not {k: v for k, v in offenders.items() if v}


def _code_strings(path: Path) -> set[str]:
    """The string constants of `path`'s code (docstrings left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings}


def test_result_json_has_one_owner():
    """Only `agents.runs.result` names the file or the key that makes a run finished."""
    owners = {path.relative_to(ROOT).as_posix()
              for path in [*modules().values(), *sorted((ROOT / "scripts").glob("*.py"))]
              if {"result.json", "total_seconds"} & _code_strings(path)}
    assert owners == {"agents/runs/result.py"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` (module -> the modules it imports), or None."""
    state: dict[str, int] = {}

    def cycle_from(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack, node, nxt]
            if nxt not in state:
                found = cycle_from(nxt, [*stack, node])
                if found:
                    return found
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            found = cycle_from(name, [])
            if found:
                return found
    return None


def test_no_import_cycles():
    """No cycle among module-level imports (imports inside functions are deferred)."""
    graph = {name: {i for i in imports(path, top_level_only=True) if i != name}
             for name, path in modules().items()}
    assert find_cycle(graph) is None


def test_no_import_cycles_through_deferred_imports():
    """No cycle either when imports inside functions count (a deferred import that closes a
    cycle, as the launcher's of the Ray launcher once did, hides two modules that need each
    other), but for those in `DEFERRED_CYCLE_EDGES`."""
    graph = {name: {i for i in imports(path, top_level_only=False)
                    if i != name and (name, i) not in DEFERRED_CYCLE_EDGES}
             for name, path in modules().items()}
    assert find_cycle(graph) is None


def test_the_layout_finds_imports():
    """The checks above see real imports (guards against a parser that sees nothing)."""
    found = imports(ROOT / "agents" / "runs" / "driver.py", top_level_only=True)
    assert {"agents.runs.spec", "tying_env.files"} <= found


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_import_agents_is_light():
    done = run_python("import sys, agents; print(len(agents.names())); "
                      "assert 'stable_baselines3' not in sys.modules; "
                      "assert 'torch' not in sys.modules")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 16


def test_registered_names_match_the_agent_modules():
    import agents
    from agents import baselines, sb3, schedules

    assert set(agents.STATIC_AGENTS) == set(baselines.STATIC)
    assert agents.STATIC_ROOTS == schedules.STATIC_ROOTS
    assert set(agents.SB3_AGENTS) == set(sb3.ALGORITHMS)
    assert {"qlearning", "qlearning-plus", "random"} <= set(agents.names())


@pytest.mark.parametrize("factory", ["nope.module:Agent", "agents.base:NoSuchAgent"])
def test_a_bad_lazy_factory_fails_when_made(factory):
    import agents

    agents.register("test-layout-bad", factory)
    try:  # a ValueError naming the agent and the import error (as for an unknown name)
        with pytest.raises(ValueError, match="'test-layout-bad' cannot be imported: "
                                             "(ModuleNotFoundError|AttributeError)"):
            agents.make("test-layout-bad", None)
    finally:
        agents.unregister("test-layout-bad")
