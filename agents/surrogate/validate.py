"""Hold a surrogate to the standard of `docs/surrogate.md`, against the real track's runs.

    python -m agents.surrogate.validate runs/surrogate/deep-v1.npz --real runs/deep-v1 \\
        --track deep --holdout-seeds 7,8,9 --json runs/surrogate/validation.json

| check          | how it is measured                                                   |
|----------------|----------------------------------------------------------------------|
| one step       | a model fitted without the held-out seeds predicts their decisions:  |
|                | RMSE of the predicted reward (the mean of the ensemble) against the  |
|                | error between two real replicates of one decision (from the track's  |
|                | reward-noise file: training and evaluation noise, `replicate_rmse`)  |
| intervals      | coverage of the 50% and 90% predictive intervals (the ensemble's     |
|                | mixture, moment-matched) on the held-out decisions                   |
| per agent      | each agent plays the surrogate on the track's seeds: its mean return |
|                | and last validation perplexity against the real ones, in units of    |
|                | the real seeds' standard deviation                                   |
| ranking        | Kendall's tau_b between the agents' mean returns on the surrogate and |
|                | for real, and the share of agent pairs whose real intervals do not   |
|                | overlap that the surrogate orders the same way; beside it the tau    |
|                | between two halves of the real seeds (what the real data support)    |
| left out       | refit without one policy family: tau, and that family's agents'      |
|                | rank on the surrogate against their real rank                        |
| speed          | seconds per decision on the surrogate, against the real track's      |
| members        | per static schedule: its mean last perplexity on each ensemble       |
|                | member in turn, against the real seeds' standard deviation           |

The per-agent, ranking and left-out checks use the model fitted on every episode, as the
surrogate track ships it (left out: on every episode but that family's). Deterministic
for a seed and a thread count.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics
from scipy import stats

import agents
from agents import OneEpisode
from agents.benchmark.cells import parse_seeds
from agents.surrogate.fit import FitSettings, fit
from agents.surrogate.transitions import Transitions
from tying_env.files import read_json, write_json
from tying_env.surrogate.env import SurrogateEnv
from tying_env.surrogate.features import FEATURES
from tying_env.surrogate.model import Ensemble

Json = dict[str, Any]
PHASE_WIDTH = 0.05  # decisions within this share of the episode count at a noise phase


def one_step(ensemble: Ensemble, held_out: Transitions, noise: Json) -> Json:
    """Prediction error and interval coverage of `ensemble` on `held_out` decisions,
    overall, for the decisions that change the tie map and those that keep it, and at the
    phases where the track's replicate noise was measured (decisions within `PHASE_WIDTH`
    of each phase's share of the episode)."""
    if not len(held_out.delta):
        return {"decisions": 0, "phases": {}}
    means, variances = ensemble.predict(held_out.x)
    mean = means.mean(0)
    sd = np.sqrt(variances.mean(0) + means.var(0))  # the mixture, moment-matched
    error = held_out.delta - mean
    progress = held_out.x[:, 0]

    def summary(rows: np.ndarray, replicate: float | None) -> Json:
        rmse = float(np.sqrt(np.mean(error[rows] ** 2))) if rows.any() else None
        return {"decisions": int(rows.sum()), "rmse": rmse, "replicate_rmse": replicate,
                "within_replicate": None if replicate is None or rmse is None
                else rmse <= replicate,
                **{f"coverage_{round(q * 100)}": float(np.mean(
                    np.abs(error[rows]) <= stats.norm.ppf(0.5 + q / 2) * sd[rows]))
                   if rows.any() else None for q in (0.5, 0.9)}}

    overall = replicate_rmse(noise)
    out = summary(np.ones(len(error), bool), overall)
    changed = held_out.x[:, FEATURES.index("changed")] > 0.5
    out["by_change"] = {"changed": summary(changed, overall),
                        "kept": summary(~changed, overall)}
    out["phases"] = {phase: summary(np.abs(progress - float(phase)) <= PHASE_WIDTH,
                                    replicate_rmse(noise, phase))
                     for phase in (noise.get("per_phase") or {})}
    return out


