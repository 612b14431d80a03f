"""Every command the documentation shows works as written.

- each `python ...` command of a shell block (README, every page of `docs/`, generated
  pages included) is parsed by the real command line it names, with its globs expanded
  in the repository: an option that does not exist, a bad choice or a missing module or
  script fails here (the command is parsed, not run: most of them train for hours);
- `pip install` lines install what exists: this package's extras, by path, never by a
  name that no package index has;
- the generated pages (leaderboard, model families) are rebuilt by the command in their
  header, from the committed JSON, into the same text.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import re
import runpy
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from test_docs import fenced_blocks

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"])
SHELL = ("bash", "sh", "shell", "console")
# programs the documentation may show besides python and pip, checked no further
OTHER_PROGRAMS = {"bash", "ray", "sbatch", "srun", "sed", "git", "mkdocs", "mlflow",
                  "tensorboard", "cd", "export", "for", "do", "done", "wandb", "#!/bin/bash"}
GENERATED = ("leaderboard.md", "results/families.md")
METADATA = importlib.metadata.metadata("layer-tying-gym")  # the installed checkout's
EXTRAS = set(METADATA.get_all("Provides-Extra") or [])


class Parsed(Exception):
    """Raised instead of running the program, once its options parsed."""


def commands(page: Path) -> list[tuple[int, list[str]]]:
    """(line, argv) of every command in the shell blocks of `page`; `$VAR` and `$((...))`
    become 0, `a && b`, `a; b` and `a | b` are two commands, a redirection is dropped."""
    found = []
    for block in fenced_blocks(page):
        if block.lang not in SHELL or 'title="' in block.info:  # a file's content
            continue
        text = re.sub(r"\$\(\(.*?\)\)|\$\{?\w+\}?", "0", block.code.replace("\\\n", " "))
        for offset, line in enumerate(text.splitlines()):
            try:
                words = shlex.split(line, comments=True)
            except ValueError as e:
                raise AssertionError(f"{page.name}:{block.line + 1 + offset}: {e}") from None
            argv: list[str] = []
            for word in [*words, "&&"]:
                if word in ("&&", "||", ";", "|"):
                    if argv:
                        found.append((block.line + 1 + offset, _without_redirects(argv)))
                    argv = []
                else:
                    argv.append(word.rstrip(";"))
    return found


def _without_redirects(argv: list[str]) -> list[str]:
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in (">", ">>", "<", "2>"):
            skip = True
        else:
            out.append(word)
    return out


def _expand(args: list[str]) -> list[str]:
    """Globs expanded in the repository, as a shell there would."""
    out = []
    for arg in args:
        matches = sorted(glob.glob(arg, root_dir=ROOT)) if any(c in arg for c in "*?[") else []
        out.extend(matches or [arg])
    return out


def _program(argv: list[str]) -> str:
    return Path(argv[0]).name


def parse_only(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `python ARGS` up to the parse of its options (SystemExit 0 for --help passes)."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.chdir(ROOT)
    args = _expand(argv[1:])
    if args[0] == "-m":
        module, rest, run = args[1], args[2:], runpy.run_module
    else:
        module, rest, run = str(ROOT / args[0]), args[1:], runpy.run_path
        assert (ROOT / args[0]).is_file(), f"no script {args[0]}"
    monkeypatch.setattr(sys, "argv", [module, *rest])
    try:
        run(module, run_name="__main__")
    except Parsed:
        return
    except SystemExit as e:
        assert e.code in (0, None), f"exit status {e.code}"
        return
    raise AssertionError("the program ended without parsing options")


def cases() -> list[tuple[str, list[str]]]:
    return [(f"{page.relative_to(ROOT)}:{line}", argv)
            for page in PAGES for line, argv in commands(page)]


CASES = cases()


def test_the_documentation_shows_commands():
    assert len(CASES) > 40
    assert {_program(argv) for _, argv in CASES} >= {"python", "pip", "bash"}


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy, rerun
@pytest.mark.parametrize("where, argv", CASES, ids=[c[0] for c in CASES])
def test_documented_command(where, argv, monkeypatch):
    program = _program(argv)
    if program in ("python", "python3"):
        if argv[1:3] == ["-m", "pip"]:
            _check_pip(argv[3:])
        elif argv[1:3] == ["-m", "pytest"]:
            for arg in argv[3:]:
                if not arg.startswith("-"):
                    assert (ROOT / arg.split("::")[0]).exists(), f"{where}: no {arg}"
        elif argv[1] == "-m" and argv[2].split(".")[0] in sys.stdlib_module_names:
            assert argv[2] == "venv", f"{where}: check {argv[2]} here"
        elif argv[1] != "-c":
            parse_only(argv, monkeypatch)
    elif program == "pip":
        _check_pip(argv[1:])
    elif program == "train-agent":
        parse_only(["python", "train_agent.py", *argv[1:]], monkeypatch)
    elif program == "bash" and len(argv) > 1:
        assert (ROOT / argv[1]).is_file() or argv[1].endswith("cell.sh"), f"no {argv[1]}"
    else:
        assert program in OTHER_PROGRAMS, (
            f"{where}: {shlex.join(argv)}: add a check for {program!r} or list it in "
            "OTHER_PROGRAMS")


def _check_pip(args: list[str]) -> None:
    """`pip install` of things that can be had: this package by path with its real
    extras, or other packages by name; never this package by name (it is on no index)."""
    assert args[0] == "install", args
    for arg in args[1:]:
        if arg.startswith("-") and arg != "-e":
            continue
        name, _, extras = arg.partition("[")
        if name in (".", "./") or name.endswith((".whl", ".tar.gz")):
            for extra in extras.rstrip("]").split(","):
                assert not extras or extra in EXTRAS, f"no extra {extra!r}; {sorted(EXTRAS)}"
        else:
            assert name.replace("_", "-").lower() != METADATA["Name"], (
                f"pip install {arg}: {METADATA['Name']} is on no package index; install it "
                "from the repository (pip install -e .) or a built wheel")


# ------------------------------------------------------------------ generated pages
GENERATED_BY = re.compile(r"^Generated from .*? by `(?P<cmd>[^`]+)`(?P<at> at commit `[0-9a-f]+`"
                          r"(?: \(with uncommitted changes\))?)?; do not edit it by hand\.$",
                          re.MULTILINE)


@pytest.mark.parametrize("page", GENERATED)
def test_generated_page_is_rebuilt_by_the_command_it_names(page, tmp_path, monkeypatch):
    """The header's command, run on the committed JSON (in a copy of docs/), writes the
    committed page again; only the commit it names can differ."""
    committed = (ROOT / "docs" / page).read_text(encoding="utf-8")
    match = GENERATED_BY.search(committed)
    assert match, f"docs/{page} names no command"
    argv = shlex.split(match["cmd"])
    assert argv[:3] == ["python", "-m", "agents.benchmark.leaderboard"], argv
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    from agents.benchmark import leaderboard

    assert leaderboard.main(argv[3:]) == 0
    rebuilt = (tmp_path / "docs" / page).read_text(encoding="utf-8")
    assert GENERATED_BY.sub("", rebuilt) == GENERATED_BY.sub("", committed)


def test_the_submit_command_rebuilds_the_leaderboard(tmp_path, monkeypatch):
    """"Submit your agent" regenerates the page with one glob over its folder: results
    and noise files are told apart, and nothing else lies there."""
    page = ROOT / "docs" / "leaderboard.md"
    shown = [argv for _, argv in commands(page)
             if argv[1:3] == ["-m", "agents.benchmark.leaderboard"]]
    assert len(shown) == 1 and any("*" in arg for arg in shown[0]), shown
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    monkeypatch.chdir(tmp_path)
    from agents.benchmark import leaderboard

    args = [a for arg in shown[0][3:] for a in (sorted(glob.glob(arg)) or [arg])]
    assert leaderboard.main(args) == 0
    committed = page.read_text(encoding="utf-8")
    rebuilt = (tmp_path / "docs" / "leaderboard.md").read_text(encoding="utf-8")
    tables = [[ln for ln in text.splitlines() if ln.startswith(("|", "Reward noise"))]
              for text in (committed, rebuilt)]
    assert tables[0] and tables[1] == tables[0]
