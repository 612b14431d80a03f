"""Hyperparameter files (`agents.hyperparams`): the shipped files load, fit their agents and
equal the code defaults; bad files are named; file < --config < --agent-kwargs; run.json
records the file and the values; a run with the files is the run without them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import agents
import agents.hyperparams as hp
from agents.benchmark import cli as bench_cli
from agents.benchmark import tracks
from agents.benchmark.cells import hyperparams_differences, make_request
from agents.runs import cli
from agents.runs.config import parse_with_config, read_config
from agents.runs.driver import run
from agents.runs.result import TIMING_FIELDS
from agents.runs.spec import RunSpec
from tying_env.errors import SettingError
from tying_env.files import write_json

TINY = "LayerTying-GPT2-Tiny-v0"
SMALL = {"n_layer": 4, "n_embd": 32, "n_head": 2, "eval_batches": 1}
SHIPPED_FILES = sorted(hp.FOLDER.glob("*.yml"))


def built_in_agents() -> list[str]:
    """The registered agents of this package (not those a test registered)."""
    return [n for n in agents.names() if agents.factory(n).__module__.startswith("agents.")]


def code_defaults(agent: str) -> dict[str, Any]:
    """What an agent uses when given nothing: its constructor's defaults, or for an SB3
    adapter the defaults it sizes for short runs that do not depend on the budget."""
    from agents.sb3 import ALGORITHMS

    if agent not in ALGORITHMS:
        return agents.factory(agent).hyperparameters()
    small, large = ALGORITHMS[agent].defaults(10), ALGORITHMS[agent].defaults(10_000)
    return {k: v for k, v in large.items() if small[k] == v}


def user_file(tmp_path: Path, text: str, name: str = "mine.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- the shipped files
@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_every_shipped_file_loads_and_fits_its_agent(path):
    assert path.stem in agents.names()
    doc = hp.read(path, path.stem)  # checked against the agent's hyperparameters
    assert hp.DEFAULT in doc and set(doc) <= set(hp.entry_names())


def test_every_agent_with_hyperparameters_has_a_shipped_file():
    have = {p.stem for p in SHIPPED_FILES}
    want = {n for n in built_in_agents() if agents.factory(n).hyperparameters()}
    assert want == have
    assert {"qlearning", "maskable-ppo", "dqn", "schedule-bandit"} <= have


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.stem)
def test_shipped_defaults_equal_the_code_defaults(path):
    """Exactly (JSON text: 1.0 is not 1), so a run with the file is the run without it."""
    values = hp.defaults(path.stem, TINY).values
    assert json.dumps(values, sort_keys=True) == json.dumps(code_defaults(path.stem),
                                                            sort_keys=True)


def test_the_families_are_the_env_ids():
    assert hp.family("LayerTying-GPT2-Tiny-v0") == "gpt2-tiny"
    assert hp.family("LayerTying-Llama-v0") == "llama"
    assert hp.family("MyOwnEnv-v0") is None
    assert hp.entry_names() == ("default", "gpt2", "gpt2-tiny", "llama", "llama-tiny", "bert",
                                "bert-tiny", "vit", "vit-tiny")


def test_an_agent_without_hyperparameters_has_no_file():
    assert hp.defaults("vanilla", TINY) == hp.FileDefaults()
    assert hp.defaults("qlearning", TINY, None) == hp.FileDefaults()


# ---------------------------------------------------------------- files of your own
def test_a_family_entry_goes_over_the_default_key_by_key(tmp_path):
    path = user_file(tmp_path, "default: {lr: 0.01, hidden: 64}\ngpt2-tiny: {lr: 0.02}\n")
    tiny = hp.defaults("qlearning", TINY, path)
    assert tiny.values == {"lr": 0.02, "hidden": 64}
    assert tiny.entries == ("default", "gpt2-tiny") and tiny.file == str(path)
    other = hp.defaults("qlearning", "LayerTying-Llama-v0", path)
    assert other.values == {"lr": 0.01, "hidden": 64} and other.entries == ("default",)


def test_a_folder_holds_one_file_per_agent_and_falls_back_to_the_shipped_ones(tmp_path):
    user_file(tmp_path, "default: {lr: 0.5}\n", "qlearning.yml")
    assert hp.defaults("qlearning", TINY, tmp_path).values == {"lr": 0.5}
    shipped = hp.defaults("dqn", TINY, tmp_path)
    assert shipped.file == "agents/hyperparams/dqn.yml"
    assert shipped.values == hp.defaults("dqn", TINY).values


def test_a_shipped_name_is_found_wherever_the_run_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = hp.defaults("qlearning", TINY, "agents/hyperparams/qlearning.yml")
    assert found.file == "agents/hyperparams/qlearning.yml" and found.values["hidden"] == 128


@pytest.mark.parametrize(("text", "agent", "words"), [
    ("default: {lrr: 0.1}\n", "qlearning",
     ["mine.yml", "entry 'default'", "lrr=0.1", "'qlearning'", "did you mean lr?", "allowed:",
      "epsilon_decay"]),
    ("default: {lr: 1e-3}\n", "qlearning", ["mine.yml", "lr='1e-3'", "a finite number"]),
    ("gtp2-tiny: {lr: 0.1}\n", "qlearning",
     ["mine.yml", "'gtp2-tiny' is not an env family", "did you mean gpt2-tiny?",
      "allowed: default, gpt2, gpt2-tiny"]),
    ("default: [1, 2]\n", "qlearning", ["mine.yml", "entry 'default' must be a mapping"]),
    ("- 1\n", "qlearning", ["mine.yml", "must hold a mapping of env families"]),
    ("default: {lr: [unclosed\n", "qlearning", ["mine.yml", "not valid YAML"]),
    ("default: {exploration: 2.0}\n", "vanilla",
     ["exploration=2.0", "'vanilla'", "allowed: none"]),
])
def test_a_bad_file_names_the_file_the_agent_and_the_key(tmp_path, text, agent, words):
    path = user_file(tmp_path, text)
    with pytest.raises(SettingError) as e:
        hp.defaults(agent, TINY, path)
    assert e.value.argument == "hyperparams"
    for word in words:
        assert word in str(e.value), str(e.value)


def test_a_bad_agent_or_source_is_named(tmp_path):
    with pytest.raises(SettingError, match=r"agent='nope' is unknown; allowed: .*qlearning") as e:
        hp.defaults("nope", TINY)
    assert e.value.argument == "agent"
    with pytest.raises(SettingError, match="does not exist; expected a hyperparameter file"):
        hp.defaults("qlearning", TINY, tmp_path / "absent.yml")
    with pytest.raises(SettingError, match=r"is not a \.yml file"):
        hp.defaults("qlearning", TINY, user_file(tmp_path, "{}", "mine.json"))


# ---------------------------------------------------------------- the command lines
def spec_of(argv: list[str]) -> RunSpec:
    return cli.spec_from_args(parse_with_config(cli.build_parser(), argv))


def test_precedence_file_then_config_then_agent_kwargs(tmp_path):
    path = user_file(tmp_path, "default: {lr: 0.1, gamma: 0.5, hidden: 16}\n")
    config = user_file(tmp_path, "agent_kwargs: {gamma: 0.6, hidden: 32}\n", "run.yml")
    spec = spec_of(["--agent", "qlearning", "--hyperparams", str(path), "--config", str(config),
                    "--agent-kwargs", '{"hidden": 64}'])
    assert spec.agent_kwargs == {"gamma": 0.6, "hidden": 64}  # what defines the run
    used = spec.agent_hyperparameters()
    assert (used["lr"], used["gamma"], used["hidden"]) == (0.1, 0.6, 64)
    assert spec_of(["--agent", "qlearning"]).agent_hyperparameters() == \
        hp.defaults("qlearning", TINY).values
    assert spec_of(["--agent", "qlearning", "--hyperparams", "none"]).agent_hyperparameters() == {}


def test_the_config_may_name_the_file(tmp_path):
    path = user_file(tmp_path, "default: {lr: 0.25}\n")
    config = user_file(tmp_path, f"agent: qlearning\nhyperparams: {path}\n", "run.yml")
    assert spec_of(["--config", str(config)]).agent_hyperparameters() == {"lr": 0.25}


@pytest.mark.parametrize(("argv", "words"), [
    (["--agent", "qlearning", "--hyperparams", "absent.yml"],
     ["argument --hyperparams", "'absent.yml' does not exist"]),
    (["--resume", "runs/x", "--hyperparams", "none"],
     ["argument --hyperparams", "cannot be combined with --resume"]),
])
def test_bad_hyperparams_options_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_a_bad_file_is_reported_as_hyperparams(tmp_path, capsys):
    path = user_file(tmp_path, "default: {lrr: 0.1}\n")
    with pytest.raises(SystemExit):
        cli.main(["--agent", "qlearning", "--hyperparams", str(path)])
    err = capsys.readouterr().err
    assert "argument --hyperparams" in err and "lrr=0.1" in err and "mine.yml" in err


def test_to_argv_names_a_file_other_than_the_shipped_ones(tmp_path):
    spec = RunSpec(agent="qlearning", out=tmp_path / "a")
    assert "--hyperparams" not in cli.to_argv(spec)
    again = spec_of(cli.to_argv(replace(spec, hyperparams=None)))
    assert again.hyperparams is None
    path = user_file(tmp_path, "default: {lr: 0.3}\n")
    again = spec_of(cli.to_argv(replace(spec, hyperparams=str(path))))
    assert again.agent_hyperparameters() == {"lr": 0.3}


# ---------------------------------------------------------------- run.json and resuming
def test_run_json_records_the_file_and_the_values(tmp_path):
    spec = RunSpec(agent="qlearning", out=tmp_path / "a", agent_kwargs={"lr": 0.02})
    record = spec.to_run_file()["hyperparams"]
    assert record["file"] == "agents/hyperparams/qlearning.yml"
    assert record["entries"] == ["default"]
    assert record["values"] == {**hp.defaults("qlearning", TINY).values, "lr": 0.02}
    assert spec.settings()["agent_kwargs"] == {"lr": 0.02}  # the run's identity: unchanged


def test_a_rebuilt_run_uses_the_values_it_recorded(tmp_path):
    path = user_file(tmp_path, "default: {lr: 0.01}\n")
    spec = RunSpec(agent="qlearning", out=tmp_path / "a", hyperparams=str(path))
    (tmp_path / "a").mkdir()
    write_json(tmp_path / "a" / "run.json", spec.to_run_file())
    recorded = spec.to_run_file()
    path.write_text("default: {lr: 0.5}\n")  # changed after the run started
    back = RunSpec.from_folder(tmp_path / "a", resume=False)
    assert back.agent_hyperparameters() == {"lr": 0.01}
    assert back.to_run_file()["hyperparams"] == recorded["hyperparams"]
    assert back.same_hyperparameters(recorded)  # so a stopped cell is resumed as it was
    assert not spec.same_hyperparameters(recorded)  # the file says otherwise now


def test_a_run_from_before_the_files_keeps_its_code_defaults(tmp_path):
    spec = RunSpec(agent="maskable-ppo", out=tmp_path / "a", agent_kwargs={"n_steps": 4})
    old = spec.to_run_file()
    del old["hyperparams"]  # as runs/deep-v1's cells were written
    (tmp_path / "a").mkdir()
    write_json(tmp_path / "a" / "run.json", old)
    back = RunSpec.from_folder(tmp_path / "a", resume=False)
    assert back.hyperparams is None and back.agent_hyperparameters() == {"n_steps": 4}
    # it counts as run with the shipped files (whose default entries are the code defaults)
    assert spec.same_hyperparameters(old)
    assert replace(spec, hyperparams=None).same_hyperparameters(old)
    mine = user_file(tmp_path, "default: {n_epochs: 2}\n")
    assert not replace(spec, hyperparams=str(mine)).same_hyperparameters(old)


def test_read_config_of_a_run_json_names_its_file(tmp_path):
    spec = RunSpec(agent="qlearning", out=tmp_path / "a")
    write_json(tmp_path / "run.json", spec.to_run_file())
    assert read_config(tmp_path / "run.json")["hyperparams"] == "agents/hyperparams/qlearning.yml"
    write_json(tmp_path / "run.json", replace(spec, hyperparams=None).to_run_file())
    assert read_config(tmp_path / "run.json")["hyperparams"] == "none"


# ---------------------------------------------------------------- the benchmark and tracks
def test_tracks_name_their_files_and_history_keeps_the_code_defaults():
    for track in tracks.TRACKS.values():
        assert track.to_json()["hyperparams"] == (None if track.history else hp.SHIPPED)
    with pytest.raises(SettingError, match="--hyperparams"):
        tracks.refuse_overrides(["--hyperparams"])


def test_the_benchmark_passes_its_file_to_every_cell(tmp_path):
    user_file(tmp_path, "default: {lr: 0.2}\n", "qlearning.yml")
    args = parse_with_config(bench_cli.build_parser(), [
        "--agents", "qlearning,dqn", "--seeds", "0", "--out", str(tmp_path / "b"),
        "--hyperparams", str(tmp_path)])
    request = make_request(**bench_cli.request_settings(args), workers=1, out=args.out)
    assert request.spec("qlearning", 0).agent_hyperparameters() == {"lr": 0.2}
    assert request.spec("dqn", 0).file_defaults().file == "agents/hyperparams/dqn.yml"
    assert request.command()[-2:] == ["--hyperparams", str(tmp_path)]
    bad = user_file(tmp_path, "default: {lr: 0.2}\n", "bad.yml")  # not a dqn setting
    with pytest.raises(SettingError, match=r"bad\.yml, entry 'default'.*'dqn'") as e:
        make_request(TINY, {}, "qlearning,dqn", "0", 1, tmp_path / "c", hyperparams=bad)
    assert e.value.argument == "hyperparams"


def test_a_cell_of_other_hyperparameters_is_a_conflict(tmp_path):
    request = make_request(TINY, {}, "qlearning", "0", 1, tmp_path / "b")
    spec = request.spec("qlearning", 0)
    spec.folder.mkdir(parents=True)
    old = spec.to_run_file()
    del old["hyperparams"]  # a cell from before the files: the code defaults
    write_json(spec.folder / "run.json", old)
    assert hyperparams_differences(spec, spec.folder) == []
    path = user_file(tmp_path, "default: {lr: 0.2}\n")
    other = replace(request, hyperparams=str(path)).spec("qlearning", 0)
    assert hyperparams_differences(other, spec.folder) == ["hyperparams.lr: 0.001 -> 0.2"]
    write_json(spec.folder / "run.json", other.to_run_file())
    assert hyperparams_differences(other, spec.folder) == []
    assert hyperparams_differences(spec, spec.folder) == ["hyperparams.lr: 0.2 -> 0.001"]


# ---------------------------------------------------------------- the same behaviour
def comparable(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = json.loads((folder / "result.json").read_text())
    for key in TIMING_FIELDS:
        result.pop(key, None)
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    for record in log:
        record.pop("wall_s", None)
        record.pop("timestamp", None)
    return result, log


def assert_same_agent_tensors(a: Path, b: Path) -> None:
    """The agents' saved tensors (policy, optimizer): any learning setting changes them."""
    files = sorted(p.name for p in a.glob("*.safetensors"))
    assert files and files == sorted(p.name for p in b.glob("*.safetensors"))
    for name in files:
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def test_a_run_with_the_shipped_files_is_the_run_without_them(tmp_path, cache_dir):
    """No file (`hyperparams=None`) is how every run was built before the files. SB3's
    adapter is the case to run: its file's values become the model's explicit arguments
    (the Q-learners' equal their config's defaults, which the test above checks)."""
    agent, kwargs = "maskable-ppo", {"n_steps": 4, "batch_size": 4}  # 2 updates in 9 decisions
    runs = {}
    for name, source in (("file", hp.SHIPPED), ("none", None)):
        spec = RunSpec(agent=agent, env_kwargs={**SMALL, "max_sweeps": 3}, seed=1,
                       out=tmp_path / name, agent_kwargs=kwargs, cache_dir=cache_dir,
                       progress=False, checkpoint_every=0, hyperparams=source)
        run(spec)
        runs[name] = json.loads((tmp_path / name / "run.json").read_text())
    assert runs["file"]["settings"] == runs["none"]["settings"]
    assert runs["file"]["hyperparams"]["file"] == f"agents/hyperparams/{agent}.yml"
    assert runs["file"]["hyperparams"]["values"] == {**hp.defaults(agent, TINY).values, **kwargs}
    assert runs["none"]["hyperparams"] == {"file": None, "entries": [], "values": kwargs}
    assert comparable(tmp_path / "file") == comparable(tmp_path / "none")
    assert_same_agent_tensors(tmp_path / "file" / "agent", tmp_path / "none" / "agent")
