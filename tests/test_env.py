"""The Gymnasium environment: API conformance, determinism, rewards, accounting."""

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import tying_env  # noqa: F401  (registers the ids)
from tying_env import ties as tm

FAST = dict(n_layer=4, max_sweeps=2, eval_batches=1, steps_per_decision=2)


def make(cache_dir, env_id="LayerTying-GPT2-Tiny-v0", **kwargs):
    return gym.make(env_id, cache_dir=cache_dir, **{**FAST, **kwargs})


@pytest.mark.parametrize("action_mode", ["layer", "vector"])
def test_tiny_passes_gymnasium_and_sb3_checkers(cache_dir, action_mode):
    env = make(cache_dir, action_mode=action_mode)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(make(cache_dir, action_mode=action_mode).unwrapped, warn=True)


# vector mode on WikiText-2 (15 s) is slow: the tiny env's checkers cover vector mode
@pytest.mark.parametrize("action_mode", ["layer", pytest.param("vector", marks=pytest.mark.slow)])
def test_gpt2_id_on_offline_wikitext_passes_checkers(cache_dir, wikitext_dir, action_mode):
    kwargs = dict(data_dir=str(wikitext_dir), action_mode=action_mode, n_layer=12,
                  steps_per_decision=1, eval_batches=1, batch_size=2, vocab_size=512)
    env = gym.make("LayerTying-GPT2-v0", cache_dir=cache_dir, **kwargs)
    assert env.unwrapped.cfg.preset == "small" and env.unwrapped.cfg.n_layer == 12
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)


def test_small_preset_runs_a_sweep_on_offline_wikitext(cache_dir, wikitext_dir):
    env = gym.make("LayerTying-GPT2-v0", cache_dir=cache_dir, data_dir=str(wikitext_dir),
                   max_sweeps=1, eval_batches=1, steps_per_decision=1)
    cfg = env.unwrapped.cfg
    assert (cfg.n_layer, cfg.n_embd, cfg.seq_len, cfg.dataset) == (12, 128, 128, "wikitext-2")
    obs, info = env.reset(seed=0)
    rewards, truncated = [], False
    while not truncated:
        action = int(env.unwrapped.layer)  # train every layer independently
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated
        rewards.append(reward)
    assert len(rewards) == 11 and info["sweep"] == 1
    assert info["tie_map"] == list(range(12))
    assert info["train_steps"] == 11 * cfg.steps_per_decision
    assert info["val_ppl"] < math.exp(env.unwrapped.start_val_loss)  # it learned something
    assert "optimal_ppl" not in info


def test_same_seed_same_actions_same_numbers(cache_dir):
    def run(seed):
        env = make(cache_dir)
        env.reset(seed=seed)
        rng = np.random.default_rng(123)
        ppl = []
        for _ in range(env.unwrapped.budget):
            mask = env.unwrapped.action_masks()
            _, _, _, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
            ppl.append(info["val_ppl"])
        return ppl, info["tie_map"]

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c


def test_log_ppl_reward_telescopes(cache_dir):
    env = make(cache_dir)
    _, info0 = env.reset(seed=1)
    total = 0.0
    for _ in range(env.unwrapped.budget):
        _, reward, _, _, info = env.step(0)
        total += reward
    assert total == pytest.approx(math.log(info0["val_ppl"] / info["val_ppl"]), rel=1e-9)


def test_ppl_delta_and_paper_rewards_and_penalty(cache_dir):
    env = make(cache_dir, reward="ppl_delta", param_penalty=0.5)
    _, info0 = env.reset(seed=2)
    _, reward, _, _, info = env.step(1)
    want = info0["val_ppl"] - info["val_ppl"] - 0.5 * info["trainable_fraction"]
    assert reward == pytest.approx(want, rel=1e-9)
    env = make(cache_dir, reward="paper")
    env.reset(seed=2)
    _, reward, _, _, info = env.step(1)
    assert reward < -1.0  # minus a perplexity


def test_layer_order_masks_and_truncation(cache_dir):
    env = make(cache_dir)
    _, info = env.reset(seed=0)
    layers, truncated = [], False
    while not truncated:
        layer = info["layer"]
        layers.append(layer)
        mask = env.unwrapped.action_masks()
        assert mask.tolist() == [j <= layer for j in range(4)]
        _, _, terminated, truncated, info = env.step(3)
        assert not terminated
    assert layers == [1, 2, 3, 1, 2, 3]
    assert info["sweep"] == 2 and info["tie_map"] == [0, 1, 2, 3]


