"""`tie_semantics="published"` (issue 26): the published `apply_action` on a real model,
checked against the replay of `tying_env.published_ties`, with the published optimizer,
counts, memory accounting and exact resume; a bad value is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import tying_env  # noqa: F401  (registers the env ids)
from tying_env import checkpoint as ckpt
from tying_env import ties as tm
from tying_env.errors import SettingError
from tying_env.export import load_compact, save_compact
from tying_env.memory import estimate_bytes
from tying_env.models import PublishedModel, bert_config, gpt2_config, llama_config, vit_config
from tying_env.presets import make_config
from tying_env.published_ties import STARTS, PublishedTies
from tying_env.training import InnerOptimizer

TINY_ID = "LayerTying-GPT2-Tiny-v0"
FAST = dict(n_layer=4, n_embd=16, n_head=2, seq_len=16, batch_size=4, eval_batches=1,
            steps_per_decision=2, max_sweeps=3, tie_semantics="published")


def make(cache_dir: Path, **overrides: Any) -> gym.Env:
    return gym.make(TINY_ID, cache_dir=cache_dir, device="cpu", **{**FAST, **overrides})


def start_model(config: Any, start: str) -> PublishedModel:
    torch.manual_seed(0)
    layout = PublishedTies.start(config_layers(config), start)
    return PublishedModel(config, storage=layout.storage, trainable=layout.trainable)


def config_layers(config: Any) -> int:
    return getattr(config, "n_layer", None) or config.num_hidden_layers


def random_decisions(n_layer: int, sweeps: int, seed: int) -> list[tuple[int, int]]:
    """Uniform over {copy 0..i-1, independent}, some independent choices > i."""
    rng = np.random.default_rng(seed)
    return [(i, int(rng.integers(0, i + 2)) % n_layer) for _ in range(sweeps)
            for i in range(1, n_layer)]


def pointers(model: PublishedModel) -> list[tuple[int, ...]]:
    """Per position, the storage of every one of its parameters."""
    return [tuple(p.untyped_storage().data_ptr() for p in model.block(i).parameters())
            for i in range(model.n_layer)]


def same_partition(a: list, b: list) -> bool:
    return all((a[i] == a[k]) == (b[i] == b[k]) for i in range(len(a)) for k in range(len(a)))


def other_numel(model: PublishedModel) -> int:
    """Parameters outside the blocks (embeddings with the LM head once, final norm)."""
    return model.param_counts()[1] - model.n_layer * model.block_numel()


# ------------------------------------------------------------------ the mechanics
@pytest.mark.parametrize("start", STARTS)
def test_the_model_follows_the_published_replay(start: str) -> None:
    n_layer = 6
    for seed in range(3):
        model = start_model(gpt2_config(n_layer, 8, 2, 4, 11), start)
        oracle = PublishedTies.start(n_layer, start)
        block, other = model.block_numel(), other_numel(model)
        for step, (i, choice) in enumerate(random_decisions(n_layer, 6, seed)):
            model.choose(i, choice)
            oracle = oracle.choose(i, choice)
            where = f"seed {seed}, decision {step}: choose({i}, {choice})"
            ptrs = pointers(model)
            assert same_partition(ptrs, list(oracle.storage)), where
            assert same_partition([p[0] for p in ptrs], ptrs), where  # whole blocks alias
            assert model.distinct_storages == len(set(ptrs)) == oracle.distinct_storages, where
            flags = [[p.requires_grad for p in model.block(k).parameters()]
                     for k in range(n_layer)]
            assert [all(f) or any(f) for f in flags] == [all(f) for f in flags], where
            assert model.trainable == oracle.trainable == tuple(f[0] for f in flags), where
            assert model.published_trainable_params() == other + oracle.counted_params(block)
            assert model.param_counts()[0] == other + oracle.unique_params(block), where
            assert tm.validate(model.ties) == model.ties and same_partition(
                list(model.ties), list(oracle.storage)), where
            trained = {model.ties[k] for k in range(n_layer) if model.trainable[k]}
            assert model.frozen == tuple(r for r in tm.roots(model.ties) if r not in trained)


def test_a_copy_points_at_the_sources_storage_now_and_frees_the_old_one() -> None:
    model = start_model(gpt2_config(4, 8, 2, 4, 11), "none")
    w = [model.block(i).mlp.c_fc.weight for i in range(4)]
    old = w[2].untyped_storage().data_ptr()
    model.choose(2, 1)  # 2 copies 1
    model.choose(1, 0)  # 1 copies 0: 2 stays, frozen, on 1's old storage
    assert w[2].data_ptr() != w[1].data_ptr() == w[0].data_ptr() and w[2].data_ptr() != old
    assert model.ties == (0, 0, 2, 3) and model.trainable == (True, False, False, True)
    assert model.frozen == (2,)
    t = model.choose(2, 2)  # independent: trains 1's old tensor, no copy is made
    assert not t.changed and model.trainable[2] and model.frozen == ()
    assert model.distinct_storages == 3


def test_aliased_parameters_each_train_with_their_own_state_on_one_storage() -> None:
    """Positions 1 and 2 alias one storage and both train: each gets a gradient and AdamW
    moments of its own, and both updates land on the storage, one after the other."""
    torch.manual_seed(1)
    model = PublishedModel(gpt2_config(3, 8, 2, 6, 11))
    model.choose(2, 1)
    model.choose(2, 2)  # independent again: an alias of 1's storage, trainable
    p1, p2 = model.block(1).mlp.c_fc.weight, model.block(2).mlp.c_fc.weight
    assert p1 is not p2 and p1.data_ptr() == p2.data_ptr() and p1.requires_grad
    optim = InnerOptimizer(model.optimizer_parameters(), lr=1e-2, weight_decay=0.1,
                           aliased=True)
    assert len(optim.params) == len(list(model.net.parameters()))  # every Parameter
    before = p1.detach().clone()
    x = torch.randint(0, 11, (2, 6))
    optim.step(model.loss(x[:, :-1], x[:, 1:]))
    assert p1.grad is not None and p2.grad is not None and not torch.equal(p1.grad, p2.grad)
    assert p1 in optim.optimizer.state and p2 in optim.optimizer.state
    assert optim.optimizer.state[p1]["exp_avg"].data_ptr() != \
        optim.optimizer.state[p2]["exp_avg"].data_ptr()
    expected = before.clone()  # p1's update, then p2's, on one tensor, each a first step
    for grad in (p1.grad, p2.grad):
        q = torch.nn.Parameter(expected)
        q.grad = grad.clone()
        torch.optim.AdamW([q], lr=1e-2, weight_decay=0.1, foreach=False).step()
        expected = q.detach()
    assert torch.equal(p1.detach(), expected) and torch.equal(p2.detach(), expected)
    # state is never freed: a tied position keeps its moments, untouched, for later
    model.choose(2, 0)
    stale = optim.optimizer.state[p2]["exp_avg"].clone()
    optim.step(model.loss(x[:, :-1], x[:, 1:]))
    assert p2.grad is None and torch.equal(optim.optimizer.state[p2]["exp_avg"], stale)
    n_trainable = len(model.trainable_parameters())
    assert len(optim.optimizer.state) == n_trainable + len(list(model.block(2).parameters()))


def test_conversions_keep_the_aliasing() -> None:
    model = start_model(gpt2_config(4, 8, 2, 4, 11), "first")
    model.choose(3, 3)
    model.to(torch.bfloat16)
    assert model.distinct_storages == 1 and model.trainable == (True, False, False, True)
    assert len({p[0] for p in pointers(model)}) == 1
    assert model.block(3).attn.c_attn.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("family", ["llama", "bert", "vit"])
def test_other_families_tie_as_published(family: str) -> None:
    config = {"llama": lambda: llama_config(4, 16, 2, 8, 11),
              "bert": lambda: bert_config(4, 16, 2, 8, 11),
              "vit": lambda: vit_config(4, 16, 2, image_size=(8, 8), patch_size=4, channels=1,
                                        n_classes=3)}[family]()
    model = start_model(config, "frozen")
    oracle = PublishedTies.start(4, "frozen")
    for i, choice in [(2, 1), (1, 0), (3, 3), (2, 2), (3, 2)]:
        model.choose(i, choice)
        oracle = oracle.choose(i, choice)
    assert same_partition(pointers(model), list(oracle.storage))
    assert model.trainable == oracle.trainable
    x = (torch.randn(2, 1, 8, 8) if family == "vit" else torch.randint(0, 11, (2, 8)))
    y = torch.tensor([0, 2]) if family == "vit" else x
    model.loss(x, y).backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.block(2).parameters())


def test_exports_run_the_same_weights(tmp_path: Path) -> None:
    model = start_model(gpt2_config(4, 8, 2, 6, 11), "none")
    for i, choice in [(2, 1), (1, 0), (3, 1)]:
        model.choose(i, choice)
    model.eval()
    x = torch.randint(0, 11, (2, 6))
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(model.to_hf()(x).logits, logits)
        compact = load_compact(save_compact(model, tmp_path / "compact"))
        assert compact.ties == model.ties == (0, 0, 2, 0)
        assert torch.equal(compact(x), logits)


# ------------------------------------------------------------------ the environment
def test_random_decisions_collapse_the_storages_while_the_published_count_stays(
        cache_dir: Path) -> None:
    env = make(cache_dir, n_layer=6, steps_per_decision=1, max_sweeps=6,
               initial_ties="frozen").unwrapped
    _, info = env.reset(seed=0)
    assert info["distinct_storages"] == 6 and info["trainable_positions"] == [0]
    rng = np.random.default_rng(2)
    oracle = PublishedTies.start(6, "frozen")
    done = False
    while not done:
        layer = info["layer"]
        action = int(rng.integers(0, layer + 1))
        oracle = oracle.choose(layer, action)
        _, _, term, trunc, info = env.step(action)
        done = term or trunc
        assert info["distinct_storages"] == oracle.distinct_storages
        assert info["trainable_positions"] == [k for k, t in enumerate(oracle.trainable) if t]
    model = env.model
    block, other = model.block_numel(), other_numel(model)
    assert info["distinct_storages"] == 1 and info["tie_map"] == [0] * 6
    assert info["published_trainable_params"] == other + oracle.counted_params(block)
    assert info["trainable_params"] == other + block < info["published_trainable_params"]
    assert info["memory_bytes"]["params"] == 4 * (other + block)  # one block is stored


def test_memory_counts_each_storage_once_and_every_gradient_and_moment(
        cache_dir: Path) -> None:
    env = make(cache_dir, initial_ties="first").unwrapped
    env.reset(seed=0)
    for layer in (1, 2, 3):  # every position made trainable, all on block 0's storage
        _, _, _, _, info = env.step(layer)
    model, optim = env.model, env.run.optim.optimizer
    block, other = model.block_numel(), other_numel(model)
    assert info["distinct_storages"] == 1 and info["trainable_positions"] == [0, 1, 2, 3]
    n_tensors = len(optim.state)
    assert n_tensors == len(model.trainable_parameters()) == len(list(model.net.parameters()))
    assert info["memory_bytes"] == dict(
        params=4 * (other + block), grads=4 * (other + 4 * block),
        optimizer=8 * (other + 4 * block) + 4 * n_tensors,
        total=4 * (other + block) + 12 * (other + 4 * block) + 4 * n_tensors)
    assert info["published_trainable_params"] == other + 4 * block
    assert info["trainable_params"] == other + block


@pytest.mark.parametrize("start", ["first", "none"])
def test_the_estimate_holds_at_the_start(cache_dir: Path, start: str) -> None:
    env = make(cache_dir, initial_ties=start)
    base = env.unwrapped
    est = estimate_bytes(base.cfg, base.corpus.vocab_size, base.device)
    env.reset(seed=0)
    _, _, _, _, info = env.step(0 if start == "first" else 1)  # keeps the starting state
    assert info["memory_bytes"] == dict(params=est.params, grads=est.grads,
                                        optimizer=est.optimizer, total=est.static)


@pytest.mark.parametrize("start", STARTS)
def test_both_semantics_start_from_the_same_model(cache_dir: Path, start: str) -> None:
    infos = []
    for semantics in ("ours", "published"):
        env = make(cache_dir, tie_semantics=semantics, initial_ties=start).unwrapped
        _, info = env.reset(seed=3)
        infos.append(info)
    ours, published = infos
    for key in ("tie_map", "val_loss", "trainable_params", "total_params", "memory_bytes",
                "frozen"):
        assert ours[key] == published[key], key


def test_a_flag_alone_is_a_change(cache_dir: Path) -> None:
    env = make(cache_dir, initial_ties="first").unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)  # copies 0 again: nothing changes
    assert not info["changed"]
    _, _, _, _, info = env.step(2)  # 2 trains block 0's storage: same storages, a new flag
    assert info["changed"] and info["tie_map"] == [0, 0, 0, 0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_saved_episode_continues_bit_for_bit(cache_dir: Path, tmp_path: Path,
                                               precision: str) -> None:
    """Aliasing, flags and every Parameter's AdamW state (stale included) come back from a
    checkpoint folder; the continuation equals the uninterrupted episode exactly."""
    kwargs = dict(precision=precision, initial_ties="frozen", dropout=0.2)
    actions = [1, 1, 3, 0, 2, 1, 0, 2, 3]  # aliasing untie, a re-tied root, stale state
    env = make(cache_dir, **kwargs)
    env.reset(seed=4)
    for a in actions[:5]:
        env.step(a)
    saved = env.unwrapped.get_state()
    ckpt.write_checkpoint(tmp_path, {"env": saved})
    reference = [env.step(a) for a in actions[5:]]
    other = make(cache_dir, **kwargs)
    other.reset(seed=9)  # another episode entirely, replaced by the saved one
    _, info = other.unwrapped.set_state(*ckpt.read_checkpoint(tmp_path)["env"])
    mine, theirs = env.unwrapped.model, other.unwrapped.model
    flags = saved[1]["run"]["published"]["trainable"]
    assert theirs.trainable == tuple(flags) and list(theirs.ties) == saved[1]["run"]["tie_map"]
    assert info["trainable_positions"] == [k for k, t in enumerate(flags) if t]
    for (o, r, term, trunc, i), a in zip(reference, actions[5:], strict=True):
        o2, r2, term2, trunc2, i2 = other.step(a)
        assert np.array_equal(o, o2) and r == r2 and (term, trunc) == (term2, trunc2)
        assert json.dumps(i, sort_keys=True) == json.dumps(i2, sort_keys=True)
    assert same_partition(pointers(mine), pointers(theirs))
    a_sd, b_sd = mine.net.state_dict(), theirs.net.state_dict()
    assert all(torch.equal(a_sd[k], b_sd[k]) for k in a_sd)
    a_opt, b_opt = (e.unwrapped.run.optim.optimizer for e in (env, other))
    a_params, b_params = (e.unwrapped.run.optim.params for e in (env, other))
    assert [p in a_opt.state for p in a_params] == [p in b_opt.state for p in b_params]
    for p, q in zip(a_params, b_params, strict=True):
        for key, value in a_opt.state.get(p, {}).items():
            assert torch.equal(value, b_opt.state[q][key]), key


def test_states_are_refused_across_semantics_and_older_ones_read_as_ours(
        cache_dir: Path) -> None:
    published, ours = make(cache_dir).unwrapped, make(cache_dir, tie_semantics="ours").unwrapped
    for env in (published, ours):
        env.reset(seed=0)
        env.step(1)
    tensors, meta = published.get_state()
    with pytest.raises(ckpt.CheckpointError, match="tie_semantics: 'ours' in this environment, "
                                                   "'published' in the saved state"):
        ours.set_state(tensors, meta)
    tensors, meta = ours.get_state()
    older = {**meta, "config": {k: v for k, v in meta["config"].items()
                                if k != "tie_semantics"}}  # saved before the setting existed
    _, info = ours.set_state(tensors, older)
    assert info["decision"] == 1
    with pytest.raises(ckpt.CheckpointError, match="tie_semantics"):
        published.set_state(tensors, older)


def test_the_published_count_reaches_the_result_and_the_model_card(cache_dir: Path,
                                                                   tmp_path: Path) -> None:
    from agents.runs.cli import main
    from agents.runs.result import read_result

    out = tmp_path / "run"
    kwargs = {k: v for k, v in FAST.items() if k != "max_sweeps"}
    assert main(["--agent", "random", "--env-kwargs", json.dumps(kwargs), "--max-sweeps", "2",
                 "--seed", "1", "--cache-dir", str(cache_dir), "--out", str(out),
                 "--no-progress"]) == 0
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    result = read_result(out)
    assert result.published_trainable_params == last["published_trainable_params"] > 0
    assert result.env_kwargs["tie_semantics"] == "published"
    card = (out / "model" / "README.md").read_text(encoding="utf-8")
    assert f"as the published code counts them | {last['published_trainable_params']:,} (" \
        in card
    assert "published_trainable_params" not in result.replace(
        published_trainable_params=None).to_json()  # written only when set


# ------------------------------------------------------------------ settings
def test_bad_semantics_are_refused_naming_the_value_and_the_choices() -> None:
    with pytest.raises(SettingError) as exc:
        make_config(tie_semantics="paper")
    assert exc.value.argument == "tie_semantics"
    assert "tie_semantics='paper'" in str(exc.value) and "ours, published" in str(exc.value)
    with pytest.raises(SettingError, match="tie_mode='share' does not apply") as exc:
        make_config(tie_semantics="published", tie_mode="share")
    assert exc.value.argument == "tie_mode"
    assert make_config().tie_semantics == "ours"
