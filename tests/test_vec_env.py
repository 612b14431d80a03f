"""Plain Stable-Baselines3: `make_vec_env` with SB3's defaults, workers that find the ids,
the registration plugin, and the README's example with any budget."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import tying_env

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_layer=3, n_embd=32, n_head=2, seq_len=16, batch_size=4, max_sweeps=2,
             eval_batches=1, steps_per_decision=1)
HAS_PLUGIN_LOADER = hasattr(gym.envs.registration, "load_plugin_envs")  # Gymnasium < 1.0

# Runs `make_vec_env` in a fresh interpreter; IMPORT is `import tying_env` or nothing.
SCRIPT = """
import sys
{import_line}
import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

ENV_ID = {env_id!r}
KINDS = {kinds!r}
IMPORTED = {imported!r}
PLUGIN = {plugin!r}  # Gymnasium < 1.0 imports tying_env itself, through the plugin


def main():
    for kind in KINDS:
        cls, vec_kwargs = ((DummyVecEnv, {{}}) if kind == "dummy"
                           else (SubprocVecEnv, dict(start_method=kind)))
        venv = make_vec_env(ENV_ID, n_envs=2, seed=0, env_kwargs={small!r}, vec_env_cls=cls,
                            vec_env_kwargs=vec_kwargs)
        assert venv.get_attr("render_mode") == ["rgb_array", "rgb_array"]  # SB3's default
        obs = venv.reset()
        assert obs.shape == (2, 9), obs.shape
        for _ in range(2):
            obs, rewards, dones, infos = venv.step(np.array([0, 1]))
            assert np.isfinite(rewards).all() and infos[1]["tie_map"][1] == 1
        frames = venv.get_images()
        assert [f.shape for f in frames] == [(320, 480, 3)] * 2, [f.shape for f in frames]
        assert venv.render().dtype == np.uint8  # the frames, tiled
        venv.close()
        # a SubprocVecEnv's main process never needs tying_env itself
        assert PLUGIN or ("tying_env" in sys.modules) == (IMPORTED or kind == "dummy"), kind
        print("ok", kind, flush=True)


if __name__ == "__main__":
    main()
