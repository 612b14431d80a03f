"""agents.benchmark.paired against hand-computed cases: per-seed differences, Holm, the exact
Wilcoxon p, TOST, the normalised score, why pairing pays, determinism."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from rliable import library
from scipy import stats as scipy_stats

from agents.benchmark import paired
from agents.benchmark.stats import Bootstrap, interval
from agents.benchmark.tracks import Hypothesis

FAST = Bootstrap(reps=500)
SEEDS = range(10)
# a large seed-to-seed spread: the reference's perplexity per seed
SPREAD = {s: 100.0 * (1.0 + 0.3 * z) for s, z in enumerate(
    [-1.2, 0.4, 1.5, -0.3, 0.9, -1.6, 0.1, 1.1, -0.7, -0.2])}
# small per-seed jitter of an effect, distinct |values| (no ties in the Wilcoxon ranks)
JITTER = [0.0011, -0.0007, 0.0003, -0.0013, 0.0009, -0.0002, 0.0005, -0.0010, 0.0001, 0.0006]


def scaled(factor: float, jitter: float = 1.0) -> dict[int, float]:
    """The reference's values times `factor`, with the per-seed jitter times `jitter`."""
    return {s: SPREAD[s] * (factor + jitter * JITTER[s]) for s in SEEDS}


# ---------------------------------------------------------------- differences
def test_paired_differences_on_the_seeds_both_finished():
    agent = {0: 110.0, 1: 95.0, 2: None, 3: 100.0, 4: 80.0}  # seed 4: no reference
    reference = {0: 100.0, 1: 100.0, 2: 90.0, 3: 125.0, 5: 70.0}  # seed 2: agent missing
    # seeds 0, 1, 3: (110-100)/100, (95-100)/100, (100-125)/125
    assert paired.paired_differences(agent, reference) == pytest.approx(
        {0: 0.10, 1: -0.05, 3: -0.20})
    assert paired.paired_differences(agent, reference, relative=False) == pytest.approx(
        {0: 10.0, 1: -5.0, 3: -25.0})
    assert paired.paired_differences({0: float("nan")}, {0: 1.0}) == {}


def test_paired_interval_is_the_mean_and_deterministic():
    d = {0: 0.10, 1: -0.05, 3: -0.20, 4: 0.03, 5: 0.01}
    first = paired.paired_interval(d, "x", FAST)
    assert first["value"] == pytest.approx(np.mean(list(d.values())))
    assert first["low"] <= first["value"] <= first["high"]
    assert (first["n"], first["confidence"], first["statistic"]) == (5, 0.95, "mean")
    assert first == paired.paired_interval(d, "x", FAST)
    assert paired.paired_interval({}, "x", FAST)["value"] is None
    one = paired.paired_interval({0: 0.2}, "x", FAST)
    assert one["low"] == one["high"] == one["value"] == 0.2


# ---------------------------------------------------------------- Wilcoxon
def test_wilcoxon_exact_p_by_hand():
    # d = 1, -2, 3, 4: ranks of |d| 1, 2, 3, 4; W+ = 1 + 3 + 4 = 8, its null mean 10 / 2 = 5.
    # Sign assignments (of 16) with W+ >= 8: {1,3,4}, {2,3,4}, {1,2,3,4}; with W+ <= 2:
    # {}, {1}, {2}; two-sided p = 6 / 16
    found = paired.wilcoxon([1.0, -2.0, 3.0, 4.0])
    assert found == {"p": pytest.approx(6 / 16), "n": 4, "method": "exact"}


def test_wilcoxon_exact_p_by_enumerating_signs():
    d = np.array([0.3, -0.1, 0.5, 0.2, -0.4, 0.6, 0.0])  # the zero is dropped
    nonzero = d[d != 0]
    ranks = scipy_stats.rankdata(np.abs(nonzero))
    observed = ranks[nonzero > 0].sum()
    centre = ranks.sum() / 2
    totals = [sum(r for r, s in zip(ranks, signs, strict=True) if s)
              for signs in itertools.product([False, True], repeat=len(ranks))]
    p = np.mean([abs(t - centre) >= abs(observed - centre) - 1e-12 for t in totals])
    found = paired.wilcoxon(list(d))
    assert (found["n"], found["method"]) == (6, "exact")
    assert found["p"] == pytest.approx(p, abs=1e-12)


