"""Equal tuning: every learning agent's hyperparameters tuned with the same budget, on
training seeds only (Optuna, seeded).

`python -m agents.benchmark.tune --track NAME --agent A --trials N --episodes E --seed S
--out FILE.json` runs `N` Optuna trials (`TPESampler(seed=S)`: the same command gives the
same trials) on the track's environment and settings. Each trial builds the agent with the
trial's hyperparameters (drawn from `SEARCH_SPACE`, one table for every agent), trains it
`E` episodes, then scores it frozen (`Agent.policy`) on `VALIDATION_EPISODES` validation
episodes by the track's `rank_metric` (`episode_return`: higher is better; `final_val_ppl`,
on the validation split: lower is better). The score is the mean over them. On a track of
the online protocol (`deep`) the same train-then-validate scoring is used.

Seeds: training episode `i` is `train_seed(TUNE_SEED, i)`, validation episode `k` is
`train_seed(TUNE_SEED, VALIDATION_OFFSET + k)` (`agents.runs.protocol`). `TUNE_SEED` (99)
is a seed block no track cell uses; every tuning seed is below `EVAL_OFFSET`, so never an
`eval_seed` (a test seed), and `tuning_seeds` asserts both. Every trial plays the same
seeds. The default budget, the same for every learning agent: `DEFAULT_TRIALS` trials of
`DEFAULT_EPISODES` training episodes (plus the validation episodes).

The output JSON (written atomically; an existing file is refused without `--overwrite`)
records the track's label, the agent, the environment tuned on (with a surrogate's data
hash, `env_model`), the budget, the sampler seed, every trial's values
and score, the best values, the seeds used and that no test seed was used.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.base import OneEpisode
from agents.benchmark import tracks
from agents.runs.factory import make_agent, make_env, make_train_env
from agents.runs.protocol import (
    EVAL_OFFSET,
    EpisodeSeeds,
    eval_seed,
    frozen_episode,
    train_seed,
)
from agents.runs.spec import RunSpec
from tying_env.errors import SettingError
from tying_env.files import write_json

if TYPE_CHECKING:
    import optuna

TUNE_SEED = 99  # the tuning seed block: no track cell uses seed 99 (seeds < 100 stay < EVAL_OFFSET)
VALIDATION_OFFSET = 5_000  # validation episodes: train_seed(TUNE_SEED, 5000 + k)
VALIDATION_EPISODES = 2
DEFAULT_TRIALS = 16
DEFAULT_EPISODES = 4
METRICS = {"episode_return": "maximize", "final_val_ppl": "minimize"}  # rank_metric -> direction


@dataclass(frozen=True)
class Dim:
    """One hyperparameter's search range: `float` or `int` in [low, high] (`log` scale), or
    one of `choices`."""

    kind: str  # "float", "int" or "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """The trial's value for `name`."""
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def example(self) -> Any:
        """A value in the range (its low end, or the first choice)."""
        if self.kind == "choice":
            return self.choices[0]
        return int(self.low) if self.kind == "int" else float(self.low)


_QLEARNING = {"lr": Dim("float", 1e-4, 1e-2, log=True),
              "epsilon_decay": Dim("float", 0.8, 0.99),
              "gamma": Dim("float", 0.9, 0.999)}
# the search space of every learning agent: name -> hyperparameter -> range
SEARCH_SPACE: dict[str, dict[str, Dim]] = {
    "qlearning": _QLEARNING,
    "qlearning-plus": {**_QLEARNING, "target_update": Dim("int", 5, 100, log=True)},
    "maskable-ppo": {"learning_rate": Dim("float", 1e-5, 1e-2, log=True),
                     "n_steps": Dim("choice", choices=(64, 128, 256, 512)),
                     "ent_coef": Dim("float", 0.0, 0.05),
                     "gamma": Dim("float", 0.9, 0.999)},
    "dqn": {"learning_rate": Dim("float", 1e-5, 1e-2, log=True),
            "learning_starts": Dim("int", 0, 200),
            "exploration_fraction": Dim("float", 0.05, 0.5),
            "target_update_interval": Dim("choice", choices=(50, 200, 1000)),
            "gamma": Dim("float", 0.9, 0.999)},
    "schedule-bandit": {"exploration": Dim("float", 0.1, 4.0, log=True)},
}


def tuning_seeds(track: tracks.Track, episodes: int,
                 validation: int = VALIDATION_EPISODES) -> tuple[list[int], list[int]]:
    """The training and validation seeds of a tuning run; asserts that they are disjoint,
    that none is a test seed (`eval_seed`, of any track) and none a seed of a track cell."""
    train = [train_seed(TUNE_SEED, i) for i in range(episodes)]
    valid = [train_seed(TUNE_SEED, VALIDATION_OFFSET + k) for k in range(validation)]
    assert episodes <= VALIDATION_OFFSET and not set(train) & set(valid)
    assert all(s < EVAL_OFFSET for s in train + valid), "a tuning seed is in the test range"
    used: set[int] = set()
    for t in (track, *(tracks.get(n) for n in tracks.TRACKS)):
        seeds = set(t.seeds) | set(t.extra_seeds)
        used |= seeds | {eval_seed(s, k) for s in seeds for k in range(t.eval_episodes)}
        used |= {train_seed(s, i) for s in seeds for i in range(t.train_episodes)}
    assert TUNE_SEED not in used and not (set(train) | set(valid)) & used, \
        "a tuning seed is a track's seed"
    return train, valid


