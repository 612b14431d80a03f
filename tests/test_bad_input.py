"""Every mistake gets a clear error up front that names the argument (or option)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import tying_env  # noqa: F401  (registers the env ids)
from agents.runs.cli import main
from tying_env.env import LayerTyingEnv

SMALL = dict(n_layer=4, n_embd=16, n_head=2, seq_len=16, batch_size=4, eval_batches=1,
             steps_per_decision=1, max_sweeps=1)
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Data folders: missing, empty, with a binary split, with a too-short valid split."""
    root = tmp_path_factory.mktemp("data")
    text = "the quick brown fox jumps over the lazy dog. " * 40
    made = {"missing": root / "missing", "empty": root / "empty"}
    made["empty"].mkdir()
    for name, splits in {
        "binary": {"train": text.encode(), "valid": b"\x00\x01\x02binary", "test": text.encode()},
        "short": {"train": text.encode(), "valid": b"a few words", "test": text.encode()},
    }.items():
        made[name] = root / name
        made[name].mkdir()
        for split, data in splits.items():
            (made[name] / f"{split}.txt").write_bytes(data)
    made["a_file"] = root / "a_file.txt"
    made["a_file"].write_text("not a folder")
    return made


# (case id, keyword arguments of LayerTyingEnv, expected exception, words the message holds)
ENV_CASES: list[tuple[str, dict[str, Any], type[Exception], list[str]]] = [
    ("n_layer wrong type", dict(n_layer="4"), TypeError, ["n_layer", "'4'", "int"]),
    ("n_layer float", dict(n_layer=4.0), TypeError, ["n_layer", "int"]),
    ("n_layer too small", dict(n_layer=1), ValueError, ["n_layer=1", ">= 2"]),
    ("n_layer zero", dict(n_layer=0), ValueError, ["n_layer=0", ">= 1"]),
    ("n_embd not divisible", dict(n_embd=30, n_head=4), ValueError,
     ["n_embd=30", "n_head=4", "divisible"]),
    ("n_head zero", dict(n_head=0), ValueError, ["n_head=0"]),
    ("seq_len too small", dict(seq_len=1), ValueError, ["seq_len=1", ">= 2"]),
    ("batch_size zero", dict(batch_size=0), ValueError, ["batch_size=0"]),
    ("vocab_size bool", dict(vocab_size=True), TypeError, ["vocab_size=True"]),
    ("max_sweeps negative", dict(max_sweeps=-2), ValueError, ["max_sweeps=-2"]),
    ("steps_per_decision float", dict(steps_per_decision=1.5), TypeError,
     ["steps_per_decision=1.5"]),
    ("eval_batches zero", dict(eval_batches=0), ValueError, ["eval_batches=0"]),
    ("dropout one", dict(dropout=1.0), ValueError, ["dropout=1.0", "[0, 1)"]),
    ("dropout negative", dict(dropout=-0.1), ValueError, ["dropout=-0.1"]),
    ("lr zero", dict(lr=0.0), ValueError, ["lr=0.0", "> 0"]),
    ("lr nan", dict(lr=float("nan")), ValueError, ["lr=nan"]),
    ("lr inf", dict(lr=float("inf")), ValueError, ["lr=inf", "finite"]),
    ("lr string", dict(lr="1e-3"), TypeError, ["lr='1e-3'", "number"]),
    ("weight_decay negative", dict(weight_decay=-1.0), ValueError, ["weight_decay=-1.0"]),
    ("grad_clip zero", dict(grad_clip=0), ValueError, ["grad_clip=0"]),
    ("param_penalty negative", dict(param_penalty=-0.5), ValueError, ["param_penalty=-0.5"]),
    ("cosine_schedule string", dict(cosine_schedule="yes"), TypeError, ["cosine_schedule"]),
    ("unknown argument", dict(n_layr=4), TypeError, ["n_layr", "n_layer"]),
    ("unknown preset", dict(preset="huge"), ValueError, ["preset='huge'", "tiny"]),
    ("unknown dataset", dict(dataset="imagenet"), ValueError, ["dataset='imagenet'", "synthetic"]),
    ("unknown reward", dict(reward="accuracy"), ValueError, ["reward='accuracy'", "paper"]),
    ("unknown tie mode", dict(tie_mode="glue"), ValueError, ["tie_mode='glue'", "share"]),
    ("unknown action mode", dict(action_mode="tree"), ValueError,
     ["action_mode='tree'", "vector"]),
    ("unknown initial ties", dict(initial_ties="all"), ValueError, ["initial_ties='all'"]),
    ("unknown activation", dict(activation="relu"), ValueError, ["activation='relu'", "gelu"]),
    ("unknown device", dict(device="tpu"), ValueError, ["device='tpu'", "cpu"]),
    ("tokenizer wrong type", dict(tokenizer=5), TypeError, ["tokenizer=5"]),
    ("tokenizer with synthetic data", dict(tokenizer="char"), ValueError,
     ["tokenizer='char'", "synthetic"]),
    ("text without a folder", dict(dataset="text"), ValueError, ["data_dir", "dataset='text'"]),
    ("data_dir with synthetic data", dict(data_dir="/tmp"), ValueError, ["data_dir"]),
    ("render_mode unknown", dict(render_mode="human"), ValueError, ["render_mode='human'"]),
    ("cache_dir wrong type", dict(cache_dir=5), TypeError, ["cache_dir=5"]),
    ("seq_len longer than the corpus", dict(seq_len=60_000), ValueError,
     ["seq_len=60000", "valid split"]),
]
if NO_CUDA:
    ENV_CASES.append(("cuda unavailable", dict(device="cuda"), ValueError,
                      ["device='cuda'", "not available"]))

