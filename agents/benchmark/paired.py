"""Paired statistics of a track (Benchmark v2): agents share seeds, so compare per seed.

On a track every agent runs on the same seeds, and a seed fixes the transformer's
initialisation and data order (common random numbers). So the per-seed difference of two
agents removes the seed-to-seed spread that unpaired comparisons carry. Everything here
works on those per-seed differences:

- `paired_differences`: per seed, on the seeds both agents finished with a finite value;
  relative by default ((agent - reference) / reference, for perplexities);
- `paired_interval`: the **mean** of the differences with a percentile bootstrap interval
  over seeds (rliable's stratified bootstrap on one task: seeds resampled with
  replacement; seeded from `Bootstrap.seed` and the comparison's name, so deterministic).
  The mean, not the IQM: it is the quantity the paired t-test of the TOST tests, and the
  IQM of 10 differences keeps only 6 of them;
- `compare`: the m comparisons of a track against its reference agent: Wilcoxon
  signed-rank p-values (`wilcoxon`), Holm-adjusted (`holm`), with Holm-consistent
  intervals (the comparison ranked j-th by p-value, 0-based, gets its interval at
  confidence 1 - alpha / (m - j), the level at which Holm's step j tests it);
- `equivalence`: the paper's hypothesis, a TOST (statsmodels' `ttost_paired`) of the
  relative perplexity against the conventional agent within +-margin, plus the tie
  requirement (IQM fraction of layers tied >= the hypothesis's `min_tied_fraction`);
- `normalised_scores`: per seed, 0 = the random agent, 1 = the best static schedule.

`paired_statistics` is the one entry point; it reads results only through
`agents.runs.result.cell_result` and names no agent (all come as arguments).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.benchmark.stats import Bootstrap, interval, iqm
from agents.runs.result import cell_result

if TYPE_CHECKING:
    from agents.benchmark.tracks import Hypothesis

Json = dict[str, Any]
Values = Mapping[int, "float | None"]
EXACT_WILCOXON_MAX_N = 50  # scipy's own limit for its exact distribution
DEFAULT_BOOTSTRAP = Bootstrap()  # 2000 reps, seed 0


def _number(value: Any) -> float | None:
    """`value` as a finite float, else None (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


# ---------------------------------------------------------------- differences
def paired_differences(agent_values: Values, reference_values: Values, *,
                       relative: bool = True) -> dict[int, float]:
    """Per-seed `agent - reference` (relative: divided by the reference) on the seeds where
    both are finite (and, when relative, the reference is not zero); sorted by seed."""
    out: dict[int, float] = {}
    for seed in sorted(set(agent_values) & set(reference_values)):
        a, r = _number(agent_values[seed]), _number(reference_values[seed])
        if a is None or r is None or (relative and r == 0):
            continue
        out[seed] = (a - r) / r if relative else a - r
    return out


def paired_interval(differences: Mapping[int, float] | Sequence[float], name: str,
                    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
                    confidence: float | None = None) -> Json:
    """Mean of the per-seed differences with its percentile bootstrap interval over seeds.

    `{"value", "low", "high", "n", "confidence", "statistic": "mean"}`; rliable's bootstrap
    via `stats.interval`, `confidence` (default `bootstrap.confidence`) of the interval,
    seeded by `bootstrap.seed` and `name`. No difference: `None`s; one: zero width.
    """
    level = bootstrap.confidence if confidence is None else confidence
    values = list(differences.values()) if isinstance(differences, Mapping) else differences
    found = interval(values, lambda x: float(np.mean(x)), f"paired/{name}",
                     dataclasses.replace(bootstrap, confidence=level))
    return {**found, "confidence": level, "statistic": "mean"}


# ---------------------------------------------------------------- tests
def wilcoxon(differences: Sequence[float]) -> Json:
    """Two-sided Wilcoxon signed-rank test of the differences (scipy), `{"p", "method", "n"}`.

    Zero differences are dropped (Wilcoxon's own treatment, scipy's `zero_method="wilcox"`);
    `n` counts the rest. The p-value is exact (the null distribution of the signed-rank sum
    over all 2^n sign assignments) when n <= 50 and no two |differences| tie, else the normal
    approximation. No non-zero difference: p = 1. At n = 5 the smallest exact two-sided p
    is 2/32 = 0.0625, so 6 or more seeds are needed to reject at alpha = 0.05.
    """
    from scipy.stats import wilcoxon as scipy_wilcoxon

    d = np.asarray([v for v in differences if v != 0], dtype=float)
    if d.size == 0:
        return {"p": 1.0, "method": "no non-zero difference", "n": 0}
    exact = d.size <= EXACT_WILCOXON_MAX_N and np.unique(np.abs(d)).size == d.size
    result = scipy_wilcoxon(d, zero_method="wilcox", alternative="two-sided",
                            method="exact" if exact else "asymptotic")
    return {"p": float(result.pvalue), "n": int(d.size),
            "method": "exact" if exact else "normal approximation"}


def holm(p_values: Mapping[str, float], alpha: float = 0.05) -> dict[str, Json]:
    """Holm's step-down adjustment (statsmodels' `multipletests(method="holm")`).

    Per name `{"p", "p_adjusted", "rank", "confidence"}`: `rank` j is the 0-based position by
    p-value (ties keep the given order), `p_adjusted` = max over i <= j of p_(i) * (m - i),
    capped at 1, and `confidence` = 1 - alpha / (m - j), the level of the interval that
    agrees with Holm's test of that comparison.
    """
    from statsmodels.stats.multitest import multipletests

    names = list(p_values)
    if not names:
        return {}
    p = np.asarray([p_values[n] for n in names], dtype=float)
    _, adjusted, _, _ = multipletests(p, alpha=alpha, method="holm")
    m = len(names)
    ranks = np.empty(m, dtype=int)
    ranks[np.argsort(p, kind="stable")] = np.arange(m)
    return {n: {"p": float(p[i]), "p_adjusted": float(adjusted[i]), "rank": int(ranks[i]),
                "confidence": 1.0 - alpha / (m - int(ranks[i]))} for i, n in enumerate(names)}


def compare(values: Mapping[str, Values], reference: str, *, alpha: float = 0.05,
            bootstrap: Bootstrap = DEFAULT_BOOTSTRAP, lower_is_better: bool = True,
            relative: bool = True) -> dict[str, Json]:
    """Every agent of `values` (per-seed values) against `reference`, Holm-corrected.

    Per agent: the mean paired difference with its Holm-consistent interval (`holm`),
    `n` paired seeds, the Wilcoxon p-value (`wilcoxon`) raw and Holm-adjusted over the
    comparisons that have one, and `verdict`: "better" / "worse" when the adjusted p is
    below `alpha` and the interval lies wholly on that side of zero (direction by
    `lower_is_better`), else "no difference"; None without a paired seed.
    """
    return compare_pairs(values, {a: reference for a in values if a != reference},
                         alpha=alpha, bootstrap=bootstrap, lower_is_better=lower_is_better,
                         relative=relative)


def compare_pairs(values: Mapping[str, Values], pairs: Mapping[str, str], *,
                  alpha: float = 0.05, bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
                  lower_is_better: bool = True, relative: bool = True) -> dict[str, Json]:
    """`compare` with a baseline per agent (`pairs`: agent -> the agent it is compared
    with); the comparisons form one Holm family."""
    diffs = {a: paired_differences(values[a], values[b], relative=relative)
             for a, b in pairs.items()}
    tests = {a: wilcoxon(list(d.values())) for a, d in diffs.items() if d}
    adjusted = holm({a: t["p"] for a, t in tests.items()}, alpha)
    out: dict[str, Json] = {}
    for agent, d in diffs.items():
        label = f"{agent}/{pairs[agent]}"
        if not d:
            out[agent] = {"against": pairs[agent],
                          "difference": paired_interval(d, label, bootstrap),
                          "n": 0, "seeds": [], "p": None, "p_adjusted": None, "rank": None,
                          "test": None, "verdict": None}
            continue
        holm_row = adjusted[agent]
        diff = paired_interval(d, label, bootstrap, holm_row["confidence"])
        verdict = "no difference"
        if holm_row["p_adjusted"] < alpha:
            if diff["high"] < 0 or diff["low"] > 0:
                lower = diff["high"] < 0
                verdict = "better" if lower == lower_is_better else "worse"
        out[agent] = {"against": pairs[agent], "difference": diff, "n": len(d),
                      "seeds": list(d), "p": holm_row["p"],
                      "p_adjusted": holm_row["p_adjusted"], "rank": holm_row["rank"],
                      "test": f"Wilcoxon signed-rank, two-sided, {tests[agent]['method']}",
                      "verdict": verdict}
    return out


def equivalence(agent_values: Values, conventional_values: Values, *,
                tied_fractions: Sequence[float | None], min_tied_fraction: float,
                margin: float = 0.01, alpha: float = 0.05, name: str = "equivalence",
                bootstrap: Bootstrap = DEFAULT_BOOTSTRAP) -> Json:
    """The paper's hypothesis for one agent: perplexity equivalent to the conventional
    agent's within +-`margin` (relative), with at least `min_tied_fraction` layers tied.

    TOST: statsmodels' `ttost_paired` on the per-seed relative differences
    (agent - conventional) / conventional against zero, bounds -margin and +margin (two
    one-sided paired t-tests; p = the larger one-sided p); "equivalent" when p < `alpha`.
    Beside it: the (1 - 2 alpha) paired bootstrap interval of the mean relative difference
    and whether it lies inside +-margin, and `non_inferiority_p` (the upper one-sided test
    alone: not worse by `margin`, the paper's "equal or modestly better"). The tie
    requirement: IQM over the agent's seeds of `tied_fractions`. `holds` = equivalent and
    tied enough.
    """
    d = paired_differences(agent_values, conventional_values, relative=True)
    x = np.asarray(list(d.values()), dtype=float)
    found = paired_interval(d, name, bootstrap, 1.0 - 2.0 * alpha)
    tied = [v for v in map(_number, tied_fractions) if v is not None]
    tied_iqm = iqm(tied) if tied else None
    tied_enough = None if tied_iqm is None else tied_iqm >= min_tied_fraction
    out: Json = {"test": "TOST, paired t-tests (statsmodels ttost_paired) of the mean "
                         "relative difference", "margin": margin, "alpha": alpha,
                 "n": int(x.size), "difference": found, "p": None, "non_inferiority_p": None,
                 "interval_inside_margin": None, "equivalent": None,
                 "tied_fraction_iqm": tied_iqm, "min_tied_fraction": min_tied_fraction,
                 "tied_enough": tied_enough, "holds": None}
    if x.size < 2:
        return out | {"note": f"{x.size} paired seed(s): a t-test needs at least 2"}
    from statsmodels.stats.weightstats import ttost_paired

    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p, _, (_, p_upper, _) = ttost_paired(x, np.zeros_like(x), -margin, margin)
    p, p_upper = _number(p), _number(p_upper)
    equivalent = None if p is None else p < alpha
    return out | {"p": p, "non_inferiority_p": p_upper,
                  "interval_inside_margin": -margin < found["low"] and found["high"] < margin,
                  "equivalent": equivalent,
                  "holds": None if equivalent is None or tied_enough is None
                  else equivalent and tied_enough}


# ---------------------------------------------------------------- normalised score
def normalised_scores(agent_values: Values, random_values: Values, best_static_values: Values,
                      *, name: str = "score", bootstrap: Bootstrap = DEFAULT_BOOTSTRAP) -> Json:
    """Per seed (random - agent) / (random - best static), lower-is-better values: 0 = the
    random agent, 1 = the best static schedule; their mean with its bootstrap interval.

    Seeds where the three are not all finite are left out; seeds where random and best
    static are equal (zero denominator) too, listed in `undefined_seeds`. No seed left:
    `value` None and a `reason`.
    """
    scores: dict[int, float] = {}
    undefined: list[int] = []
    for seed in sorted(set(agent_values) & set(random_values) & set(best_static_values)):
        a, r, b = (_number(v[seed]) for v in (agent_values, random_values, best_static_values))
        if a is None or r is None or b is None:
            continue
        if r == b:
            undefined.append(seed)
            continue
        scores[seed] = (r - a) / (r - b)
    found = paired_interval(scores, name, bootstrap)
    out = found | {"per_seed": {str(s): v for s, v in scores.items()},
                   "undefined_seeds": undefined}
    if not scores:
        out["reason"] = ("random and best static are equal on every paired seed (zero "
                         "denominator)" if undefined else "no seed where the agent, random "
                         "and best static all have a finite value")
    return out


# ---------------------------------------------------------------- the whole track
def seed_values(cells: Sequence[Mapping[str, Any]], agents: Sequence[str],
                attribute: str) -> dict[str, dict[int, float | None]]:
    """Per agent, per seed: `attribute` of the finished cells' `RunResult` (`cell_result`).

    The seed is the cell's for an online run (`episode_return` is then the cell's, the sum
    of its log's rewards) and each held-out evaluation episode's for a train-then-evaluate
    run (`RunResult.episode_values`): the unit every agent of a track shares."""
    out: dict[str, dict[int, float | None]] = {a: {} for a in agents}
    for cell in cells:
        agent = cell.get("agent")
        if agent not in out or cell.get("status") != "finished":
            continue
        result = cell_result(cell)
        if result is None:
            continue
        found = result.episode_values(attribute)
        if attribute == "episode_return" and list(found.values()) == [None]:
            found = {result.seed: cell.get("episode_return")}
        for seed, value in found.items():
            if seed in out[agent]:
                raise ValueError(f"two finished cells for {agent!r} seed {seed}")
            out[agent][seed] = _number(value)
    return out


def best_of(values: Mapping[str, Values], candidates: Sequence[str], *,
            lower_is_better: bool) -> str | None:
    """The candidate with the best mean over its finite values (None when none has one)."""
    means = {a: float(np.mean(v)) for a in candidates
             if (v := [x for x in values.get(a, {}).values() if x is not None])}
    if not means:
        return None
    return (min if lower_is_better else max)(means, key=lambda a: means[a])


def paired_statistics(cells: Sequence[Mapping[str, Any]], agents: Sequence[str], *,
                      reference: str, hypothesis: Hypothesis,
                      random_for: Mapping[str, str], static_agents: Sequence[str],
                      metric: str = "final_val_ppl", lower_is_better: bool = True,
                      margin: float = 0.01, alpha: float = 0.05,
                      bootstrap: Bootstrap = DEFAULT_BOOTSTRAP) -> Json:
    """The paired statistics block of a track's results (JSON-able).

    `comparisons`: every agent against `reference` on `metric` (relative differences for
    perplexities, absolute for returns and fractions); `hypothesis`: `equivalence` of
    every agent's final validation perplexity against `hypothesis.conventional_agent`'s;
    `normalised`: `normalised_scores` on `metric`, 0 = the agent's random agent of the same
    action semantics (`random_for[agent]`), 1 = the best of `static_agents` (by mean
    `metric`, chosen on the same seeds, so "1" is slightly optimistic). A part without its
    agents' values is None with a `note`.
    """
    relative = metric.endswith("_ppl")
    randoms = sorted({random_for[a] for a in agents if a in random_for})
    names = list(dict.fromkeys([*agents, reference, hypothesis.conventional_agent,
                                *randoms, *static_agents]))
    values = seed_values(cells, names, metric)
    ppl = values if metric == "final_val_ppl" else seed_values(cells, names, "final_val_ppl")
    tied = seed_values(cells, names, "layers_tied_fraction")

    def has(agent: str | None) -> bool:
        return bool(agent) and any(v is not None for v in values.get(agent, {}).values())

    notes: list[str] = []
    comparisons = None
    if has(reference):
        comparisons = compare({a: values[a] for a in dict.fromkeys([*agents, reference])},
                              reference, alpha=alpha, bootstrap=bootstrap,
                              lower_is_better=lower_is_better, relative=relative)
    else:
        notes.append(f"no comparison: {reference!r} has no finished seed")
    conventional = hypothesis.conventional_agent
    claim: Json | None = None
    if any(v is not None for v in ppl.get(conventional, {}).values()):
        per_agent = {a: equivalence(ppl[a], ppl[conventional],
                                    tied_fractions=list(tied[a].values()),
                                    min_tied_fraction=hypothesis.min_tied_fraction,
                                    margin=margin, alpha=alpha, name=f"tost/{a}/{conventional}",
                                    bootstrap=bootstrap)
                     for a in agents if a != conventional}
        meeting = [a for a, row in per_agent.items() if row["holds"]]
        claim = {"conventional": conventional, "margin": margin,
                 "min_tied_fraction": hypothesis.min_tied_fraction, "agents": per_agent,
                 "meeting": meeting, "holds": bool(meeting)}
    else:
        notes.append(f"no equivalence test: {conventional!r} has no finished seed")
    best = best_of(values, static_agents, lower_is_better=lower_is_better)
    direction = {"alpha": alpha, "bootstrap": bootstrap, "lower_is_better": lower_is_better,
                 "relative": relative}
    learns = compare_pairs(values, {a: random_for[a] for a in agents
                                    if has(random_for.get(a)) and random_for[a] != a},
                           **direction)
    beats_static = (compare_pairs(values, {a: best for a in agents if a != best}, **direction)
                    if best is not None else None)
    normalised: Json | None = None
    if best is not None and any(has(r) for r in randoms):
        normalised = {"one": best, "zero": {a: random_for.get(a) for a in agents},
                      "agents": {a: normalised_scores(values[a], values[random_for[a]],
                                                      values[best], name=f"score/{a}",
                                                      bootstrap=bootstrap)
                                 for a in agents if has(random_for.get(a))}}
    else:
        notes.append("no normalised score: no random agent or static schedule finished "
                     f"(random agents {randoms}, static schedules {list(static_agents)})")
    return {"method": {"metric": metric, "lower_is_better": lower_is_better,
                       "reference": reference, "alpha": alpha,
                       "difference": ("per seed, relative: (agent - reference) / reference"
                                      if relative else "per seed: agent - reference"),
                       "interval": "mean over seeds, percentile bootstrap over paired seeds "
                                   "(rliable)", "reps": bootstrap.reps, "seed": bootstrap.seed,
                       "test": "Wilcoxon signed-rank (scipy), exact for n <= 50 without "
                               "tied |differences|",
                       "multiplicity": "Holm (statsmodels); the j-th smallest p's interval "
                                       "at confidence 1 - alpha / (m - j)",
                       "equivalence": f"TOST (statsmodels ttost_paired) of the final "
                                      f"validation perplexity, margin +-{margin} relative; "
                                      "(1 - 2 alpha) bootstrap interval",
                       "normalised": "(random - agent) / (random - best static) per seed"},
            "comparisons": comparisons, "learns": learns, "best_static": best,
            "beats_best_static": beats_static, "hypothesis": claim, "normalised": normalised,
            "notes": notes}