def test_wilcoxon_edge_cases():
    assert paired.wilcoxon([0.0, 0.0])["p"] == 1.0
    assert paired.wilcoxon([1.0, -1.0, 2.0])["method"] == "normal approximation"  # tied |d|
    # n = 5 all one sign: the smallest exact p, 2 / 32, cannot reject at 0.05
    assert paired.wilcoxon([1.0, 2.0, 3.0, 4.0, 5.0])["p"] == pytest.approx(2 / 32)


# ---------------------------------------------------------------- Holm
def test_holm_by_hand():
    # sorted: b 0.01 x 3 = 0.03; c 0.03 x 2 = 0.06; a 0.04 x 1 = 0.04 -> running max 0.06
    found = paired.holm({"a": 0.04, "b": 0.01, "c": 0.03}, alpha=0.05)
    assert {k: v["p_adjusted"] for k, v in found.items()} == pytest.approx(
        {"a": 0.06, "b": 0.03, "c": 0.06})
    assert {k: v["rank"] for k, v in found.items()} == {"b": 0, "c": 1, "a": 2}
    # confidence 1 - alpha / (m - j)
    assert {k: v["confidence"] for k, v in found.items()} == pytest.approx(
        {"b": 1 - 0.05 / 3, "c": 1 - 0.05 / 2, "a": 1 - 0.05 / 1})
    # capped at 1: 0.01 x 3 = 0.03; 0.6 x 2 = 1.2 -> 1; 0.7 x 1 -> running max 1
    capped = paired.holm({"a": 0.01, "b": 0.6, "c": 0.7})
    assert [capped[k]["p_adjusted"] for k in "abc"] == pytest.approx([0.03, 1.0, 1.0])
    assert paired.holm({}) == {}


def test_compare_holm_consistent_intervals_and_verdicts():
    values = {"ref": dict(SPREAD), "strong": scaled(0.98),
              # 9 of 10 seeds higher; the one lower has the smallest |d|
              "weak": {s: SPREAD[s] * (0.99999 if s == 8 else 1.02 + JITTER[s]) for s in SEEDS},
              "same": {s: SPREAD[s] * (1 + 0.01 * (s + 1) * (-1) ** s) for s in SEEDS}}
    found = paired.compare(values, "ref", alpha=0.05, bootstrap=FAST)
    assert set(found) == {"strong", "weak", "same"}
    # all 10 negative: exact p = 2 / 2^10; 9 of 10 positive, the odd one ranked 1: 4 / 2^10
    assert found["strong"]["p"] == pytest.approx(2 / 1024)
    assert found["weak"]["p"] == pytest.approx(4 / 1024)
    assert [found[a]["rank"] for a in ("strong", "weak", "same")] == [0, 1, 2]
    assert found["strong"]["p_adjusted"] == pytest.approx(3 * 2 / 1024)
    assert found["weak"]["p_adjusted"] == pytest.approx(2 * 4 / 1024)
    for row in found.values():
        assert row["difference"]["confidence"] == pytest.approx(1 - 0.05 / (3 - row["rank"]))
        assert row["n"] == 10 and row["test"].endswith("exact")
    assert found["strong"]["difference"]["value"] == pytest.approx(-0.02, abs=1e-3)
    assert found["strong"]["difference"]["high"] < 0
    assert [found[a]["verdict"] for a in ("strong", "weak", "same")] == \
        ["better", "worse", "no difference"]
    # higher is better flips the direction
    flipped = paired.compare(values, "ref", bootstrap=FAST, lower_is_better=False)
    assert flipped["strong"]["verdict"] == "worse"


# ---------------------------------------------------------------- TOST
def test_tost_clearly_equivalent():
    found = paired.equivalence(scaled(1.0, jitter=1.0), SPREAD, tied_fractions=[0.8] * 10,
                               min_tied_fraction=0.75, margin=0.01, bootstrap=FAST)
    assert found["equivalent"] is True and found["p"] < 1e-6
    assert found["interval_inside_margin"] is True
    assert found["difference"]["confidence"] == pytest.approx(0.90)
    assert found["tied_fraction_iqm"] == pytest.approx(0.8) and found["holds"] is True
    # the p-value by hand: the larger of the two one-sided paired t-tests
    d = np.array(JITTER)
    se = d.std(ddof=1) / np.sqrt(d.size)
    p_low = scipy_stats.t.sf((d.mean() + 0.01) / se, d.size - 1)
    p_high = scipy_stats.t.cdf((d.mean() - 0.01) / se, d.size - 1)
    assert found["p"] == pytest.approx(max(p_low, p_high), rel=1e-6)
    assert found["non_inferiority_p"] == pytest.approx(p_high, rel=1e-6)
    json.dumps(found, allow_nan=False)