# data folder cases: (case id, folder key, extra kwargs, exception, words)
FOLDER_CASES = [
    ("missing data folder", "missing", {}, FileNotFoundError, ["data_dir=", "does not exist"]),
    ("empty data folder", "empty", {}, FileNotFoundError, ["data_dir=", "no train split"]),
    ("data_dir is a file", "a_file", {}, ValueError, ["data_dir=", "not a folder"]),
    ("binary text file", "binary", {}, ValueError, ["data_dir=", "valid.txt", "binary"]),
    ("corpus too short for one window", "short", {}, ValueError,
     ["seq_len=16", "valid split", "seq_len + 2"]),
]


@pytest.mark.parametrize("kwargs, error, words", [c[1:] for c in ENV_CASES],
                         ids=[c[0] for c in ENV_CASES])
def test_bad_env_argument(kwargs, error, words, cache_dir):
    with pytest.raises(error) as exc:
        LayerTyingEnv(**{"cache_dir": cache_dir, **SMALL, **kwargs})
    for word in words:
        assert word in str(exc.value), (word, str(exc.value))


# gymnasium.make wraps render_mode="human" itself (HumanRendering) instead of passing it on
GYM_CASES = [c for c in ENV_CASES if c[0] != "render_mode unknown"] + [
    ("misspelt setting", dict(max_sweps=3), TypeError, ["max_sweps=3", "did you mean max_sweeps"]),
]


@pytest.mark.parametrize("kwargs, error, words", [c[1:] for c in GYM_CASES],
                         ids=[c[0] for c in GYM_CASES])
def test_bad_setting_through_gym_make(kwargs, error, words, cache_dir):
    """`gymnasium.make` re-raises a TypeError as `type(e)(text)`: the error keeps its class,
    its message and the setting it names."""
    with pytest.raises(error) as exc:
        gym.make("LayerTying-GPT2-Tiny-v0", **{"cache_dir": cache_dir, **SMALL, **kwargs})
    for word in words:
        assert word in str(exc.value), (word, str(exc.value))
    assert exc.value.argument is not None and exc.value.argument in str(exc.value)


@pytest.mark.parametrize("folder, extra, error, words", [c[1:] for c in FOLDER_CASES],
                         ids=[c[0] for c in FOLDER_CASES])
def test_bad_data_folder(folder, extra, error, words, folders, cache_dir):
    kwargs = dict(SMALL, dataset="text", data_dir=str(folders[folder]), tokenizer="char",
                  cache_dir=cache_dir, **extra)
    with pytest.raises(error) as exc:
        LayerTyingEnv(**kwargs)
    for word in words:
        assert word in str(exc.value), (word, str(exc.value))


# actions: (case id, action mode, action)
ACTION_CASES = [
    ("beyond the layers", "layer", 7),
    ("negative", "layer", -1),
    ("float", "layer", 1.0),
    ("float array", "layer", np.array(1.0)),
    ("string", "layer", "a"),
    ("None", "layer", None),
    ("bool", "layer", True),
    ("vector with a float", "vector", [0, 0.5, 1, 2]),
    ("vector too short", "vector", [0, 1]),
    ("vector entry too large", "vector", [0, 2, 1, 2]),
    ("vector ragged", "vector", [0, [1], 1, 2]),
]


@pytest.mark.parametrize("mode, action", [c[1:] for c in ACTION_CASES],
                         ids=[c[0] for c in ACTION_CASES])
def test_action_outside_the_space(mode, action, cache_dir):
    env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, **SMALL, action_mode=mode)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action .* is outside the action space"):
        env.unwrapped.step(action)
    assert env.unwrapped.decision == 0  # nothing happened


def test_step_before_reset(cache_dir):
    with pytest.raises(RuntimeError, match="reset"):
        LayerTyingEnv(cache_dir=cache_dir, **SMALL).step(0)


# ------------------------------------------------------------------ command line
def base_args(tmp_path: Path, cache_dir: Path) -> list[str]:
    return ["--env-kwargs", json.dumps(SMALL), "--cache-dir", str(cache_dir),
            "--out", str(tmp_path / "run"), "--no-progress"]


