"""Checkpoint and resume: a run killed at a random moment continues bit for bit, and a
damaged or mismatched checkpoint is refused without touching the run folder."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from safetensors.torch import load_file

import tying_env  # noqa: F401  (registers the env ids)
from agents.runs.cli import main
from agents.runs.result import TIMING_FIELDS as RESULT_TIMING_FIELDS
from agents.runs.runlog import TIMING_KEYS
from tying_env import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
# the tiny preset's shape with 4 layers: 18 decisions of 4 steps, a few seconds in all
ENV_KWARGS = {"n_layer": 4, "eval_batches": 1, "batch_size": 8}
MAX_SWEEPS = 6
BUDGET = MAX_SWEEPS * (ENV_KWARGS["n_layer"] - 1)
AGENTS = {
    "qlearning": [],  # the paper's Q-learner
    "random": [],  # a static baseline with a generator of its own
    # rollouts of 4 decisions, so that checkpoints (at rollout boundaries) fall mid-episode
    "maskable-ppo": ["--agent-kwargs", '{"n_steps": 4, "batch_size": 4}'],
    # the paper's Q-learner with the published settings (issue 13): pure bf16, the frozen
    # start, the published reward and the best test perplexity over sweeps
    "qlearning+published": ["--env-kwargs", json.dumps({
        **ENV_KWARGS, "precision": "bf16", "initial_ties": "frozen", "reward": "paper",
        "test_eval_every": 3})],
}


def argv(agent: str, out: Path, cache_dir: Path) -> list[str]:
    return ["--agent", agent.partition("+")[0], "--env-kwargs", json.dumps(ENV_KWARGS),
            "--max-sweeps", str(MAX_SWEEPS), "--seed", "5", "--checkpoint-every", "2",
            "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress", *AGENTS[agent]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """Uninterrupted runs (in this process), one per agent, made on first use."""
    runs: dict[str, Path] = {}

    def get(agent: str) -> Path:
        if agent not in runs:
            out = tmp_path_factory.mktemp("reference") / agent
            assert main(argv(agent, out, cache_dir)) == 0
            runs[agent] = out
        return runs[agent]

    return get


def log_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_at_random_moment(args: list[str], out: Path, rng: random.Random) -> int:
    """Start train_agent.py, SIGKILL it at a random decision after its first checkpoint."""
    stderr = (out.parent / f"{out.name}.stderr").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_agent.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=stderr,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300

    def wait_for(ready) -> None:
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("train_agent.py ended or stalled before the kill: "
                            + (out.parent / f"{out.name}.stderr").read_text()[-3000:])
            time.sleep(0.005)

    try:
        wait_for(lambda: ckpt.find_checkpoint(out) is not None)
        first = log_lines(out / "log.jsonl")
        target = rng.randint(first, BUDGET - 3)
        wait_for(lambda: log_lines(out / "log.jsonl") >= target)
        time.sleep(rng.uniform(0.0, 0.03))
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        stderr.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return log_lines(out / "log.jsonl")


def comparable_result(out: Path) -> dict[str, Any]:
    result = json.loads((out / "result.json").read_text())
    for key in RESULT_TIMING_FIELDS:
        result.pop(key, None)
    return result


def comparable_log(out: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for record in records:
        for key in TIMING_KEYS:
            record.pop(key)
    return records


def assert_same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for key in x:
        assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


def assert_same_run(ref: Path, other: Path) -> None:
    """Metrics, tie map, log and final weights identical (timing fields aside)."""
    assert comparable_result(other) == comparable_result(ref)
    assert comparable_log(other) == comparable_log(ref)
    assert_same_tensors(ref / "compact" / "weights.safetensors",
                        other / "compact" / "weights.safetensors")
    for f in sorted((ref / "agent").iterdir()):  # the agent's final state too
        g = other / "agent" / f.name
        if f.suffix == ".safetensors":
            assert_same_tensors(f, g)
        else:
            assert f.read_bytes() == g.read_bytes(), f.name


@pytest.mark.parametrize("agent", list(AGENTS))
def test_killed_run_resumes_bit_for_bit(agent, reference, tmp_path, cache_dir):
    seed = random.randrange(2**32)
    out = tmp_path / "run"
    killed_at = kill_at_random_moment(argv(agent, out, cache_dir), out, random.Random(seed))
    note = f"{agent}: killed after {killed_at} logged decisions (kill seed {seed})"
    assert main(["--resume", str(out), "--no-progress"]) == 0, note
    ref = reference(agent)
    result = comparable_result(out)
    assert result["decisions"] == BUDGET and result["finished"], note
    assert_same_run(ref, out)
    assert ckpt.find_checkpoint(out) is not None
    assert not list(out.glob(ckpt.TMP_PREFIX + "*"))  # a half-written one was cleaned up


def test_resume_falls_back_to_the_old_checkpoint(tmp_path):
    """A kill between the two renames leaves only checkpoint.old: it is used."""
    first = ({"x": torch.arange(3)}, {"n": 1})
    ckpt.write_checkpoint(tmp_path, {"part": first})
    ckpt.write_checkpoint(tmp_path, {"part": ({"x": torch.arange(4)}, {"n": 2})})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    tensors, meta = ckpt.read_checkpoint(tmp_path)["part"]
    assert meta == {"n": 2} and torch.equal(tensors["x"], torch.arange(4))
    ckpt.write_checkpoint(tmp_path, {"part": first})  # the next write completes the swap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert ckpt.read_checkpoint(tmp_path)["part"][1] == {"n": 1}


# ------------------------------------------------------------------ refused checkpoints
def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_run_json(key: str, value: Any):
    def edit(folder: Path) -> None:
        doc = json.loads((folder / "run.json").read_text())
        doc["settings"][key] = value
        (folder / "run.json").write_text(json.dumps(doc))
    return edit


def edit_env_kwargs(folder: Path) -> None:
    doc = json.loads((folder / "run.json").read_text())
    doc["settings"]["env_kwargs"]["n_layer"] = 6
    (folder / "run.json").write_text(json.dumps(doc))


DAMAGE = {
    "flipped byte in the env tensors": (
        lambda d: flip_byte(d / "checkpoint" / "env.safetensors"),
        ["env.safetensors", "sha256"]),
    "flipped byte in the agent's JSON": (
        lambda d: flip_byte(d / "checkpoint" / "agent.json"), ["agent.json", "sha256"]),
    "truncated agent tensors": (
        lambda d: cut_short(d / "checkpoint" / "agent.safetensors"),
        ["agent.safetensors", "truncated"]),
    "truncated manifest": (
        lambda d: cut_short(d / "checkpoint" / "manifest.json"), ["manifest.json", "JSON"]),
    "missing file": (
        lambda d: (d / "checkpoint" / "rng.safetensors").unlink(), ["rng.safetensors", "missing"]),
    "other seed in run.json": (edit_run_json("seed", 6), ["seed", "run.json"]),
    # run.json's recorded hyperparameters (qlearning's) do not fit the agent it now names
    "other agent in run.json": (edit_run_json("agent", "random"),
                                ["run.json", "for agent 'random'", "epsilon_decay"]),
    "other env settings in run.json": (edit_env_kwargs, ["env_kwargs", "n_layer"]),
    "log.jsonl changed": (
        lambda d: flip_byte(d / "log.jsonl"), ["log.jsonl", "differ"]),
    "log.jsonl cut short": (
        lambda d: (d / "log.jsonl").write_bytes(b""), ["log.jsonl", "fewer"]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_or_mismatched_checkpoint_is_refused(case, reference, tmp_path, capsys):
    damage, words = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(reference("qlearning"), run)
    damage(run)
    before = snapshot(run)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --resume" in err, err
    for word in words:
        assert word in err, (word, err)
    assert snapshot(run) == before  # nothing of the run folder was touched


def test_finished_run_is_not_resumed(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference("random"), run)
    before = snapshot(run)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run), "--no-progress"])
    assert exc.value.code == 2
    assert "has finished" in capsys.readouterr().err
    assert snapshot(run) == before


def test_checkpoint_of_another_agent_is_refused(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference("qlearning"), run)
    shutil.rmtree(run / "checkpoint")
    shutil.copytree(reference("random") / "checkpoint", run / "checkpoint")
    before = snapshot(run)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "agent: 'qlearning' in run.json, 'random' in the checkpoint" in err, err
    assert snapshot(run) == before


def test_env_refuses_state_of_other_settings_or_corpus(cache_dir):
    kwargs = dict(n_layer=4, n_embd=16, n_head=2, seq_len=16, batch_size=4, eval_batches=1,
                  steps_per_decision=1, cache_dir=cache_dir)
    env = gym.make("LayerTying-GPT2-Tiny-v0", **kwargs)
    env.reset(seed=0)
    env.step(1)
    tensors, meta = env.unwrapped.get_state()
    other = gym.make("LayerTying-GPT2-Tiny-v0", **{**kwargs, "n_embd": 32})
    other.reset(seed=0)
    with pytest.raises(ckpt.CheckpointError, match="n_embd: 32 in this environment, 16"):
        other.unwrapped.set_state(tensors, meta)
    fresh = gym.make("LayerTying-GPT2-Tiny-v0", **kwargs)
    fresh.reset(seed=0)
    model = fresh.unwrapped.model
    bad = {**meta, "corpus": {**meta["corpus"], "tokenizer": "bpe-v1-8192-0123456789abcdef"}}
    with pytest.raises(ckpt.CheckpointError, match="tokenizer"):
        fresh.unwrapped.set_state(tensors, bad)
    assert fresh.unwrapped.model is model  # a refused state changes nothing
    obs, info = fresh.unwrapped.set_state(tensors, meta)
    assert info["decision"] == 1 and info["tie_map"] == [0, 1, 0, 0]


def test_checkpoint_of_another_corpus_is_refused_before_writing(reference, tmp_path, capsys):
    """A consistent checkpoint (manifest re-signed) whose env saw other token ids."""
    run = tmp_path / "run"
    shutil.copytree(reference("qlearning"), run)
    folder = run / "checkpoint"
    meta = json.loads((folder / "env.json").read_text())
    meta["corpus"]["sha256"] = "0" * 64
    (folder / "env.json").write_bytes(ckpt.dumps(meta))
    manifest = json.loads((folder / ckpt.MANIFEST).read_text())
    data = (folder / "env.json").read_bytes()
    manifest["files"]["env.json"] = {"bytes": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}
    (folder / ckpt.MANIFEST).write_bytes(ckpt.dumps(manifest))
    before = snapshot(run)
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(run), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "another corpus or tokenizer" in err and "sha256" in err, err
    assert snapshot(run) == before


@pytest.mark.parametrize("tie_mode", ["copy", "share"])
def test_one_state_restored_many_times_gives_one_continuation(tie_mode, cache_dir):
    """`set_state` hands the run copies: steps after a restore leave the saved state as it
    was, so the same state restored 3 times gives 3 bitwise-equal continuations (model,
    AdamW moments and step counts, generators, rewards)."""
    env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, n_layer=4, n_embd=16,
                   n_head=2, seq_len=16, batch_size=4, eval_batches=1, steps_per_decision=2,
                   tie_mode=tie_mode).unwrapped
    env.reset(seed=0)
    for action in (1, 0, 3, 0):  # an untie, ties and an independent layer: optimizer state
        env.step(action)
    tensors, meta = env.get_state()
    saved = {k: v.clone() for k, v in tensors.items()}
    continuations = []
    for _ in range(3):
        env.set_state(tensors, meta)
        rewards = [env.step(a)[1] for a in (2, 0, 1, 3, 1)]
        after, after_meta = env.get_state()
        continuations.append((rewards, after, json.dumps(after_meta, sort_keys=True)))
        assert tensors.keys() == saved.keys()
        for key, value in tensors.items():  # the saved state itself is untouched
            assert torch.equal(value, saved[key]), key
    first_rewards, first_tensors, first_meta = continuations[0]
    for rewards, after, after_meta in continuations[1:]:
        assert rewards == first_rewards  # exact floats
        assert after.keys() == first_tensors.keys()
        for key, value in after.items():
            assert value.dtype == first_tensors[key].dtype and torch.equal(
                value, first_tensors[key]), key
        assert after_meta == first_meta
