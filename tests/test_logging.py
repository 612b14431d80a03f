"""What a run logs besides `log.jsonl`: TensorBoard (hparams, agent internals, no booleans)
and the optional trackers: MLflow (an offline store in the run folder) and Weights & Biases
(an offline run in the run folder)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from helper_wandb import offline_wandb, read_offline_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from agents.base import Agent
from agents.runs import tracking
from agents.runs.cli import build_parser, main, spec_from_args
from agents.runs.config import parse_with_config
from agents.runs.runlog import FINAL_METRICS, RunLog
from agents.runs.spec import RunSpec
from tying_env.errors import SettingError

ENV_KWARGS = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 1}
BOOLEAN_KEYS = ("terminated", "truncated", "diverged", "changed")
# the keys of a log.jsonl line in layer mode on the synthetic corpus (nothing may be added)
LOG_KEYS = {"decision", "sweep", "layer", "action", "reward", "terminated", "truncated",
            "wall_s", "timestamp", "tie_map", "budget", "val_loss", "val_ppl", "train_loss",
            "trainable_params", "total_params", "trainable_fraction", "memory_bytes",
            "train_steps", "lr", "diverged", "changed", "optimal_ppl"}
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow-skinny is not installed (extra 'tracking')")
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb is not installed (extra 'wandb')")


def run(agent: str, out: Path, cache_dir: Path, *extra: str) -> Path:
    assert main(["--agent", agent, "--env-kwargs", json.dumps(ENV_KWARGS), "--seed", "1",
                 "--cache-dir", str(cache_dir), "--out", str(out), "--no-progress",
                 *extra]) == 0
    return out


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder / "tb"))
    acc.Reload()
    return acc


def hparams_data(acc: EventAccumulator) -> dict[str, Any]:
    """The hparams plugin's summaries by kind: experiment, session_start_info, ..."""
    found: dict[str, Any] = {}
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        kind = data.WhichOneof("data")
        found[kind] = getattr(data, kind)
    return found


def scalar_steps(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def qlearning_run(tmp_path_factory, cache_dir) -> Path:
    return run("qlearning", tmp_path_factory.mktemp("logging") / "run", cache_dir)


def test_tensorboard_has_hparams_with_final_metrics(qlearning_run):
    acc = events(qlearning_run)
    found = hparams_data(acc)
    assert {"experiment", "session_start_info", "session_end_info"} <= set(found)
    params = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
              for k, v in found["session_start_info"].hparams.items()}
    assert params["agent"] == "qlearning" and params["seed"] == 1
    assert params["env_id"] == "LayerTying-GPT2-Tiny-v0"
    assert params["env.n_layer"] == 4 and params["env.dataset"] == "synthetic"
    assert params["agent.gamma"] == pytest.approx(0.99)  # the full config, not only kwargs
    assert params["agent.bootstrap_at_end"] == "true"  # booleans as text
    metric_tags = [m.name.tag for m in found["experiment"].metric_infos]
    assert metric_tags == list(FINAL_METRICS)
    scalars = set(acc.Tags()["scalars"])
    assert set(FINAL_METRICS) <= scalars  # the HPARAMS tab reads them from these scalars
    result = json.loads((qlearning_run / "result.json").read_text())
    assert scalar_steps(acc, "final/trainable_fraction") == [
        (3, pytest.approx(result["trainable_fraction"]))]
    assert scalar_steps(acc, "final/val_ppl")[0][1] == pytest.approx(result["last_val_ppl"])
    text = acc.Tensors("episode/end/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "truncated" in text


def test_tensorboard_has_agent_scalars_and_no_booleans(qlearning_run):
    acc = events(qlearning_run)
    scalars = set(acc.Tags()["scalars"])
    assert {"agent/epsilon", "agent/td_loss", "reward", "val_ppl", "trainable_fraction",
            "memory_bytes/total", "tie_map/layer_3"} <= scalars
    assert [step for step, _ in scalar_steps(acc, "agent/epsilon")] == [1, 2, 3]
    # the TD loss of the update on decision d-1, so none at decision 1
    assert [step for step, _ in scalar_steps(acc, "agent/td_loss")] == [2, 3]
    for tag in scalars:
        assert tag.rpartition("/")[2] not in BOOLEAN_KEYS, tag


def test_log_jsonl_keys_are_unchanged(qlearning_run):
    lines = (qlearning_run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert set(json.loads(line)) == LOG_KEYS


def test_sb3_agent_logs_its_logger_values(tmp_path, cache_dir):
    out = run("dqn", tmp_path / "run", cache_dir)
    scalars = set(events(out).Tags()["scalars"])
    assert {"agent/rollout/exploration_rate", "agent/train/loss"} <= scalars


# ------------------------------------------------------------------ the TensorBoard purge
class CountingEnv(gym.Env):
    """A stand-in for the layer-tying env: decisions counted from `decision`, no model."""

    action_space = spaces.Discrete(2)
    observation_space = spaces.Box(0, 1, (1,), np.float32)

    def __init__(self, decision: int = 0):
        self.decision = decision
        self.budget = 4

    def info(self) -> dict[str, Any]:
        return dict(decision=self.decision, sweep=0, layer=1, tie_map=[0, 1],
                    val_ppl=10.0 - self.decision, trainable_fraction=1.0, diverged=False,
                    changed=True, memory_bytes={"total": 8})

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), self.info()

    def step(self, action: Any):
        self.decision += 1
        done = self.decision == self.budget
        return np.zeros(1, np.float32), 0.5, False, done, self.info()


class ScaleAgent(Agent):
    """Reports `m` = scale * the env's decision, and a boolean that must not be logged."""

    name = "test-scale"

    def __init__(self, env: gym.Env, scale: float):
        super().__init__(env)
        self.scale = scale

    def metrics(self) -> dict[str, float]:
        return {"m": self.scale * self.env.unwrapped.decision, "flag": True}  # type: ignore


def test_resume_purges_the_events_after_the_checkpoint(tmp_path):
    first = RunLog(CountingEnv(), tmp_path, progress=False)
    first.agent = ScaleAgent(first, 1.0)
    first.reset(seed=0)
    first.step(0)
    first.step(0)
    position, start, wall_s = first.position(), first.start, first.wall_seconds
    first.step(0)  # decision 3, logged and then lost: the run "crashes" here
    first.finish()

    env = CountingEnv(decision=2)
    second = RunLog(env, tmp_path, progress=False)
    second.agent = ScaleAgent(second, 100.0)
    second.resume(position, start, env.info(), wall_s)
    second.step(0)
    second.step(0)
    second.finish()

    acc = events(tmp_path)
    assert scalar_steps(acc, "agent/m") == [(1, 1.0), (2, 2.0), (3, 300.0), (4, 400.0)]
    assert [step for step, _ in scalar_steps(acc, "val_ppl")] == [0, 1, 2, 3, 4]
    assert not any(tag.endswith(("flag", "changed", "diverged", "truncated"))
                   for tag in acc.Tags()["scalars"])
    written = [value.tag for file in sorted((tmp_path / "tb").iterdir())
               for event in EventFileLoader(str(file)).Load()
               for value in event.summary.value if value.tag.startswith("_hparams_/")]
    assert sorted(written) == ["_hparams_/experiment", "_hparams_/session_end_info",
                               "_hparams_/session_start_info"]  # once each
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 4


# ------------------------------------------------------------------ MLflow
def test_unknown_or_missing_tracker_is_a_setting_error(monkeypatch):
    with pytest.raises(SettingError) as e:
        tracking.check("neptune")
    assert e.value.argument == "tracker" and "allowed: mlflow, wandb" in str(e.value)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SettingError, match="mlflow-skinny"):
        tracking.check("mlflow")
    with pytest.raises(SettingError) as e:  # never required: a clear error names the extra
        tracking.check("wandb")
    assert "pip install -e '.[wandb]'" in str(e.value) and e.value.argument == "tracker"


