"""The leaderboard and the results page: their numbers are the results JSON's; tracks and
versions never mix; no absolute machine path in a page or in any committed result."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agents.benchmark import main, summarize
from agents.benchmark.leaderboard import (
    LeaderboardError,
    absolute_paths,
    build,
    load,
    render,
)
from agents.benchmark.stats import Bootstrap, improvement, verdicts
from agents.benchmark.tracks import PAPER
from scripts.portable_results import portable

ROOT = Path(__file__).resolve().parents[1]
# a small real benchmark: 4 layers, 1 sweep (3 decisions of 4 optimizer steps), 2 seeds
ENV_KWARGS = {"n_layer": 4, "max_sweeps": 1, "eval_batches": 1, "n_embd": 32, "n_head": 2}
AGENTS = ("qlearning", "vanilla", "albert")
TRACK = {"name": "tiny-test", "version": 1}
MACHINE_PATHS = ("/work/", "/home/", "/tmp/", "/Users/", "C:\\", "/root/", "/mnt/")
NUMBER = r"-?\d+(?:\.\d+)?"
ESTIMATE = re.compile(rf"^({NUMBER})(?: \[({NUMBER}), ({NUMBER})\]| \(n=1\))?$")


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> Path:
    """3 agents x 2 seeds, run through the command line, then given a track; everything
    in one folder, as a benchmark run in the repository keeps its paths under it."""
    folder = tmp_path_factory.mktemp("leaderboard")
    out = folder / "bench"
    assert main(["--env", "LayerTying-GPT2-Tiny-v0", "--env-kwargs", json.dumps(ENV_KWARGS),
                 "--agents", ",".join(AGENTS), "--seeds", "0,1", "--workers", "2",
                 "--threads", "1", "--cache-dir", str(folder / "cache"), "--out", str(out),
                 "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    results["track"] = TRACK  # as a track's run records it
    (out / "results.json").write_text(json.dumps(results))
    summarize(out, Bootstrap(reps=1000))
    return out


@pytest.fixture
def results(bench) -> dict[str, Any]:
    return json.loads((bench / "results.json").read_text())


@pytest.fixture
def page(bench, monkeypatch) -> str:
    """The leaderboard of the benchmark, generated in the folder it ran in."""
    monkeypatch.chdir(bench.parent)
    return build(["bench/results.json"], "leaderboard.md")


def tables(markdown: str) -> list[dict[str, dict[str, str]]]:
    """Every table of a page: rows by first cell, each a dict column -> text."""
    found, header = [], None
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|") and header is None:
            header = [c.strip() for c in line.strip("|").split("|")]
            rows: dict[str, dict[str, str]] = {}
        elif line.startswith("|") and header is not None:
            if set(line) <= set("|-"):
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = dict(zip(header, cells, strict=True))
        elif header is not None:
            found.append(rows)
            header = None
    return found


def assert_matches(text: str, estimate: dict[str, Any] | None, digits: int) -> None:
    """A page's `value [low, high]` is the JSON's estimate, rounded to `digits`."""
    if estimate is None or estimate.get("value") is None:
        assert text == "—"
        return
    match = ESTIMATE.match(text)
    assert match, text
    tolerance = 0.5 * 10 ** -digits + 1e-12
    assert abs(float(match[1]) - estimate["value"]) <= tolerance
    if estimate["n"] == 1:
        assert text.endswith("(n=1)")
    else:
        assert abs(float(match[2]) - estimate["low"]) <= tolerance
        assert abs(float(match[3]) - estimate["high"]) <= tolerance


# ---------------------------------------------------------------- results.md
def test_results_page_numbers_equal_the_json(bench, results):
    text = (bench / "results.md").read_text()
    assert text.startswith("# Track `tiny-test` (version 1) on LayerTying-GPT2-Tiny-v0\n")
    main_table, against, hypervolume = tables(text)[:3]
    for agent in AGENTS:
        row, stats = main_table[agent], results["agents"][agent]
        for column, key, digits in (("val ppl", "final_val_ppl", 2),
                                    ("test ppl", "final_test_ppl", 2),
                                    ("return", "episode_return", 3),
                                    ("trainable (end)", "trainable_fraction", 3),
                                    ("layers tied (end)", "layers_tied_fraction", 3)):
            assert_matches(row[column], stats["iqm"][key], digits)
        assert_matches(hypervolume[agent]["hypervolume"], stats["hypervolume"], 4)
        if agent != "qlearning":
            assert_matches(against[agent]["P(improves on qlearning)"], stats["improvement"], 2)
            assert against[agent]["verdict"] == stats["improvement"]["verdict"]
    assert "qlearning" not in against
    assert f"- commit: {results['code']['commit']}" in text


def test_results_json_statistics_fields(results):
    stats = results["statistics"]
    assert stats["baseline"] == "qlearning" and stats["method"]["reps"] == 1000
    assert set(stats["profile"]["agents"]) == set(AGENTS)
    assert len(stats["profile"]["thresholds"]) == len(
        stats["profile"]["agents"]["vanilla"]["fraction"])
    for agent in AGENTS:
        row = results["agents"][agent]
        assert {"final_val_ppl", "final_test_ppl", "episode_return", "trainable_fraction",
                "layers_tied_fraction"} == set(row["iqm"])
        assert row["final_val_ppl"]["mean"] is not None  # the earlier fields stay
        assert row["hypervolume"]["n"] == 2
    assert results["agents"]["albert"]["improvement"]["n_baseline"] == 2
    assert results["track"] == TRACK


# ---------------------------------------------------------------- leaderboard
def test_leaderboard_numbers_equal_the_json(page, results):
    (table,) = tables(page)
    assert list(table) == sorted(AGENTS, key=lambda a: (
        results["agents"][a]["iqm"]["final_val_ppl"]["value"], a))
    for agent in AGENTS:
        row, stats = table[agent], results["agents"][agent]
        assert_matches(row["val ppl"], stats["iqm"]["final_val_ppl"], 2)
        assert_matches(row["test ppl"], stats["iqm"]["final_test_ppl"], 2)
        assert_matches(row["trainable (end)"], stats["iqm"]["trainable_fraction"], 3)
        assert_matches(row["layers tied (end)"], stats["iqm"]["layers_tied_fraction"], 3)
        assert_matches(row["P(improves on qlearning)"], stats["improvement"], 2)
        assert_matches(row["hypervolume"], stats["hypervolume"], 4)
        assert row["seeds"] == "2"


def test_leaderboard_states_the_verdicts_from_the_numbers(page, results):
    verdict = results["statistics"]["claims"]
    assert verdict == verdicts(results["agents"], "qlearning", PAPER)  # the page's own
    beats = verdict["beat_baseline"]
    line = next(x for x in page.splitlines() if x.startswith("- **Beats `qlearning`**"))
    named = ", ".join(f"`{a}`" for a in beats) or "none"
    few = sorted(a for a, row in results["agents"].items()
                 if (row.get("improvement") or {}).get("verdict") == "too few seeds")
    assert f"above 0.5): {named}" in line
    assert few and f"fewer than 5 finished seeds on a side: {', '.join(f'`{a}`' for a in few)}" \
        in line  # the fixture has 2 seeds: nothing is judged from them
    paper = next(x for x in page.splitlines() if x.startswith("- **The paper's claim**"))
    holds = verdict["paper"]["holds"]
    assert ("**holds**" in paper) == (holds is True)
    assert ("**does not hold**" in paper) == (holds is False)
    assert ("cannot be checked" in paper) == (holds is None)
    for agent in verdict["paper"]["meeting"]:
        assert f"`{agent}`" in paper


def test_leaderboard_carries_command_commit_and_wall_time_without_paths(page, results):
    assert "## Track `tiny-test` (version 1)" in page
    assert ("`python -m agents.benchmark.leaderboard bench/results.json --out "
            "leaderboard.md`") in page
    assert f"commit `{results['code']['commit'][:12]}`" in page
    command = next(x for x in page.splitlines() if x.strip().startswith("- command:"))
    assert "python -m agents.benchmark" in command and "--out bench" in command
    assert re.search(r"wall time: \d+\.\d min for the last invocation \(6 cells run", page)
    assert "## Submit your agent" in page and "package.module:ClassName" in page
    assert absolute_paths(page) == []
    assert not any(p in page for p in MACHINE_PATHS)


def test_leaderboard_refuses_absolute_paths(bench, tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)  # the benchmark's folder is not under here
    with pytest.raises(LeaderboardError, match="outside this folder"):
        build([bench / "results.json"], "leaderboard.md")
    shutil.copy(bench / "results.json", folder / "copied.json")
    with pytest.raises(LeaderboardError, match="portable_results"):
        build(["copied.json"], "leaderboard.md")
    # published as scripts/portable_results.py does, it makes a page
    meta = json.loads((bench / "results.json").read_text())
    (folder / "published.json").write_text(json.dumps(portable(meta, str(bench.parent))))
    text = build(["published.json"], "leaderboard.md")
    assert absolute_paths(text) == [] and (folder / "leaderboard.md").read_text() == text


def test_tracks_and_versions_make_separate_tables(bench, monkeypatch):
    monkeypatch.chdir(bench.parent)
    base = load(Path("bench/results.json"))
    newer = copy.deepcopy(base) | {"track": {"name": "tiny-test", "version": 2},
                                   "_file": "v2.json"}
    text = render([base, newer], "cmd", {"commit": None})
    assert len(tables(text)) == 2
    assert "## Track `tiny-test` (version 1)" in text
    assert "## Track `tiny-test` (version 2)" in text
    # one track from two files: one table; an agent in both is refused
    part = copy.deepcopy(base) | {"_file": "part.json"}
    part["agents"] = {"extra": part["agents"].pop("albert") | {"improvement": None}}
    part["cells"] = [c | {"agent": "extra"} for c in part["cells"] if c["agent"] == "albert"]
    part["statistics"]["baseline"] = None
    text = render([base, part], "cmd", {"commit": None})
    (merged,) = tables(text)
    assert set(merged) == {*AGENTS, "extra"}
    # qlearning is in the other file: the comparison is computed as one report would
    cell = merged["extra"]["P(improves on qlearning)"]
    assert cell.endswith(" \\*") and "\\*: P(improves on qlearning) computed here" in text
    values = [c["result"]["final_val_ppl"] for c in part["cells"]]
    baseline = [c["result"]["final_val_ppl"] for c in base["cells"] if c["agent"] == "qlearning"]
    assert_matches(cell[:-len(" \\*")], improvement(values, baseline,
                                                     "improvement/extra/qlearning",
                                                     Bootstrap(reps=1000)), 2)
    # the same seeds as albert's: the same estimate (the bootstrap draws differ by name)
    assert merged["albert"]["P(improves on qlearning)"].split()[0] == cell.split()[0]
    with pytest.raises(LeaderboardError, match="in both bench/results.json and again.json"):
        render([base, copy.deepcopy(base) | {"_file": "again.json"}], "cmd", {"commit": None})


def test_without_qlearning_the_comparison_is_not_computed(bench, monkeypatch):
    monkeypatch.chdir(bench.parent)
    meta = load(Path("bench/results.json"))
    del meta["agents"]["qlearning"]
    meta["statistics"]["baseline"] = None
    for row in meta["agents"].values():
        row["improvement"] = None
    text = render([meta], "cmd", {"commit": None})
    assert "- **Beats `qlearning`:** not computed" in text
    assert all(row["P(improves on qlearning)"] == "—" for row in tables(text)[0].values())


def test_a_titled_page_has_the_same_tables_without_the_submit_section(bench, monkeypatch,
                                                                     page):
    monkeypatch.chdir(bench.parent)
    text = build(["bench/results.json"], "families.md", title="A comparison")
    assert text.startswith("---\nhide:\n  - toc\n---\n\n# A comparison\n")
    assert "--title 'A comparison'" in text
    assert "Submit your agent" not in text and "Submit your agent" in page
    assert tables(text) == tables(page)


def test_links_are_relative_to_the_page():
    from agents.benchmark.leaderboard import _link

    assert _link("docs/results/a.json", "docs") == "[`docs/results/a.json`](results/a.json)"
    assert _link("docs/results/a.json", "docs/results") == "[`docs/results/a.json`](a.json)"
    assert _link("runs/a.json", "docs") == "`runs/a.json`"


# ---------------------------------------------------------------- committed files
def committed(folder: str) -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True,
                                text=True, check=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return sorted(p for p in (ROOT / folder).rglob("*") if p.is_file())
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def test_no_absolute_path_in_any_committed_doc_or_result():
    files = committed("docs")
    assert any(p.name.endswith(".md") for p in files)  # the scan sees the docs
    results = sorted((ROOT / "docs" / "results").glob("*.json"))
    scanned = 0
    for path in sorted(set(files) | set(results)):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images
        scanned += 1
        found = [p for p in MACHINE_PATHS if p in text] + absolute_paths(text)
        assert not found, f"{path.relative_to(ROOT)} holds absolute paths: {found}"
    assert scanned >= 10


def test_the_path_detector_finds_machine_paths():
    assert absolute_paths("--out /home/me/runs/x --cache-dir /tmp/c") == [
        "/home/me/runs/x", "/tmp/c"]
    assert absolute_paths("C:\\Users\\me\\runs") == ["C:\\Users\\me\\runs"]
    assert absolute_paths("runs/tmp/x docs/results/a.json https://example.org/home/") == []
