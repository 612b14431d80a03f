"""The train-then-evaluate protocol: learn over many training runs, then test frozen.

The paper's protocol (the default, `agents.runs.driver`) is online: one episode is one
training run of a fresh transformer, and the agent learns while it plays it. RL
researchers also train an agent over many episodes and then evaluate it, frozen, on
held-out ones. With `RunSpec.train_episodes = N > 0` a run does that:

1. **Training**: the agent plays `N` episodes one after another (`Agent.train`; an agent
   that does not learn, `Agent.learns = False`, plays none),
   learning as it goes; episode `i` is a fresh transformer seeded with
   `train_seed(seed, i)`.
2. **Evaluation**: the frozen agent (`Agent.policy`: no exploration, no learning) plays
   `eval_episodes` episodes on held-out seeds `eval_seed(seed, k)`, which no training
   episode used; each ends with the final perplexities on the full validation and test
   splits.

The run folder holds `result.json`, with `protocol: "train-evaluate"`, one entry per
training episode (`train`) and per evaluation episode (`eval`), and as its top-level
`final_val_ppl`, `final_test_ppl`, `trainable_fraction` the means over the evaluation
episodes (what the benchmark tables report), and, when the environment evaluates the test
split during episodes (`test_eval_every > 0`), the mean `best_test_ppl` (the published
metric, labelled as selected on the test split, see `published_metric`);
`eval/seed-<s>/log.jsonl` per evaluation episode; `run.json`; `agent/`; `tb/`, the
per-episode curves (the return over the training episodes, the evaluation results), which
also go to the experiment tracker (`RunSpec.tracker`; see `agents.runs.episodelog`). Such
a run writes no checkpoints (a stopped one starts again).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from agents.base import Agent, OneEpisode
from agents.runs import tracking
from agents.runs.episodelog import EpisodeLog
from agents.runs.factory import make_agent, make_env, make_train_env
from agents.runs.result import PUBLISHED_METRIC_NOTE, TRAIN_EVALUATE, RunResult, published_metric
from agents.runs.runlog import RunLog
from agents.runs.source import agent_source
from agents.runs.spec import RUN_FILE, RunSpec
from tying_env.errors import SettingError
from tying_env.files import write_json

if TYPE_CHECKING:
    from tying_env.env import LayerTyingEnv

EVAL_OFFSET = 1_000_000  # evaluation seeds start here: never a training seed
def train_seed(seed: int, episode: int) -> int:
    """The environment seed of training episode `episode` (0-based) of a run."""
    return seed * 10_000 + episode


def eval_seed(seed: int, episode: int) -> int:
    """The environment seed of evaluation episode `episode`: held out from training."""
    return EVAL_OFFSET + seed * 10_000 + episode


class EpisodeSeeds(gym.Wrapper):
    """Resets episode `i` with `seeds[i]`, whatever seed the agent (or SB3) passes."""

    def __init__(self, env: gym.Env, seeds: list[int]):
        super().__init__(env)
        self.seeds = seeds
        self.episodes = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        seed = self.seeds[min(self.episodes, len(self.seeds) - 1)]
        self.episodes += 1
        return self.env.reset(seed=seed, options=kwargs.get("options"))


class EpisodeSummaries(gym.Wrapper):
    """Keeps, per finished episode, its return, length and last info; calls `on_episode`
    (when set) with the episode's number (1-based) and that record."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.episodes: list[dict[str, Any]] = []
        self.on_episode: Callable[[int, dict[str, Any]], None] | None = None
        self._return = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._return = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        if terminated or truncated:
            self.episodes.append(summary(info, self._return))
            if self.on_episode is not None:
                self.on_episode(len(self.episodes), self.episodes[-1])
        return obs, reward, terminated, truncated, info


def summary(info: dict[str, Any], episode_return: float) -> dict[str, Any]:
    """One episode's record from its last info."""
    return {"return": episode_return, "decisions": int(info["decision"]),
            "val_ppl": _finite(info["val_ppl"]), "trainable_fraction": info["trainable_fraction"],
            "tie_map": list(info["tie_map"]), "diverged": bool(info["diverged"]),
            **published_metric(info)}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def protocol_params(spec: RunSpec, env: gym.Env, agent: Agent) -> dict[str, tracking.Param]:
    """The run's parameters (`tracking.run_params`) and the protocol's episode counts."""
    return {**tracking.run_params(env, agent), "train_episodes": spec.train_episodes,
            "eval_episodes": spec.eval_episodes}


def learning_curve(curves: EpisodeLog, spec: RunSpec, env: gym.Env,
                   agent: Agent) -> Callable[[int, dict[str, Any]], None]:
    """What a training episode's end calls: log the run's parameters (the first time, once
    the agent has built what it runs with) and the episode's point of the learning curve."""
    def trained(episode: int, record: dict[str, Any]) -> None:
        curves.log_params(protocol_params(spec, env, agent))
        curves.train_episode(episode, record)

    return trained


