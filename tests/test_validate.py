"""Checked submissions: the agent's source fingerprint and `python -m agents.benchmark.validate`."""

import json
from pathlib import Path

import pytest

import agents
from agents.benchmark.validate import choose, differences, main, validate
from agents.qlearning import QLearningAgent
from agents.runs.source import agent_source
from tying_env.errors import SettingError


@pytest.fixture(scope="module")
def results(small_benchmark) -> Path:
    """The small benchmark's results.json (conftest), one torch thread per worker."""
    return small_benchmark / "results.json"


def test_source_fingerprint_covers_the_agent_class_hierarchy(tmp_path):
    plain = agent_source(QLearningAgent)
    plus = agent_source(agents.factory("qlearning-plus"))
    assert plain["class"] == "agents.qlearning:QLearningAgent"
    assert set(plain["modules"]) == {"agents.qlearning"}
    assert "agents.qlearning" in plus["modules"] and len(plain["sha256"]) == 64
    # a subclass in another module records both modules; its own edit changes the hash
    module = tmp_path / "my_agent_mod.py"
    module.write_text("from agents.qlearning import QLearningAgent\n"
                      "class Mine(QLearningAgent):\n    name = 'mine'\n")
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        first = agent_source(importlib.import_module("my_agent_mod").Mine)
        module.write_text(module.read_text() + "# changed\n")
        second = agent_source(importlib.import_module("my_agent_mod").Mine)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_agent_mod", None)
    assert set(first["modules"]) == {"my_agent_mod", "agents.qlearning"}
    assert first["modules"]["agents.qlearning"] == plain["modules"]["agents.qlearning"]
    assert first["sha256"] != second["sha256"]


def test_results_record_the_agent_source(results):
    meta = json.loads(results.read_text())
    for cell in meta["cells"]:
        recorded = cell["result"]["agent_source"]
        assert recorded == agent_source(agents.factory(cell["agent"]))
    assert meta["agents"]["qlearning"]["source_sha256"] == [
        agent_source(QLearningAgent)["sha256"]]


def test_validate_reproduces_a_cell_bitwise_and_catches_a_tampered_one(results, tmp_path,
                                                                       capsys):
    assert main([str(results), "--cells", "qlearning-s0", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "qlearning-s0: reproduced; agent source same" in out
    assert "bitwise (same platform and threads)" in out and out.rstrip().endswith("valid")
    report = json.loads((tmp_path / "a" / "validation.json").read_text())
    assert report["rtol"] == 0 and report["cells"][0]["differences"] == []

    meta = json.loads(results.read_text())
    cell = next(c for c in meta["cells"] if c["name"] == "random-s0")
    cell["result"]["final_val_ppl"] *= 1 + 1e-12  # the smallest tampering is caught
    cell["result"]["agent_source"]["sha256"] = "0" * 64
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(meta))
    assert main([str(tampered), "--cells", "random-s0", "--out", str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "random-s0: DIFFERS; agent source changed" in out
    assert "result.final_val_ppl:" in out and out.rstrip().endswith("NOT valid")


def test_choices_and_bad_input(results, tmp_path):
    cells = {"a-s0": {}, "b-s0": {}, "c-s1": {}}
    assert choose(cells, None, 2, 0) == choose(cells, None, 2, 0)  # seeded
    assert len(choose(cells, None, 5, 0)) == 3
    with pytest.raises(SettingError, match="'d-s0'|d-s0 not among"):
        choose(cells, ["d-s0"], 2, 0)
    with pytest.raises(SettingError, match="0 is not allowed"):
        choose(cells, None, 0, 0)
    assert differences({"x": 1.0, "m": [0, 1]}, {"x": 1.0005, "m": [0, 1]}, 1e-3) == []
    assert differences({"x": 1.0}, {"x": 1.0005}, 0.0) == ["x: 1.0 -> 1.0005"]
    assert differences({"m": [0, 1]}, {"m": [0, 0]}, 0.5) == ["m[1]: 1 -> 0"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(SettingError, match="not empty"):
        validate(results, names=["random-s0"], out=tmp_path / "full")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SettingError, match="not a benchmark's results.json"):
        validate(tmp_path / "bad.json")
