"""The leaderboard section of a Benchmark v2 track: its paired statistics in words and tables.

A v2 track states its objective (what agents are rewarded for and ranked by) and is
judged by `agents.benchmark.paired` (the block `statistics.paired` of its results file):
per agent the normalised score (0 = its random agent, 1 = the best static schedule), the
paired difference to the reference agent with its Holm-adjusted interval, whether it
learns (beats its random agent) and beats the best static schedule, and the paper's
hypothesis as an equivalence test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agents.benchmark.paired import seed_values
from agents.benchmark.report import fmt, track_of
from agents.benchmark.stats import MIN_SEEDS_FOR_VERDICT

Json = dict[str, Any]
# an agent's action semantics, told by its random agent of the same semantics
SEMANTICS = {"random": "distinct choices", "random-unmasked": "any index of Discrete(L)"}
VERDICT_WORDS = {"better": "yes", "worse": "no (worse)", "no difference": "no", None: "—"}


def _interval(estimate: Json | None, digits: int) -> str:
    """`value [low, high]` of a paired estimate, `(n=K)` after it when it rests on fewer
    than `MIN_SEEDS_FOR_VERDICT` seeds; `—` without one."""
    if not estimate or estimate.get("value") is None:
        return "—"
    text = f"{fmt(estimate['value'], digits)}"
    if estimate.get("low") is not None:
        text += f" [{fmt(estimate['low'], digits)}, {fmt(estimate['high'], digits)}]"
    n = estimate.get("n")
    if isinstance(n, int) and 1 < n < MIN_SEEDS_FOR_VERDICT:
        text += f" (n={n})"
    return text


def _learns_cell(agent: str, random_row: Json | None, random_for: Mapping[str, str]) -> str:
    """The *learns?* cell: the verdict against the agent's random agent, or what it is."""
    if random_row:
        return _answer(random_row)
    if agent in random_for.values():
        return "(a random agent)"
    if agent in random_for:
        return "—"  # its random agent has no cells on these seeds
    return "(a schedule)"


def _few_seeds(*blocks: Json | None) -> list[int]:
    """The seed counts below `MIN_SEEDS_FOR_VERDICT` among the estimates of `blocks`."""
    counts = set()
    for block in blocks:
        for row in (block or {}).values():
            for estimate in (row or {}).values() if isinstance(row, dict) else ():
                n = estimate.get("n") if isinstance(estimate, dict) else None
                if isinstance(n, int) and 1 < n < MIN_SEEDS_FOR_VERDICT:
                    counts.add(n)
    return sorted(counts)


def _answer(row: Json | None) -> str:
    if not row:
        return "—"
    adjusted = row.get("p_adjusted")
    p = "" if adjusted is None else f" (p {fmt(adjusted, 3)})"
    return VERDICT_WORDS.get(row.get("verdict"), str(row.get("verdict"))) + p


def _mean(row: Json, key: str) -> Any:
    return ((row.get(key) or {}).get("mean")) if isinstance(row.get(key), dict) else None


