"""agents.benchmark.stats on constructed data: hand-computed values, rliable's equality,
direction (lower perplexity is better), determinism, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rliable import metrics

from agents.benchmark import stats, tracks
from agents.benchmark.stats import Bootstrap
from agents.benchmark.tracks import Hypothesis

FAST = Bootstrap(reps=500)
JUDGED = {"baseline": "qlearning", "hypothesis": tracks.PAPER}  # the tracks' judges


def cell(agent: str, seed: int, ppl: float, fraction: float, ties: list[int],
         ret: float = 1.0) -> dict:
    return {"agent": agent, "seed": seed, "status": "finished", "episode_return": ret,
            "result": {"agent": agent, "seed": seed, "env_id": "E",
                       "final_val_ppl": ppl, "final_test_ppl": ppl + 1,
                       "trainable_fraction": fraction, "initial_val_ppl": 1001.0,
                       "tie_map": ties}}


# ---------------------------------------------------------------- point statistics
def test_iqm_of_known_arrays():
    assert stats.iqm(np.arange(1, 9)) == 4.5  # the middle four of 1..8: 3, 4, 5, 6
    assert stats.iqm([1.0, 2.0, 100.0]) == pytest.approx(103 / 3)  # nothing trimmed from 3
    assert stats.iqm([5.0, 1.0, 9.0, 7.0, 3.0, 1000.0, -1000.0, 4.0]) == 4.75  # 3, 4, 5, 7


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 13])
def test_iqm_equals_rliable(n):
    scores = np.random.default_rng(n).normal(size=(n, 1))
    assert stats.iqm(scores) == pytest.approx(metrics.aggregate_iqm(scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_probability_of_improvement_equals_rliable(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=(6, 1)).astype(float)  # ties on purpose
    y = rng.integers(0, 5, size=(4, 1)).astype(float)
    assert stats.probability_of_improvement(x, y) == pytest.approx(
        metrics.probability_of_improvement(x, y), abs=1e-12)
    assert stats.probability_of_improvement(x, x) == 0.5


def test_probability_of_improvement_by_hand():
    # pairs (x, y): 3>1, 3>2, 3=3 (half), 1<2, 1<3, 1=1 (half) -> (2 + 0.5 + 0.5) / 6
    assert stats.probability_of_improvement([3.0, 1.0], [1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert stats.probability_of_improvement([3.0, 4.0], [1.0, 2.0]) == 1.0


# ---------------------------------------------------------------- intervals
def test_interval_contains_the_estimate_and_is_deterministic():
    values = [10.0, 12.0, 11.0, 15.0, 9.0, 13.0]
    first = stats.interval(values, stats.iqm, "iqm/x", FAST)
    assert first == stats.interval(values, stats.iqm, "iqm/x", FAST)
    assert first["value"] == stats.iqm(values) and first["n"] == 6
    assert first["low"] <= first["value"] <= first["high"] and first["low"] < first["high"]
    assert min(values) <= first["low"] and first["high"] <= max(values)
    # another name draws other resamples; another seed too
    assert stats.interval(values, stats.iqm, "iqm/y", FAST) != first
    assert stats.interval(values, stats.iqm, "iqm/x", Bootstrap(reps=500, seed=1)) != first


def test_interval_of_few_values():
    assert stats.interval([], stats.iqm, "e") == {"value": None, "low": None, "high": None,
                                                   "n": 0}
    assert stats.interval([3.0, None, float("nan")], stats.iqm, "one") == \
        {"value": 3.0, "low": 3.0, "high": 3.0, "n": 1}
    assert stats.interval([2.0, 2.0, 2.0], stats.iqm, "same", FAST) == \
        {"value": 2.0, "low": 2.0, "high": 2.0, "n": 3}


def test_bootstrap_leaves_numpys_global_generator_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    stats.interval([1.0, 2.0, 3.0, 4.0], stats.iqm, "g", FAST)
    assert np.random.random() == expected


def test_clearly_lower_perplexity_improves_with_an_interval_above_half():
    better = [100.0 + i for i in range(10)]  # lower perplexity: better
    worse = [200.0 + i for i in range(10)]
    up = stats.improvement(better, worse, "up", FAST)
    assert up["value"] == 1.0 and up["low"] > 0.5 and up["verdict"] == "better"
    assert (up["n"], up["n_baseline"]) == (10, 10)
    down = stats.improvement(worse, better, "down", FAST)
    assert down["value"] == 0.0 and down["high"] < 0.5 and down["verdict"] == "worse"
    # for a higher-is-better metric the direction turns
    assert stats.improvement(worse, better, "ret", FAST, lower_is_better=False)["value"] == 1.0


def test_overlapping_samples_are_undecided():
    rng = np.random.default_rng(0)
    a, b = rng.normal(200, 5, 10), rng.normal(200, 5, 10)
    result = stats.improvement(list(a), list(b), "same", FAST)
    assert result["low"] < 0.5 < result["high"] and result["verdict"] == "undecided"
    assert stats.improvement([], list(b), "none", FAST)["verdict"] is None


# ---------------------------------------------------------------- hypervolume
def test_hypervolume_of_a_known_two_point_front():
    # unit box, points (0.5, 0.5) and (0.25, 0.75): 0.25 + 0.0625 = 0.3125
    assert stats.hypervolume([[0.5, 0.5], [0.25, 0.75]], (1.0, 1.0)) == pytest.approx(0.3125)
    # the same front in perplexity units: box from (ppl 1, fraction 0) to (101, 1)
    front = [[51.0, 0.5], [26.0, 0.75]]
    assert stats.hypervolume(front, (101.0, 1.0), (1.0, 0.0)) == pytest.approx(0.3125)
    # a dominated point and a point beyond the reference add nothing
    more = [*front, [60.0, 0.8], [200.0, 0.1], [float("nan"), 0.1]]
    assert stats.hypervolume(more, (101.0, 1.0), (1.0, 0.0)) == pytest.approx(0.3125)
    assert stats.hypervolume([], (101.0, 1.0)) == 0.0


def test_hypervolume_per_seed_in_the_tracks_own_box():
    # one point alone in the box (ppl 1..101, fraction 0..1): (1 - 0.5) * (1 - 0.5) = 0.25
    box = {"ideal_val_ppl": 1.0, "final_val_ppl": 101.0, "trainable_fraction": 1.0}
    values = stats.seed_hypervolumes([[51.0, 0.5], [26.0, 0.75], [float("nan"), 0.2]], box)
    assert values[:2] == [pytest.approx(0.25), pytest.approx(0.1875)] and math.isnan(values[2])
    # the box spans the finished cells' range: the best ppl is its corner, the worst adds 0
    cells = [cell("a", 0, 100.0, 0.5, [0, 1]), cell("a", 1, 110.0, 0.5, [0, 1]),
             cell("b", 0, 120.0, 0.0, [0, 0])]
    found = stats.hypervolume_box(cells)
    assert (found["ideal_val_ppl"], found["final_val_ppl"]) == (100.0, 120.0)
    assert stats.hypervolume_box(cells[:1]) is None  # no range
    given = {"final_val_ppl": 500.0, "source": "track"}
    assert stats.hypervolume_box(cells, given)["ideal_val_ppl"] == 1.0
    # per agent: the IQM of its seeds' values with a real bootstrap interval (the
    # estimate inside it, not its upper end)
    many = [cell("c", s, 100.0 + 2 * s, 0.1 * s, [0, 1]) for s in range(8)]
    est = stats.hypervolume_estimates(many, ["c"], stats.hypervolume_box(many), FAST)["c"]
    per_seed = stats.seed_hypervolumes([(100.0 + 2 * s, 0.1 * s) for s in range(8)],
                                       stats.hypervolume_box(many))
    assert est["value"] == pytest.approx(stats.iqm(per_seed)) and est["n"] == 8
    assert est["low"] < est["value"] < est["high"]


# ---------------------------------------------------------------- profiles, cells
def test_performance_profile_counts_values_below_each_threshold():
    profile = stats.performance_profile([1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 4.5], "p", FAST)
    assert profile["fraction"] == [0.0, 0.5, 1.0] and profile["n"] == 4
    assert all(lo <= f <= hi for lo, f, hi in
               zip(profile["low"], profile["fraction"], profile["high"], strict=True))
    assert profile["low"][0] == profile["high"][0] == 0.0  # no resample has a value < 0.5
    assert stats.performance_profile([2.0], [1.0, 3.0], "one")["fraction"] == [0.0, 1.0]
    assert stats.performance_profile([], [1.0], "none") is None


# ---------------------------------------------------------------- a whole benchmark
def constructed() -> list[dict]:
    """qlearning: mid perplexity, 1 of 4 layers tied; vanilla: untied; albert: 3 of 4
    tied with vanilla's perplexity; worse: clearly higher perplexity."""
    cells = []
    for seed in range(6):
        cells += [cell("qlearning", seed, 150.0 + seed, 0.7, [0, 0, 2, 3]),
                  cell("vanilla", seed, 100.0 + seed, 1.0, [0, 1, 2, 3]),
                  cell("albert", seed, 100.5 + seed, 0.3, [0, 0, 0, 0]),
                  cell("worse", seed, 300.0 + seed, 0.5, [0, 1, 1, 1])]
    return cells