def test_tost_clearly_not_equivalent_and_the_tie_requirement():
    worse = paired.equivalence(scaled(1.05, jitter=5.0), SPREAD, tied_fractions=[0.8] * 10,
                               min_tied_fraction=0.75, bootstrap=FAST)
    assert worse["equivalent"] is False and worse["p"] > 0.99
    assert worse["interval_inside_margin"] is False and worse["holds"] is False
    assert worse["difference"]["value"] == pytest.approx(0.05, abs=1e-3)
    untied = paired.equivalence(scaled(1.0), SPREAD, tied_fractions=[0.5, 0.6, None],
                                min_tied_fraction=0.75, bootstrap=FAST)
    assert untied["equivalent"] is True
    assert untied["tied_enough"] is False and untied["holds"] is False
    one = paired.equivalence({0: 1.0}, {0: 1.0}, tied_fractions=[], min_tied_fraction=0.75)
    assert one["p"] is None and "note" in one


# ---------------------------------------------------------------- normalised score
def test_normalised_score_by_hand():
    one = paired.normalised_scores({0: 105.0}, {0: 110.0}, {0: 100.0}, bootstrap=FAST)
    assert one["value"] == pytest.approx(0.5)  # (110 - 105) / (110 - 100)
    # per seed (110-105)/10, (120-110)/20, (130-100)/30 = 0.5, 0.5, 1; seed 3: 0 denominator
    found = paired.normalised_scores({0: 105.0, 1: 110.0, 2: 100.0, 3: 90.0},
                                      {0: 110.0, 1: 120.0, 2: 130.0, 3: 95.0},
                                      {0: 100.0, 1: 100.0, 2: 100.0, 3: 95.0}, bootstrap=FAST)
    assert found["per_seed"] == pytest.approx({"0": 0.5, "1": 0.5, "2": 1.0})
    assert found["value"] == pytest.approx(2 / 3) and found["n"] == 3
    assert found["undefined_seeds"] == [3] and "reason" not in found
    zero = paired.normalised_scores({0: 1.0}, {0: 2.0}, {0: 2.0})
    assert zero["value"] is None and "zero denominator" in zero["reason"]
    # the random agent scores 0, the best static 1
    assert paired.normalised_scores({0: 110.0}, {0: 110.0}, {0: 100.0})["value"] == 0.0
    assert paired.normalised_scores({0: 100.0}, {0: 110.0}, {0: 100.0})["value"] == 1.0


# ---------------------------------------------------------------- why pairing
def test_pairing_detects_what_unpaired_intervals_miss():
    agent = scaled(0.98)  # 2% lower on every seed; seeds spread by +-30%
    d = paired.paired_differences(agent, SPREAD, relative=False)
    pair = paired.paired_interval(d, "pair", FAST)
    assert pair["high"] < 0  # the paired interval excludes zero
    a, r = np.array(list(agent.values())), np.array(list(SPREAD.values()))
    # unpaired: the seeds of each agent resampled independently (rliable), difference of means
    np.random.seed(0)
    _, ci = library.get_interval_estimates(
        {"d": [a.reshape(-1, 1), r.reshape(-1, 1)]},
        lambda x, y: np.array([x.mean() - y.mean()]), reps=500)
    low, high = ci["d"][:, 0]
    assert low < 0 < high
    # and the two agents' own intervals of the mean overlap
    ia, ir = (interval(v, np.mean, f"mean/{k}", FAST) for k, v in (("a", a), ("r", r)))
    assert ia["high"] > ir["low"] and ir["high"] > ia["low"]