def run_train_evaluate(spec: RunSpec) -> RunResult:
    """Train over `spec.train_episodes` episodes, evaluate frozen; returns the result."""
    t_start = time.perf_counter()
    env = make_env(spec)
    base: LayerTyingEnv = env.unwrapped
    trainer = make_train_env(spec) or env  # sim-to-real: training on another env
    # a surrogate names its model: a refit one is another training environment
    train_model = getattr(trainer.unwrapped, "model_sha256", None) if trainer is not env else None
    if trainer is not env and (trainer.observation_space != env.observation_space
                               or trainer.action_space != env.action_space):
        trainer.close()
        env.close()
        raise SettingError("train_env_id", f"{spec.train_env_id} has other spaces than "
                                           f"{spec.env_id} ({trainer.observation_space}, "
                                           f"{trainer.action_space}): an agent trained on it "
                                           "cannot play the evaluation env")
    curves: EpisodeLog | None = None
    finished = False
    try:
        write_json(spec.folder / RUN_FILE, spec.to_run_file())
        curves = EpisodeLog(spec.folder, f"{spec.agent} s{spec.seed}", tracker=spec.tracker,
                            group=spec.tracker_group)
        seeds = [train_seed(spec.seed, i) for i in range(spec.train_episodes)]
        summaries = EpisodeSummaries(EpisodeSeeds(trainer, seeds))
        guard = OneEpisode(summaries, episodes=spec.train_episodes)
        agent = make_agent(spec, guard)
        summaries.on_episode = learning_curve(curves, spec, trainer, agent)
        t_train = time.perf_counter()
        if agent.learns:
            print(f"training {spec.agent} over {spec.train_episodes} episodes",
                  file=sys.stderr)
            agent.train(spec.train_episodes)
        train_seconds = time.perf_counter() - t_train
        train = [{"seed": s, **e} for s, e in zip(seeds, summaries.episodes, strict=False)]

        curves.log_params(protocol_params(spec, env, agent))  # an agent that did not train
        if trainer is not env:  # the frozen agent asks the env it plays for its masks
            guard.env = env
        evaluations = []
        for k in range(spec.eval_episodes):
            evaluations.append(evaluate(spec, env, agent, eval_seed(spec.seed, k)))
            curves.eval_episode(k + 1, evaluations[-1])
        agent.save(spec.folder / "agent")
        means = {key: _mean([e[key] for e in evaluations])
                 for key in ("final_val_ppl", "final_test_ppl", "trainable_fraction")}
        curves.final({"final/val_ppl": means["final_val_ppl"],
                      "final/test_ppl": means["final_test_ppl"],
                      "final/trainable_fraction": means["trainable_fraction"],
                      "final/return": _mean([e["return"] for e in evaluations])},
                     step=spec.eval_episodes)
        finished = True
    finally:
        if curves is not None:
            curves.close(finished)
        if trainer is not env:
            trainer.close()
        env.close()
    published = evaluations and "best_test_ppl" in evaluations[0]
    notes = ["final_val_ppl, final_test_ppl and trainable_fraction are means over the "
             "evaluation episodes (held-out seeds, frozen agent)"]
    if not agent.learns:
        notes.append(f"{spec.agent} does not learn (Agent.learns is False): it played no "
                     "training episodes")
    result = RunResult(
        protocol=TRAIN_EVALUATE, agent=spec.agent, agent_kwargs=spec.agent_kwargs,
        env_id=spec.env_id, env_kwargs=base.cfg.to_dict(), seed=spec.seed, track=spec.track,
        device=str(base.device), budget=base.budget, train_episodes=spec.train_episodes,
        eval_episodes=spec.eval_episodes, **means,
        best_test_ppl=_mean([e["best_test_ppl"] for e in evaluations]) if published else None,
        best_test_ppl_selected_on="test" if published else None,
        train=train, eval=evaluations, train_seconds=train_seconds,
        n_outputs=base.n_outputs, optimal_ppl=base.optimal_ppl,
        agent_source=agent_source(spec.agent_class()), train_env_id=spec.train_env_id,
        train_env_model=train_model,
        notes=[*notes, PUBLISHED_METRIC_NOTE] if published else notes)
    result = result.replace(total_seconds=time.perf_counter() - t_start)
    result.write(spec.folder)
    return result


def frozen_episode(env: gym.Env, agent: Agent, seed: int) -> tuple[float, list[dict[str, Any]]]:
    """The frozen agent (`Agent.policy`) plays one episode of `env` from `reset(seed=seed)`:
    its return and the info of the reset and of every step after it."""
    obs, info = env.reset(seed=seed)
    infos, episode_return, done = [info], 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(agent.policy(obs, info))
        infos.append(info)
        episode_return += float(reward)
        done = terminated or truncated
    return episode_return, infos


def evaluate(spec: RunSpec, env: gym.Env, agent: Agent, seed: int) -> dict[str, Any]:
    """One episode of the frozen agent on `seed`; the final full-split perplexities."""
    base: LayerTyingEnv = env.unwrapped
    recorder = RunLog(env, spec.folder / "eval" / f"seed-{seed}", progress=False,
                      tensorboard=False)
    episode_return, infos = frozen_episode(recorder, agent, seed)
    recorder.finish()
    return {"seed": seed, **summary(infos[-1], episode_return),
            "final_val_ppl": _finite(base.evaluate_split("valid")),
            "final_test_ppl": _finite(base.evaluate_split("test"))}


def _mean(values: list[Any]) -> float | None:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None