def replicate_rmse(noise: Json, phase: str | None = None) -> float | None:
    """The RMS difference between two real replicates of one decision's change, from the
    track's reward-noise file: `sqrt(2 * mean(train^2 + eval^2))` over its points (those
    of `phase`, or all), with each point's training noise and the evaluation noise at the
    track's evaluation size, as the change an agent gets carries both. A file without
    points gives `sqrt(2)` times its (median) training noise."""
    size = str(noise.get("track_eval_batches"))
    rows = [r for r in noise.get("rows") or []
            if phase is None or math.isclose(float(r["phase"]), float(phase))]
    if not rows:
        train = (noise.get("per_phase") or {}).get(phase, {}) if phase else noise
        return math.sqrt(2) * train["train_noise_std"] if train.get("train_noise_std") \
            else None
    variances = [r["train_noise_std"] ** 2 + (r["eval_noise_std"].get(size) or 0.0) ** 2
                 for r in rows]
    return math.sqrt(2 * float(np.mean(variances)))


class LossTrace(gym.Wrapper):
    """Records the validation loss after every step (`info["val_loss"]`)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.losses: list[float] = []

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        self.losses.append(float(out[4]["val_loss"]))
        return out


class FixedMember(gym.Wrapper):
    """Every episode runs ensemble member `member` (`reset(options={"member": ...})`)."""

    def __init__(self, env: gym.Env, member: int):
        super().__init__(env)
        self.member = member

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return self.env.reset(seed=seed, options={**(options or {}), "member": self.member})


def play(ensemble_path: str | Path, agent: str, seeds: Sequence[int],
         member: int | None = None) -> list[Json]:
    """`agent` on the surrogate (a fitted model's path, or a shipped model's name), one
    online episode per seed (on ensemble `member`, or one drawn per episode): return, last
    ppl, fraction, tie map, time, the validation loss after each decision, and the env's
    settings, budget and optimal perplexity."""
    out = []
    for seed in seeds:
        env = SurrogateEnv(ensemble_path,
                           initial_ties=agents.env_settings(agent).get("initial_ties"))
        trace = LossTrace(env if member is None else FixedMember(env, member))
        recorded = RecordEpisodeStatistics(trace)
        player = agents.make(agent, OneEpisode(recorded), seed=seed)
        start = time.perf_counter()
        player.run()
        out.append({"seed": seed, "return": float(recorded.return_queue[-1]),
                    "last_val_ppl": math.exp(env.val_loss),
                    "trainable_fraction": env.trainable_fraction,
                    "tie_map": [int(t) for t in env.ties], "env_kwargs": env.cfg.to_dict(),
                    "budget": env.budget, "optimal_ppl": env.optimal_ppl,
                    "ood_steps": env.ood_steps, "decisions": env.decision,
                    "seconds": time.perf_counter() - start, "losses": trace.losses})
    return out


def member_spread(ensemble_path: str | Path, real: dict[str, list[Json]],
                  names: Sequence[str], seeds: Sequence[int]) -> Json:
    """For each agent of `names`: its mean last perplexity over `seeds` on every ensemble
    member in turn, beside the real seeds' standard deviation of it. Members that disagree
    by more than the real seeds do make the surrogate's episodes vary more than real ones."""
    members = SurrogateEnv(ensemble_path).ensemble.members
    out = {}
    for agent in names:
        if len(real.get(agent, [])) < 2:
            continue
        per_member = [float(np.mean([r["last_val_ppl"] for r in
                                     play(ensemble_path, agent, seeds, member=m)]))
                      for m in range(members)]
        out[agent] = {"member_last_val_ppl": per_member,
                      "member_sd": statistics.stdev(per_member) if members > 1 else None,
                      "real_seed_sd": statistics.stdev(r["last_val_ppl"] for r in real[agent])}
    return out