# ---------------------------------------------------------------- the whole track
def cell(agent: str, seed: int, ppl: float, ties: list[int], status: str = "finished") -> dict:
    return {"agent": agent, "seed": seed, "status": status,
            "result": {"agent": agent, "seed": seed, "env_id": "E", "final_val_ppl": ppl,
                       "final_test_ppl": ppl + 1, "trainable_fraction": 0.5,
                       "tie_map": ties}}


TIED, UNTIED = [0, 0, 0, 0], [0, 1, 2, 3]  # 3/4 and 0 of the layers tied


def track_cells() -> list[dict]:
    rows = {"learner": scaled(0.99), "plain": dict(SPREAD), "random": scaled(1.02),
            "static": scaled(0.98), "tier": scaled(1.0005, jitter=0.5)}
    cells = [cell(a, s, v, TIED if a in ("tier", "static") else UNTIED)
             for a, per_seed in rows.items() for s, v in per_seed.items()]
    cells.append(cell("learner", 11, 1.0, UNTIED, status="failed"))  # not finished
    cells.append({"agent": "learner", "seed": 12, "status": "finished", "result": None})
    return cells


def test_paired_statistics_block_is_json_and_deterministic():
    agents = ["learner", "plain", "random", "static", "tier"]
    kwargs = {"reference": "learner", "hypothesis": Hypothesis("plain", 0.75),
              "random_for": {a: "random" for a in agents},
              "static_agents": ["plain", "static"], "margin": 0.01, "alpha": 0.05,
              "bootstrap": FAST}
    found = paired.paired_statistics(track_cells(), agents, **kwargs)
    assert found == paired.paired_statistics(track_cells(), agents, **kwargs)
    json.dumps(found, allow_nan=False)
    comparisons = found["comparisons"]
    assert set(comparisons) == {"plain", "random", "static", "tier"}
    assert comparisons["static"]["verdict"] == "better"
    assert comparisons["random"]["verdict"] == "worse"
    assert sorted(r["rank"] for r in comparisons.values()) == [0, 1, 2, 3]
    claim = found["hypothesis"]
    assert claim["meeting"] == ["tier"] and claim["holds"] is True
    assert claim["agents"]["learner"]["equivalent"] is False  # 1% lower: at the margin
    assert claim["agents"]["learner"]["tied_enough"] is False
    assert claim["agents"]["static"]["equivalent"] is False  # 2% lower: outside +-1%
    assert found["normalised"]["one"] == "static"  # the better static schedule of the two
    scores = found["normalised"]["agents"]
    assert scores["random"]["value"] == pytest.approx(0.0)
    assert scores["static"]["value"] == pytest.approx(1.0)
    assert scores["learner"]["value"] == pytest.approx(0.75, abs=0.01)  # (1.02-.99)/(.04)
    assert found["notes"] == []


def test_paired_statistics_without_the_reference_or_baselines():
    cells = [c for c in track_cells() if c["agent"] in ("plain", "tier")]
    found = paired.paired_statistics(cells, ["plain", "tier"], reference="learner",
                                     hypothesis=Hypothesis("plain", 0.75), random_for={},
                                     static_agents=[], bootstrap=FAST)
    assert found["comparisons"] is None and found["normalised"] is None
    assert found["hypothesis"]["meeting"] == ["tier"]
    assert len(found["notes"]) == 2


def test_two_finished_cells_of_one_seed_are_refused():
    with pytest.raises(ValueError, match="two finished cells"):
        paired.seed_values([cell("a", 0, 1.0, TIED), cell("a", 0, 2.0, TIED)], ["a"],
                           "final_val_ppl")