@needs_mlflow
def test_mlflow_store_is_written_and_readable_offline(tmp_path, cache_dir):
    out = run("qlearning", tmp_path / "run", cache_dir, "--tracker", "mlflow")
    assert (out / tracking.MLRUNS).is_dir()
    client = tracking.mlflow_client(out)
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    found = runs[0]
    assert found.info.status == "FINISHED" and found.info.run_name == "qlearning s1"
    params = found.data.params
    assert params["agent"] == "qlearning" and params["env.n_layer"] == "4"
    assert params["agent.bootstrap_at_end"] == "True"
    metrics = found.data.metrics
    assert set(FINAL_METRICS) <= set(metrics)
    assert {"agent/epsilon", "reward", "val_ppl", "trainable_fraction"} <= set(metrics)
    assert not any(k.rpartition("/")[2] in BOOLEAN_KEYS for k in metrics)
    history = client.get_metric_history(found.info.run_id, "reward")
    assert sorted(m.step for m in history) == [1, 2, 3]
    result = json.loads((out / "result.json").read_text())
    assert metrics["final/trainable_fraction"] == pytest.approx(result["trainable_fraction"])
    assert found.data.tags["episode_end"].startswith("truncated")


@needs_mlflow
def test_mlflow_runs_go_to_mlflow_tracking_uri_when_it_is_set(tmp_path, cache_dir, monkeypatch):
    """A user who set MLFLOW_TRACKING_URI finds the runs there, each tagged with its folder
    (and its group); the run folders then hold no store of their own."""
    central = tmp_path / "central"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", central.resolve().as_uri())
    outs = [run(agent, tmp_path / agent, cache_dir, "--tracker", "mlflow", "--tracker-group",
                "bench-a") for agent in ("random", "albert")]
    assert central.is_dir()
    assert not any((out / tracking.MLRUNS).exists() for out in outs)
    client = tracking.mlflow_client(outs[0])
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["run_folder"] for r in runs) == sorted(
        str(out.resolve()) for out in outs)
    assert {r.info.run_name for r in runs} == {"random s1", "albert s1"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["group"] == "bench-a" for r in runs)



