"""`train_agent.py`: options, run folder, result.json, logs, figures, exit codes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import agents
from agents.base import Agent
from agents.runs.cli import main
from tying_env.env import LayerTyingEnv, SplitEvaluation
from tying_env.export import load_compact

ROOT = Path(__file__).resolve().parents[1]
TEST_AGENT = "test-cli-rotate"  # registered by this module only
# small and fast: 3 decisions of 4 steps; --max-sweeps 1 must override max_sweeps 5 here
ENV_KWARGS = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 5}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED = {
    "agent": str, "agent_kwargs": dict, "env_id": str, "env_kwargs": dict, "seed": int,
    "final_val_ppl": float, "final_test_ppl": float, "trainable_params": int,
    "total_params": int, "trainable_fraction": float, "mean_trainable_fraction": float,
    "tie_map": list, "memory_bytes": dict, "train_steps": int, "wall_seconds": float,
    "diverged": bool, "optimal_ppl": float,
}
LOG_KEYS = {"decision", "sweep", "layer", "action", "reward", "wall_s", "tie_map",
            "memory_bytes", "val_ppl", "val_loss", "train_loss", "trainable_fraction",
            "trainable_params", "total_params", "train_steps", "diverged"}


class RotateAgent(Agent):
    """Test-only: cycles through copy and independent choices, deterministically."""

    name = TEST_AGENT

    def __init__(self, env, seed: int = 0, stride: int = 1):
        super().__init__(env, seed, stride=stride)
        self.stride = stride

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return (info["decision"] * self.stride + 1) % (info["layer"] + 1)

    def save(self, path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "agent.json").write_text(json.dumps({"stride": self.stride}))


@pytest.fixture(scope="module", autouse=True)
def test_agent_and_one_thread():
    """Registers the test-only agent for this module's tests, and runs on one thread.

    Tiny models run as fast on one thread, and far faster when other jobs share the CPU.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    agents.register(TEST_AGENT, RotateAgent)
    yield
    agents.unregister(TEST_AGENT)
    torch.set_num_threads(before)