def test_benchmark_statistics_of_constructed_agents():
    agents = ["qlearning", "vanilla", "albert", "worse"]
    per_agent, summary = stats.benchmark_statistics(constructed(), agents, bootstrap=FAST,
                                                    **JUDGED)
    assert set(per_agent) == set(agents)
    val = per_agent["vanilla"]["iqm"]["final_val_ppl"]
    assert val["value"] == stats.iqm([100.0 + s for s in range(6)]) == 102.5
    assert per_agent["albert"]["iqm"]["layers_tied_fraction"]["value"] == 0.75
    assert per_agent["qlearning"]["improvement"] is None  # no comparison with itself
    assert per_agent["vanilla"]["improvement"]["verdict"] == "better"
    assert per_agent["worse"]["improvement"]["verdict"] == "worse"
    assert summary["baseline"] == "qlearning"
    # the box: the best (vanilla seed 0) to the worst (worse seed 5) final val ppl
    assert summary["hypervolume_reference"]["ideal_val_ppl"] == 100.0
    assert summary["hypervolume_reference"]["final_val_ppl"] == 305.0
    assert summary["method"]["reps"] == 500 and "rliable" in summary["method"]["library"]
    assert summary["hypervolume_reference"]["trainable_fraction"] == 1.0
    assert per_agent["vanilla"]["hypervolume"]["value"] == 0.0  # fraction 1: nothing saved
    assert per_agent["albert"]["hypervolume"]["value"] > per_agent["worse"]["hypervolume"][
        "value"]
    assert set(summary["profile"]["agents"]) == set(agents)
    claims = summary["claims"]
    assert claims["beat_baseline"] == ["vanilla", "albert"]
    paper = claims["paper"]
    assert paper["holds"] is True and paper["meeting"] == ["albert"]
    assert paper["agents"]["qlearning"] == {"layers_tied": 0.25, "val_ppl": 152.5,
                                            "tied_enough": False, "ppl_within": False,
                                            "holds": False}