def paired_section(meta: Json) -> list[str]:
    """The tables and sentences of one v2 results file (`statistics.paired`)."""
    track = track_of(meta)
    paired = (meta.get("statistics") or {}).get("paired")
    if not paired:
        return ["No paired statistics in this results file (run `python -m agents.benchmark "
                "--summarize OUT` with this version to compute them).", ""]
    method = paired["method"]
    metric, reference = method["metric"], method["reference"]
    relative = method["difference"].startswith("per seed, relative")
    digits = 4 if relative else 3
    comparisons = paired.get("comparisons") or {}
    learns = paired.get("learns") or {}
    static = paired.get("beats_best_static") or {}
    best = paired.get("best_static")
    scores = (paired.get("normalised") or {}).get("agents") or {}
    agents = list(meta.get("agents") or {})
    order = sorted(agents, key=lambda a: -((scores.get(a) or {}).get("value") or -1e9))
    runs = len(track.get("seeds") or [])
    protocol = (f"train-then-test: {track.get('train_episodes')} training episodes per "
                f"agent, then the frozen agent on {track.get('eval_episodes')} held-out seeds"
                + (" (one training run per learner: the intervals are over the test seeds "
                   "and leave out the spread between training runs)" if runs == 1 else "")
                if track.get("train_episodes") else
                "online (the paper's): one episode per seed, learning while it plays")
    lines = [f"**Objective.** Agents are {track.get('objective', '(not stated)')}. "
             f"**Protocol:** {protocol}. Seeds are shared: every agent plays the same "
             "initialisations and data orders, so every comparison is paired by seed.", "",
             f"Normalised score: 0 = the agent's random agent of the same action semantics, "
             f"1 = the best static schedule (`{best}`, by mean {metric} on these seeds); "
             f"mean over seeds with its 95% bootstrap interval. Difference to `{reference}`: "
             f"mean per-seed {'relative ' if relative else ''}difference of {metric} with its "
             f"Holm-adjusted interval ({method['test']}; {method['multiplicity']}). "
             "*Actions*: how the agent chooses (among a layer's distinct choices, as masked "
             "agents and the Q-learners do, or any index of `Discrete(L)`, where every index "
             ">= i means independent; `fixed`: a schedule). "
             "*Learns?*: beats its random agent; *beats best static?*: beats "
             f"`{best}`; both Holm-adjusted over the track's agents at alpha "
             f"{method['alpha']}.", "",
             f"| agent | actions | normalised score | {metric} − `{reference}` | learns? (vs its "
             f"random) | beats `{best}`? | final val ppl (mean) | trainable fraction (mean) "
             f"| {'test seeds' if track.get('train_episodes') else 'seeds'} |",
             "|---|---|---|---|---|---|---|---|---|"]
    random_for = track.get("random_for") or {}
    # the unit every comparison pairs: a cell's seed online, a test seed train-then-test
    units = {a: sum(v is not None for v in values.values()) for a, values in
             seed_values(meta.get("cells") or [], agents, metric).items()}
    for agent in order:
        row = (meta.get("agents") or {}).get(agent) or {}
        versus = comparisons.get(agent) or {}
        random_row = learns.get(agent)
        difference = (_interval(versus.get("difference"), digits) if agent != reference
                      else "(reference)")
        lines.append(
            f"| `{agent}` | {SEMANTICS.get(random_for.get(agent), 'fixed')} | "
            f"{_interval(scores.get(agent), 2)} | {difference}"
            f" | {_learns_cell(agent, random_row, random_for)}"
            f" | {_answer(static.get(agent)) if agent != best else '(the best static)'}"
            f" | {fmt(_mean(row, 'final_val_ppl'), 3)} | "
            f"{fmt(_mean(row, 'trainable_fraction'), 3)} | {units.get(agent, 0)} |")
    lines.append("")
    few = _few_seeds(comparisons, learns, static, {"scores": scores})
    if few:
        lines += [f"**Too few seeds for the intervals marked (n=K).** A bootstrap over "
                  f"{' or '.join(map(str, few))} per-seed values is too narrow to trust, and "
                  f"the signed-rank test cannot reject with fewer than 6 (its smallest exact "
                  f"two-sided p is 0.125 at n = 4): read those intervals as orientation, and "
                  f"the verdicts, not the intervals, as the answer.", ""]
    claim = paired.get("hypothesis")
    if claim:
        meeting = ", ".join(f"`{a}`" for a in claim["meeting"]) or "no agent"
        lines += [f"**The paper's hypothesis** (at least {claim['min_tied_fraction']:.0%} of "
                  f"the layers tied, final validation perplexity equivalent to "
                  f"`{claim['conventional']}`'s within ±{claim['margin']:.0%}, "
                  f"{method['equivalence']}): met by {meeting}.", ""]
    for note in paired.get("notes") or []:
        lines.append(f"- {note}")
    return lines