# (case id, argv after the base arguments, option named, words)
CLI_CASES = [
    ("no agent", [], "--agent", ["required", "--resume"]),
    ("unknown agent", ["--agent", "nobody"], "--agent", ["'nobody'", "qlearning"]),
    ("checkpoint-every negative", ["--agent", "random", "--checkpoint-every", "-1"],
     "--checkpoint-every", ["'-1'", "int >= 0"]),
    ("checkpoint-every text", ["--agent", "random", "--checkpoint-every", "often"],
     "--checkpoint-every", ["'often'"]),
    ("seed negative", ["--agent", "random", "--seed", "-3"], "--seed", ["'-3'"]),
    ("max-sweeps text", ["--agent", "random", "--max-sweeps", "many"], "--max-sweeps",
     ["'many'"]),
    ("env-kwargs bad value", ["--agent", "random", "--env-kwargs", '{"n_embd": 30}'],
     "--env-kwargs", ["n_embd=30", "n_head"]),
    ("agent-kwargs unknown", ["--agent", "qlearning", "--agent-kwargs", '{"alpha": 1}'],
     "--agent-kwargs", ["alpha", "epsilon_decay"]),
    ("agent-kwargs bad value", ["--agent", "qlearning", "--agent-kwargs", '{"lr": "fast"}'],
     "--agent-kwargs", ["lr='fast'"]),
    ("SB3 agent-kwargs unknown", ["--agent", "ppo", "--agent-kwargs", '{"n_stepz": 4}'],
     "--agent-kwargs", ["n_stepz", "n_steps"]),
    ("SB3 agent-kwargs bad value", ["--agent", "ppo", "--agent-kwargs", '{"gamma": "high"}'],
     "--agent-kwargs", ["gamma='high'", "number"]),
    ("agent class without seed", ["--agent", "helper_agents:NoSeedAgent"], "--agent",
     ["helper_agents:NoSeedAgent", "unexpected keyword argument 'seed'",
      "Class(env, seed=..., **hyperparameters)"]),
    ("unknown dataset", ["--agent", "random", "--dataset", "mnist"], "--dataset", ["'mnist'"]),
    ("missing data folder", ["--agent", "random", "--dataset", "text", "--data-dir",
                             "/nonexistent/folder"], "--data-dir", ["/nonexistent/folder"]),
    ("resume with agent", ["--agent", "random", "--resume", "."], "--agent",
     ["--resume", "run.json"]),
]
if NO_CUDA:
    CLI_CASES.append(("cuda unavailable", ["--agent", "random", "--device", "cuda"], "--device",
                      ["device='cuda'", "not available"]))


@pytest.mark.parametrize("extra, option, words", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_bad_command_line(extra, option, words, tmp_path, cache_dir, capsys):
    argv = extra if "--resume" in extra else [*base_args(tmp_path, cache_dir), *extra]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err, err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("setup, words", [
    ("missing", ["does not exist"]),
    ("file", ["is not a folder"]),
    ("no run.json", ["no run.json"]),
    ("no checkpoint", ["holds no checkpoint", "--checkpoint-every 0"]),
])
def test_bad_resume_folder(setup, words, tmp_path, capsys):
    folder = tmp_path / "run"
    if setup == "file":
        folder.write_text("x")
    elif setup != "missing":
        folder.mkdir()
    if setup == "no checkpoint":
        (folder / "run.json").write_text(json.dumps({
            "format": "layer-tying-gym/run", "checkpoint_every": 0,
            "settings": {"agent": "random", "env_id": "LayerTying-GPT2-Tiny-v0",
                         "env_kwargs": SMALL, "seed": 0, "agent_kwargs": {}}}))
    with pytest.raises(SystemExit) as exc:
        main(["--resume", str(folder)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --resume" in err and str(folder) in err, err
    for word in words:
        assert word in err, (word, err)


def test_out_is_a_file(tmp_path, cache_dir, capsys):
    (tmp_path / "run").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--agent", "random", *base_args(tmp_path, cache_dir)])
    assert exc.value.code == 2
    assert "argument --out" in capsys.readouterr().err


def test_diverging_run_is_reported_and_still_writes_result(tmp_path, cache_dir, capsys):
    """A huge learning rate makes the loss non-finite: the run ends, exit 0, result.json."""
    kwargs = dict(SMALL, lr=1e6, grad_clip=1e9, initial_ties="none", max_sweeps=3,
                  steps_per_decision=2)
    out = tmp_path / "run"
    assert main(["--agent", "vanilla", "--env-kwargs", json.dumps(kwargs), "--cache-dir",
                 str(cache_dir), "--out", str(out), "--no-progress"]) == 0
    assert "diverged" in capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["diverged"] is True and result["decisions"] < 9
    assert any("diverged" in note for note in result["notes"])
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["diverged"] and log[-1]["terminated"] and log[-1]["reward"] == 0.0
    assert all(r["val_ppl"] is None or math.isfinite(r["val_ppl"]) for r in log)