def score(track: tracks.Track, agent: str, hparams: dict[str, Any], train: list[int],
          valid: list[int], cache_dir: Path | None = None,
          train_env_id: str | None = None) -> float:
    """Train `agent` with `hparams` on the `train` seeds, then its frozen score on `valid`:
    the mean of the track's `rank_metric` (inf / -inf when the model diverged). With
    `train_env_id` (e.g. the track's surrogate) both run on that env instead."""
    spec = RunSpec(agent=agent, env_id=track.env_id, env_kwargs=dict(track.env_kwargs),
                   seed=TUNE_SEED, agent_kwargs=hparams, cache_dir=cache_dir,
                   progress=False, train_episodes=len(train), train_env_id=train_env_id)
    env = make_train_env(spec) or make_env(spec)
    try:
        agent_obj = make_agent(spec, OneEpisode(EpisodeSeeds(env, train), episodes=len(train)))
        if agent_obj.learns:
            agent_obj.train(len(train))
        values = [_validate(env, agent_obj, seed, track.rank_metric) for seed in valid]
    finally:
        env.close()
    bad = -math.inf if METRICS[track.rank_metric] == "maximize" else math.inf
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if len(finite) == len(values) else bad


def _validate(env: Any, agent: Any, seed: int, metric: str) -> float:
    """One frozen episode on `seed`: its return, or its final validation perplexity."""
    total, _ = frozen_episode(env, agent, seed)
    return total if metric == "episode_return" else float(env.unwrapped.evaluate_split("valid"))


def surrogate_data(env_id: str | None) -> str | None:
    """The SHA-256 of the data the surrogate `env_id` was fitted on (None for another env):
    a refit surrogate is another environment, so a tuning record names the one it used."""
    from tying_env import SURROGATE_IDS

    if env_id not in SURROGATE_IDS:
        return None
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        return str(env.unwrapped.ensemble.meta["data_sha256"])
    finally:
        env.close()


def tune(track: tracks.Track, agent: str, trials: int = DEFAULT_TRIALS,
         episodes: int = DEFAULT_EPISODES, seed: int = 0,
         cache_dir: Path | None = None, train_env_id: str | None = None) -> dict[str, Any]:
    """Tune `agent` on `track` (see the module), or on `train_env_id` (a surrogate of the
    track: the same spaces and budget, seconds instead of hours); the record the CLI
    writes."""
    import optuna

    if agent not in SEARCH_SPACE:
        raise SettingError("agent", f"{agent!r} has no search space; tunable: "
                                    f"{', '.join(SEARCH_SPACE)}")
    if track.rank_metric not in METRICS:
        raise SettingError("track", f"{track.label} ranks by {track.rank_metric!r}; tuning "
                                    f"scores only {', '.join(METRICS)}")
    if train_env_id is not None and track.rank_metric != "episode_return":
        raise SettingError("train_env", f"{track.label} ranks by {track.rank_metric!r}, which "
                                        "a surrogate does not emulate; tune on the track")
    if trials < 1 or episodes < 1:
        raise SettingError("trials", "--trials and --episodes must be at least 1")
    train, valid = tuning_seeds(track, episodes)
    space = SEARCH_SPACE[agent]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=METRICS[track.rank_metric],
                                sampler=optuna.samplers.TPESampler(seed=seed))
    start = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        values = {name: dim.suggest(trial, name) for name, dim in space.items()}
        result = score(track, agent, values, train, valid, cache_dir, train_env_id)
        print(f"trial {trial.number}: {values} -> {result}", file=sys.stderr)
        return result

    study.optimize(objective, n_trials=trials)
    return {"track": track.label, "agent": agent, "rank_metric": track.rank_metric,
            "env": train_env_id or track.env_id, "env_model": surrogate_data(train_env_id),
            "direction": METRICS[track.rank_metric],
            "budget": {"trials": trials, "train_episodes": episodes,
                       "validation_episodes": len(valid)},
            "sampler": {"name": "TPESampler", "seed": seed},
            "search_space": {n: asdict(d) for n, d in space.items()},
            "trials": [{"number": t.number, "values": t.params, "score": t.value}
                       for t in study.trials],
            "best": {"number": study.best_trial.number, "values": study.best_params,
                     "score": study.best_value},
            "seeds": {"tune_seed": TUNE_SEED, "train": train, "validation": valid},
            "test_seeds_used": False,
            "note": "tuned on training-range seeds only (train_seed(TUNE_SEED, i)); no "
                    "eval_seed (test seed) and no seed of a track cell was played",
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", required=True, help=f"one of {', '.join(tracks.TRACKS)}")
    parser.add_argument("--agent", required=True, choices=sorted(SEARCH_SPACE))
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help="training episodes per trial")
    parser.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-env", metavar="ID",
                        help="tune on this env instead, with the track's spaces (its "
                             "surrogate, e.g. LayerTying-Surrogate-Deep-v0)")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.overwrite:
            raise SettingError("out", f"{args.out} exists; pass --overwrite to replace it")
        import torch

        torch.set_num_threads(args.threads)
        record = tune(tracks.get(args.track), args.agent, args.trials, args.episodes,
                      args.seed, args.cache_dir, args.train_env)
    except SettingError as e:
        parser.exit(2, f"error: {e}\n")
    record["command"] = "python -m agents.benchmark.tune " + " ".join(
        sys.argv[1:] if argv is None else argv)
    write_json(args.out, record)
    print(f"best {record['best']['values']} -> {record['best']['score']}; wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