def test_vector_mode_applies_whole_map(cache_dir):
    env = make(cache_dir, action_mode="vector")
    env.reset(seed=0)
    _, _, _, truncated, info = env.step(np.array([0, 0, 2, 1]))
    assert info["tie_map"] == [0, 0, 2, 0]  # entry 3 = 1 copies layer 1's root, layer 0
    assert info["train_steps"] == 3 * FAST["steps_per_decision"]
    assert not truncated
    _, _, _, truncated, _ = env.step(np.array([0, 1, 2, 3]))
    assert truncated


def test_observation_layout(cache_dir):
    env = make(cache_dir)
    obs, info = env.reset(seed=0)
    L = 4
    assert obs.shape == (2 * L + 3,)
    assert obs[:L].tolist() == [0, 0, 0, 0]  # initial_ties="first"
    assert obs[L:2 * L].tolist() == [0, 1, 0, 0]
    assert obs[2 * L] == 0.0
    assert obs[2 * L + 1] == pytest.approx(info["val_loss"], rel=1e-6)
    assert obs[2 * L + 2] == pytest.approx(info["trainable_fraction"], rel=1e-6)
    obs, *_ = env.step(1)
    assert obs[:L].tolist() == [0, 1, 0, 0] and obs[L + 2] == 1.0
    assert obs[2 * L] == pytest.approx(1 / env.unwrapped.budget)


def test_initial_ties_none_starts_untied(cache_dir):
    env = make(cache_dir, initial_ties="none")
    _, info = env.reset(seed=0)
    assert info["tie_map"] == [0, 1, 2, 3] and info["trainable_fraction"] == 1.0


def test_info_accounting_matches_recount(cache_dir):
    env = make(cache_dir)
    env.reset(seed=0)
    for action in (1, 1, 0, 1, 1, 1):
        _, _, _, _, info = env.step(action)
        model = env.unwrapped.model
        roots = tm.roots(info["tie_map"])
        block = model.block_numel()
        shared = sum(p.numel() for n, p in model.net.named_parameters()
                     if not n.startswith("transformer.h."))
        assert info["trainable_params"] == shared + len(roots) * block
        assert info["total_params"] == shared + 4 * block
        mem = info["memory_bytes"]
        assert mem["params"] == mem["grads"] == 4 * info["trainable_params"]
        n_tensors = len(env.unwrapped.run.optim.params)
        assert mem["optimizer"] == 2 * mem["params"] + 4 * n_tensors
        assert mem["total"] == mem["params"] + mem["grads"] + mem["optimizer"]


def test_divergence_terminates_with_flag(cache_dir):
    env = make(cache_dir, lr=1e6, grad_clip=1e9, initial_ties="none")
    env.reset(seed=0)
    for _ in range(env.unwrapped.budget):
        _, reward, terminated, truncated, info = env.step(1)
        if terminated:
            break
    assert terminated and info["diverged"] and reward == 0.0 and not truncated
    assert math.isfinite(info["val_loss"])
    with pytest.raises(RuntimeError, match="diverged"):
        env.step(1)


@pytest.mark.parametrize("action", [7, -1, 1.5, "a", None, True])
def test_bad_action_is_refused(cache_dir, action):
    env = make(cache_dir)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(action)


def test_env_rng_is_independent_of_caller(cache_dir):
    import torch

    def run(disturb):
        env = make(cache_dir, dropout=0.5)
        env.reset(seed=3)
        out = []
        for _ in range(3):
            if disturb:
                torch.rand(100)
                np.random.rand(10)
            out.append(env.step(1)[4]["val_ppl"])
        return out

    assert run(False) == run(True)


def test_synthetic_optimum_is_a_floor_and_is_approached(cache_dir):
    # 300 training steps (one sweep of 60 steps per decision: the same run as 30 sweeps of
    # 2 steps under an unchanging action, with 5 evaluations instead of 150)
    env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, initial_ties="none",
                   max_sweeps=1, steps_per_decision=60, eval_batches=8, dropout=0.0, lr=3e-3)
    _, info = env.reset(seed=0)
    optimal, start = info["optimal_ppl"], info["val_ppl"]
    truncated = False
    while not truncated:
        _, _, _, truncated, info = env.step(5)
    final = info["val_ppl"]
    assert final >= optimal
    # most of the gap from the untrained model to the source's optimum is closed
    assert (final - optimal) < 0.1 * (start - optimal), (start, final, optimal)