"""


def run_script(tmp_path: Path, cache_dir: Path, *, env_id: str, kinds: tuple[str, ...],
               imported: bool) -> str:
    script = tmp_path / "vec.py"
    script.write_text(SCRIPT.format(import_line="import tying_env" if imported else "",
                                    env_id=env_id, kinds=kinds, imported=imported,
                                    plugin=HAS_PLUGIN_LOADER, small=SMALL), encoding="utf-8")
    env = {**os.environ, "LAYER_TYING_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.split() == [w for k in kinds for w in ("ok", k)], proc.stdout
    return proc.stdout


def test_make_vec_env_with_sb3_defaults(cache_dir, monkeypatch):
    """SB3 asks for render_mode="rgb_array" (and only drops it on a TypeError)."""
    from stable_baselines3.common.env_util import make_vec_env

    monkeypatch.setenv("LAYER_TYING_CACHE", str(cache_dir))
    venv = make_vec_env("LayerTying-GPT2-Tiny-v0", n_envs=2, seed=0, env_kwargs=SMALL)
    try:
        obs = venv.reset()
        obs, rewards, dones, infos = venv.step(np.array([1, 0]))
        assert obs.shape == (2, 9) and [i["tie_map"][1] for i in infos] == [1, 0]
        assert venv.get_images()[0].shape == (320, 480, 3)
    finally:
        venv.close()


def test_subproc_workers_of_a_script_that_imports_tying_env(tmp_path, cache_dir):
    """spawn (and forkserver) workers import the main script, and with it the ids."""
    run_script(tmp_path, cache_dir, env_id="LayerTying-GPT2-Tiny-v0", kinds=("spawn",),
               imported=True)


def test_the_module_in_the_id_needs_no_import(tmp_path, cache_dir):
    """Gymnasium imports `tying_env` from "tying_env:<id>" in each worker."""
    run_script(tmp_path, cache_dir, env_id="tying_env:LayerTying-GPT2-Tiny-v0",
               kinds=("forkserver", "dummy"), imported=False)


@pytest.mark.skipif(not HAS_PLUGIN_LOADER,
                    reason=f"Gymnasium {gym.__version__} has no plugin loader (dropped in 1.0):"
                           " the gymnasium.envs entry point is only read before 1.0")
def test_the_plugin_registers_the_plain_id_without_import(tmp_path, cache_dir):
    run_script(tmp_path, cache_dir, env_id="LayerTying-GPT2-Tiny-v0",
               kinds=("spawn", "dummy"), imported=False)


def test_the_plugin_entry_point_is_installed():
    found = [ep for ep in importlib.metadata.entry_points(group="gymnasium.envs")
             if ep.value.startswith("tying_env")]
    assert [(ep.name, ep.value) for ep in found] == [("__root__", "tying_env:register_ids")], \
        "reinstall the package (pip install -e . --no-deps) to refresh its entry points"
    assert found[0].load() is tying_env.register_ids


@pytest.mark.parametrize("order", ["tying_env, gymnasium", "gymnasium, tying_env"])
def test_either_import_order_registers_once(order):
    """Before Gymnasium 1.0, `import tying_env` first makes the plugin loader call
    `register_ids` while `tying_env` is still being imported."""
    code = (f"import {order}\n"
            "assert {'LayerTying-GPT2-v0', 'LayerTying-GPT2-Tiny-v0'} <= set(gymnasium.registry)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_registration_is_idempotent():
    specs = {env_id: gym.spec(env_id) for env_id in tying_env.ENV_IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns when an id is registered twice
        tying_env.register_ids()
        tying_env.register_ids()
    assert {env_id: gym.spec(env_id) for env_id in tying_env.ENV_IDS} == specs


# ------------------------------------------------------------------ the plain-SB3 path
def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use it from Python"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_example_runs_with_a_budget_not_a_multiple_of_n_steps(cache_dir,
                                                                          monkeypatch):
    code = readme_example()
    assert "max_sweeps=3" in code and "callback=StopAtEpisodeEnd(env)" in code
    monkeypatch.setenv("LAYER_TYING_CACHE", str(cache_dir))
    namespace: dict = {"__name__": "__main__"}
    exec(compile(code, "README.md", "exec"), namespace)  # exactly the README's code
    env, agent = namespace["env"], namespace["agent"]
    budget = env.unwrapped.budget
    assert budget == 15 and budget % agent.n_steps != 0
    assert env.finished and agent.num_timesteps == budget
    assert env.unwrapped.decision == budget and env.unwrapped.model is not None


def test_without_the_callback_the_error_names_it(cache_dir):
    from sb3_contrib import MaskablePPO

    from agents import OneEpisode, StopAtEpisodeEnd

    def learn(callback: bool) -> tuple[OneEpisode, MaskablePPO]:
        env = OneEpisode(gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir,
                                  **{**SMALL, "max_sweeps": 1}))  # 2 decisions
        agent = MaskablePPO("MlpPolicy", env, n_steps=4, batch_size=4, seed=0, device="cpu")
        agent.learn(total_timesteps=env.unwrapped.budget,
                    callback=StopAtEpisodeEnd(env) if callback else None)
        return env, agent

    with pytest.raises(RuntimeError, match=re.escape(
            "pass callback=agents.StopAtEpisodeEnd(env) to learn()")):
        learn(callback=False)
    env, agent = learn(callback=True)
    assert env.finished and agent.num_timesteps == 2


def test_stop_at_episode_end_is_exported_lazily():
    code = ("import sys, agents\n"
            "assert 'stable_baselines3' not in sys.modules\n"
            "from agents import StopAtEpisodeEnd\n"
            "from agents.sb3 import StopAtEpisodeEnd as original\n"
            "assert StopAtEpisodeEnd is original and 'StopAtEpisodeEnd' in agents.__all__\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
