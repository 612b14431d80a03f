"""`python -m agents.runs.replay`: a run's tie-map video from its log; its agent played again."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest

from agents.runs import replay
from agents.runs.cli import main as train_main
from agents.runs.factory import make_env
from agents.runs.plots import read_log
from agents.runs.spec import RunSpec
from tying_env import render as rendering
from tying_env.presets import make_config

# 3 decisions; cycle over 2 blocks: the tie map goes [0, 0, 0, 0] -> [0, 1, 0, 1]
ENV_KWARGS = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1,
              "steps_per_decision": 1}
SHAPE = (rendering.FRAME_HEIGHT, rendering.FRAME_WIDTH, 3)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("replay") / "run"
    assert train_main(["--agent", "cycle", "--agent-kwargs", '{"n_unique": 2}',
                       "--env-kwargs", json.dumps(ENV_KWARGS), "--max-sweeps", "1",
                       "--cache-dir", str(cache_dir), "--out", str(out),
                       "--no-progress"]) == 0
    return out


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def log_views(folder: Path) -> list[rendering.EpisodeView]:
    cfg = replay.run_config(folder)
    records = replay.read_records(folder / "log.jsonl")
    start = replay.reset_record(cfg, records, replay.read_result(folder), folder)
    return replay.episode_views(cfg, records, start)


def test_the_logs_frames_are_the_environments(run_dir):
    """Every frame drawn from the log, the reset's included, is the live environment's."""
    records = read_log(run_dir / "log.jsonl")
    assert [r["tie_map"] for r in records][-1] == [0, 1, 0, 1]
    views = log_views(run_dir)
    assert len(views) == len(records) + 1
    frame = replay.frames(views)
    spec = RunSpec.from_folder(run_dir, progress=False)
    env = make_env(replace(spec, env_kwargs={**spec.env_kwargs, "render_mode": "rgb_array"}))
    _, info = env.reset(seed=spec.seed)
    assert views[0].trainable_fraction == info["trainable_fraction"]  # rebuilt, not logged
    live = [env.render()]
    for r in records:
        env.step(r["action"])
        live.append(env.render())
    env.close()
    for i, expected in enumerate(live):
        assert frame(i).shape == SHAPE
        assert np.array_equal(frame(i), expected), f"frame {i}"


def test_video_writes_a_gif_with_a_frame_per_decision(run_dir, tmp_path, capsys):
    out = tmp_path / "tie_map.gif"
    assert replay.main(["video", str(run_dir), "--out", str(out), "--fps", "5"]) == 0
    assert str(out) in capsys.readouterr().out
    gif = iio.imread(out, index=None)
    views = log_views(run_dir)
    assert gif.shape == (len(views), *SHAPE)
    first = replay.frames(views)(0)  # a GIF's palette changes colours a little
    assert np.abs(gif[0].astype(int) - first).mean() < 2.0


def test_video_mp4_by_default_and_never_overwritten(run_dir, capsys):
    out = run_dir / "tie_map.mp4"
    try:
        assert replay.main(["video", str(run_dir)]) == 0
        assert imageio_v2.get_reader(out).count_frames() == len(log_views(run_dir))
        assert replay.main(["video", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"{out} exists; pass --overwrite" in err and "Traceback" not in err
        assert replay.main(["video", str(run_dir), "--overwrite"]) == 0
    finally:
        out.unlink(missing_ok=True)


def test_play_reproduces_the_run_and_records_it(run_dir, tmp_path, capsys):
    before = snapshot(run_dir)
    video = tmp_path / "play.mp4"
    assert replay.main(["play", str(run_dir), "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert "same tie maps as the run: yes" in out
    assert "final tie map [0, 1, 0, 1]" in out
    assert "final val ppl" in out and "episode return" in out
    assert snapshot(run_dir) == before  # nothing written into the run folder
    recorded = [f for f in imageio_v2.get_reader(video)]
    assert len(recorded) == len(read_log(run_dir / "log.jsonl")) + 1
    assert recorded[0].shape == SHAPE
    assert not list(tmp_path.glob(".replay-*"))  # the staging folder is gone


def test_play_on_another_seed_is_not_compared(run_dir, capsys):
    played = replay.play(run_dir, seed=7)
    assert played.same_as_run is None and len(played.tie_maps) == 3
    assert played.tie_maps[-1] == [0, 1, 0, 1]  # a static pattern, whatever the seed


@pytest.mark.parametrize("command", ["video", "play"])
def test_a_folder_that_is_not_a_run_exits_2_with_one_line(command, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert replay.main([command, str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    missing = "log.jsonl" if command == "video" else "agent/"
    assert err == (f"python -m agents.runs.replay: error: {empty} is not a run folder: it "
                   f"has no run.json, no {missing}")
    assert replay.main([command, str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_missing_moviepy_names_the_extra(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # import moviepy now fails
    monkeypatch.setitem(sys.modules, "moviepy.editor", None)
    assert replay.main(["video", str(run_dir), "--out", str(tmp_path / "v.gif")]) == 1
    assert "pip install -e '.[video]'" in capsys.readouterr().err
    assert not (tmp_path / "v.gif").exists()


def test_the_reset_comes_from_a_checkpoint_or_the_logged_counts(tmp_path):
    """A stopped run's checkpoint holds the reset; else the counts of the log tell it."""
    start = {"decision": 0, "tie_map": [0, 0, 0, 0], "val_ppl": 9.0,
             "trainable_fraction": 0.5}
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps({"start": start}))
    cfg = make_config("llama-tiny", n_layer=4)
    assert replay.reset_record(cfg, [], None, tmp_path) == start
    # llama: no formula here; a record with 2 roots of 4 says a block is 100 of 1000
    records = [{"tie_map": [0, 1, 0, 1], "trainable_params": 800, "total_params": 1000}]
    derived = replay.reset_record(cfg, records, None, tmp_path / "elsewhere")
    assert derived["tie_map"] == [0, 0, 0, 0]
    assert derived["trainable_fraction"] == pytest.approx(0.7)


def test_play_a_train_then_evaluate_run_on_its_evaluation_seed(tmp_path, cache_dir, capsys):
    """Its default seed is the first evaluation seed, whose logged episode it repeats; the
    `video` command points to `play` (such a run has no top-level log)."""
    out = tmp_path / "te"
    assert train_main(["--agent", "cycle", "--agent-kwargs", '{"n_unique": 2}',
                       "--env-kwargs", json.dumps(ENV_KWARGS), "--max-sweeps", "1",
                       "--train-episodes", "1", "--eval-episodes", "1",
                       "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert replay.main(["play", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on seed 1000000" in printed and "same tie maps as the run: yes" in printed
    assert "the run's own: val ppl" in printed
    assert replay.main(["video", str(out)]) == 2
    assert "eval/seed-*/" in capsys.readouterr().err
