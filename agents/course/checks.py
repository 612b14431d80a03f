"""The graded exercises of the course notebook: the names each defines, and their checks.

Each exercise's prompt ends with **Graded:** and the names the answer must define (the
`answers` of its `Exercise` here). After the notebook has run, `snapshot(globals())`, in
the notebook's kernel, reads those names (and the `CONTEXT` names the given cells define)
as plain JSON: numbers, strings, lists, dicts, and a run log (`RunLog`) as its environment
settings, start and records. The checks then run on that JSON, in the grader's process,
against values computed here (the memory of a model, epsilon schedules, uniform
probabilities) or derived from the student's own runs (which mode ended lower, how many
rewards exceed the clip). A check earns its points or nothing; an undefined name fails every
check that reads it, so an exercise left empty scores 0.

Every answer name is bound only by the exercise's solution cells (`tests/test_course.py`
checks it on the notebook), so the student copy, whose solutions are empty cells, defines
none of them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Json = Any
ENV_ID = "LayerTying-GPT2-Tiny-v0"
SMALL = {"n_layer": 4, "n_embd": 32, "n_head": 2}  # the notebook's SMALL (its shape)
REWARDS = ("log_ppl_delta", "ppl_delta", "paper")
BENCH_AGENTS = ("qlearning", "maskable-ppo")
UNREADABLE = "__unreadable__"  # what `snapshot` writes for a value it cannot read
TOL = 1e-9


class NotAnswered(Exception):
    """The notebook does not define a name that a check reads."""


class Wrong(Exception):
    """An answer that is not right; the message says what was expected."""


class Answers:
    """The names read from the notebook's kernel (`snapshot`'s JSON), for the checks."""

    def __init__(self, values: Mapping[str, Json]):
        self.values = dict(values)

    def __getitem__(self, name: str) -> Json:
        if name not in self.values:
            raise NotAnswered(f"`{name}` is not defined")
        value = self.values[name]
        if isinstance(value, dict) and UNREADABLE in value:
            raise Wrong(f"`{name}` is a {value[UNREADABLE]}, which the grader cannot read")
        return value


@dataclass(frozen=True)
class Check:
    """One graded fact: `test(answers)` returns if right, raises `Wrong` or `NotAnswered`."""

    what: str
    test: Callable[[Answers], None]
    points: int = 1


@dataclass(frozen=True)
class Exercise:
    number: int
    title: str
    answers: tuple[str, ...]  # the names the exercise's answer defines
    checks: tuple[Check, ...]

    @property
    def max_points(self) -> int:
        return sum(c.points for c in self.checks)


# ---------------------------------------------------------------- helpers
def expect(ok: bool, why: str) -> None:
    if not ok:
        raise Wrong(why)


def number(a: Any) -> bool:
    """`a` is a finite number (not a bool)."""
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)


def close(a: Any, b: float, tol: float = TOL) -> bool:
    """`a` is a number within `tol` (absolute, or relative for large values) of `b`."""
    return number(a) and math.isclose(float(a), b, rel_tol=tol, abs_tol=tol)


def names(value: Json, what: str) -> set[str]:
    """A set of names, given as a set, list or tuple of strings (JSON: a list)."""
    expect(isinstance(value, list) and all(isinstance(v, str) for v in value),
           f"{what} must be a set of names, not {value!r}")
    return set(value)


def run(value: Json, what: str) -> Json:
    """A run log as `snapshot` reads it: {"config", "start", "records"}."""
    expect(isinstance(value, dict) and isinstance(value.get("records"), list)
           and isinstance(value.get("config"), dict) and value["records"],
           f"{what} must be the log of a finished run (what `run_agent` returns)")
    return value


def episode_return(log: Json) -> float:
    return sum(r["reward"] for r in log["records"])


def summed_fraction(log: Json) -> float:
    return sum(r["trainable_fraction"] for r in log["records"])


def final(log: Json, key: str) -> Any:
    return log["records"][-1][key]


def section3(a: Answers, name: str) -> Json:
    """A run of section 3 (`runs[name]`, given by the notebook)."""
    runs = a["runs"]
    expect(isinstance(runs, dict) and name in runs, f"section 3's `runs` has no {name!r} run")
    return run(runs[name], f"runs[{name!r}]")


def settings(log: Json, what: str, **expected: Any) -> None:
    """The run's environment settings include `expected`."""
    for key, value in expected.items():
        got = log["config"].get(key)
        expect(got == value, f"{what} was run with {key}={got!r}, not {value!r}")


