"""`agents.runs.result`: the one reader and writer of `result.json`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agents.runs.result import (
    FORMAT,
    VERSION,
    ResultFormatError,
    RunResult,
    cell_result,
    is_finished,
    read_result,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "docs" / "results").rglob("*.json"))


def example(**changes) -> RunResult:
    fields = dict(agent="qlearning", seed=3, env_id="LayerTying-GPT2-Tiny-v0",
                  env_kwargs={"n_layer": 4}, final_val_ppl=12.5, final_test_ppl=math.inf,
                  tie_map=[0, 0, 2, 2], all_decisions=True, budget=4, decisions=4,
                  notes=["a note"])
    return RunResult(**{**fields, **changes})


def test_writes_its_format_first_and_reads_back_what_it_wrote(tmp_path):
    result = example(total_seconds=1.5)
    path = result.write(tmp_path)
    obj = json.loads(path.read_text())
    assert list(obj)[:2] == ["format", "format_version"]
    assert (obj["format"], obj["format_version"]) == (FORMAT, VERSION)
    assert obj["finished"] is True and obj["final_test_ppl"] is None  # inf is written null
    assert "track" not in obj and "train" not in obj  # what applies to other runs only
    back = read_result(tmp_path)
    assert back == result.replace(final_test_ppl=None)
    assert back.to_json() == obj


def test_a_file_from_before_the_format_id_loads_unchanged():
    old = {"agent": "vanilla", "seed": 0, "env_id": "E", "finished": False,
           "total_seconds": 2.0, "tie_map": [0, 1], "a_key_from_elsewhere": [1, 2]}
    result = RunResult.from_json(old)
    assert result.protocol == "online" and result.all_decisions is False
    assert result.complete and result.extra == {"a_key_from_elsewhere": [1, 2]}
    assert result.to_json()["a_key_from_elsewhere"] == [1, 2]


@pytest.mark.parametrize("obj, words", [
    ({"format": "something-else", "agent": "a", "seed": 0, "env_id": "E"}, "'something-else'"),
    ({"format": FORMAT, "format_version": VERSION + 1, "agent": "a", "seed": 0,
      "env_id": "E"}, f"format_version {VERSION + 1}"),
    ({"seed": 0, "env_id": "E"}, "needs agent"),
    ({"agent": "a", "seed": "zero", "env_id": "E"}, "'zero'"),
    ([1, 2], "not list"),
])
def test_what_is_not_a_run_result_is_named(obj, words):
    with pytest.raises(ResultFormatError, match=words):
        RunResult.from_json(obj)


def test_finished_means_complete(tmp_path):
    assert read_result(tmp_path) is None and not is_finished(tmp_path)
    example().write(tmp_path)  # the driver's early write, before the outputs are saved
    assert read_result(tmp_path) is not None and not is_finished(tmp_path)
    example(total_seconds=0.0).write(tmp_path)
    assert is_finished(tmp_path)
    (tmp_path / "result.json").write_text('{"format": "other"}')
    assert read_result(tmp_path) is None and not is_finished(tmp_path)


def test_layers_tied_fraction_of_a_run_and_of_evaluation_episodes():
    assert example().layers_tied_fraction == 0.5
    assert example(tie_map=[0, 1, 2, 3]).layers_tied_fraction == 0.0
    train_evaluate = example(tie_map=None, protocol="train-evaluate",
                             eval=[{"tie_map": [0, 0, 0, 0], "return": 1.0},
                                   {"tie_map": [0, 0, 2, 3], "return": math.nan}])
    assert train_evaluate.layers_tied_fraction == pytest.approx((0.75 + 0.25) / 2)
    assert train_evaluate.eval_returns == [1.0]
    assert example(tie_map=None).layers_tied_fraction is None


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_every_committed_result_still_loads(path):
    cells = json.loads(path.read_text()).get("cells") or []
    results = [cell_result(c) for c in cells]
    for cell, result in zip(cells, results, strict=True):
        if cell.get("result"):
            assert (result.agent, result.seed) == (cell["agent"], cell["seed"])
            assert result.complete and result.extra == {}