def sweep_curve(paths: Sequence[Sequence[float]], per_sweep: int) -> list[float]:
    """The mean validation perplexity over episodes at the end of every sweep."""
    losses = np.array([list(p) for p in paths])
    return [float(v) for v in np.exp(losses[:, per_sweep - 1::per_sweep]).mean(0)]


def real_paths(data: Transitions, agent: str) -> list[np.ndarray]:
    """The validation loss after each decision of `agent`'s real episodes."""
    return [e["initial_val_loss"] + np.cumsum(data.delta[data.episode == k])
            for k, e in enumerate(data.episodes) if e["agent"] == agent]


def real_table(data: Transitions) -> dict[str, list[Json]]:
    """The real episodes by agent: return and last ppl on the evaluation subset."""
    table: dict[str, list[Json]] = {}
    for e in data.episodes:
        table.setdefault(e["agent"], []).append(
            {"seed": e["seed"], "return": e["return"],
             "last_val_ppl": math.exp(e["last_val_loss"])})
    return table


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and a 95% t interval (the mean twice for one value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(
        len(values))
    return mean, mean - half, mean + half


def ranking(real: dict[str, list[float]], surrogate: dict[str, float]) -> Json:
    """Kendall's tau_b of the mean values, and the agreement on the pairs the real runs
    decide (95% intervals that do not overlap)."""
    names = sorted(set(real) & set(surrogate))
    real_means = [float(np.mean(real[a])) for a in names]
    tau = stats.kendalltau(real_means, [surrogate[a] for a in names]).statistic
    bounds = {a: interval(real[a]) for a in names if len(real[a]) > 1}
    decided = agree = 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a not in bounds or b not in bounds:
                continue  # one seed: no interval, nothing decided
            if bounds[a][1] > bounds[b][2] or bounds[b][1] > bounds[a][2]:
                decided += 1
                agree += (bounds[a][0] > bounds[b][0]) == (surrogate[a] > surrogate[b])
    return {"agents": len(names), "tau_b": float(tau), "decided_pairs": decided,
            "decided_agreement": agree / decided if decided else None}


def beats(first: dict[int, float], second: dict[int, float], alpha: float = 0.05) -> Json:
    """Whether `first` beats `second` (returns per seed, paired on the seeds both have):
    the mean difference and a one-sided Wilcoxon signed-rank p (None under 2 pairs)."""
    from agents.benchmark.paired import paired_differences

    diffs = list(paired_differences(first, second, relative=False).values())
    p = (float(stats.wilcoxon(diffs, alternative="greater").pvalue)
         if len(diffs) > 1 and any(diffs) else None)
    return {"pairs": len(diffs), "mean_difference": float(np.mean(diffs)) if diffs else None,
            "p": p, "beats": p is not None and p < alpha}


def reference_versus_random(track: str, real: dict[str, list[Json]],
                            played: dict[str, list[Json]]) -> Json | None:
    """Does the track's reference agent (the paper's Q-learner) beat its random agent, for
    real and on the surrogate? The surrogate must not say yes unless the real track does."""
    from agents.benchmark.tracks import get

    settings = get(track)
    reference = settings.reference_agent
    random = (settings.random_for or {}).get(reference, "random")
    if not {reference, random} <= set(real) & set(played):
        return None

    def by_seed(rows: list[Json]) -> dict[int, float]:
        return {int(r["seed"]): float(r["return"]) for r in rows}

    real_test = beats(by_seed(real[reference]), by_seed(real[random]))
    surrogate_test = beats(by_seed(played[reference]), by_seed(played[random]))
    return {"reference": reference, "random": random, "real": real_test,
            "surrogate": surrogate_test,
            "met": not surrogate_test["beats"] or real_test["beats"]}


def halves_tau(real: dict[str, list[Json]]) -> float | None:
    """Kendall's tau_b between the agents' mean returns on two halves of the real seeds."""
    seeds = sorted({r["seed"] for rows in real.values() for r in rows})
    if len(seeds) < 2:
        return None
    first = set(seeds[: len(seeds) // 2])
    a, b = [], []
    for rows in real.values():
        one = [r["return"] for r in rows if r["seed"] in first]
        two = [r["return"] for r in rows if r["seed"] not in first]
        if one and two:
            a.append(np.mean(one))
            b.append(np.mean(two))
    return float(stats.kendalltau(a, b).statistic) if len(a) > 1 else None


def rank_of(values: dict[str, float], name: str) -> int:
    """1 for the highest value."""
    return 1 + sum(v > values[name] for v in values.values())


def validate(data: Transitions, track: str, holdout: Sequence[int], work: Path,
             seeds: Sequence[int], settings: FitSettings, leave_out: bool = True,
             cache_dir: Path | None = None) -> Json:
    """Every check of the module's table; models are fitted into `work`."""
    from agents.benchmark.tracks import get
    from agents.surrogate.fit import describe

    noise = read_json(Path("docs/results/leaderboard") / f"noise-{track}.json") or {}
    held = np.array([e["seed"] in holdout for e in data.episodes])
    fitted = {}
    for name, keep in (("fit", ~held), ("all", np.ones(len(held), bool))):
        ensemble = fit(data.select(keep), settings)
        describe(ensemble, get(track), data.select(keep))
        ensemble.save(work / name)
        fitted[name] = ensemble
    report: Json = {"track": track, "data_sha256": data.content_hash,
                    "episodes": len(data.episodes), "holdout_seeds": list(holdout),
                    "seeds": list(seeds), "track_seeds": list(get(track).seeds),
                    "one_step": one_step(fitted["fit"], data.select(held), noise)}
    real = real_table(data)
    report["halves_tau"] = halves_tau(real)
    played = {a: play(work / "all", a, seeds) for a in sorted(real)}
    per_agent = {}
    per_sweep = SurrogateEnv(work / "all").decisions_per_sweep
    for a, rows in played.items():
        r_ret = [r["return"] for r in real[a]]
        r_ppl = [r["last_val_ppl"] for r in real[a]]
        s_ret = float(np.mean([r["return"] for r in rows]))
        s_ppl = float(np.mean([r["last_val_ppl"] for r in rows]))
        sd_ret = statistics.stdev(r_ret) if len(r_ret) > 1 else None
        sd_ppl = statistics.stdev(r_ppl) if len(r_ppl) > 1 else None
        per_agent[a] = {
            "real_return": float(np.mean(r_ret)), "surrogate_return": s_ret,
            "return_gap_sd": (s_ret - np.mean(r_ret)) / sd_ret if sd_ret else None,
            "real_last_val_ppl": float(np.mean(r_ppl)), "surrogate_last_val_ppl": s_ppl,
            "ppl_gap_sd": (s_ppl - np.mean(r_ppl)) / sd_ppl if sd_ppl else None,
            "real_ppl_sd": sd_ppl,
            "surrogate_ppl_sd": statistics.stdev(r["last_val_ppl"] for r in rows)
            if len(rows) > 1 else None,
            "real_seeds": len(r_ret), "ood_share": float(np.mean(
                [r["ood_steps"] / r["decisions"] for r in rows])),
            "seconds_per_decision": float(np.sum([r["seconds"] for r in rows])
                                          / np.sum([r["decisions"] for r in rows])),
            "real_curve": sweep_curve(real_paths(data, a), per_sweep),
            "surrogate_curve": sweep_curve([r["losses"] for r in rows], per_sweep)}
    report["per_agent"] = per_agent
    real_returns = {a: [r["return"] for r in real[a]] for a in real}
    surrogate_returns = {a: v["surrogate_return"] for a, v in per_agent.items()}
    report["ranking"] = ranking(real_returns, surrogate_returns)
    report["reference_vs_random"] = reference_versus_random(track, real, played)
    report["track_seconds"] = float(sum(r["seconds"] for rows in played.values() for r in rows))
    report["members"] = member_spread(work / "all", real, get(track).static_agents, seeds)
    report["speed"] = speed(track, work / "all", cache_dir)
    if leave_out:
        report["left_out"] = left_out(data, track, work, seeds, settings, real_returns)
    return report


def speed(track: str, model: Path, cache_dir: Path | None = None, real_decisions: int = 22,
          decisions: int = 3000) -> Json:
    """Seconds per decision of the real environment and of the surrogate, side by side in
    this process (random valid actions; the real env's first decisions after a reset)."""
    from agents.benchmark.tracks import get
    from tying_env import ENV_IDS
    from tying_env.env import LayerTyingEnv

    settings = get(track)
    real = LayerTyingEnv(**{**ENV_IDS[settings.env_id], **settings.env_kwargs},
                         cache_dir=cache_dir)
    timed = {}
    for name, env, n in (("real", real, real_decisions), ("surrogate", SurrogateEnv(model),
                                                          decisions)):
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(n):
            _, _, _, truncated, _ = env.step(int(rng.integers(env.layer + 1)))
            if truncated:
                env.reset(seed=1)
        timed[name] = (time.perf_counter() - start) / n
    real.close()
    return {"real_seconds": timed["real"], "surrogate_seconds": timed["surrogate"],
            "speedup": timed["real"] / timed["surrogate"], "real_decisions": real_decisions,
            "surrogate_decisions": decisions}


def left_out(data: Transitions, track: str, work: Path, seeds: Sequence[int],
             settings: FitSettings, real_returns: dict[str, list[float]]) -> Json:
    """Per policy family: refit without it, then tau and its agents' ranks."""
    from agents.benchmark.tracks import get
    from agents.surrogate.fit import describe

    real_means = {a: float(np.mean(v)) for a, v in real_returns.items()}
    out = {}
    for family in sorted({e["family"] for e in data.episodes}):
        keep = np.array([e["family"] != family for e in data.episodes])
        ensemble = fit(data.select(keep), settings)
        describe(ensemble, get(track), data.select(keep))
        ensemble.save(work / f"without-{family}")
        means = {a: float(np.mean([r["return"] for r in play(work / f"without-{family}", a,
                                                               seeds)]))
                 for a in sorted(real_returns)}
        members = sorted({e["agent"] for e in data.episodes if e["family"] == family})
        out[family] = {"tau_b": ranking(real_returns, means)["tau_b"],
                       "ranks": {a: {"real": rank_of(real_means, a),
                                     "surrogate": rank_of(means, a)} for a in members}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.surrogate.validate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="transitions (agents.surrogate.transitions)")
    parser.add_argument("--track", required=True)
    parser.add_argument("--holdout-seeds", default="7,8,9",
                        help="seeds whose episodes the one-step model never sees")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9",
                        help="seeds every agent plays on the surrogate")
    parser.add_argument("--work", type=Path, required=True, help="folder for fitted models")
    parser.add_argument("--json", type=Path, required=True, help="the report")
    parser.add_argument("--no-leave-out", action="store_true")
    parser.add_argument("--cache-dir", type=Path, help="the corpora's cache (as the track's)")
    parser.add_argument("--epochs", type=int, default=FitSettings.epochs)
    args = parser.parse_args(argv)
    holdout, seeds = parse_seeds(args.holdout_seeds), parse_seeds(args.seeds)
    data = Transitions.load(args.data)
    report = validate(data, args.track, holdout, args.work, seeds,
                      FitSettings(epochs=args.epochs), leave_out=not args.no_leave_out,
                      cache_dir=args.cache_dir)
    report["command"] = " ".join(["python", "-m", "agents.surrogate.validate",
                                  *(argv if argv is not None else sys.argv[1:])])
    write_json(args.json, report)
    print(f"one step: {report['one_step']}; ranking: {report['ranking']}; "
          f"halves tau {report['halves_tau']} -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