def args_for(agent: str, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["--agent", agent, "--env-kwargs", json.dumps(ENV_KWARGS), "--max-sweeps", "1",
            "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress", *extra]


def strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def read_log(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in log")) for line in lines]


def check_run(out: Path, agent: str) -> dict[str, Any]:
    """The checks every successful run must pass; returns result.json."""
    result = strict_json(out / "result.json")
    for key, kind in REQUIRED.items():
        assert key in result, key
        assert isinstance(result[key], kind), (key, result[key])
    assert result["agent"] == agent and result["env_id"] == "LayerTying-GPT2-Tiny-v0"
    cfg = result["env_kwargs"]
    assert cfg["n_layer"] == 4 and cfg["n_embd"] == 32 and cfg["max_sweeps"] == 1
    assert cfg["dataset"] == "synthetic" and cfg["preset"] == "tiny"
    budget = cfg["max_sweeps"] * (cfg["n_layer"] - 1)
    assert result["decisions"] == budget and result["train_steps"] == budget * 4
    assert result["diverged"] is False
    assert math.isfinite(result["final_val_ppl"]) and math.isfinite(result["final_test_ppl"])
    assert result["final_val_ppl"] > result["optimal_ppl"] > 1.0
    assert 0 < result["trainable_fraction"] <= 1 and 0 < result["mean_trainable_fraction"] <= 1
    assert result["trainable_params"] <= result["total_params"]
    assert result["memory_bytes"]["total"] > 0

    log = read_log(out / "log.jsonl")
    assert len(log) == budget
    for record in log:
        assert LOG_KEYS <= set(record), LOG_KEYS - set(record)
    assert [r["decision"] for r in log] == list(range(1, budget + 1))
    assert [r["layer"] for r in log] == [1, 2, 3]
    assert log[-1]["tie_map"] == result["tie_map"]
    assert np.isclose(result["mean_trainable_fraction"],
                      np.mean([r["trainable_fraction"] for r in log]))

    for name in ("tie_map.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "model" / "config.json").is_file()
    assert load_compact(out / "compact").ties == tuple(result["tie_map"])
    assert any((out / "agent").iterdir())
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(args_for(TEST_AGENT, out, cache_dir, "--seed", "3",
                         "--agent-kwargs", '{"stride": 2}')) == 0
    return out


def test_run_writes_result_logs_models_and_figures(run_dir):
    result = check_run(run_dir, TEST_AGENT)
    assert result["seed"] == 3 and result["agent_kwargs"] == {"stride": 2}
    assert json.loads((run_dir / "agent" / "agent.json").read_text()) == {"stride": 2}


def test_log_records_the_decision_not_the_next_one(run_dir):
    log = read_log(run_dir / "log.jsonl")
    for record in log:  # RotateAgent(stride=2): action = (2 * decision + 1) % (layer + 1)
        decision_index = record["decision"] - 1
        assert record["action"] == (2 * decision_index + 1) % (record["layer"] + 1)
        assert record["sweep"] == 0
    assert log[-1]["truncated"] is True and not any(r["terminated"] for r in log)


def test_default_out_dir(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LayerTyingEnv, "evaluate", lambda self, split="valid": SplitEvaluation(
        split, loss=math.log(10.0), perplexity=10.0, accuracy=None, optimal_ppl=None,
        n_outputs=64))
    args = args_for(TEST_AGENT, tmp_path, cache_dir)
    out_at = args.index("--out")
    del args[out_at:out_at + 2]
    assert main([*args, "--seed", "7"]) == 0
    default = tmp_path / "runs" / f"{TEST_AGENT}-LayerTying-GPT2-Tiny-v0-s7"
    assert (default / "result.json").is_file()
    assert "val ppl 10.000" in capsys.readouterr().out


@pytest.mark.parametrize("argv, option, words", [
    (["--agent", "no-such-agent"], "--agent", ["no-such-agent", "vanilla"]),
    (["--env", "CartPole-v1"], "--env", ["CartPole-v1", "LayerTying-GPT2-Tiny-v0"]),
    (["--env-kwargs", "{n_layer: 4"], "--env-kwargs", ["not valid JSON", "{n_layer: 4"]),
    (["--env-kwargs", "[4]"], "--env-kwargs", ["list", "JSON object"]),
    (["--agent-kwargs", "3"], "--agent-kwargs", ["int", "JSON object"]),
    (["--env-kwargs", '{"n_layr": 4}'], "--env-kwargs", ["n_layr", "n_layer"]),
    (["--env-kwargs", '{"n_layer": 1}'], "--env-kwargs", ["n_layer=1", ">= 2"]),
    (["--max-sweeps", "0"], "--max-sweeps", ["'0'", "int >= 1"]),
    (["--preset", "huge"], "--preset", ["huge", "tiny"]),
    (["--dataset", "text"], "--dataset", ["dataset='text'", "data_dir"]),
])
def test_bad_options_exit_2_naming_the_option(argv, option, words, capsys):
    full = {"--agent": TEST_AGENT, **dict(zip(argv[::2], argv[1::2], strict=True))}
    with pytest.raises(SystemExit) as exc:
        main([x for kv in full.items() for x in kv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err, err
    for word in words if "vanilla" in agents.names() else [w for w in words if w != "vanilla"]:
        assert word in err, (word, err)


def test_agent_refusing_its_kwargs_exits_2(tmp_path, cache_dir, capsys):
    argv = args_for(TEST_AGENT, tmp_path / "run", cache_dir, "--agent-kwargs", '{"strid": 2}')
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --agent-kwargs" in err and "strid" in err


def test_diverged_run_exits_0_and_writes_nulls(tmp_path, cache_dir, monkeypatch, capsys):
    """A huge learning rate makes training diverge; non-finite final perplexities are null."""
    monkeypatch.setattr(LayerTyingEnv, "evaluate", lambda self, split="valid": SplitEvaluation(
        split, loss=math.inf, perplexity=math.inf, accuracy=None, optimal_ppl=None,
        n_outputs=64))
    out = tmp_path / "run"
    diverging = {**ENV_KWARGS, "lr": 1e6, "grad_clip": 1e9, "initial_ties": "none"}
    argv = args_for(TEST_AGENT, out, cache_dir)
    argv[argv.index("--env-kwargs") + 1] = json.dumps(diverging)
    assert main([*argv, "--max-sweeps", "3"]) == 0
    assert "diverged" in capsys.readouterr().err
    result = strict_json(out / "result.json")
    log = read_log(out / "log.jsonl")
    assert result["diverged"] is True and result["decisions"] == len(log) < 9
    assert result["final_val_ppl"] is None and result["final_test_ppl"] is None
    assert any("null" in note for note in result["notes"])
    assert log[-1]["terminated"] and log[-1]["train_loss"] is None
    assert (out / "curves.png").is_file() and (out / "tie_map.png").is_file()


@pytest.mark.skipif("qlearning" not in agents.names(), reason="agent 'qlearning' not registered")
def test_qlearning_in_process(tmp_path, cache_dir):
    assert main(args_for("qlearning", tmp_path / "run", cache_dir)) == 0
    check_run(tmp_path / "run", "qlearning")


@pytest.mark.skipif("vanilla" not in agents.names(), reason="agent 'vanilla' not registered")
def test_vanilla_via_subprocess(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train_agent.py"),
                           *args_for("vanilla", out, cache_dir)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    result = check_run(out, "vanilla")
    assert result["tie_map"] == [0, 1, 2, 3] and result["trainable_fraction"] == 1.0
    assert "val ppl" in proc.stdout