def answers(meta: Json) -> list[str]:
    """One sentence per question of Benchmark v2 for the results file: does any agent
    learn, does any beat the reference agent and the best static schedule."""
    paired = (meta.get("statistics") or {}).get("paired") or {}

    def who(block: Json | None, verdict: str = "better") -> Sequence[str]:
        return [a for a, r in (block or {}).items() if (r or {}).get("verdict") == verdict]

    reference = (paired.get("method") or {}).get("reference")
    parts = [("learns (beats its random agent)", who(paired.get("learns"))),
             (f"beats `{reference}`", who(paired.get("comparisons"))),
             (f"beats the best static schedule `{paired.get('best_static')}`",
              who(paired.get("beats_best_static")))]
    return [f"- Which agent {what}? " + (", ".join(f"`{a}`" for a in names) or "none")
            for what, names in parts]


# ---------------------------------------------------------------- a surrogate's section
RECHECKED = 3  # the surrogate's top agents re-checked on the real track


def _scores(meta: Json) -> dict[str, Json]:
    paired = (meta.get("statistics") or {}).get("paired") or {}
    return (paired.get("normalised") or {}).get("agents") or {}


def _ranked(members: Sequence[Json]) -> list[tuple[str, Json]]:
    """(agent, normalised score) over a track's results files, best first."""
    scores = {a: s for meta in members for a, s in _scores(meta).items()
              if (s or {}).get("value") is not None}
    return sorted(scores.items(), key=lambda item: -item[1]["value"])


def surrogate_lines(meta: Json, real: Sequence[Json]) -> list[str]:
    """The warning that heads a surrogate track's section, the agents whose episodes left
    the logged data, and the re-check of its top agents against the real track's results
    files `real` (none given: said so)."""
    track = track_of(meta)
    of = track.get("surrogate_of")
    lines = [f"**Emulated, not trained.** Every number in this section comes from the "
             f"surrogate `{track.get('env_id')}` (see [The surrogate track](surrogate.md) "
             f"for how far it can be trusted), not from training a transformer; it is "
             f"never mixed with the real tables, and its rows do not rank agents on the "
             f"real track `{of}`.", ""]
    invalid = {a: row["invalid_seeds"] for a, row in (meta.get("agents") or {}).items()
               if row.get("invalid_seeds")}
    lines += [("Invalid episodes (too many decisions outside the logged data): "
               + "; ".join(f"`{a}` seeds {', '.join(map(str, s))}" for a, s in invalid.items())
               if invalid else "No episode is invalid: every one kept at least 90% of its "
               "decisions inside the logged data (the ensemble's disagreement)."), ""]
    mine = _ranked([meta])[:RECHECKED]
    if not real:
        return [*lines, f"The top {RECHECKED} are not re-checked here: the real track "
                        f"`{of}` has no results file among this page's inputs.", ""]
    places = {a: k + 1 for k, (a, _) in enumerate(_ranked(real))}
    lines += [f"**Re-checked on the real track.** The surrogate's top {RECHECKED} agents by "
              f"normalised score, and the same agents on the real track `{of}` (its results "
              "files on this page):", "",
              "| agent | surrogate score | surrogate place | real score | real place |",
              "|---|---|---|---|---|"]
    real_scores = dict(_ranked(real))
    for place, (agent, score) in enumerate(mine, 1):
        lines.append(f"| `{agent}` | {_interval(score, 2)} | {place} | "
                     f"{_interval(real_scores.get(agent), 2)} | "
                     f"{places.get(agent, 'not on the real board')} |")
    held = sum(places.get(a, RECHECKED + 1) <= RECHECKED for a, _ in mine)
    lines += ["", f"{held} of the surrogate's top {RECHECKED} are in the real track's top "
                  f"{RECHECKED} ({len(places)} agents with a score there).", ""]
    return lines