# ---------------------------------------------------------------- Exercise 1
@functools.lru_cache(maxsize=1)
def memory_reference() -> tuple[int, int]:
    """Trainable parameters and training memory (bytes, after one AdamW step) of the tiny
    model with the `paper-sequence` tie map, measured."""
    import torch

    from agents.baselines import tie_map
    from tying_env.models import TiedModel, gpt2_config
    from tying_env.presets import PRESETS
    from tying_env.training import InnerOptimizer

    p = PRESETS["tiny"]
    ties = tie_map("paper-sequence", p["n_layer"])
    torch.manual_seed(0)
    model = TiedModel(gpt2_config(p["n_layer"], p["n_embd"], p["n_head"], p["seq_len"],
                                  p["vocab_size"]), ties=ties)
    opt = InnerOptimizer(model.trainable_parameters(), lr=1e-3)
    x = torch.randint(0, p["vocab_size"], (2, p["seq_len"]))
    opt.step(model.loss(x, x))
    return model.param_counts()[0], model.memory_bytes(opt.optimizer).total


def ex1_params(a: Answers) -> None:
    params, _ = memory_reference()
    expect(a["predicted_params"] == params,
           "predicted_params is not the trainable parameter count of that tie map")


def ex1_bytes(a: Answers) -> None:
    _, total = memory_reference()
    expect(a["predicted_bytes"] == total,
           "predicted_bytes is not the memory the model measures after one optimizer step")


# ---------------------------------------------------------------- Exercise 2
def share_run(a: Answers) -> tuple[Json, Json]:
    """The student's `share_run`, checked, and section 3's `albert` run (copy mode)."""
    share, copy = run(a["share_run"], "share_run"), section3(a, "albert")
    settings(share, "share_run", tie_mode="share", n_layer=6,
             max_sweeps=copy["config"]["max_sweeps"])
    expect(all(not any(r["tie_map"]) for r in share["records"]),
           "share_run is not an `albert` run: a tie map is not all zeros")
    return share, copy


def ex2_run(a: Answers) -> None:
    share_run(a)


def ex2_faster(a: Answers) -> None:
    share, copy = share_run(a)
    mode = "share" if final(share, "val_ppl") < final(copy, "val_ppl") else "copy"
    expect(a["faster_mode"] == mode, "faster_mode is not the mode of the run that ends lower")


def ex2_memory(a: Answers) -> None:
    share, copy = share_run(a)
    same = (final(share, "memory_bytes") == final(copy, "memory_bytes")
            and final(share, "trainable_fraction") == final(copy, "trainable_fraction"))
    expect(a["same_memory"] is same, "same_memory does not match the ends of your two runs")


# ---------------------------------------------------------------- Exercise 3
def break_even(a: Answers) -> float:
    van, alb = section3(a, "vanilla"), section3(a, "albert")
    return ((episode_return(van) - episode_return(alb))
            / (summed_fraction(van) - summed_fraction(alb)))


def ex3_penalty(a: Answers) -> None:
    answer, p = a["break_even"], break_even(a)
    expect(close(answer, p, 1e-6),
           "break_even is not the penalty at which the two returns are equal")


def ex3_run(a: Answers) -> None:
    penalised = run(a["penalised_run"], "penalised_run")
    p, alb = break_even(a), section3(a, "albert")
    expect(close(penalised["config"].get("param_penalty"), p, 1e-6),
           "penalised_run was not run with the break-even penalty")
    settings(penalised, "penalised_run", tie_mode="copy", n_layer=6,
             max_sweeps=alb["config"]["max_sweeps"])
    expected = episode_return(alb) - p * summed_fraction(alb)
    expect(close(episode_return(penalised), expected, 1e-6),
           f"penalised_run's return is {episode_return(penalised):.6f}, not {expected:.6f}")


# ---------------------------------------------------------------- Exercise 4
def epsilon_after(sweeps: int, decay: float = 0.95) -> float:
    """The Q-learner's epsilon after `sweeps` sweeps (imported here: `snapshot`, run in the
    notebook's kernel, needs no torch)."""
    from agents.qlearning import epsilon_after as schedule

    return schedule(sweeps, decay=decay)