# ------------------------------------------------------------------ Weights & Biases
@needs_wandb
def test_wandb_run_is_offline_in_the_run_folder_with_config_and_curves(tmp_path, cache_dir,
                                                                        monkeypatch):
    offline_wandb(monkeypatch, tmp_path)
    out = run("qlearning", tmp_path / "run", cache_dir, "--tracker", "wandb")
    (folder,) = tracking.wandb_runs(out)
    assert folder.parent == out / tracking.WANDB and folder.name.startswith("offline-run-")
    found = read_offline_run(folder)
    assert found.name == "qlearning s1" and found.project == tracking.EXPERIMENT
    assert folder.name.endswith(found.id) and found.exit_code == 0 and found.group == ""
    config = found.config
    assert config["agent"] == "qlearning" and config["seed"] == 1
    assert config["env.n_layer"] == 4 and config["env.dataset"] == "synthetic"
    assert config["agent.gamma"] == pytest.approx(0.99) and config["agent.bootstrap_at_end"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert found.curve("reward") == [(r["decision"], pytest.approx(r["reward"]))
                                     for r in records]
    assert [step for step, _ in found.curve("val_ppl")] == [0, 1, 2, 3]  # 0: the reset
    assert [step for step, _ in found.curve("agent/epsilon")] == [1, 2, 3]
    result = json.loads((out / "result.json").read_text())
    assert found.curve("final/trainable_fraction") == [
        (3, pytest.approx(result["trainable_fraction"]))]
    assert set(FINAL_METRICS) <= set(found.summary)
    assert found.summary["episode_end"].startswith("truncated")
    keys = {key for row in found.history for key in row}
    assert not any(k.rpartition("/")[2] in BOOLEAN_KEYS for k in keys)
    assert "wandb" in result["files"]


class DictConfig:
    """What `tracking.run_params` reads of the layer-tying env's settings."""

    def to_dict(self) -> dict[str, Any]:
        return {"n_layer": 2}


@needs_wandb
def test_an_offline_wandb_run_resumed_goes_on_in_a_new_run_of_its_group(tmp_path,
                                                                         monkeypatch):
    """W&B cannot continue an offline run: the resumed part is a new run in the same group,
    with the parameters and a link to the first part; TensorBoard keeps one history."""
    offline_wandb(monkeypatch, tmp_path)
    env = CountingEnv()
    env.cfg = DictConfig()  # type: ignore[attr-defined]
    first = RunLog(env, tmp_path, progress=False, tracker="wandb", tracker_group="bench-a")
    first.agent = ScaleAgent(first, 1.0)
    first.reset(seed=0)
    first.step(0)
    first.step(0)
    position, start, wall_s = first.position(), first.start, first.wall_seconds
    first.step(0)  # decision 3: logged, then the run "crashes"
    first.finish()

    env = CountingEnv(decision=2)
    env.cfg = DictConfig()  # type: ignore[attr-defined]
    second = RunLog(env, tmp_path, progress=False, tracker="wandb", tracker_group="bench-a")
    second.agent = ScaleAgent(second, 100.0)
    second.resume(position, start, env.info(), wall_s)
    second.step(0)
    second.step(0)
    second.finish()

    before, after = (read_offline_run(folder) for folder in tracking.wandb_runs(tmp_path))
    assert before.id != after.id and before.group == after.group == "bench-a"
    assert before.exit_code == 1 and after.exit_code == 0  # stopped, then finished
    assert before.curve("agent/m") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert after.curve("agent/m") == [(3, 300.0), (4, 400.0)]
    assert after.tags == ["resumed"] and after.config["resumed_from"] == before.id
    assert after.config["env.n_layer"] == before.config["env.n_layer"] == 2
    assert after.config["agent"] == "test-scale"
    assert scalar_steps(events(tmp_path), "agent/m") == [(1, 1.0), (2, 2.0), (3, 300.0),
                                                          (4, 400.0)]


def test_resume_may_choose_the_tracker_of_the_part_it_runs(tmp_path):
    """`--resume DIR` keeps the run's tracker unless `--tracker` is given; either way the
    run's settings (what it computes) are those of its run.json."""
    spec = RunSpec(agent="qlearning", env_kwargs=ENV_KWARGS, out=tmp_path, tracker="mlflow",
                   tracker_group="bench-a")
    (tmp_path / "run.json").write_text(json.dumps(spec.to_run_file()))
    parser = build_parser()
    kept = spec_from_args(parser.parse_args(["--resume", str(tmp_path)]))
    assert (kept.tracker, kept.tracker_group) == ("mlflow", "bench-a")
    chosen = spec_from_args(parser.parse_args(["--resume", str(tmp_path), "--tracker", "wandb",
                                               "--tracker-group", "other"]))
    assert (chosen.tracker, chosen.tracker_group) == ("wandb", "other") and chosen.resume
    assert chosen.settings() == kept.settings() == spec.settings()
    again = parse_with_config(build_parser(), ["--config", str(tmp_path / "run.json")])
    assert (again.tracker, again.tracker_group) == ("mlflow", "bench-a")
