"""Rendering: `render_mode="rgb_array"` frames, the `"ansi"` line, RecordVideo."""

from __future__ import annotations

import importlib.util
import statistics
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest

import tying_env  # noqa: F401  (registers the ids)
from tying_env import render as rendering
from tying_env.errors import SettingError

FAST = dict(n_layer=4, max_sweeps=2, eval_batches=1, steps_per_decision=1)
SHAPE = (rendering.FRAME_HEIGHT, rendering.FRAME_WIDTH, 3)


def make(cache_dir, render_mode="rgb_array", **kwargs):
    return gym.make("LayerTying-GPT2-Tiny-v0", render_mode=render_mode, cache_dir=cache_dir,
                    **{**FAST, **kwargs})


def grid_pixels(env: gym.Env, frame: np.ndarray) -> np.ndarray:
    """The part of `frame` inside the tie-map axes."""
    box = env.unwrapped._canvas.ax.get_window_extent()
    height = frame.shape[0]
    return frame[int(height - box.y1) + 1:int(height - box.y0) - 1,
                 int(box.x0) + 1:int(box.x1) - 1]


def cell_color(env: gym.Env, frame: np.ndarray, decision: int, layer: int) -> np.ndarray:
    """The RGB colour at the centre of the grid cell (decision, layer)."""
    x, y = env.unwrapped._canvas.ax.transData.transform((decision, layer))
    return frame[int(round(frame.shape[0] - y)), int(round(x))]


def test_rgb_frame_has_the_documented_shape_and_type(cache_dir):
    env = make(cache_dir)
    assert env.render_mode == "rgb_array"
    assert env.unwrapped.render() is None  # nothing to draw before reset()
    env.reset(seed=0)
    frame = env.render()  # through gym.make's checker, which checks rgb frames too
    assert isinstance(frame, np.ndarray) and frame.shape == SHAPE and frame.dtype == np.uint8
    assert frame.shape[0] % 16 == 0 and frame.shape[1] % 16 == 0  # what video encoders want
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 8  # a picture, not a blank
    _, _, _, _, info = env.step(0)
    again = env.render()
    assert again.shape == SHAPE and again.dtype == np.uint8
    assert not np.shares_memory(frame, again)  # frames are copies, safe to keep


def test_metadata_lists_the_modes_and_a_frame_rate():
    from tying_env.env import LayerTyingEnv

    assert set(LayerTyingEnv.metadata["render_modes"]) == {"rgb_array", "ansi"}
    assert LayerTyingEnv.metadata["render_fps"] > 0


def test_frames_show_the_tie_map(cache_dir):
    """Same seed, two first actions: the grids differ exactly when the tie map does."""
    frames, colors = {}, {}
    for action in (0, 1, 0):  # layer 1 keeps running block 0 / trains its own weights
        env = make(cache_dir)
        env.reset(seed=3)
        _, _, _, _, info = env.step(action)
        frame = env.render()
        assert info["changed"] == (action == 1)
        frames.setdefault(action, []).append(grid_pixels(env, frame))
        colors[action] = cell_color(env, frame, decision=1, layer=1)
    same, untied = frames[0], frames[1][0]
    assert np.array_equal(same[0], same[1])  # the grid depends on the tie maps only
    assert not np.array_equal(same[0], untied)
    expected = np.round(255 * rendering.root_colors(FAST["n_layer"])[:, :3]).astype(int)
    assert np.abs(colors[0].astype(int) - expected[0]).max() <= 2  # root 0
    assert np.abs(colors[1].astype(int) - expected[1]).max() <= 2  # its own root: 1


def test_frames_differ_from_step_to_step(cache_dir):
    env = make(cache_dir)
    env.reset(seed=0)
    previous = env.render()
    for action in (1, 0, 3):
        env.step(action)
        frame = env.render()
        assert not np.array_equal(frame, previous)
        previous = frame


def test_vector_mode_and_the_last_frame(cache_dir):
    env = make(cache_dir, action_mode="vector")
    env.reset(seed=0)
    truncated = False
    while not truncated:
        _, _, _, truncated, _ = env.step(np.array([0, 1, 2, 0]))
        assert env.render().shape == SHAPE


def test_a_restored_episode_draws_from_its_restore_point(cache_dir):
    env = make(cache_dir)
    env.reset(seed=0)
    env.step(1)
    env.step(2)
    tensors, meta = env.unwrapped.get_state()
    other = make(cache_dir)
    other.reset(seed=5)
    other.unwrapped.set_state(tensors, meta)
    log = other.unwrapped._tie_log
    assert sorted(log.maps) == [2] and log.last_reward is None
    assert other.render().shape == SHAPE


def test_the_tie_log_starts_again_with_a_new_run():
    class Run:
        pass

    log = rendering.TieLog()
    first, second = Run(), Run()
    log.note(first, 0, [0, 0, 0])
    log.note(first, 1, [0, 1, 0])
    log.last_reward = 0.5
    assert log.grid(3, 4)[:, :3].tolist() == [[0, 0, -1], [0, 1, -1], [0, 0, -1]]
    log.note(second, 0, [0, 0, 0])
    assert sorted(log.maps) == [0] and log.last_reward is None


def test_ansi_is_one_line(cache_dir):
    env = make(cache_dir, render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    line = env.render()
    assert line.startswith("sweep 0 layer 2 ties [0, 1, 0, 0] val_ppl ")
    assert "\n" not in line


def test_unknown_render_mode_is_refused(cache_dir):
    from tying_env.env import LayerTyingEnv

    # (gym.make turns "human" into HumanRendering over "rgb_array", Gymnasium's own way)
    with pytest.raises(SettingError, match="allowed: None, 'rgb_array', 'ansi'") as err:
        LayerTyingEnv(render_mode="human", cache_dir=cache_dir, **FAST)
    assert err.value.argument == "render_mode"


def test_rgb_array_list_collects_the_frames(cache_dir):
    env = make(cache_dir, render_mode="rgb_array_list")  # Gymnasium's RenderCollection
    env.reset(seed=0)
    env.step(1)
    frames = env.render()
    assert len(frames) == 2 and all(f.shape == SHAPE for f in frames)


def test_a_frame_is_quick(cache_dir):
    """One figure per environment, redrawn in place (about 10 to 40 ms a frame)."""
    env = make(cache_dir)
    env.reset(seed=0)
    env.render()
    canvas = env.unwrapped._canvas
    times = []
    for _ in range(5):
        start = time.perf_counter()
        env.render()
        times.append(time.perf_counter() - start)
    assert env.unwrapped._canvas is canvas
    assert statistics.median(times) < 0.2, times  # generous: the cores may be shared


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None,
                    reason="RecordVideo needs moviepy: pip install -e '.[video]'")
def test_record_video_writes_an_mp4(cache_dir, tmp_path):
    env = gym.wrappers.RecordVideo(make(cache_dir), video_folder=str(tmp_path / "videos"),
                                   episode_trigger=lambda episode: True, disable_logger=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a missing render_fps
        env.reset(seed=0)
        truncated = False
        while not truncated:
            _, _, _, truncated, _ = env.step(env.unwrapped.layer)
        env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000, videos


@pytest.mark.parametrize("mode", ["rgb_array", "ansi"])
def test_gymnasium_checker_with_its_render_check(cache_dir, mode):
    from gymnasium.utils.env_checker import check_env

    check_env(make(cache_dir, render_mode=mode, n_layer=3, max_sweeps=1).unwrapped)