def ex4_last(a: Answers) -> None:
    last = a["last_epsilon"]
    expect(isinstance(last, dict), "last_epsilon must be a dict {3: ..., 10: ..., 100: ...}")
    for sweeps in (3, 10, 100):
        right = epsilon_after(sweeps - 1)
        expect(close(last.get(str(sweeps)), right),
               f"last_epsilon[{sweeps}] is not epsilon during the last of {sweeps} sweeps")


def fast_decay(a: Answers) -> float:
    decay = a["fast_decay"]
    expect(number(decay) and 0 < decay < 1, "fast_decay must be a number in (0, 1)")
    return float(decay)


def ex4_decay(a: Answers) -> None:
    last = epsilon_after(5, decay=fast_decay(a))
    expect(abs(last - 0.05) < 5e-4, f"with fast_decay, epsilon in the 6th sweep is {last:.4f}")


def ex4_traces(a: Answers) -> None:
    traces = a["epsilon_traces"]
    expect(isinstance(traces, dict), 'epsilon_traces must be {"default": [...], "fast": [...]}')
    per_sweep = SMALL["n_layer"] - 1
    for label, decay in (("default", 0.95), ("fast", fast_decay(a))):
        right = [epsilon_after(k // per_sweep, decay=decay) for k in range(6 * per_sweep)]
        got = traces.get(label)
        expect(isinstance(got, list) and len(got) == len(right)
               and all(close(g, r) for g, r in zip(got, right, strict=True)),
               f"epsilon_traces[{label!r}] is not the epsilon of each of the "
               f"{len(right)} decisions of a 6-sweep run with decay {decay:.3f}")


# ---------------------------------------------------------------- Exercise 5
def reward_runs(a: Answers) -> dict[str, Json]:
    runs = a["reward_runs"]
    expect(isinstance(runs, dict) and set(runs) == set(REWARDS),
           f"reward_runs must have one run per reward: {', '.join(REWARDS)}")
    for reward in REWARDS:
        log = run(runs[reward], f"reward_runs[{reward!r}]")
        settings(log, f"reward_runs[{reward!r}]", reward=reward, max_sweeps=2, **SMALL)
        expect(all(r["tie_map"] == list(range(SMALL["n_layer"])) for r in log["records"]),
               f"reward_runs[{reward!r}] is not a `vanilla` run: it ties layers")
    return runs


def ex5_runs(a: Answers) -> None:
    log = reward_runs(a)["log_ppl_delta"]
    telescoped = math.log(log["start"]["val_ppl"] / final(log, "val_ppl"))
    expect(close(episode_return(log), telescoped, 1e-6),
           "the log_ppl_delta run's return is not log(ppl_start / ppl_end)")


def ex5_telescoping(a: Answers) -> None:
    expect(names(a["telescoping"], "telescoping") == {"log_ppl_delta", "ppl_delta"},
           "telescoping: not the rewards whose returns depend on the first and last "
           "perplexity only")


def ex5_clipped(a: Answers) -> None:
    from agents.qlearning import QLearningConfig

    clip = QLearningConfig().reward_clip
    right = {reward: sum(abs(r["reward"]) > clip for r in log["records"])
             for reward, log in reward_runs(a).items()}
    expect(a["clipped"] == right, "clipped: not the counts of clipped rewards of your runs")


def ex5_early(a: Answers) -> None:
    expect(names(a["early_favoured"], "early_favoured") == {"ppl_delta", "paper"},
           "early_favoured: not the rewards that pay an early improvement more")


def ex5_same(a: Answers) -> None:
    runs = reward_runs(a)
    ppl = {reward: [r["val_ppl"] for r in log["records"]] for reward, log in runs.items()}
    right = {r for r in REWARDS[1:] if ppl[r] == ppl["log_ppl_delta"]}
    expect(names(a["same_training"], "same_training") == right,
           "same_training: not the runs whose val_ppl records are those of log_ppl_delta")


# ---------------------------------------------------------------- Exercise 6
def uniform_own(masked: bool) -> dict[str, list[float]]:
    return {str(n): [1 / (i + 1) if masked else (n - i) / n for i in range(1, n)]
            for n in (4, 12)}


def probabilities_match(got: Json, right: dict[str, list[float]]) -> bool:
    return (isinstance(got, dict) and set(got) == set(right)
            and all(isinstance(got[n], list) and len(got[n]) == len(right[n])
                    and all(close(g, r) for g, r in zip(got[n], right[n], strict=True))
                    for n in right))


def ex6_masked(a: Answers) -> None:
    expect(probabilities_match(a["p_own_masked"], uniform_own(True)),
           "p_own_masked: not P(own weights) of a uniform choice among the valid actions")


def ex6_unmasked(a: Answers) -> None:
    expect(probabilities_match(a["p_own_unmasked"], uniform_own(False)),
           "p_own_unmasked: not P(own weights) of a uniform choice among all L actions")


def ex6_policy(a: Answers) -> None:
    probs, n = a["policy_probs"], SMALL["n_layer"]
    expect(isinstance(probs, dict) and set(probs) == {str(i) for i in range(1, n)},
           f"policy_probs must have the layers 1..{n - 1} as keys")
    for i in range(1, n):
        entry = probs[str(i)]
        masked, free = entry.get("masked"), entry.get("unmasked")
        for label, p in (("masked", masked), ("unmasked", free)):
            expect(isinstance(p, list) and len(p) == n and all(number(v) and v >= 0 for v in p)
                   and close(sum(p), 1.0, 1e-4),
                   f"policy_probs[{i}][{label!r}] is not a distribution over {n} actions")
        kept = sum(free[:i + 1])
        expect(all(v < 1e-6 for v in masked[i + 1:])
               and all(abs(m - f / kept) < 1e-4 for m, f in zip(masked, free[:i + 1],
                                                                  strict=False)),
               f"policy_probs[{i}]: the masked probabilities are not the unmasked ones "
               f"restricted to the valid actions 0..{i}")


# ---------------------------------------------------------------- Exercise 7
def bench(a: Answers) -> Json:
    results = a["bench"]
    expect(isinstance(results, dict) and isinstance(results.get("request"), dict),
           "bench must be what run_benchmark returns")
    request = results["request"]
    expect(request.get("env_id") == ENV_ID and set(request.get("agents", [])) ==
           set(BENCH_AGENTS) and request.get("seeds") == [0, 1, 2],
           f"bench is not {' and '.join(BENCH_AGENTS)} on seeds 0, 1, 2 of {ENV_ID}")
    env_kwargs = request.get("env_kwargs") or {}
    expect(all(env_kwargs.get(k) == v for k, v in {**SMALL, "max_sweeps": 2}.items()),
           "bench was not run with {**SMALL, 'max_sweeps': 2}")
    finished = (results.get("counts") or {}).get("finished")
    expect(finished == 6, f"bench has {finished} finished cells, not 6")
    return results


def ex7_bench(a: Answers) -> None:
    bench(a)


def ex7_intervals(a: Answers) -> None:
    results, intervals = bench(a), a["intervals"]
    expect(isinstance(intervals, dict) and set(intervals) == set(BENCH_AGENTS),
           f"intervals must have the agents {', '.join(BENCH_AGENTS)} as keys")
    for agent in BENCH_AGENTS:
        for key in ("final_val_ppl", "trainable_fraction"):
            values = [c["result"][key] for c in results["cells"]
                      if c["agent"] == agent and c["status"] == "finished"]
            mine = intervals[agent]
            interval = mine.get(key) if isinstance(mine, dict) else None
            expect(isinstance(interval, list) and len(interval) == 2
                   and all(number(v) for v in interval),
                   f"intervals[{agent!r}][{key!r}] must be (low, high)")
            low, high = interval
            mean = sum(values) / len(values)
            expect(min(values) - TOL <= low <= mean + TOL and mean - TOL <= high
                   <= max(values) + TOL,
                   f"intervals[{agent!r}][{key!r}] = ({low:.4g}, {high:.4g}) is not a "
                   f"bootstrap interval of the mean {mean:.4g} of {len(values)} seeds")


def ex7_better(a: Answers) -> None:
    intervals = a["intervals"]
    try:
        (q_low, q_high), (m_low, m_high) = (intervals[agent]["final_val_ppl"]
                                            for agent in BENCH_AGENTS)
    except (KeyError, TypeError, ValueError):
        raise Wrong("`better` is judged from `intervals`, which is not complete") from None
    right = "qlearning" if q_high < m_low else "maskable-ppo" if m_high < q_low else None
    expect(a["better"] == right, "better does not follow from your perplexity intervals")


# ---------------------------------------------------------------- the exercises
CONTEXT = ("runs",)  # names of the given cells that the checks read
EXERCISES: tuple[Exercise, ...] = (
    Exercise(1, "predict the memory", ("predicted_params", "predicted_bytes"), (
        Check("trainable parameters of the paper-sequence tie map", ex1_params),
        Check("training memory in bytes, as measured after one AdamW step", ex1_bytes))),
    Exercise(2, "copy or share?", ("share_run", "faster_mode", "same_memory"), (
        Check("an albert run in share mode, settings of section 3", ex2_run),
        Check("the mode that ends at the lower perplexity", ex2_faster),
        Check("same trainable fraction and memory in both modes", ex2_memory))),
    Exercise(3, "when does tying pay?", ("break_even", "penalised_run"), (
        Check("the break-even penalty of vanilla and albert", ex3_penalty),
        Check("albert with that penalty: the return shifts as predicted", ex3_run))),
    Exercise(4, "the exploration schedule", ("last_epsilon", "fast_decay", "epsilon_traces"), (
        Check("epsilon in the last sweep of 3, 10 and 100 sweeps", ex4_last),
        Check("a decay that reaches 0.05 in the 6th sweep", ex4_decay),
        Check("the epsilon recorded at each decision of both runs", ex4_traces))),
    Exercise(5, "what to reward", ("reward_runs", "telescoping", "clipped", "early_favoured",
                                   "same_training"), (
        Check("one vanilla run per reward on SMALL, 2 sweeps", ex5_runs),
        Check("the returns that telescope", ex5_telescoping),
        Check("the rewards the Q-learner clips, per run", ex5_clipped),
        Check("the rewards that favour early improvements", ex5_early),
        Check("the runs that trained the same models", ex5_same))),
    Exercise(6, "action masks", ("p_own_masked", "p_own_unmasked", "policy_probs"), (
        Check("P(own weights), uniform with the mask", ex6_masked),
        Check("P(own weights), uniform without the mask", ex6_unmasked),
        Check("a policy's probabilities with and without the mask", ex6_policy))),
    Exercise(7, "an SB3 agent against the Q-learner, over seeds",
             ("bench", "intervals", "better"), (
        Check("the benchmark: 2 agents x 3 seeds on SMALL, 2 sweeps", ex7_bench),
        Check("95% intervals of both statistics, per agent", ex7_intervals),
        Check("the verdict follows from the perplexity intervals", ex7_better))),
)
ANSWER_NAMES = tuple(n for e in EXERCISES for n in e.answers)


# ---------------------------------------------------------------- in the kernel
def plain(value: Any) -> Json:
    """`value` as JSON: containers and numbers as they are (numpy, torch made plain, sets
    sorted, keys made strings), a run log as its settings, start and records."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=repr)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return plain(value.tolist())
    if hasattr(value, "records") and hasattr(value, "start"):  # agents.runs.runlog.RunLog
        cfg = getattr(getattr(value, "unwrapped", None), "cfg", None)
        return {"config": plain(dataclasses.asdict(cfg)) if dataclasses.is_dataclass(cfg)
                else None, "start": plain(value.start), "records": plain(value.records)}
    return {UNREADABLE: type(value).__name__}


def snapshot(namespace: Mapping[str, Any], names: Iterable[str] = ANSWER_NAMES + CONTEXT
             ) -> dict[str, Json]:
    """The graded names (and the context) that `namespace` defines, as JSON."""
    return {name: plain(namespace[name]) for name in names if name in namespace}


# ---------------------------------------------------------------- grading
@dataclass(frozen=True)
class CheckResult:
    what: str
    points: int
    max_points: int
    why: str  # "" when right


@dataclass(frozen=True)
class ExerciseResult:
    number: int
    title: str
    checks: tuple[CheckResult, ...]

    @property
    def points(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_points(self) -> int:
        return sum(c.max_points for c in self.checks)


def run_check(check: Check, answers: Answers) -> CheckResult:
    try:
        check.test(answers)
    except (NotAnswered, Wrong) as e:
        return CheckResult(check.what, 0, check.points, str(e))
    except Exception as e:  # an answer of an unexpected shape: wrong, and say why
        return CheckResult(check.what, 0, check.points,
                           f"could not read the answer ({type(e).__name__}: {e})")
    return CheckResult(check.what, check.points, check.points, "")


def grade(values: Mapping[str, Json]) -> list[ExerciseResult]:
    """Every exercise's checks on `values` (what `snapshot` read), in order."""
    answers = Answers(values)
    return [ExerciseResult(e.number, e.title, tuple(run_check(c, answers) for c in e.checks))
            for e in EXERCISES]
