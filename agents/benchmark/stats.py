"""Statistics of a benchmark over seeds: rliable's intervals, pymoo's hypervolume, verdicts.

Every number here comes with a 95% interval from rliable's stratified bootstrap over
seeds (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021;
one task, so it resamples an agent's seeds with replacement; percentile intervals):

- `iqm`: interquartile mean over seeds (the mean of the middle 50%, rliable's
  `aggregate_iqm`) of final val and test perplexity, episode return, trainable fraction
  and fraction of layers tied;
- `improvement`: P(a seed of the agent ends with a lower final val ppl than a seed of
  the baseline), ties counting half: rliable's probability of improvement on negated
  perplexities (lower is better), the two agents' seeds resampled independently;
- `hypervolume`: per seed, the share of the track's box that the seed's (final val ppl,
  trainable fraction) point dominates (pymoo's `HV`; both objectives lower-better), and
  the IQM of those per-seed values with its interval like every other metric. The box
  spans the track's own range (`hypervolume_box`: from the best to the worst final val
  ppl of its finished cells, trainable fraction 0 to 1), so differences between agents
  fill it; a track may fix it (`hypervolume_reference`). Per seed, not the union of an
  agent's seeds: a single lucky seed does not make the value;
- `profile`: score distributions (performance profiles): the fraction of an agent's
  seeds whose final val ppl is below each threshold, with pointwise intervals.

The bootstrap statistic functions are numpy equivalents of rliable's metrics (the tests
check equality), so a bootstrap of a few thousand reps takes milliseconds. Each
(agent, statistic) bootstrap is seeded from `Bootstrap.seed` and its own name: results
are deterministic, and adding an agent changes no other agent's interval.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.runs.result import cell_result

if TYPE_CHECKING:
    from agents.benchmark.tracks import Hypothesis

Json = dict[str, Any]

# per-agent IQM metrics: (key, lower is better)
METRICS = {"final_val_ppl": True, "final_test_ppl": True, "episode_return": False,
           "trainable_fraction": True, "layers_tied_fraction": False}
PROFILE_POINTS = 41


@dataclass(frozen=True)
class Bootstrap:
    """Settings of every bootstrap: replications, interval size, base seed."""

    reps: int = 2000
    confidence: float = 0.95
    seed: int = 0


# ---------------------------------------------------------------- point statistics
def iqm(scores: Any) -> float:
    """Interquartile mean: 25% trimmed mean of all values (rliable's `aggregate_iqm`)."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def probability_of_improvement(x: Any, y: Any) -> float:
    """P(X > Y) + P(X = Y) / 2 per task, averaged over tasks (rliable's, higher is better).

    `x` and `y` are (runs x tasks) arrays, or 1-d arrays of runs on one task.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    equal = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(greater + 0.5 * equal))


def hypervolume(points: Any, reference: Sequence[float],
                ideal: Sequence[float] | None = None) -> float:
    """Share of the box [ideal, reference] dominated by `points` (minimised objectives).

    pymoo's `HV` indicator on the objectives scaled so that the box is the unit square;
    points outside the box are clipped to it (at the reference they add nothing).
    """
    from pymoo.indicators.hv import HV

    ref = np.asarray(reference, dtype=float)
    low = np.zeros_like(ref) if ideal is None else np.asarray(ideal, dtype=float)
    pts = np.asarray(points, dtype=float).reshape(-1, ref.size)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not pts.size:
        return 0.0
    scaled = np.clip((pts - low) / (ref - low), 0.0, 1.0)
    return float(HV(ref_point=np.ones(ref.size))(scaled))


# ---------------------------------------------------------------- intervals
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for one bootstrap (rliable draws its resampling
    indices from it, whatever `random_state` says), restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _seed(bootstrap: Bootstrap, *names: str) -> int:
    return (bootstrap.seed + zlib.crc32("/".join(names).encode())) % 2**32


def _finite(values: Sequence[Any]) -> np.ndarray:
    return np.array([float(v) for v in values if isinstance(v, (int, float))
                     and not isinstance(v, bool) and math.isfinite(v)], dtype=float)


def estimate(value: float | None, low: float | None = None, high: float | None = None,
             **extra: Any) -> Json:
    """A point estimate and its interval as JSON (`None` where not defined)."""
    return {"value": value, "low": low, "high": high, **extra}


def interval(values: Sequence[Any], statistic: Callable[[np.ndarray], float], name: str,
             bootstrap: Bootstrap = Bootstrap()) -> Json:
    """`statistic` of the finite `values` (one per seed) with its stratified-bootstrap interval.

    Returns `{"value", "low", "high", "n"}`; no values: all `None`; one value: a zero-width
    interval (nothing to resample).
    """
    x = _finite(values)
    if x.size == 0:
        return estimate(None, n=0)
    point = statistic(x)
    if x.size == 1:
        return estimate(point, point, point, n=1)
    from rliable import library

    with _seeded(_seed(bootstrap, name)):
        _, ci = library.get_interval_estimates(
            {name: x.reshape(-1, 1)}, lambda s: np.array([statistic(s)]), reps=bootstrap.reps,
            confidence_interval_size=bootstrap.confidence)
    low, high = ci[name][:, 0]
    return estimate(point, float(low), float(high), n=int(x.size))


MIN_SEEDS_FOR_VERDICT = 5


def improvement(scores: Sequence[Any], baseline: Sequence[Any], name: str,
                bootstrap: Bootstrap = Bootstrap(), *, lower_is_better: bool = True) -> Json:
    """P(a seed of the agent improves on a seed of the baseline), with its interval.

    `{"value", "low", "high", "n", "n_baseline", "verdict"}`; `verdict` is `"better"` when
    the interval lies above 0.5, `"worse"` when below, `"undecided"` otherwise, and
    `"too few seeds"` when either side has fewer than `MIN_SEEDS_FOR_VERDICT` (bootstrap
    intervals of 1 to 4 seeds are far too narrow to decide anything).
    """
    x, y = _finite(scores), _finite(baseline)
    if not x.size or not y.size:
        return estimate(None, n=int(x.size), n_baseline=int(y.size), verdict=None)
    sign = -1.0 if lower_is_better else 1.0
    xs, ys = (sign * x).reshape(-1, 1), (sign * y).reshape(-1, 1)
    point = probability_of_improvement(xs, ys)
    if x.size == 1 and y.size == 1:
        low = high = point
    else:
        from rliable import library

        with _seeded(_seed(bootstrap, name)):
            _, ci = library.get_interval_estimates(
                {name: [xs, ys]}, lambda a, b: np.array([probability_of_improvement(a, b)]),
                reps=bootstrap.reps, confidence_interval_size=bootstrap.confidence)
        low, high = (float(v) for v in ci[name][:, 0])
    verdict = "better" if low > 0.5 else "worse" if high < 0.5 else "undecided"
    if min(x.size, y.size) < MIN_SEEDS_FOR_VERDICT:  # percentile intervals are too narrow
        verdict = "too few seeds"
    return estimate(point, low, high, n=int(x.size), n_baseline=int(y.size), verdict=verdict)


def seed_hypervolumes(points: Any, box: Mapping[str, Any]) -> list[float]:
    """The hypervolume of each seed's (final val ppl, trainable fraction) point alone in
    `box` (`hypervolume_box`); NaN for a seed without finite values."""
    reference = (box["final_val_ppl"], box["trainable_fraction"])
    ideal = (box.get("ideal_val_ppl", 1.0), 0.0)
    return [hypervolume([p], reference, ideal) if np.isfinite(p).all() else math.nan
            for p in np.asarray(points, dtype=float).reshape(-1, 2)]


def performance_profile(values: Sequence[Any], thresholds: Sequence[float], name: str,
                        bootstrap: Bootstrap = Bootstrap()) -> Json | None:
    """Score distribution of a lower-better metric: fraction of seeds below each threshold.

    rliable's `create_performance_profile` on negated values (P(-x > -t) = P(x < t)), with
    pointwise intervals: `{"fraction", "low", "high", "n"}`, lists aligned with `thresholds`.
    """
    x = _finite(values)
    if not x.size:
        return None
    taus = -np.asarray(thresholds, dtype=float)

    def above(scores: np.ndarray, tau: np.ndarray) -> np.ndarray:
        return (scores.reshape(-1, 1) > np.asarray(tau).reshape(1, -1)).mean(axis=0)

    if x.size == 1:
        fraction = [float(v) for v in above(-x, taus)]
        return {"fraction": fraction, "low": fraction, "high": fraction, "n": 1}
    from rliable import library

    with _seeded(_seed(bootstrap, name)):
        profile, ci = library.create_performance_profile(
            {name: -x.reshape(-1, 1)}, taus, custom_profile_func=above, reps=bootstrap.reps,
            confidence_interval_size=bootstrap.confidence)
    return {"fraction": [float(v) for v in profile[name]],
            "low": [float(v) for v in ci[name][0]], "high": [float(v) for v in ci[name][1]],
            "n": int(x.size)}


# ---------------------------------------------------------------- per cell
def cell_values(cell: Mapping[str, Any]) -> Json:
    """The per-seed values the statistics use, from a finished cell of results.json."""
    result = cell_result(cell)
    if result is None:
        return {"final_val_ppl": None, "final_test_ppl": None,
                "episode_return": cell.get("episode_return"), "trainable_fraction": None,
                "layers_tied_fraction": None}
    return {"final_val_ppl": result.final_val_ppl,
            "final_test_ppl": result.final_test_ppl,
            "episode_return": cell.get("episode_return"),
            "trainable_fraction": result.trainable_fraction,
            "layers_tied_fraction": result.layers_tied_fraction}


def hypervolume_box(cells: Sequence[Mapping[str, Any]],
                    given: Mapping[str, Any] | None = None) -> Json | None:
    """The box every seed's hypervolume is measured in, the same for a whole track.

    `given` (e.g. a track's `hypervolume_reference`) when there is one; else the track's
    own range: final val ppl from the best (`ideal_val_ppl`) to the worst of its finished
    cells, trainable fraction 0 to 1. None without two different finite perplexities.
    """
    if given:
        return {"ideal_val_ppl": float(given.get("ideal_val_ppl", 1.0)),
                "final_val_ppl": float(given["final_val_ppl"]),
                "trainable_fraction": float(given.get("trainable_fraction", 1.0)),
                "source": str(given.get("source", "given"))}
    results = [cell_result(c) for c in cells if c.get("status") == "finished"]
    final = _finite([r.final_val_ppl for r in results if r is not None])
    if final.size < 2 or final.min() == final.max():
        return None
    return {"ideal_val_ppl": float(final.min()), "final_val_ppl": float(final.max()),
            "trainable_fraction": 1.0,
            "source": "the track's own range: the best and worst final val ppl of its "
                      "finished cells; trainable fraction 0 to 1"}


def hypervolume_estimates(cells: Sequence[Mapping[str, Any]], agents: Sequence[str],
                          box: Mapping[str, Any] | None,
                          bootstrap: Bootstrap = Bootstrap()) -> dict[str, Json]:
    """Per agent: the IQM of its seeds' hypervolumes in `box`, with its interval."""
    out = {}
    for agent in agents:
        points = [(v["final_val_ppl"], v["trainable_fraction"]) for v in
                  (cell_values(c) for c in cells
                   if c.get("agent") == agent and c.get("status") == "finished")
                  if v["final_val_ppl"] is not None and v["trainable_fraction"] is not None]
        out[agent] = (interval(seed_hypervolumes(points, box), iqm, f"hv/{agent}", bootstrap)
                      if box and points else estimate(None, n=0))
    return out


# ---------------------------------------------------------------- the whole benchmark
def benchmark_statistics(cells: Sequence[Mapping[str, Any]], agents: Sequence[str], *,
                         baseline: str, hypothesis: Hypothesis,
                         reference: Mapping[str, Any] | None = None,
                         bootstrap: Bootstrap = Bootstrap()) -> tuple[dict[str, Json], Json]:
    """Per agent `{"iqm": {metric: estimate}, "improvement", "hypervolume"}`, and the
    benchmark's `statistics` block (method, reference point, profiles, verdicts).

    `baseline`: the agent every other agent is compared with (a track's
    `reference_agent`); `hypothesis`: the one the verdicts test (a track's)."""
    values = {a: [cell_values(c) for c in cells
                  if c.get("agent") == a and c.get("status") == "finished"] for a in agents}
    column = {a: {m: [v[m] for v in rows] for m in METRICS} for a, rows in values.items()}
    has_baseline = baseline in agents and _finite(column[baseline]["final_val_ppl"]).size > 0
    box = hypervolume_box(cells, reference)
    volumes = hypervolume_estimates(cells, agents, box, bootstrap)
    per_agent: dict[str, Json] = {}
    for agent in agents:
        row: Json = {"iqm": {m: interval(column[agent][m], iqm, f"iqm/{m}/{agent}", bootstrap)
                             for m in METRICS}}
        row["improvement"] = (improvement(column[agent]["final_val_ppl"],
                                          column[baseline]["final_val_ppl"],
                                          f"improvement/{agent}/{baseline}", bootstrap)
                              if has_baseline and agent != baseline else None)
        row["hypervolume"] = volumes[agent]
        per_agent[agent] = row
    summary: Json = {
        "method": {"library": _versions(), **asdict(bootstrap),
                   "interval": "stratified bootstrap over seeds (rliable), percentile",
                   "iqm": "interquartile mean over seeds (25% trimmed mean)",
                   "improvement": f"P(final val ppl < {baseline}'s), ties count half",
                   "hypervolume": "IQM over seeds of the share of the box [ideal ppl, "
                                  "reference ppl] x [0, reference trainable fraction] "
                                  "that each seed's result dominates"},
        "baseline": baseline if has_baseline else None,
        "hypervolume_reference": box,
        "profile": _profiles(column, bootstrap),
    }
    if not has_baseline:
        summary["note"] = (f"no comparison: {baseline!r} has no finished seed in this "
                           "benchmark")
    summary["claims"] = verdicts(per_agent, baseline if has_baseline else None, hypothesis)
    return per_agent, summary


def _profiles(column: Mapping[str, Json], bootstrap: Bootstrap) -> Json | None:
    everything = np.concatenate([_finite(c["final_val_ppl"]) for c in column.values()] +
                                [np.empty(0)])
    if not everything.size:
        return None
    low, high = float(everything.min()), float(everything.max())
    pad = 0.02 * (high - low) or 0.01 * abs(high) or 1.0
    thresholds = np.linspace(low - pad, high + pad, PROFILE_POINTS)
    return {"metric": "final_val_ppl", "thresholds": [float(t) for t in thresholds],
            "agents": {a: performance_profile(c["final_val_ppl"], thresholds,
                                              f"profile/{a}", bootstrap)
                       for a, c in column.items()}}


def verdicts(per_agent: Mapping[str, Json], baseline: str | None,
             hypothesis: Hypothesis) -> Json:
    """What the numbers say: who beats the baseline; whether `hypothesis` holds, per agent.

    An agent *beats* the baseline when its P(improvement) interval lies above 0.5. The
    hypothesis holds for an agent when its IQM fraction of layers tied is at least
    `hypothesis.min_tied_fraction` and its IQM final val ppl is at most the upper end of
    `hypothesis.conventional_agent`'s interval (equal within the interval, or better). The
    JSON keeps its keys (`paper`, `conventional`, `threshold`) so that old results read alike.
    """
    beats = [a for a, row in per_agent.items()
             if (row.get("improvement") or {}).get("verdict") == "better"]
    conventional, threshold = hypothesis.conventional_agent, hypothesis.min_tied_fraction
    paper: Json = {"conventional": conventional, "threshold": threshold, "agents": {}}
    ppl = (per_agent.get(conventional) or {}).get("iqm", {}).get("final_val_ppl") or {}
    if ppl.get("high") is None:
        paper |= {"holds": None, "meeting": [],
                  "note": f"no finished {conventional!r} seed"}
    elif (ppl.get("n") or 0) < MIN_SEEDS_FOR_VERDICT:
        paper |= {"holds": None, "meeting": [],
                  "note": f"{conventional!r} has {ppl.get('n')} finished seed(s), fewer than "
                          f"{MIN_SEEDS_FOR_VERDICT}: too few to judge"}
    else:
        for agent, row in per_agent.items():
            if agent == conventional:
                continue
            tied = row["iqm"]["layers_tied_fraction"]["value"]
            val = row["iqm"]["final_val_ppl"]["value"]
            if tied is None or val is None or \
                    (row["iqm"]["final_val_ppl"].get("n") or 0) < MIN_SEEDS_FOR_VERDICT:
                continue
            paper["agents"][agent] = {"layers_tied": tied, "val_ppl": val,
                                      "tied_enough": tied >= threshold,
                                      "ppl_within": val <= ppl["high"],
                                      "holds": tied >= threshold and val <= ppl["high"]}
        meeting = [a for a, v in paper["agents"].items() if v["holds"]]
        paper |= {"conventional_val_ppl": ppl, "meeting": meeting, "holds": bool(meeting)}
    return {"baseline": baseline, "beat_baseline": beats if baseline else None, "paper": paper}


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("rliable", "pymoo"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (version unknown)")
    return ", ".join(found)