def test_train_then_test_cells_pair_by_held_out_seed_and_returns_are_absolute():
    def run(agent: str, returns: list[float]) -> dict:
        episodes = [{"seed": 1_000_000 + k, "return": r, "final_val_ppl": 10.0 - r,
                     "tie_map": [0, 0, 2, 3]} for k, r in enumerate(returns)]
        return {"agent": agent, "seed": 0, "status": "finished",
                "result": {"agent": agent, "seed": 0, "env_id": "E",
                           "protocol": "train-evaluate", "eval": episodes}}

    base = [0.1, 0.4, 0.2, 0.5, 0.3, 0.6, 0.7]
    gains = [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]  # distinct: an exact Wilcoxon
    cells = [run("learner", [r + g for r, g in zip(base, gains, strict=True)]),
             run("random", base), run("static", [r + 2 * g for r, g in
                                                 zip(base, gains, strict=True)])]
    values = paired.seed_values(cells, ["learner"], "episode_return")
    assert sorted(values["learner"]) == [1_000_000 + k for k in range(7)]
    found = paired.paired_statistics(
        cells, ["learner", "random", "static"], reference="random",
        hypothesis=Hypothesis("static", 0.75), random_for={"learner": "random"},
        static_agents=["static"], metric="episode_return", lower_is_better=False,
        bootstrap=FAST)
    row = found["comparisons"]["learner"]
    assert row["difference"]["value"] == pytest.approx(0.05)  # absolute, not a ratio
    assert row["verdict"] == "better"  # higher is better; p = 2/128, Holm x 2 < 0.05
    assert found["normalised"]["agents"]["learner"]["value"] == pytest.approx(0.5)
    assert found["learns"]["learner"]["verdict"] == "better"  # beats its random agent
    assert found["best_static"] == "static"
    assert found["beats_best_static"]["learner"]["verdict"] == "worse"
    assert found["beats_best_static"]["random"]["against"] == "static"


def test_the_leaderboard_shows_a_v2_track_first_with_its_paired_statistics():
    from agents.benchmark.leaderboard import render

    agents = ["learner", "plain", "random", "static", "tier"]
    track = {"name": "v2demo", "version": 1, "label": "v2demo/v1",
             "objective": "rewarded for X and ranked by it", "rank_metric": "final_val_ppl",
             "random_for": {a: "random" for a in agents}, "static_agents": ["static"],
             "seeds": list(range(10)), "env_kwargs": {}, "description": "a demo"}
    cells = track_cells()
    paired_block = paired.paired_statistics(
        cells, agents, reference="learner", hypothesis=Hypothesis("plain", 0.75),
        random_for=track["random_for"], static_agents=["static"], bootstrap=FAST)
    v2 = {"_file": "docs/results/v2demo.json", "request": {"env_id": "E", "track": track},
          "agents": {a: {"seeds": list(range(10)), "final_val_ppl": {"mean": 1.0}}
                     for a in agents},
          "statistics": {"paired": paired_block}, "cells": cells, "code": {}, "machine": {}}
    v1 = {"_file": "docs/results/old.json", "request": {"env_id": "E"}, "agents": {},
          "statistics": {}, "cells": [], "code": {}, "machine": {}}
    page = render([v1, v2], "python -m agents.benchmark.leaderboard X", {}, submit=False)
    assert page.index("Track `v2demo` (version 1): Benchmark v2") < page.index("old.json")
    assert "rewarded for X and ranked by it" in page
    row = next(line for line in page.splitlines() if line.startswith("| `static` |"))
    assert "(the best static)" in row and "1.00 [" in row  # its normalised score is 1
    assert "- Which agent learns (beats its random agent)? `learner`, `plain`, `static`, " \
           "`tier`" in page
    assert "met by `tier`" in page


def test_intervals_over_too_few_seeds_are_marked_on_the_page():
    from agents.benchmark.paired_page import _few_seeds, _interval

    few = {"value": 0.5, "low": 0.1, "high": 0.9, "n": 3}
    assert _interval(few, 2) == "0.50 [0.10, 0.90] (n=3)"
    assert _interval({**few, "n": 10}, 2) == "0.50 [0.10, 0.90]"
    assert _interval({**few, "n": 1, "low": 0.5, "high": 0.5}, 2) == "0.50 [0.50, 0.50]"
    assert _few_seeds({"a": {"difference": few}}, {"scores": {"b": {**few, "n": 4}}}) == [3, 4]
    assert _few_seeds({"a": {"difference": {**few, "n": 6}}}) == []


def test_the_learns_column_names_what_a_row_without_a_verdict_is():
    from agents.benchmark.paired_page import _learns_cell

    random_for = {"dqn": "random-unmasked", "qlearning": "random", "random": "random"}
    assert _learns_cell("random", None, random_for) == "(a random agent)"
    assert _learns_cell("static-4", None, random_for) == "(a schedule)"
    assert _learns_cell("dqn", None, random_for) == "—"  # its random agent has no cells
    assert _learns_cell("dqn", {"verdict": "better", "p": 0.01}, random_for).startswith("yes")
