"""The train-then-evaluate protocol: training episodes, then the frozen agent on held-out seeds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helper_wandb import offline_wandb, read_offline_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents
import tying_env  # noqa: F401  (registers the env ids)
from agents.base import OneEpisode
from agents.benchmark import main as benchmark_main
from agents.runs import tracking
from agents.runs.cli import main
from agents.runs.protocol import EVAL_OFFSET, eval_seed, evaluate, train_seed
from agents.runs.spec import RunSpec

SMALL = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 1}


def run(agent: str, out: Path, cache_dir: Path, *extra: str) -> dict:
    assert main(["--agent", agent, "--env-kwargs", json.dumps(SMALL), "--cache-dir",
                 str(cache_dir), "--out", str(out), "--no-progress", "--train-episodes", "3",
                 "--eval-episodes", "2", *extra]) == 0
    return json.loads((out / "result.json").read_text())


HAS_WANDB = importlib.util.find_spec("wandb") is not None


def test_qlearning_trains_then_is_evaluated_on_held_out_seeds(tmp_path, cache_dir, monkeypatch):
    if HAS_WANDB:  # the curves go to the tracker too
        offline_wandb(monkeypatch, tmp_path)
    out = tmp_path / "run"
    result = run("qlearning", out, cache_dir, *(["--tracker", "wandb"] if HAS_WANDB else []))
    assert result["protocol"] == "train-evaluate"
    assert [e["seed"] for e in result["train"]] == [train_seed(0, i) for i in range(3)]
    assert [e["seed"] for e in result["eval"]] == [eval_seed(0, k) for k in range(2)]
    assert all(e["seed"] >= EVAL_OFFSET for e in result["eval"])
    assert all(e["decisions"] == 3 for e in result["train"] + result["eval"])
    mean = np.mean([e["final_val_ppl"] for e in result["eval"]])
    assert result["final_val_ppl"] == pytest.approx(mean)
    for e in result["eval"]:
        log = out / "eval" / f"seed-{e['seed']}" / "log.jsonl"
        assert len(log.read_text().splitlines()) == 3
    assert (out / "agent" / "agent.json").is_file()
    assert_curves_logged(out, result)


def assert_curves_logged(out: Path, result: dict) -> None:
    """TensorBoard holds the return of every training episode (the learning curve), every
    evaluation episode and the final means, against the episode; so does W&B's run."""
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    returns = [(i + 1, pytest.approx(e["return"], rel=1e-6))
               for i, e in enumerate(result["train"])]
    assert [(e.step, e.value) for e in acc.Scalars("train/return")] == returns
    assert [e.step for e in acc.Scalars("train/trainable_fraction")] == [1, 2, 3]
    assert [(e.step, e.value) for e in acc.Scalars("eval/final_val_ppl")] == [
        (k + 1, pytest.approx(e["final_val_ppl"], rel=1e-6))
        for k, e in enumerate(result["eval"])]
    assert [(e.step, e.value) for e in acc.Scalars("final/val_ppl")] == [
        (2, pytest.approx(result["final_val_ppl"], rel=1e-6))]
    assert "final/test_ppl" in acc.Tags()["scalars"]
    if not HAS_WANDB:
        return
    (folder,) = tracking.wandb_runs(out)
    found = read_offline_run(folder)
    assert found.curve("train/return") == returns
    assert found.curve("final/val_ppl") == [(2, pytest.approx(result["final_val_ppl"]))]
    assert found.config["train_episodes"] == 3 and found.config["agent"] == "qlearning"
    assert found.exit_code == 0


def test_an_sb3_agent_trains_over_episodes_then_acts_frozen(tmp_path, cache_dir):
    result = run("maskable-ppo", tmp_path / "run", cache_dir, "--agent-kwargs",
                 '{"n_steps": 4, "batch_size": 4}')
    assert len(result["train"]) == 3 and len(result["eval"]) == 2
    for e in result["eval"]:  # masked actions: every tie map entry points at an earlier layer
        assert all(root <= i for i, root in enumerate(e["tie_map"]))


def test_an_agent_that_does_not_learn_plays_no_training_episode(tmp_path, cache_dir):
    assert not agents.factory("albert").learns and agents.factory("qlearning").learns
    result = run("albert", tmp_path / "run", cache_dir)
    assert result["train"] == [] and len(result["eval"]) == 2
    assert any("does not learn" in note for note in result["notes"])
    assert all(e["tie_map"] == [0, 0, 0, 0] for e in result["eval"])


def test_evaluation_changes_nothing_in_the_agent(tmp_path, cache_dir):
    env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, **SMALL)
    guard = OneEpisode(env, episodes=2)
    agent = agents.make("qlearning", guard, seed=0)
    agent.train(2)
    assert guard.finished and guard.ended == 2
    tensors, meta = agent.get_state()
    spec = RunSpec(agent="qlearning", env_kwargs=SMALL, out=tmp_path / "run")
    evaluate(spec, env, agent, eval_seed(0, 0))
    after_tensors, after_meta = agent.get_state()
    assert meta == after_meta
    assert all(torch.equal(tensors[k], after_tensors[k]) for k in tensors)
    env.close()


def test_one_episode_guard_counts_episodes(cache_dir):
    env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, **SMALL)
    guard = OneEpisode(env, episodes=2)
    for episode in range(2):
        guard.reset(seed=episode)
        done = False
        while not done:
            _, _, terminated, truncated, info = guard.step(int(info_layer(guard)))
            done = terminated or truncated
        assert guard.ended == episode + 1
    assert guard.finished
    with pytest.raises(RuntimeError, match="StopAtEpisodeEnd"):
        guard.step(1)
    env.close()


def info_layer(guard: OneEpisode) -> int:
    return guard.unwrapped.layer


def test_a_train_evaluate_run_cannot_be_resumed(tmp_path, cache_dir, capsys):
    run("vanilla", tmp_path / "run", cache_dir)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "writes no checkpoints" in capsys.readouterr().err


def test_the_benchmark_runs_the_protocol(tmp_path, cache_dir):
    out = tmp_path / "bench"
    assert benchmark_main(["--env-kwargs", json.dumps(SMALL), "--agents", "vanilla",
                           "--seeds", "0", "--out", str(out), "--cache-dir", str(cache_dir),
                           "--train-episodes", "2", "--eval-episodes", "2",
                           "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["finished"] == 1
    assert results["cells"][0]["result"]["protocol"] == "train-evaluate"
    assert "train then evaluate" in (out / "results.md").read_text()
    # the same folder with the online protocol is another configuration: refused
    with pytest.raises(SystemExit):
        benchmark_main(["--env-kwargs", json.dumps(SMALL), "--agents", "vanilla", "--seeds",
                        "0", "--out", str(out), "--cache-dir", str(cache_dir),
                        "--no-progress"])
