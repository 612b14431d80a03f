"""The equal-tuning page: built from tuning records and sim-to-real results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.benchmark.tune_page import main


def record(agent: str, trials: int = 4) -> dict:
    return {"agent": agent, "track": "deep/v1", "env": "LayerTying-Surrogate-Deep-v0",
            "budget": {"trials": trials, "train_episodes": 20, "validation_episodes": 2},
            "sampler": {"name": "TPESampler", "seed": 0},
            "trials": [{"number": k, "values": {"lr": 0.001 * (k + 1)}, "score": 1.0 + k / 10}
                       for k in range(trials)],
            "best": {"number": trials - 1, "values": {"lr": 0.001 * trials},
                     "score": 1.0 + (trials - 1) / 10}, "seconds": 12.0}


def cell(agent: str, returns: list[float], agent_kwargs: dict | None = None) -> dict:
    episodes = [{"seed": 1_000_000 + k, "return": r, "final_val_ppl": 10.0,
                 "trainable_fraction": 0.5} for k, r in enumerate(returns)]
    return {"status": "finished", "result": {
        "agent": agent, "env_id": "LayerTying-GPT2-Tiny-v0", "agent_kwargs": agent_kwargs or {},
        "train_env_id": "LayerTying-Surrogate-Deep-v0", "train_episodes": 20,
        "eval": episodes}}


def test_the_page_pairs_each_agent_with_random_by_test_seed(tmp_path: Path):
    files = {"q.json": {**record("qlearning"), "env_model": "abcdef0123456789"},
             "d.json": record("dqn"),
             "real.json": {"cells": [cell("random", [1.0, 2.0]),
                                     cell("qlearning", [1.5, 2.1], {"lr": 0.004}),
                                     cell("dqn", [0.5, 1.0])]}}
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    out = tmp_path / "tuning.md"
    main([str(tmp_path / "q.json"), str(tmp_path / "d.json"), "--sim-to-real",
          str(tmp_path / "real.json"), "--out", str(out)])
    page = out.read_text()
    assert "with the same budget for every agent" in page
    assert "| `qlearning` | `LayerTying-Surrogate-Deep-v0` (data `abcdef01`) | 4 x 20 (+ 2) |" \
        in page
    assert "| `dqn` | `LayerTying-Surrogate-Deep-v0` (which fit: not recorded) |" in page
    assert "lr 0.004 |" in page  # the best values, 3 significant digits
    assert "1.000 / 1.150 / 1.300" in page  # trial scores: min / median / max
    tuned = next(line for line in page.splitlines() if line.startswith("| `qlearning` (tuned)"))
    assert "| 0.3000 |" in tuned  # (0.5 + 0.1) / 2 above random on the same seeds
    untuned = next(line for line in page.splitlines() if line.startswith("| `dqn` (defaults)"))
    assert "| -0.7500 |" in untuned
    assert "| `random` (defaults) | — (does not learn) |" in page


def test_unequal_budgets_are_said_and_a_foreign_file_is_refused(tmp_path: Path):
    (tmp_path / "a.json").write_text(json.dumps(record("qlearning", trials=4)))
    (tmp_path / "b.json").write_text(json.dumps(record("dqn", trials=8)))
    out = tmp_path / "tuning.md"
    main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)])
    assert "**budgets differ between agents**" in out.read_text()
    (tmp_path / "c.json").write_text(json.dumps({"cells": []}))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "c.json"), "--out", str(out)])


def test_agents_trained_on_the_surrogate_get_paired_intervals_against_real_comparators(
        tmp_path: Path):
    from agents.benchmark.tracks import get

    track = get("deep-transfer")
    settings = {**track.env_kwargs, "lr": 0.001}  # a resolved setting the track leaves out

    def tested(agent: str, returns: list[float], train_env: str | None) -> dict:
        c = cell(agent, returns)
        c["result"] |= {"env_id": track.env_id, "env_kwargs": settings,
                        "train_env_id": train_env, "train_episodes": 10}
        return c

    base = [1.70, 1.72, 1.71, 1.73, 1.69, 1.70]
    real = {"cells": [tested("random", base, None),
                      tested("qlearning", [b - 0.01 for b in base], None),
                      tested("static-4", [b + 0.05 for b in base], None),
                      tested("static-2", [b + 0.02 for b in base], None),
                      tested("dqn", [b + 0.03 for b in base], None)]}
    bandit = [b + 0.04 + 0.001 * k for k, b in enumerate(base)]
    sim = {"cells": [tested("schedule-bandit", bandit, "LayerTying-Surrogate-Deep-v0"),
                     tested("qlearning", base, "LayerTying-Surrogate-Deep-v0")]}
    sim["cells"][0]["result"]["train_env_model"] = "ab12cd34" + "0" * 56
    files = {"real.json": real, "sim.json": sim, "q.json": record("qlearning")}
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    out = tmp_path / "tuning.md"
    main([str(tmp_path / "q.json"), "--sim-to-real", str(tmp_path / "real.json"),
          str(tmp_path / "sim.json"), "--out", str(out)])
    page = out.read_text()
    assert f"### Tested on the `{track.label}` track's environment" in page
    assert "− the best static (`static-4`)" in page
    assert "| `dqn`" not in page and "| `static-2`" not in page  # not a comparator here
    row = next(line for line in page.splitlines() if line.startswith("| `schedule-bandit`"))
    cells = [c.strip() for c in row.split("|")]
    # 0.04 + 0.001 k above random: mean 0.0425; above qlearning 0.0525; below static-4
    assert cells[5].startswith("0.0425 [") and cells[6].startswith("0.0525 [")
    assert cells[7].startswith("-0.0075 [")
    low, high = (float(x) for x in cells[5].split("[")[1].rstrip("]").split(","))
    assert 0.040 <= low < 0.0425 < high <= 0.045  # a bootstrap interval within the range
    assert "with its 95% bootstrap interval over seeds" in page
    # a row trained on a surrogate names its model, or says it was not recorded
    assert "`LayerTying-Surrogate-Deep-v0` (model `ab12cd34`), 10 episodes" in row
    q = next(line for line in page.splitlines() if line.startswith("| `qlearning`")
             and "Surrogate-Deep-v0` (model" in line)
    assert "(model: not recorded)" in q
