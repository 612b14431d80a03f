"""`--config FILE` gives the same run as the same flags; flags override it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.benchmark import cli as bench_cli
from agents.runs import cli
from agents.runs.config import parse_with_config
from agents.runs.spec import RunSpec

FLAGS = ["--agent", "qlearning", "--env", "LayerTying-GPT2-Tiny-v0",
         "--env-kwargs", '{"n_layer": 4, "n_embd": 32, "n_head": 2}', "--max-sweeps", "2",
         "--seed", "3", "--out", "runs/x", "--agent-kwargs", '{"lr": 0.01}',
         "--checkpoint-every", "5", "--no-progress"]
YAML = """\
agent: qlearning
env: LayerTying-GPT2-Tiny-v0
env_kwargs: {n_layer: 4, n_embd: 32, n_head: 2}
max-sweeps: 2
seed: 3
out: runs/x
agent_kwargs:
  lr: 0.01
checkpoint_every: 5
no_progress: true
"""
TOML = """\
agent = "qlearning"
env = "LayerTying-GPT2-Tiny-v0"
max_sweeps = 2
seed = 3
out = "runs/x"
checkpoint_every = 5
no_progress = true

[env_kwargs]
n_layer = 4
n_embd = 32
n_head = 2

[agent_kwargs]
lr = 0.01
"""


def spec_of(argv: list[str]) -> RunSpec:
    return cli.spec_from_args(parse_with_config(cli.build_parser(), argv))


@pytest.mark.parametrize(("name", "text"), [("run.yaml", YAML), ("run.toml", TOML),
                                            ("run.json", json.dumps(
                                                {"agent": "qlearning",
                                                 "env": "LayerTying-GPT2-Tiny-v0",
                                                 "env_kwargs": {"n_layer": 4, "n_embd": 32,
                                                                "n_head": 2},
                                                 "max_sweeps": 2, "seed": 3, "out": "runs/x",
                                                 "agent_kwargs": {"lr": 0.01},
                                                 "checkpoint_every": 5, "no_progress": True}))])
def test_a_config_file_equals_the_same_flags(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert spec_of(["--config", str(path)]) == spec_of(FLAGS)


def test_flags_override_the_config_and_json_options_merge(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML)
    spec = spec_of(["--config", str(path), "--seed", "7", "--env-kwargs", '{"n_layer": 6}'])
    assert spec.seed == 7
    assert spec.env_kwargs == {"n_layer": 6, "n_embd": 32, "n_head": 2, "max_sweeps": 2}
    assert spec.agent_kwargs == {"lr": 0.01} and spec.checkpoint_every == 5


def test_a_run_json_is_a_config(tmp_path, cache_dir):
    first = tmp_path / "first"
    small = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1, "max_sweeps": 1}
    assert cli.main(["--agent", "vanilla", "--env-kwargs", json.dumps(small), "--seed", "2",
                     "--out", str(first), "--cache-dir", str(cache_dir), "--no-progress"]) == 0
    again = spec_of(["--config", str(first / "run.json"), "--out", str(tmp_path / "again")])
    original = RunSpec.from_folder(first)
    assert again.settings() == original.settings()
    assert again.cache_dir == original.cache_dir and again.out == tmp_path / "again"


@pytest.mark.parametrize(("text", "words"), [
    ("agent: qlearning\nbogus: 1\n", ["unknown setting(s) bogus", "allowed:"]),
    ("- a\n- b\n", ["must hold a mapping"]),
    ("agent: [unclosed\n", ["not valid YAML"]),
    ("agent: qlearning\nno_progress: 3\n", ["no_progress=3", "true or false"]),
])
def test_a_bad_config_names_the_file_and_the_problem(tmp_path, capsys, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        spec_of(["--config", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --config" in err
    for word in words:
        assert word in err, err


def test_a_bad_value_in_a_config_is_checked_like_its_flag(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('agent = "qlearning"\nseed = -1\n')
    with pytest.raises(SystemExit):
        spec_of(["--config", str(path)])
    assert "argument --seed: '-1' is not allowed" in capsys.readouterr().err


def test_a_missing_config_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        spec_of(["--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert "argument --config" in err and "nope.yaml" in err


def test_the_benchmark_reads_the_same_config(tmp_path):
    flags = ["--env", "LayerTying-GPT2-Tiny-v0", "--env-kwargs", '{"n_layer": 4}',
             "--agents", "qlearning,vanilla", "--seeds", "0,1,2", "--workers", "2",
             "--out", str(tmp_path / "bench"), "--agent-kwargs", '{"qlearning": {"lr": 0.01}}']
    path = tmp_path / "bench.toml"
    path.write_text(f'env = "LayerTying-GPT2-Tiny-v0"\nagents = ["qlearning", "vanilla"]\n'
                    f'seeds = [0, 1, 2]\nworkers = 2\nout = "{tmp_path / "bench"}"\n'
                    '[env_kwargs]\nn_layer = 4\n[agent_kwargs.qlearning]\nlr = 0.01\n')
    from_file = parse_with_config(bench_cli.build_parser(), ["--config", str(path)])
    from_flags = bench_cli.build_parser().parse_args(flags)
    for key in ("env_id", "agents", "seeds", "workers", "out"):
        assert getattr(from_file, key) == getattr(from_flags, key), key
    for key in ("env_kwargs", "agent_kwargs"):
        assert json.loads(getattr(from_file, key)) == json.loads(getattr(from_flags, key)), key
    assert from_file.config == Path(path)
