"""Property-based tests over random action sequences on a tiny environment.

For any sequence of valid actions, in both tie modes and both action modes:
no step raises; the tie map keeps its invariant and equals the one the pure
transitions of `tying_env.ties` give; trainable parameters and memory
bytes equal a recount from scratch (from the tie map and the shapes alone);
and a state saved at any decision continues exactly like the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tying_env  # noqa: F401  (registers the env ids)
from tying_env import ties as tm
from tying_env.env import LayerTyingEnv
from tying_env.models import TiedBlock

L = 4
SHAPE = dict(n_layer=L, n_embd=16, n_head=2, seq_len=16, vocab_size=64, batch_size=4,
             eval_batches=1, steps_per_decision=1, max_sweeps=2)
MODES = [(tie, action) for tie in ("copy", "share") for action in ("layer", "vector")]
SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
_envs: dict[tuple[Any, ...], gym.Env] = {}


def env_for(cache_dir: Path, tie_mode: str, action_mode: str, instance: int = 0) -> gym.Env:
    """One environment per setting, reset for every example (building is the slow part)."""
    key = (tie_mode, action_mode, instance, str(cache_dir))
    if key not in _envs:
        _envs[key] = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, tie_mode=tie_mode,
                              action_mode=action_mode, **SHAPE)
    return _envs[key]


def layer_actions() -> st.SearchStrategy[list[int]]:
    budget = SHAPE["max_sweeps"] * (L - 1)
    return st.lists(st.integers(0, L - 1), min_size=budget, max_size=budget)


def vector_actions() -> st.SearchStrategy[list[tuple[int, ...]]]:
    one_map = st.tuples(*(st.integers(0, i) for i in range(L)))
    return st.lists(one_map, min_size=SHAPE["max_sweeps"], max_size=SHAPE["max_sweeps"])


def actions_for(action_mode: str) -> st.SearchStrategy[list[Any]]:
    return layer_actions() if action_mode == "layer" else vector_actions()


def expected_map(ties: tm.TieMap, action: Any, layer: int) -> tm.TieMap:
    """The pure transition(s) one step should apply."""
    if isinstance(action, tuple):
        for i, choice in enumerate(action[1:], start=1):
            ties = tm.apply_choice(ties, i, choice).after
        return ties
    return tm.apply_choice(ties, layer, action).after


def recount(ties: tm.TieMap) -> tuple[int, int, int]:
    """(trainable, total, trainable tensors) from the tie map and the GPT-2 shapes alone."""
    E, V, P = SHAPE["n_embd"], SHAPE["vocab_size"], SHAPE["seq_len"]
    attention = (3 * E * E + 3 * E) + (E * E + E)  # c_attn, c_proj
    mlp = (4 * E * E + 4 * E) + (4 * E * E + E)  # c_fc, c_proj
    block = 2 * E + attention + 2 * E + mlp  # with ln_1 and ln_2
    shared = V * E + P * E + 2 * E  # token and position embeddings (LM head tied), final norm
    roots = len(tm.roots(ties))
    return shared + roots * block, shared + L * block, 4 + 12 * roots


def check_step(env: LayerTyingEnv, info: dict[str, Any], ties: tm.TieMap) -> None:
    assert tm.validate(info["tie_map"]) == ties == env.model.ties
    for i, block in enumerate(env.model.net.transformer.h):
        if ties[i] == i:
            assert not isinstance(block, TiedBlock) and block is env.model.block(i)
        else:
            assert isinstance(block, TiedBlock) and block.root is env.model.block(ties[i])
    trainable, total, n_tensors = recount(ties)
    assert (info["trainable_params"], info["total_params"]) == (trainable, total)
    assert info["trainable_fraction"] == trainable / total
    params = env.model.trainable_parameters()
    assert len(params) == n_tensors
    memory = info["memory_bytes"]
    assert memory["params"] == memory["grads"] == 4 * trainable  # float32, all trained
    assert memory["optimizer"] == 2 * 4 * trainable + 4 * n_tensors  # AdamW moments + step
    assert memory["total"] == sum(memory[k] for k in ("params", "grads", "optimizer"))
    kept = {id(p) for p in params}
    assert all(id(p) in kept for p in env.run.optim.optimizer.state)  # no stale optimizer state


@pytest.mark.parametrize("tie_mode, action_mode", MODES)
def test_random_actions_keep_the_invariant_and_the_accounting(tie_mode, action_mode, cache_dir):
    env = env_for(cache_dir, tie_mode, action_mode)

    @SETTINGS
    @given(actions=actions_for(action_mode), seed=st.integers(0, 3))
    def run(actions: list[Any], seed: int) -> None:
        _, info = env.reset(seed=seed)
        ties = tm.all_first(L)
        assert info["tie_map"] == list(ties)
        for action in actions:
            ties = expected_map(ties, action, info["layer"])
            step_action = np.asarray(action) if isinstance(action, tuple) else action
            _, reward, terminated, truncated, info = env.step(step_action)
            assert not terminated and not info["diverged"] and np.isfinite(reward)
            check_step(env.unwrapped, info, ties)
        assert truncated and info["decision"] == env.unwrapped.budget

    run()


@pytest.mark.parametrize("tie_mode, action_mode", MODES)
def test_saved_state_continues_exactly(tie_mode, action_mode, cache_dir):
    env = env_for(cache_dir, tie_mode, action_mode)
    other = env_for(cache_dir, tie_mode, action_mode, instance=1)

    @settings(max_examples=8, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(actions=actions_for(action_mode), data=st.data())
    def run(actions: list[Any], data: st.DataObject) -> None:
        split = data.draw(st.integers(0, len(actions) - 1), label="saved after step")

        def play(start: int, stop: int, e: gym.Env) -> list[tuple[Any, ...]]:
            out = []
            for action in actions[start:stop]:
                step_action = np.asarray(action) if isinstance(action, tuple) else action
                obs, reward, terminated, truncated, info = e.step(step_action)
                out.append((obs.tobytes(), reward, terminated, truncated, info["val_loss"],
                            info["tie_map"], info["memory_bytes"], info["train_steps"]))
            return out

        env.reset(seed=1)
        straight = play(0, len(actions), env)
        weights = {k: v.clone() for k, v in env.unwrapped.model.net.state_dict().items()}
        env.reset(seed=1)
        first = play(0, split, env)
        tensors, meta = env.unwrapped.get_state()
        other.reset(seed=2)  # another episode entirely, then replaced by the saved one
        other.unwrapped.set_state(tensors, meta)
        assert first + play(split, len(actions), other) == straight
        restored = other.unwrapped.model.net.state_dict()
        assert all(torch.equal(restored[k], v) for k, v in weights.items())

    run()
