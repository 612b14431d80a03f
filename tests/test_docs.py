"""The documentation: the site builds strictly, its examples run, it matches the code.

- `mkdocs build --strict` passes (skipped when MkDocs is not installed);
- every fenced ```python block of the executed pages runs, in order, in a fresh
  interpreter per page, with a temporary folder as the working directory; a ```bash
  block whose every command is `python train_agent.py ...` (other than `--resume`)
  runs too, with small settings appended (one sweep of a 4-layer model), so that later
  blocks can read its run folder. A block preceded by `<!-- no-test -->` (or with
  `title="not run"`) is skipped: keep those rare;
- the reference tables (result.json keys, info keys, arguments, presets, agents) list
  exactly what the code has;
- the course notebook is stored without outputs (tests/test_course.py runs it top to
  bottom and grades it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXECUTED_PAGES = ("quickstart.md", "agents.md", "method.md", "datasets.md", "reproducibility.md",
                  "../README.md")
NEEDS_SHARED_DATA = ("datasets.md",)  # builds the offline WikiText-2 split
NO_TEST = "<!-- no-test -->"
# appended to documented train_agent.py commands: one sweep of a small model
SMALL_ENV = {"n_layer": 4, "n_embd": 32, "n_head": 2}
SMALL_ARGS = ["--max-sweeps", "1", "--no-progress"]
PAGE_TIMEOUT_S = 240


@dataclass
class Block:
    lang: str
    info: str
    line: int  # 1-based line of the opening fence
    code: str
    skip: bool


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with their language and position."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)(`{3,})\s*([\w+-]*)(.*)$", lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang, info = match.groups()
        previous = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        skip = previous == NO_TEST or 'title="not run"' in info
        blocks.append(Block(lang, info.strip(), start + 1, "\n".join(body) + "\n", skip))
    return blocks


def train_agent_commands(code: str) -> list[list[str]] | None:
    """The argv of each `python train_agent.py` command, made small; None if not all are."""
    text = code.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        argv = shlex.split(line)
        if len(argv) < 2 or Path(argv[0]).name not in ("python", "python3") \
                or argv[1] != "train_agent.py":
            return None
        args = argv[2:]
        if "--resume" in args:  # continues a stopped run: cannot be made small
            return None
        env_kwargs = dict(SMALL_ENV)
        if "--env-kwargs" in args:
            k = args.index("--env-kwargs")
            env_kwargs = {**json.loads(args[k + 1]), **SMALL_ENV}
            del args[k:k + 2]
        commands.append([sys.executable, str(ROOT / "train_agent.py"), *args,
                         "--env-kwargs", json.dumps(env_kwargs), *SMALL_ARGS])
    return commands or None


RUNNER = textwrap.dedent("""
    import json, os, subprocess, sys
    import torch
    torch.set_num_threads(1)
    steps = json.load(open(sys.argv[1], encoding="utf-8"))
    namespace = {"__name__": "__main__"}
    for step in steps:
        where = f"{step['page']}:{step['line']}"
        print(f"--- {where}", flush=True)
        if step["kind"] == "python":
            exec(compile(step["code"], where, "exec"), namespace)
        else:
            for argv in step["commands"]:
                proc = subprocess.run(argv, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{where}: {' '.join(argv)} failed with exit status "
                             f"{proc.returncode}:\\n{proc.stderr[-3000:]}")
