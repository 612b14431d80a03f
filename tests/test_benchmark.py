"""`python -m agents.benchmark`: cells in processes, resume, failures, tables, plots, options."""

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from agents.benchmark import main, run_benchmark, summarize
from agents.benchmark.attempt import cell_run
from agents.benchmark.cells import cell_dir, make_request
from agents.benchmark.claims import new_owner, try_claim
from agents.runs import cli, tracking
from tying_env.errors import SettingError

# tiny and fast: 3 decisions of 4 optimizer steps, one evaluation batch
ENV_KWARGS = {"n_layer": 4, "max_sweeps": 1, "eval_batches": 1, "n_embd": 32, "n_head": 2}
AGENTS, SEEDS = ("vanilla", "albert"), (0, 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESULT_KEYS = {"agent", "seed", "env_id", "env_kwargs", "agent_kwargs", "final_val_ppl",
               "final_test_ppl", "trainable_fraction", "mean_trainable_fraction",
               "memory_bytes", "train_steps", "total_seconds", "optimal_val_ppl"}


def bench_args(out: Path, cache_dir: Path, *extra: str, env_kwargs: dict | None = None,
               agents: str = ",".join(AGENTS), seeds: str = "0,1") -> list[str]:
    return ["--env", "LayerTying-GPT2-Tiny-v0",
            "--env-kwargs", json.dumps(ENV_KWARGS if env_kwargs is None else env_kwargs),
            "--agents", agents, "--seeds", seeds, "--workers", "2", "--threads", "1",
            "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress", *extra]


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def result_mtimes(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/result.json")}


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Rows of the first table (the results table) by first cell (agent)."""
    rows: dict[str, list[str]] = {}
    for line in markdown.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        if not line.startswith("| agent") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def bench(tmp_path_factory, cache_dir) -> Path:
    """One 2-agent x 2-seed benchmark, run through the command line with 2 workers."""
    out = tmp_path_factory.mktemp("bench")
    assert main(bench_args(out, cache_dir)) == 0
    return out


def test_results_json_holds_every_cell_with_request_and_machine(bench):
    results = load(bench / "results.json")
    assert results["counts"] == {"finished": 4, "failed": 0, "incomplete": 0, "missing": 0}
    assert sorted(results["run"]["ran"]) == sorted(f"{a}-s{s}" for a in AGENTS for s in SEEDS)
    assert results["run"]["skipped"] == [] and results["run"]["failed"] == []
    request = results["request"]
    assert request["env_kwargs"] == ENV_KWARGS and request["agents"] == list(AGENTS)
    assert request["seeds"] == list(SEEDS) and request["threads"] == 1
    assert "--agents vanilla,albert" in request["command"]
    assert {"platform", "cpu_count", "torch"} <= set(results["machine"])
    assert re.match(r"\d{4}-\d\d-\d\dT", results["date"])
    cells = {(c["agent"], c["seed"]): c for c in results["cells"]}
    assert set(cells) == {(a, s) for a in AGENTS for s in SEEDS}
    for (agent, seed), cell in cells.items():
        result = cell["result"]
        assert cell["status"] == "finished" and RESULT_KEYS <= set(result)
        assert (result["agent"], result["seed"]) == (agent, seed)
        assert result["env_kwargs"]["n_layer"] == 4 and result["env_kwargs"]["n_embd"] == 32
        assert result["train_steps"] == 12 and math.isfinite(result["final_val_ppl"])
        # the run folder is a complete train_agent.py run, with its output captured
        folder = bench / cell["path"]
        assert load(folder / "result.json") == result
        assert len((folder / "log.jsonl").read_text().splitlines()) == 3
        assert f"{agent} on LayerTying-GPT2-Tiny-v0 (seed {seed})" in \
            (folder / "stdout.txt").read_text()
    # seeds differ, agents differ in what they train
    assert cells["vanilla", 0]["result"]["final_val_ppl"] != \
        cells["vanilla", 1]["result"]["final_val_ppl"]
    assert cells["vanilla", 0]["result"]["trainable_fraction"] == 1.0
    assert cells["albert", 0]["result"]["trainable_fraction"] < 0.5


def test_results_md_has_one_row_per_agent_with_iqm_and_interval(bench):
    results = load(bench / "results.json")
    text = (bench / "results.md").read_text()
    rows = table_rows(text)
    assert set(rows) == {*AGENTS, "*optimal (source)*"}
    for agent in AGENTS:
        finished = [c["result"] for c in results["cells"] if c["agent"] == agent]
        iqm = results["agents"][agent]["iqm"]
        for column, key in ((0, "final_val_ppl"), (1, "final_test_ppl")):
            values = [r[key] for r in finished]
            assert iqm[key]["value"] == pytest.approx(np.mean(values))  # IQM of 2 = mean
            assert iqm[key]["n"] == 2 and iqm[key]["low"] <= iqm[key]["high"]
            assert rows[agent][column] == (f"{iqm[key]['value']:.2f} [{iqm[key]['low']:.2f}, "
                                           f"{iqm[key]['high']:.2f}]")
        memory = np.mean([r["memory_bytes"]["total"] for r in finished]) / 2**20
        assert rows[agent][6] == f"{memory:.3f}"
        assert rows[agent][-1] == "0, 1"
        returns = [c["episode_return"] for c in results["cells"] if c["agent"] == agent]
        assert all(math.isfinite(r) for r in returns)
        assert iqm["episode_return"]["value"] == pytest.approx(np.mean(returns))
    assert float(rows["vanilla"][3].split()[0]) == 1.0  # trainable fraction at the end
    assert float(rows["albert"][4].split()[0]) == 0.75  # 3 of 4 layers tied
    assert float(rows["albert"][6]) < float(rows["vanilla"][6])  # memory goes down with ties
    optimal = results["cells"][0]["result"]["optimal_val_ppl"]
    assert rows["*optimal (source)*"][0] == f"{optimal:.2f}"
    assert "mean ± std" not in text and "±" not in text
    assert "Skipped: no comparison: 'qlearning' has no finished seed" in text


def test_plots_are_pngs(bench):
    for name in ("pareto.png", "curves.png", "intervals.png", "profiles.png"):
        path = bench / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_rerun_skips_finished_cells_and_repairs_broken_ones(bench, cache_dir, capsys):
    before = result_mtimes(bench)
    assert main(bench_args(bench, cache_dir)) == 0
    assert result_mtimes(bench) == before
    run = load(bench / "results.json")["run"]
    assert run["ran"] == [] and len(run["skipped"]) == 4
    assert "0 run now, 4 skipped" in capsys.readouterr().out

    (bench / "cells" / "vanilla-s1" / "result.json").unlink()
    (bench / "cells" / "albert-s0" / "result.json").write_text('{"agent": "albert", "se')
    stray = bench / "cells" / "vanilla-s1" / "stray.txt"
    stray.write_text("left over from a broken run")
    assert main(bench_args(bench, cache_dir)) == 0
    after = result_mtimes(bench)
    assert sorted(load(bench / "results.json")["run"]["ran"]) == ["albert-s0", "vanilla-s1"]
    for name in ("vanilla-s0", "albert-s1"):
        assert after[name] == before[name]
    for name in ("vanilla-s1", "albert-s0"):
        assert after[name] > before[name]
        assert load(bench / "cells" / name / "result.json")["total_seconds"] > 0
    assert not stray.exists()  # a broken cell's folder is deleted before it is run again
    assert load(bench / "results.json")["counts"]["finished"] == 4


def test_changed_env_kwargs_are_refused_without_touching_cells(bench, cache_dir, capsys):
    before = result_mtimes(bench)
    md = (bench / "results.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(bench_args(bench, cache_dir, env_kwargs={**ENV_KWARGS, "n_layer": 3}))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out" in err and "env_kwargs.n_layer: 4 -> 3" in err
    assert "vanilla-s0" in err and "albert-s1" in err
    assert result_mtimes(bench) == before and (bench / "results.md").read_text() == md
    # so are other hyperparameters for an agent that has results
    with pytest.raises(SettingError) as error:
        run_benchmark("LayerTying-GPT2-Tiny-v0", ENV_KWARGS, ["vanilla"], [0], 1, bench,
                      agent_kwargs={"vanilla": {"n_unique": 2}}, cache_dir=cache_dir)
    assert error.value.argument == "out"
    assert "agent_kwargs.n_unique: '(absent)' -> 2" in str(error.value)
    assert result_mtimes(bench) == before


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="needs the extra 'wandb'")
def test_a_tracker_does_not_change_which_cells_are_finished(bench, cache_dir, capsys):
    """Cells finished without a tracker count as the same configuration with one."""
    before = result_mtimes(bench)
    assert main(bench_args(bench, cache_dir, "--tracker", "wandb")) == 0
    assert "0 run now, 4 skipped" in capsys.readouterr().out
    assert result_mtimes(bench) == before
    request = load(bench / "results.json")["request"]
    assert request["tracker"] == "wandb" and request["command"].endswith("--tracker wandb")
    assert not any((bench / "cells").glob("*/wandb"))  # nothing ran, nothing was tracked


def test_each_cell_is_one_tracked_run_grouped_by_the_benchmark(tmp_path, monkeypatch):
    """The request's tracker reaches every cell's spec, with the benchmark folder's name as
    its group, also when a stopped cell is resumed; the cell stays the same configuration."""
    monkeypatch.setattr(tracking, "check", lambda name: None)  # installed or not
    out = tmp_path / "bench-x"
    plain = make_request("LayerTying-GPT2-Tiny-v0", ENV_KWARGS, ["qlearning"], [0], 1, out)
    tracked = make_request("LayerTying-GPT2-Tiny-v0", ENV_KWARGS, ["qlearning"], [0], 1, out,
                           tracker="wandb")
    spec = tracked.spec("qlearning", 0)
    assert (spec.tracker, spec.tracker_group) == ("wandb", "bench-x")
    assert plain.spec("qlearning", 0).tracker is None
    assert spec.settings() == plain.spec("qlearning", 0).settings()  # what a cell is
    assert tracked.expected("qlearning", 0) == plain.expected("qlearning", 0)
    assert "--tracker wandb --tracker-group bench-x" in " ".join(cli.to_argv(spec))
    # a cell stopped after its checkpoint, started without a tracker, resumes with one
    folder = cell_dir(out, "qlearning", 0)
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "manifest.json").write_text("{}")
    (folder / "run.json").write_text(json.dumps(plain.spec("qlearning", 0).to_run_file()))
    owner = new_owner()
    claim = try_claim(folder, owner)
    assert claim is not None
    try:
        resumed = cell_run(tracked, "qlearning", 0, owner)
        assert resumed.resume and (resumed.tracker, resumed.tracker_group) == ("wandb",
                                                                               "bench-x")
        assert cell_run(plain, "qlearning", 0, owner).tracker is None  # and back
    finally:
        claim.release()
    assert load(folder / "run.json")["tracker"] is None  # the cell's files are untouched


def test_summarize_rebuilds_outputs_from_cells(bench):
    text = (bench / "results.md").read_text()
    names = ("results.md", "pareto.png", "curves.png", "intervals.png", "profiles.png")
    for name in names:
        (bench / name).unlink()
    rebuilt = summarize(bench)
    assert (bench / "results.md").read_text() == rebuilt
    assert table_rows(rebuilt) == table_rows(text)  # the same intervals: seeded bootstrap
    assert all((bench / name).is_file() for name in names)


def test_failing_cell_is_reported_and_exits_nonzero(tmp_path, cache_dir, capsys):
    out = tmp_path / "failing"
    args = bench_args(out, cache_dir, "--agent-kwargs", '{"vanilla": {"bogus": 1}}',
                      seeds="0")
    assert main(args) == 1
    assert "1 failed" in capsys.readouterr().out
    results = load(out / "results.json")
    status = {c["name"]: c["status"] for c in results["cells"]}
    assert status == {"vanilla-s0": "failed", "albert-s0": "finished"}  # the others still run
    assert results["run"]["failed"] == ["vanilla-s0"]
    folder = out / "cells" / "vanilla-s0"
    failure = load(folder / "failure.json")
    assert failure["returncode"] == 2  # train_agent.py's status for a bad option
    assert "bogus" in (folder / "stderr.txt").read_text()
    assert "--agent-kwargs" in failure["stderr_tail"][-1]
    rows = table_rows((out / "results.md").read_text())
    assert rows["vanilla"][0] == "—" and "failed: 0" in rows["vanilla"][-1]
    assert rows["albert"][0].endswith("(n=1)")
    assert "## Failed cells" in (out / "results.md").read_text()
    assert "| vanilla-s0 | 2 |" in (out / "results.md").read_text()


def test_a_crashing_agents_traceback_stays_in_its_cell(tmp_path, cache_dir, capsys):
    """An agent that raises inside run(): the cell's stderr.txt keeps the traceback,
    failure.json its tail, and results.md the exception's line."""
    out = tmp_path / "crash"
    args = bench_args(out, cache_dir, agents="helper_agents:CrashingAgent,albert", seeds="0")
    assert main(args) == 1
    assert "RuntimeError: CrashingAgent gave up at decision 2" in capsys.readouterr().err
    folder = next((out / "cells").glob("helper_agents*-s0"))
    stderr = (folder / "stderr.txt").read_text()
    assert "Traceback (most recent call last)" in stderr and "in act" in stderr
    failure = load(folder / "failure.json")
    assert failure["returncode"] == 1
    assert failure["stderr_tail"][-1] == "RuntimeError: CrashingAgent gave up at decision 2"
    page = (out / "results.md").read_text()
    assert "| RuntimeError: CrashingAgent gave up at decision 2 |" in page


@pytest.mark.parametrize(("change", "option", "words"), [
    ({"--agents": "vanilla,nope"}, "--agents", "'nope'"),
    ({"--agents": "vanilla,,albert"}, "--agents", "comma-separated"),
    ({"--agents": "vanilla,vanilla"}, "--agents", "more than once"),
    ({"--env": "Nope-v0"}, "--env", "Nope-v0"),
    ({"--env-kwargs": "{bad"}, "--env-kwargs", "not valid JSON"),
    ({"--env-kwargs": "[4]"}, "--env-kwargs", "not a JSON object"),
    ({"--env-kwargs": '{"n_layer": 1}'}, "--env-kwargs", "n_layer=1"),
    ({"--env-kwargs": '{"bogus": 1}'}, "--env-kwargs", "bogus"),
    ({"--seeds": "0,x"}, "--seeds", "'x'"),
    ({"--seeds": "0,-1"}, "--seeds", "'-1'"),
    ({"--seeds": "1,1"}, "--seeds", "more than once"),
    ({"--workers": "0"}, "--workers", "int >= 1"),
    ({"--workers": "two"}, "--workers", "int >= 1"),
    ({"--threads": "0"}, "--threads", "int >= 1"),
    ({"--agent-kwargs": '{"ppo": {}}'}, "--agent-kwargs", "not one of --agents"),
    ({"--agent-kwargs": '{"vanilla": 3}'}, "--agent-kwargs", "JSON object"),
    ({"--agent-kwargs": "nope"}, "--agent-kwargs", "not valid JSON"),
])
def test_bad_options_name_the_option(tmp_path, cache_dir, capsys, change, option, words):
    args = bench_args(tmp_path / "out", cache_dir)
    for key, value in change.items():
        if key in args:
            args[args.index(key) + 1] = value
        else:
            args += [key, value]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and words in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_api_raises_setting_error_naming_the_setting(tmp_path):
    with pytest.raises(SettingError) as error:
        run_benchmark("LayerTying-GPT2-Tiny-v0", {}, ["vanilla"], [0], 0, tmp_path)
    assert error.value.argument == "workers"


def test_a_setting_added_since_a_request_was_recorded_reads_as_its_default():
    """A results folder recorded before a setting existed (neither its request nor its
    cells name it) keeps its finished cells; a cell that ran another value does not."""
    from agents.benchmark.cells import differences
    from agents.runs.result import RunResult
    from tying_env.presets import ADDED_SETTINGS

    name, default = next(iter(ADDED_SETTINGS.items()))
    old = {"n_layer": 2}
    result = RunResult(agent="random", seed=0, env_id="E", env_kwargs=old)
    assert differences(result, {"env_kwargs": old}) == []
    assert differences(result, {"env_kwargs": {**old, name: default}}) == []
    other = "published" if name == "tie_semantics" else 1
    changed = RunResult(agent="random", seed=0, env_id="E", env_kwargs={**old, name: other})
    assert differences(changed, {"env_kwargs": old}) == [
        f"env_kwargs.{name}: {other!r} -> {default!r}"]
