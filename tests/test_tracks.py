"""Benchmark tracks: fixed settings, recorded labels, versions that never mix, reward noise."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agents.benchmark import noise, tracks
from agents.benchmark.cells import conflicts, make_request
from tying_env.errors import SettingError

QUICK = {"n_layer": 3, "n_embd": 16, "n_head": 2, "seq_len": 16, "batch_size": 2,
         "max_sweeps": 1, "steps_per_decision": 1, "eval_batches": 1, "device": "cpu"}


def quick_track(version: int = 1) -> tracks.Track:
    return tracks.Track(name="quick", version=version, env_id="LayerTying-GPT2-Tiny-v0",
                        env_kwargs=QUICK, seeds=(0,), agents=("albert", "vanilla"),
                        description="a test track")


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> tracks.Track:
    track = quick_track()
    monkeypatch.setitem(tracks.TRACKS, "quick", track)
    return track


def test_every_track_resolves_to_valid_settings(tmp_path: Path) -> None:
    for name in tracks.TRACKS:
        track = tracks.get(name)
        assert track.label == f"{name}/v{track.version}"
        if track.history:  # v2 tracks: test_v2_tracks_run_every_agent_on_the_same_seeds...
            assert len(track.seeds) >= (10 if name == "tiny" else 5)
            assert set(tracks.MAIN_AGENTS) <= set(track.agents)
        request = make_request(track.env_id, track.env_kwargs, track.agents, track.seeds, 1,
                               tmp_path / name, track=track.to_json())
        assert request.env_config["max_sweeps"] == track.env_kwargs["max_sweeps"]
    # the tiny track's budget lets the paper's epsilon (x 0.95 per sweep) reach 0.01
    assert 0.95 ** tracks.get("tiny").env_kwargs["max_sweeps"] < 0.01
    tiny = tracks.get("tiny")
    assert len(tiny.extra_seeds) >= 5 and "sequence" in tiny.extra_agents
    assert not set(tiny.extra_agents) & set(tiny.agents)


def test_v2_tracks_run_every_agent_on_the_same_seeds_and_hold_test_seeds_out() -> None:
    from agents.runs.protocol import eval_seed, train_seed

    v2 = [tracks.get(n) for n in tracks.TRACKS if not tracks.get(n).history]
    assert {t.name for t in v2} == {"deep", "deep-transfer"}
    for track in v2:
        assert track.paired and track.objective and not track.extra_agents
        assert set(tracks.cells(track).values()) == {track.seeds}  # one set of seeds
        assert set(track.random_for) <= set(track.agents)
        assert set(track.random_for.values()) | set(track.static_agents) <= set(track.agents)
        assert track.env_kwargs["n_layer"] >= 12  # 75% tied leaves >= 3 roots
        train = {train_seed(s, i) for s in track.seeds for i in range(track.train_episodes)}
        test = {eval_seed(s, k) for s in track.seeds for k in range(track.eval_episodes)}
        if track.train_episodes:
            assert len(test) >= 10 and not train & test
        else:
            assert len(track.seeds) >= 10


def test_unknown_track_and_fixed_options_are_refused() -> None:
    with pytest.raises(SettingError, match="'nope' is not a track; allowed: tiny, wikitext2, "
                                           "deep, deep-transfer"):
        tracks.get("nope")
    with pytest.raises(SettingError, match="--env-kwargs, --seeds") as err:
        tracks.refuse_overrides(["--out", "x", "--env-kwargs", "{}", "--seeds", "0"])
    assert err.value.argument == "track"
    tracks.refuse_overrides(["--out", "x", "--workers", "2", "--agents", "qlearning"])


def test_extra_agents_take_their_seeds_and_a_mix_is_refused() -> None:
    tiny = tracks.get("tiny")
    assert tracks.seeds_for(tiny, ("qlearning", "vanilla")) == tiny.seeds
    assert tracks.seeds_for(tiny, ("sequence", "ppo")) == tiny.extra_seeds
    with pytest.raises(SettingError, match="sequence run on seeds"):
        tracks.seeds_for(tiny, ("qlearning", "sequence"))


def test_cells_record_the_track_and_versions_never_mix(quick: tracks.Track, tmp_path: Path,
                                                       cache_dir: Path) -> None:
    from agents.benchmark.attempt import run_cell

    out = tmp_path / "bench"
    request = make_request(quick.env_id, quick.env_kwargs, ("albert",), quick.seeds, 1, out,
                           cache_dir=cache_dir, track=quick.to_json())
    spec = request.spec("albert", 0)
    assert spec.track == "quick/v1" and "--track" in request.command()
    assert run_cell(spec) == 0
    result = json.loads((out / "cells" / "albert-s0" / "result.json").read_text())
    assert result["track"] == "quick/v1"
    assert json.loads((out / "cells" / "albert-s0" / "run.json").read_text()
                      )["settings"]["track"] == "quick/v1"
    assert conflicts(request) == []
    bumped = replace(request, track=quick_track(version=2).to_json())
    found = conflicts(bumped)
    assert len(found) == 1 and "track: 'quick/v1' -> 'quick/v2'" in found[0]


def test_a_train_then_test_cell_records_the_track_and_counts_as_finished(
        quick: tracks.Track, tmp_path: Path, cache_dir: Path) -> None:
    """The train-then-test protocol writes the track's label too: without it a finished
    cell does not match its request and the benchmark calls it failed."""
    from agents.benchmark.attempt import run_cell
    from agents.benchmark.cells import cell_status

    out = tmp_path / "bench"
    request = make_request(quick.env_id, quick.env_kwargs, ("albert",), quick.seeds, 1, out,
                           cache_dir=cache_dir, track=quick.to_json(), train_episodes=1,
                           eval_episodes=1)
    assert run_cell(request.spec("albert", 0)) == 0
    result = json.loads((out / "cells" / "albert-s0" / "result.json").read_text())
    assert (result["protocol"], result["track"]) == ("train-evaluate", "quick/v1")
    assert cell_status(out, "albert", 0, request.expected("albert", 0)) == "finished"


def test_reward_noise_is_measured_from_replayed_states(quick: tracks.Track,
                                                       cache_dir: Path) -> None:
    result = noise.measure(quick, points=1, replicas=2, eval_batches=(1, 2), seeds=(0, 1),
                           phases=(0.0, 0.5), cache_dir=str(cache_dir), max_windows=16)
    assert result["points"] == 4 and result["track"] == "quick/v1"
    assert [(r["seed"], r["phase"]) for r in result["rows"]] == [
        (0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)]
    budget = result["rows"][1]["decision"] * 2  # the middle of the episode
    assert result["rows"][0]["decision"] == 0 and budget > 0
    assert set(result["per_phase"]) == {"0.0", "0.5"}
    assert result["per_phase"]["0.5"]["points"] == 2
    for row in result["rows"]:
        assert row["train_noise_std"] >= 0
        assert len(row["decision_effects"]) == row["layer"]  # every other valid choice
        assert all(e >= 0 for e in row["decision_effects"])
    assert set(result["eval_noise_std"]) == {"1", "2"}
    # replaying a data order twice gives the same reward: the noise comes from the order
    assert result["train_noise_std"] > 0
    assert result["snr"] > 0 and result["subsets"] == "spread"
    text = noise.format_report(result)
    assert "effect of one decision" in text and "evaluation noise, 1 batches" in text
    assert "signal-to-noise" in text and "at 50%" in text


def test_evaluation_subsets_are_disjoint_and_spread_over_the_split() -> None:
    windows = np.arange(20)[:, None]
    subsets = noise.spread_subsets(windows, 5)
    assert [s.ravel().tolist() for s in subsets] == [[0, 4, 8, 12, 16], [1, 5, 9, 13, 17],
                                                      [2, 6, 10, 14, 18], [3, 7, 11, 15, 19]]
    assert noise.spread_subsets(windows, 20) == []  # one subset: no spread to measure


def test_noise_summary_recommends_the_smallest_quiet_evaluation() -> None:
    rows = [{"decision_effects": [0.004], "train_noise_std": 0.002,
             "eval_noise_std": {"1": 0.004, "4": 0.0009, "8": 0.0005}}]
    summary = noise.summarize(rows, (1, 4, 8), track_eval_batches=1)
    assert summary["recommended_eval_batches"] == 4  # 0.0009 <= 0.002 / 2
    assert summary["snr"] == pytest.approx(0.004 / np.hypot(0.002, 0.004))


def test_cli_refuses_what_a_track_fixes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from agents.benchmark.cli import main

    for extra, option in ((["--seeds", "0"], "--seeds"), (["--env-kwargs", "{}"], "--env-kwargs"),
                          (["--env", "LayerTying-GPT2-Tiny-v0"], "--env")):
        with pytest.raises(SystemExit) as stop:
            main(["--track", "tiny", "--out", str(tmp_path / "x"), *extra])
        assert stop.value.code == 2
        assert f"a track fixes {option}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--track", "nope", "--out", str(tmp_path / "x")])
    assert "'nope' is not a track" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x")])
    assert "--agents" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_runs_a_track_and_records_it(quick: tracks.Track, tmp_path: Path,
                                         cache_dir: Path) -> None:
    from agents.benchmark.cli import main

    out = tmp_path / "bench"
    argv = ["--track", "quick", "--agents", "albert", "--out", str(out), "--cache-dir",
            str(cache_dir), "--no-progress"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["request"]["track"]["label"] == "quick/v1"
    assert "--track quick" in results["request"]["command"]
    assert [c["result"]["track"] for c in results["cells"]] == ["quick/v1"]


def test_a_v2_track_runs_end_to_end_into_paired_statistics_and_the_leaderboard(
        tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real cells of a small v2 track: the report's paired block and the page's v2 section."""
    from agents.benchmark import main as benchmark_main
    from agents.benchmark.paired_page import answers, paired_section

    track = tracks.Track(
        name="quickv2", version=1, env_id="LayerTying-GPT2-Tiny-v0",
        env_kwargs={**QUICK, "n_layer": 4, "param_penalty": 1e-3}, seeds=tuple(range(6)),
        agents=("random", "static-1", "vanilla"), description="a v2 test track",
        reference_agent="random", objective="rewarded for the log-ppl change minus a "
        "penalty, ranked by return", rank_metric="episode_return",
        random_for={"random": "random"}, static_agents=("static-1", "vanilla"))
    monkeypatch.setitem(tracks.TRACKS, "quickv2", track)
    out = tmp_path / "bench"
    assert benchmark_main(["--track", "quickv2", "--out", str(out), "--workers", "2",
                           "--threads", "1", "--cache-dir", str(cache_dir),
                           "--no-progress"]) == 0
    meta = json.loads((out / "results.json").read_text())
    paired = meta["statistics"]["paired"]
    assert paired["method"]["metric"] == "episode_return"
    assert paired["method"]["lower_is_better"] is False
    assert set(paired["comparisons"]) == {"static-1", "vanilla"}
    assert all(row["n"] == 6 for row in paired["comparisons"].values())  # paired by seed
    assert paired["best_static"] in ("static-1", "vanilla")
    assert paired["hypothesis"]["conventional"] == "vanilla"
    assert paired["normalised"]["agents"]["random"]["value"] == pytest.approx(0.0)
    text = "\n".join([*paired_section(meta), *answers(meta)])
    assert "ranked by return" in text and "| `vanilla` | fixed |" in text
    assert "- Which agent beats `random`?" in text
    assert "**Protocol:** online (the paper's)" in text
    # a train-then-test track with one training run per learner says what its intervals miss
    meta["request"]["track"] |= {"train_episodes": 10, "eval_episodes": 10, "seeds": [0]}
    text = "\n".join(paired_section(meta))
    assert "then the frozen agent on 10 held-out seeds (one training run per learner" in text
    assert "| test seeds |" in text and "| `vanilla` | fixed |" in text
    from agents.benchmark.leaderboard import setting_lines

    assert "; seeds 0 (training runs; test seeds 1000000-1000009); " in setting_lines([meta])[0]