""")


def docs_env(cache: Path) -> dict[str, str]:
    """Offline, one thread, a private cache, a non-interactive matplotlib backend."""
    return {**os.environ, "LAYER_TYING_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}


@pytest.fixture(scope="module")
def docs_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs-cache")


def run_page(page: str, workdir: Path, cache: Path) -> None:
    steps = []
    for block in fenced_blocks(DOCS / page):
        if block.skip:
            continue
        if block.lang == "python":
            steps.append(dict(kind="python", page=page, line=block.line, code=block.code))
        elif block.lang in ("bash", "sh", "shell"):
            commands = train_agent_commands(block.code)
            if commands:
                steps.append(dict(kind="bash", page=page, line=block.line, commands=commands))
    assert steps, f"{page} has no executable block"
    (workdir / "steps.json").write_text(json.dumps(steps), encoding="utf-8")
    (workdir / "runner.py").write_text(RUNNER, encoding="utf-8")
    proc = subprocess.run([sys.executable, "runner.py", "steps.json"], cwd=workdir,
                          env=docs_env(cache), capture_output=True, text=True,
                          timeout=PAGE_TIMEOUT_S)
    assert proc.returncode == 0, f"{page}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def table_names(page: str, heading: str) -> set[str]:
    """The backticked names in the first column of the first table under `heading`."""
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(heading)
    names: set[str] = set()
    in_table = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            in_table = True
            first = line.split("|")[1]
            if set(first.strip()) <= set("-: "):
                continue
            names.update(re.findall(r"`([^`]+)`", first))
        elif in_table:
            break
    return names


# ------------------------------------------------------------------ the site
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=docs_env(tmp_path / "cache"), capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert (tmp_path / "site" / "tutorial.ipynb").is_file()


# ------------------------------------------------------------------ examples
@pytest.mark.parametrize("page", EXECUTED_PAGES)
def test_page_examples_run(page: str, tmp_path: Path, docs_cache: Path) -> None:
    if page in NEEDS_SHARED_DATA:
        from tying_env.data.corpus import default_shared_data_dir

        shared = default_shared_data_dir()
        if not (shared / "wikitext-2" / "valid.txt").is_file():
            pytest.skip(f"{page} needs {shared}/wikitext-2 (see shared/data/README.md)")
    run_page(page, tmp_path, docs_cache)
    if page == "quickstart.md":  # the documented result.json keys are the real ones
        result = json.loads((tmp_path / "runs" / "quickstart" / "result.json").read_text())
        assert table_names(page, "### `result.json`") == set(result)


def test_no_test_markers_are_rare() -> None:
    skipped = [(page, b.line) for page in EXECUTED_PAGES for b in fenced_blocks(DOCS / page)
               if b.skip and b.lang == "python"]
    assert len(skipped) <= 2, skipped


def test_extractor_reads_fences_and_markers(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- no-test -->\n```python\ny\n```\n\n"
                    '1. item\n\n    ```bash\n    python train_agent.py --agent vanilla\n    ```\n'
                    '\n```python title="not run"\nz\n```\n')
    blocks = fenced_blocks(page)
    assert [(b.lang, b.skip) for b in blocks] == [("python", False), ("python", True),
                                                  ("bash", False), ("python", True)]
    assert blocks[0].code == "x = 1\n" and blocks[0].line == 3
    argv = train_agent_commands(blocks[2].code)
    assert argv is not None and argv[0][2:4] == ["--agent", "vanilla"]
    assert train_agent_commands("for s in 0 1; do python train_agent.py; done\n") is None


# ------------------------------------------------------------------ reference tables
def test_environment_reference_matches_the_code(docs_cache: Path, monkeypatch) -> None:
    import gymnasium as gym

    import tying_env
    from tying_env.presets import PRESETS, EnvConfig

    monkeypatch.setenv("LAYER_TYING_CACHE", str(docs_cache))
    env = gym.make("LayerTying-GPT2-Tiny-v0", n_layer=3, max_sweeps=1, eval_batches=1)
    _, info = env.reset(seed=0)
    assert table_names("environment.md", "## Info") == set(info)
    fields = {f for f in EnvConfig.__dataclass_fields__}
    assert table_names("environment.md", "## Arguments") == fields | {"render_mode",
                                                                      "cache_dir"}
    assert table_names("environment.md", "## Environment ids") == set(tying_env.ENV_IDS)

    # the presets table: every value the code sets, and the untied parameter counts
    text = (DOCS / "environment.md").read_text(encoding="utf-8")
    section = text[text.index("### Presets"):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    header = [c.strip() for c in rows[0].split("|")[1:-1]]
    documented = {}
    for row in rows[2:]:
        cells = [c.strip().strip("`") for c in row.split("|")[1:-1]]
        documented[cells[0]] = dict(zip(header, cells, strict=True))
    assert set(documented) == set(PRESETS)
    for name, values in PRESETS.items():
        for key, value in values.items():
            cell = documented[name][key]
            assert (float(cell) == value if isinstance(value, float) else cell == str(value)), \
                (name, key, cell, value)
        assert documented[name]["parameters (untied)"] == f"{untied_count(name):,}", name


IMAGE_SHAPES = {"digits": dict(channels=1, height=8, width=8, n_classes=10),
                "cifar10": dict(channels=3, height=32, width=32, n_classes=10)}


def untied_count(preset: str) -> int:
    """The untied model's parameters: GPT-2's by formula, every family's from the Hugging
    Face model built on the meta device (the formula must agree for GPT-2)."""
    import torch

    from tying_env.models import DataShape, TiedModel, get_family
    from tying_env.presets import make_config

    cfg = make_config(preset)
    family = get_family(cfg.family)
    data = (DataShape(**IMAGE_SHAPES[cfg.dataset]) if family.data_kind == "images"
            else DataShape(vocab_size=cfg.vocab_size))
    with torch.device("meta"):
        count = TiedModel(family.make_config(cfg, data)).param_counts()[1]
    if cfg.family == "gpt2":
        n, L, V, S = cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.seq_len
        assert count == V * n + S * n + 2 * n + L * (12 * n * n + 13 * n)
    return count


def test_tiny_parameter_count_is_real() -> None:
    import torch

    from tying_env.models import TiedModel, gpt2_config
    from tying_env.presets import PRESETS

    p = PRESETS["tiny"]
    with torch.device("meta"):
        model = TiedModel(gpt2_config(p["n_layer"], p["n_embd"], p["n_head"], p["seq_len"],
                                     p["vocab_size"]))
    assert model.param_counts()[1] == 308_224


def test_agents_page_lists_every_agent() -> None:
    import agents

    assert table_names("agents.md", "## The registered agents") == set(agents.names())


# ------------------------------------------------------------------ the notebook
def test_notebook_is_stored_without_outputs() -> None:
    nb = json.loads((DOCS / "tutorial.ipynb").read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None
