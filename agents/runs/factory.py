"""Building a run's environment and agent from its `RunSpec`, errors as the spec's.

Both protocols use these (`agents.runs.driver`, one online episode; `agents.runs.protocol`,
train then evaluate): a setting the environment or the agent refuses becomes a
`SettingError` whose `argument` names the spec's field (`env_kwargs.<field>`, `agent`,
`agent_kwargs`, `hyperparams`, or `resume` when the settings came from a checkpoint).
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym

from agents.base import Agent
from agents.runs.spec import RunSpec
from tying_env.errors import DataUnavailableError, SettingError, WriteFailedError


def make_env(spec: RunSpec) -> gym.Env:
    """`gym.make` of the spec's environment; its errors as the spec's errors."""
    try:
        return gym.make(spec.env_id, **spec.make_kwargs)
    except SettingError as e:
        raise SettingError("resume" if spec.resume else f"env_kwargs.{e.argument}",
                           f"cannot build {spec.env_id}: {e}") from e
    except DataUnavailableError as e:
        raise DataUnavailableError(f"cannot build {spec.env_id}: {e}") from e
    except WriteFailedError:
        raise
    except (OSError, TypeError, ValueError) as e:
        raise SettingError("resume" if spec.resume else "env_kwargs",
                           f"cannot build {spec.env_id}: {type(e).__name__}: {e}") from e


def make_train_env(spec: RunSpec) -> gym.Env | None:
    """The env a train-then-evaluate run trains on: `spec.train_env_id` (refused unless its
    spaces are the evaluation env's), or None to train on the evaluation env itself."""
    if spec.train_env_id is None:
        return None
    try:
        env = gym.make(spec.train_env_id, **spec.train_make_kwargs)
    except (OSError, TypeError, ValueError) as e:
        raise SettingError("train_env_id", f"cannot build {spec.train_env_id}: "
                                           f"{type(e).__name__}: {e}") from e
    return env


def make_agent(spec: RunSpec, env: gym.Env) -> Agent:
    """The spec's agent on `env`; hyperparameters it refuses (`Agent.hyperparameters`, then
    its constructor) as a `SettingError`, and so is a class that cannot be built as
    `Class(env, seed=..., **hyperparameters)`."""
    blame = "resume" if spec.resume else None
    built = spec.agent_class()
    hparams = spec.agent_hyperparameters()  # its file's values under agent_kwargs
    try:
        return built(env, seed=spec.seed, **hparams)
    except (TypeError, ValueError) as e:
        contract = ("; the harness builds an agent as Class(env, seed=..., **hyperparameters) "
                    "(see agents.base.Agent)" if isinstance(e, TypeError) else "")
        raise SettingError(blame or _source_of(e, spec, hparams),
                           f"{spec.agent!r} refused {json.dumps(hparams)}: {e}"
                           f"{contract}") from e


def _source_of(error: Exception, spec: RunSpec, hparams: dict[str, Any]) -> str:
    """The spec field to blame for hyperparameters the agent refused: the one that gave the
    hyperparameter at fault (`agent_kwargs`, else `hyperparams`: the file), or, when the
    error names none, `agent_kwargs` if given, else `agent`."""
    at_fault = error.argument if isinstance(error, SettingError) else None
    if at_fault in spec.agent_kwargs:
        return "agent_kwargs"
    if at_fault in hparams:
        return "hyperparams"
    return "agent_kwargs" if spec.agent_kwargs else "agent"