def test_an_agents_statistics_do_not_depend_on_the_others():
    cells = constructed()
    alone, _ = stats.benchmark_statistics(cells, ["qlearning", "albert"], bootstrap=FAST,
                                          **JUDGED)
    together, _ = stats.benchmark_statistics(cells, ["qlearning", "vanilla", "albert",
                                                     "worse"], bootstrap=FAST, **JUDGED)
    assert alone["albert"] == together["albert"]


def test_without_qlearning_the_comparison_is_skipped_with_a_note():
    cells = [c for c in constructed() if c["agent"] != "qlearning"]
    per_agent, summary = stats.benchmark_statistics(cells, ["vanilla", "albert"],
                                                    bootstrap=FAST, **JUDGED)
    assert summary["baseline"] is None and "qlearning" in summary["note"]
    assert all(row["improvement"] is None for row in per_agent.values())
    assert summary["claims"]["beat_baseline"] is None
    assert summary["claims"]["paper"]["holds"] is True  # the claim needs vanilla only


def test_without_vanilla_the_claim_cannot_be_checked():
    cells = [c for c in constructed() if c["agent"] != "vanilla"]
    _, summary = stats.benchmark_statistics(cells, ["qlearning", "albert"], bootstrap=FAST,
                                            **JUDGED)
    assert summary["claims"]["paper"]["holds"] is None
    assert "vanilla" in summary["claims"]["paper"]["note"]


def test_the_track_names_the_reference_agent_and_the_hypothesis():
    """stats knows no agent: another reference agent and hypothesis judge the same cells."""
    per_agent, summary = stats.benchmark_statistics(
        constructed(), ["qlearning", "vanilla", "albert", "worse"], bootstrap=FAST,
        baseline="worse", hypothesis=Hypothesis(conventional_agent="albert",
                                                min_tied_fraction=0.2))
    assert summary["baseline"] == "worse" and per_agent["worse"]["improvement"] is None
    assert per_agent["qlearning"]["improvement"]["verdict"] == "better"
    paper = summary["claims"]["paper"]
    assert paper["conventional"] == "albert" and paper["threshold"] == 0.2
    assert "albert" not in paper["agents"] and paper["meeting"] == []  # none beats albert
    assert paper["agents"]["qlearning"]["tied_enough"] is True


def test_results_are_judged_by_their_tracks_reference_and_hypothesis():
    assert tracks.judged_by({"name": "tiny", "version": 1}) == ("qlearning", tracks.PAPER)
    assert tracks.judged_by(None) == tracks.judged_by({"name": "gone"}) == (
        tracks.REFERENCE_AGENT, tracks.PAPER)
    assert tracks.PAPER == Hypothesis(conventional_agent="vanilla", min_tied_fraction=0.75)


def test_a_given_reference_point_is_used():
    ref = {"final_val_ppl": 500.0, "trainable_fraction": 1.0, "source": "track"}
    _, summary = stats.benchmark_statistics(constructed(), ["albert"], reference=ref,
                                            bootstrap=FAST, **JUDGED)
    assert summary["hypervolume_reference"] == {**ref, "ideal_val_ppl": 1.0}


def test_no_verdict_from_fewer_than_five_seeds_a_side():
    from agents.benchmark.stats import MIN_SEEDS_FOR_VERDICT, improvement

    assert MIN_SEEDS_FOR_VERDICT == 5
    few = improvement([1.0, 1.1, 1.2], [5.0, 5.1, 5.2], "few")
    assert few["value"] == 1.0 and few["verdict"] == "too few seeds"
    many = improvement([1.0, 1.1, 1.2, 1.3, 1.4], [5.0, 5.1, 5.2, 5.3, 5.4], "many")
    assert many["verdict"] == "better" and many["low"] > 0.5
