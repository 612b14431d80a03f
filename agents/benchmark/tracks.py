"""Named, versioned benchmark tracks: the settings a leaderboard compares agents under.

A track fixes everything but the agents: the environment and its settings (budget
included), the seeds, the evaluation split and the metrics. `python -m agents.benchmark
--track NAME` runs it; the options that would change a fixed setting (`--env`,
`--env-kwargs`, `--seeds`, `--agent-kwargs`, `--hyperparams`, `--train-episodes`) are
refused with a track, so changing one makes another track (a new entry here, or a new
version). A track names the agents' hyperparameter files it uses (`hyperparams`,
`agents.hyperparams`): the shipped ones, so changing their values for its env family changes
the track (give it a new version); the history tracks name none, so their agents keep the
code defaults they ran with.
Every cell records `track` as `NAME/vVERSION`, and a benchmark folder never mixes
versions: a cell of another version counts as another configuration.

| track       | env, corpus                                  | budget (sweeps x steps) | seeds |
|-------------|----------------------------------------------|-------------------------|-------|
| `tiny`      | `LayerTying-GPT2-Tiny-v0`, synthetic HMM (its optimum known) | 100 x 5 x 2 | 0-9 |
| `wikitext2` | `LayerTying-GPT2-v0` at 12 x 64, offline WikiText-2 split | 10 x 11 x 4 | 0-4 |
| `deep`      | `LayerTying-GPT2-Tiny-v0` at 12 x 32, synthetic HMM | 32 x 11 x 2 | 0-9 |
| `deep-transfer` | the same, train 10 episodes then test on 10 held-out seeds | 20 x 11 x 2 | 0 |

`tiny` and `wikitext2` (version 1) are history: kept for their published results, with
the agents they ran. Benchmark v2 is `deep` and `deep-transfer`: a 12-layer model (75%
tied leaves 3 roots, so static schedules exist at 1 to 12 roots), every agent on the same
seeds, the objective stated (`objective`, `rank_metric`) and judged by paired statistics
(`agents.benchmark.paired`): the learners, a random agent of each action semantics
(`random_for`), the static schedules at 1, 2, 3, 4, 6, 8 and 12 roots (`vanilla` is the
12-root one) and `untie-then-tie`. Their evaluation size, 16 batches, is the smallest whose
noise is at most half the training noise (`python -m agents.benchmark.noise --track
deep`: training noise 0.0014, evaluation noise 0.0014 at 4 batches, 0.0009 at 8, 0.0007
at 16; one decision's effect 0.0015); their budgets fit 3 hours on 2 CPU cores by
`python -m perf.tracktime` (0.36 s a decision at 1 thread).

Both run `MAIN_AGENTS`; `wikitext2` adds `qlearning-fast`. Every other registered agent
that can play 6 layers (`agents.fits`: not `static-8` or `static-12`) runs on the tiny
track too, on seeds 0-4 (`extra_agents`):
`--track tiny --agents A,B` with only such agents takes those seeds.

A track also states what its results are judged by: its `reference_agent`, the agent
every other agent is compared with (P(improvement)), and the paper's `hypothesis` under
test (at least `min_tied_fraction` of the layers tied, with perplexity equal to or better
than the `conventional_agent`'s). Both tracks use `qlearning` and the paper's hypothesis
(`PAPER`: 75% tied, against `vanilla`).

Why these budgets: the paper's Q-learner multiplies epsilon by 0.95 per sweep from 1.0
and reaches its 0.01 floor after 90 sweeps, so the tiny track runs 100 sweeps (the last 10
at the floor). The WikiText-2 track must run its main agents x 5 seeds within 3 hours on
2 CPU cores; version 1 runs 10 sweeps, chosen from a per-decision estimate that proved
pessimistic (the whole track took 35 minutes on 2 workers), so a later version can
afford about 4x the sweeps. At 10 sweeps the paper's schedule ends at epsilon 0.63 (80%
of its decisions random), so `qlearning-fast` (epsilon x 0.6 per sweep, at the floor
after 9 sweeps) runs beside it. Evaluation sizes come from the reward-noise measurement
(`agents.benchmark.noise`, reported on the results page).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.hyperparams import SHIPPED
from tying_env.errors import SettingError

# the agents every track compares (issue 10's main agents)
MAIN_AGENTS = ("qlearning", "qlearning-plus", "vanilla", "albert", "cycle", "paper-sequence",
               "random", "maskable-ppo", "dqn")
# the other agents of tiny/v1 (those registered when it ran; agents added since are not
# on this track: it is history)
TINY_V1_EXTRAS = ("a2c", "cycle-rev", "paper-reverse", "ppo", "qrdqn", "recurrent-ppo",
                  "sequence", "untie-all")
# Benchmark v2: the learners, a random agent of each action semantics, and static
# schedules at every root count with a dynamic heuristic (they map the front)
DEEP_AGENTS = ("qlearning", "qlearning-plus", "maskable-ppo", "dqn", "random",
               "random-unmasked", "vanilla", "static-1", "static-2", "static-3", "static-4",
               "static-6", "static-8", "untie-then-tie", "schedule-bandit")
# each learner's random agent: the same action semantics (`random` chooses among a
# layer's distinct options, as masked learners and the Q-learners do; `random-unmasked`
# draws any index of Discrete(L), as the unmasked SB3 learners do)
DEEP_RANDOM_FOR = {"qlearning": "random", "qlearning-plus": "random",
                   "maskable-ppo": "random", "dqn": "random-unmasked",
                   "untie-then-tie": "random", "schedule-bandit": "random",
                   "random": "random",
                   "random-unmasked": "random-unmasked"}
DEEP_STATIC = ("vanilla", "static-1", "static-2", "static-3", "static-4", "static-6",
               "static-8")
# 12 x 32 GPT-2 on the synthetic corpus: 75% tied leaves 3 roots
DEEP_ENV = {"n_layer": 12, "n_embd": 32, "n_head": 4, "steps_per_decision": 2,
            "eval_batches": 16, "param_penalty": 1e-4, "device": "cpu"}
DEEP_OBJECTIVE = (
    "rewarded for the change of validation log-perplexity minus 1e-4 x the trainable "
    "fraction at every decision (param_penalty), and ranked by that episode return: "
    "final quality traded against the parameters trained along the way")
# the "WikiText-2, offline split" folder the wikitext2 track reads (built when missing)
WIKITEXT2_DIR = "runs/wikitext-2-offline"
# options a track fixes (refused beside --track)
FIXED_OPTIONS = ("--env", "--env-kwargs", "--seeds", "--agent-kwargs", "--hyperparams",
                 "--train-episodes", "--eval-episodes")


@dataclass(frozen=True)
class Hypothesis:
    """A hypothesis under test: an agent ties at least `min_tied_fraction` of the layers
    (IQM over seeds) with a final val ppl (IQM) at most the upper end of the interval of
    `conventional_agent` (conventional training)."""

    conventional_agent: str
    min_tied_fraction: float


# the paper's hypothesis: >= 75% of layers tied, perplexity equal or modestly better
PAPER = Hypothesis(conventional_agent="vanilla", min_tied_fraction=0.75)
# the agent every other agent is compared with: the paper's Q-learner
REFERENCE_AGENT = "qlearning"


@dataclass(frozen=True)
class Track:
    """One track: everything but the agents is fixed."""

    name: str
    version: int
    env_id: str
    env_kwargs: dict[str, Any]
    seeds: tuple[int, ...]
    agents: tuple[str, ...]  # the main agents, run by default
    description: str
    extra_agents: tuple[str, ...] = ()  # every other registered agent, on `extra_seeds`
    extra_seeds: tuple[int, ...] = ()
    agent_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the agents' hyperparameter files (`agents.hyperparams`), under `agent_kwargs`: the
    # shipped ones; None: none (the code defaults, as the tracks before the files ran)
    hyperparams: str | None = SHIPPED
    metrics: tuple[str, ...] = ("final_val_ppl", "final_test_ppl", "episode_return",
                                "trainable_fraction")
    eval_split: str = "the full validation and test splits, at the end of the episode"
    reference_agent: str = REFERENCE_AGENT  # every other agent is compared with it
    hypothesis: Hypothesis = PAPER  # the hypothesis its results test
    # what agents are rewarded for and ranked by, in words, and the metric that ranks them
    objective: str = ""
    rank_metric: str = "final_val_ppl"
    # > 0: train-then-test, every cell trains that many episodes on its training seeds,
    # then plays `eval_episodes` held-out seeds frozen (`agents.runs.protocol`)
    train_episodes: int = 0
    eval_episodes: int = 3
    history: bool = False  # a superseded track, kept for its published results
    # Benchmark v2's paired statistics (`agents.benchmark.paired`): each agent's random
    # agent of the same action semantics (score 0), the static schedules (the best is
    # score 1), and the equivalence margin of the hypothesis (relative perplexity)
    random_for: dict[str, str] = field(default_factory=dict)
    static_agents: tuple[str, ...] = ()
    margin: float = 0.01

    @property
    def paired(self) -> bool:
        """Whether the track is judged by paired statistics (Benchmark v2)."""
        return bool(self.objective)

    @property
    def label(self) -> str:
        """`NAME/vVERSION`, as every cell records it."""
        return f"{self.name}/v{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "label": self.label,
                "env_id": self.env_id, "env_kwargs": dict(self.env_kwargs),
                "seeds": list(self.seeds), "agents": list(self.agents),
                "extra_agents": list(self.extra_agents), "extra_seeds": list(self.extra_seeds),
                "agent_kwargs": self.agent_kwargs, "hyperparams": self.hyperparams,
                "metrics": list(self.metrics),
                "eval_split": self.eval_split, "description": self.description,
                **({"objective": self.objective, "rank_metric": self.rank_metric}
                   if self.objective else {}),
                **({"train_episodes": self.train_episodes,
                    "eval_episodes": self.eval_episodes} if self.train_episodes else {}),
                **({"history": True} if self.history else {}),
                **({"random_for": self.random_for, "static_agents": list(self.static_agents),
                    "margin": self.margin} if self.paired else {})}


def n_layer(track: Track) -> int:
    """The number of layers of the track's environment (its setting, or its preset's)."""
    from tying_env import ENV_IDS
    from tying_env.presets import PRESETS

    preset = track.env_kwargs.get("preset", ENV_IDS[track.env_id]["preset"])
    return int(track.env_kwargs.get("n_layer", PRESETS[preset]["n_layer"]))


def _other_agents(layers: int) -> tuple[str, ...]:
    """Every registered agent not among the main ones that can play `layers` layers
    (`agents.fits`: e.g. `static-8` and `static-12` sit out a 6-layer track)."""
    import agents

    return tuple(a for a in agents.names()
                 if a not in MAIN_AGENTS and a != "qlearning-fast" and agents.fits(a, layers))


TRACKS: dict[str, Track] = {
    "tiny": Track(
        name="tiny", version=1, env_id="LayerTying-GPT2-Tiny-v0",
        env_kwargs={"max_sweeps": 100, "steps_per_decision": 2, "eval_batches": 4,
                    "device": "cpu"},
        seeds=tuple(range(10)), agents=MAIN_AGENTS, history=True, hyperparams=None,
        extra_agents=TINY_V1_EXTRAS, extra_seeds=tuple(range(5)),
        reference_agent=REFERENCE_AGENT, hypothesis=PAPER,
        description="6-layer GPT-2 on the synthetic HMM corpus (its optimal perplexity "
                    "known); 100 sweeps, so that the paper's epsilon schedule reaches its "
                    "floor (after 90)"),
    "wikitext2": Track(
        name="wikitext2", version=1, env_id="LayerTying-GPT2-v0",
        env_kwargs={"n_layer": 12, "n_embd": 64, "n_head": 4, "seq_len": 64, "batch_size": 8,
                    "vocab_size": 2048, "max_sweeps": 10, "eval_batches": 4,
                    "data_dir": WIKITEXT2_DIR, "device": "cpu"},
        seeds=tuple(range(5)), agents=(*MAIN_AGENTS, "qlearning-fast"), history=True,
        hyperparams=None, reference_agent=REFERENCE_AGENT, hypothesis=PAPER,
        description="12-layer GPT-2 (n_embd 64) on the offline WikiText-2 split; 10 sweeps "
                    "(within 3 hours on 2 CPU cores): the paper's epsilon ends at 0.63, so "
                    "qlearning-fast (decay 0.6, at the floor after 9 sweeps) runs beside it"),
    "deep": Track(
        name="deep", version=1, env_id="LayerTying-GPT2-Tiny-v0",
        env_kwargs={**DEEP_ENV, "max_sweeps": 32}, seeds=tuple(range(10)),
        agents=DEEP_AGENTS, reference_agent=REFERENCE_AGENT, hypothesis=PAPER,
        objective=DEEP_OBJECTIVE, rank_metric="episode_return",
        random_for=DEEP_RANDOM_FOR, static_agents=DEEP_STATIC,
        description="12-layer GPT-2 (n_embd 32) on the synthetic HMM corpus, the paper's "
                    "online protocol: one episode of 32 sweeps, learning while it plays"),
    "deep-transfer": Track(
        name="deep-transfer", version=1, env_id="LayerTying-GPT2-Tiny-v0",
        env_kwargs={**DEEP_ENV, "max_sweeps": 20}, seeds=(0,), agents=DEEP_AGENTS,
        reference_agent=REFERENCE_AGENT, hypothesis=PAPER, objective=DEEP_OBJECTIVE,
        rank_metric="episode_return", train_episodes=10, eval_episodes=10,
        random_for=DEEP_RANDOM_FOR, static_agents=DEEP_STATIC,
        description="the deep track's model in shorter episodes (20 sweeps), "
                    "train-then-test: 10 training episodes on training seeds, then the "
                    "frozen agent on 10 held-out test seeds (the same for every agent)"),
}


def judged_by(recorded: Mapping[str, Any] | None) -> tuple[str, Hypothesis]:
    """The reference agent and the hypothesis for results of the track a results file
    recorded (`{"name", ...}`): that track's, or `REFERENCE_AGENT` and `PAPER` for results
    of no track (or of a track that is no longer defined)."""
    track = TRACKS.get(str((recorded or {}).get("name")))
    if track is None:
        return REFERENCE_AGENT, PAPER
    return track.reference_agent, track.hypothesis


def get(name: str) -> Track:
    """The track `name`; a `SettingError` lists the tracks there are."""
    if name not in TRACKS:
        raise SettingError("track", f"{name!r} is not a track; allowed: {', '.join(TRACKS)}")
    track = TRACKS[name]
    if track.extra_seeds and not track.extra_agents:  # filled lazily: the registry may grow
        track = Track(**{**track.__dict__, "extra_agents": _other_agents(n_layer(track))})
    return track


def cells(track: Track, agents: tuple[str, ...] | None = None) -> dict[str, tuple[int, ...]]:
    """Seeds per agent: the main agents on `seeds`, the extra ones on `extra_seeds`
    (`agents` given: those agents, a main or extra one on its seeds, any other on `seeds`)."""
    chosen = agents or (*track.agents, *track.extra_agents)
    return {a: track.extra_seeds if a in track.extra_agents else track.seeds for a in chosen}


def seeds_for(track: Track, agents: tuple[str, ...]) -> tuple[int, ...]:
    """The seeds of one benchmark run of `agents` on `track`: `extra_seeds` when every agent
    is an extra one, else `seeds` (a mix of both kinds is refused: run them apart)."""
    extra = [a in track.extra_agents for a in agents]
    if all(extra) and track.extra_seeds:
        return track.extra_seeds
    if any(extra):
        extras = ", ".join(a for a, e in zip(agents, extra, strict=True) if e)
        raise SettingError("agents", f"{extras} run "
                                     f"on seeds {list(track.extra_seeds)} of track "
                                     f"{track.name!r}, the others on {list(track.seeds)}; "
                                     f"run the two groups with separate --out folders")
    return track.seeds


def prepare(track: Track) -> None:
    """Write what the track reads that can be built offline (the WikiText-2 split)."""
    data_dir = track.env_kwargs.get("data_dir")
    if data_dir == WIKITEXT2_DIR and not (Path(data_dir) / "train.txt").is_file():
        from tying_env.data.corpus import offline_wikitext2

        offline_wikitext2(data_dir)


def refuse_overrides(given: list[str]) -> None:
    """A `SettingError` when options that a track fixes were given beside `--track`."""
    fixed = [o for o in FIXED_OPTIONS if o in given]
    if fixed:
        raise SettingError("track", f"a track fixes {', '.join(fixed)}; changing them makes "
                                    f"another track (add one in agents/benchmark/tracks.py, "
                                    f"or run without --track)")
