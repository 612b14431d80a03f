"""The published run, faithfully (issue 13): the `paper` shape, precision, the published
start state, the Q-learner's input, the data as published, the published metric, the
memory at the published shape and the Table 1 recipe. Offline, tiny, seeded."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import agents
import tying_env  # noqa: F401  (registers the env ids)
from agents.base import OneEpisode
from tying_env import ties as tm
from tying_env.data.corpus import load_corpus
from tying_env.data.tokenizer import TOKENIZERS_ENV, build_tokenizer
from tying_env.errors import DataUnavailableError, SettingError
from tying_env.memory import estimate_bytes
from tying_env.models import TiedModel, gpt2_config
from tying_env.presets import PRESETS, make_config, resolved_precision

TINY_ID = "LayerTying-GPT2-Tiny-v0"
# a few milliseconds per decision on one core
FAST = dict(n_layer=4, n_embd=16, n_head=2, seq_len=16, batch_size=4, eval_batches=1,
            steps_per_decision=1, max_sweeps=2)
TEXT = (" = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : <unk> Chronicles is a "
        "tactical role @-@ playing video game .\n The game began development in 2010 , "
        "carrying over a large portion of the work .\n") * 40


def make(cache_dir: Path, **overrides: Any) -> gym.Env:
    return gym.make(TINY_ID, cache_dir=cache_dir, **{**FAST, **overrides})


def untied_count(L: int, E: int, S: int, V: int) -> int:
    return V * E + S * E + 2 * E + L * (12 * E * E + 13 * E)


# ------------------------------------------------------------------ 1. the paper preset
def test_paper_preset_is_the_published_wikitext2_shape():
    cfg = make_config("paper")
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len, cfg.batch_size) == (
        48, 1600, 16, 256, 16)
    assert (cfg.lr, cfg.dropout, cfg.tokenizer, cfg.dataset, cfg.vocab_size) == (
        1e-4, 0.2, "gpt2", "wikitext-2-v1", 50257)
    twelve = make_config("paper-12")  # the published Shakespeare ablation's shape
    assert (twelve.n_layer, twelve.n_embd, twelve.n_head, twelve.seq_len) == (12, 1600, 16, 256)
    assert set(PRESETS["paper-12"]) == set(PRESETS["paper"])


def test_up_to_87_percent_fewer_trainable_parameters_is_4_roots_of_48():
    with torch.device("meta"):
        cfg = make_config("paper")
        model = TiedModel(gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len,
                                     cfg.vocab_size), ties=[12 * (i // 12) for i in range(48)])
    trainable, total = model.param_counts()
    assert total == untied_count(48, 1600, 256, 50257) == 1_556_382_400
    assert len(tm.roots(model.ties)) == 4
    assert round(1 - trainable / total, 3) == 0.869
    # at 12 layers (one root) the most is 75.2%
    assert round(1 - untied_count(1, 1600, 256, 50257) / untied_count(12, 1600, 256, 50257),
                 3) == 0.752


def test_a_presets_tokenizer_is_for_text_corpora_only():
    assert make_config("paper", dataset="synthetic").tokenizer is None
    assert make_config("paper", dataset="text", data_dir="x").tokenizer == "gpt2"
    with pytest.raises(SettingError, match="tokenizer='gpt2' cannot be used with dataset="):
        load_corpus("synthetic", tokenizer=make_config("paper", dataset="synthetic",
                                                       tokenizer="gpt2").tokenizer)


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("precision", "fp16", "auto, fp32, bf16-autocast, bf16"),
    ("initial_ties", "random", "first, none, frozen"),
    ("observation", "raw", "ties, choices"),
    ("dataset", "wikitext-2-raw", "wikitext-2-v1"),
])
def test_bad_new_settings_name_the_value_and_the_choices(name, value, allowed):
    with pytest.raises(SettingError) as exc:
        make_config("tiny", **{name: value})
    assert exc.value.argument == name
    assert f"{name}={value!r}" in str(exc.value) and allowed in str(exc.value)


def test_test_eval_every_must_be_a_non_negative_int():
    for bad in (-1, 1.5, True):
        with pytest.raises(SettingError, match="test_eval_every"):
            make_config("tiny", test_eval_every=bad)
    assert make_config("tiny", test_eval_every=3).test_eval_every == 3


def test_auto_precision_is_todays_behaviour():
    assert resolved_precision("auto", "cpu") == "fp32"
    assert resolved_precision("auto", torch.device("cuda")) == "bf16-autocast"
    assert resolved_precision("bf16", "cpu") == "bf16"
    with pytest.raises(SettingError, match="precision='fp16'"):
        resolved_precision("fp16", "cpu")


# ------------------------------------------------------------------ 2. memory estimates
def test_estimate_in_each_precision_by_hand():
    V, E, S, L, B = 50257, 1600, 256, 48, 16
    block = 12 * E * E + 13 * E
    P = V * E + S * E + 2 * E
    fp32 = estimate_bytes(make_config("paper", precision="fp32"), V, "cuda", tm.untied(L))
    auto = estimate_bytes(make_config("paper"), V, "cuda", tm.untied(L))
    bf16 = estimate_bytes(make_config("paper", precision="bf16"), V, "cuda", tm.untied(L))
    n = P + L * block
    tensors = 4 + 12 * L
    assert (fp32.params, fp32.grads, fp32.optimizer) == (4 * n, 4 * n, 8 * n + 4 * tensors)
    assert (bf16.params, bf16.grads, bf16.optimizer) == (2 * n, 2 * n, 4 * n + 4 * tensors)
    assert (auto.params, auto.grads, auto.optimizer) == (fp32.params, fp32.grads, fp32.optimizer)
    assert auto.activations == fp32.activations + 2 * (L * 12 * E * E + V * E)  # bf16 copies
    assert bf16.activations == 2 * B * S * L * 20 * E + 4 * 3 * B * S * V + 2 * B * S * V
    # the published start: every block held, only block 0 (and the embeddings) trainable
    frozen = estimate_bytes(make_config("paper", precision="bf16", initial_ties="frozen"), V,
                            "cuda")
    assert frozen.params == 2 * n and frozen.grads == 2 * (P + block)
    assert frozen.optimizer == 4 * (P + block) + 4 * (4 + 12)


# ------------------------------------------------------------------ 5. data as published
@pytest.fixture(scope="module")
def gpt2_like(tmp_path_factory) -> Path:
    """A folder of tokenizer folders with a small GPT-2-style BPE saved as `gpt2`
    (GPT-2's own files are not here, and tests never download)."""
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tokenizers")
    bpe = build_tokenizer("bpe", TEXT, vocab_size=300)
    PreTrainedTokenizerFast(tokenizer_object=bpe.tok, eos_token="<|endoftext|>").save_pretrained(
        root / "gpt2")
    return root


def test_wikitext2_with_unk_is_its_own_dataset(tmp_path, wikitext_dir, gpt2_like):
    folder = gpt2_like / "gpt2"
    corpus = load_corpus("wikitext-2-v1", data_dir=wikitext_dir, tokenizer=str(folder),
                         cache_dir=tmp_path)
    raw = load_corpus("wikitext-2", data_dir=wikitext_dir, tokenizer=str(folder),
                      cache_dir=tmp_path)
    assert corpus.name == "wikitext-2-v1" and raw.name == "wikitext-2"
    assert corpus.identity["name"] != raw.identity["name"]
    assert corpus.tokenizer.startswith("hf-dir:") and corpus.vocab_size == 300
    assert "<unk>" in (wikitext_dir / "train.txt").read_text()  # the shared text is v1


def test_wikitext2_v1_without_data_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    with pytest.raises(DataUnavailableError) as exc:
        load_corpus("wikitext-2-v1", cache_dir=tmp_path)
    assert "'wikitext-2-v1'" in str(exc.value) and "data_dir=FOLDER" in str(exc.value)


def test_gpt2_tokenizer_by_name_from_a_local_folder(monkeypatch, gpt2_like):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(TOKENIZERS_ENV, str(gpt2_like))
    tok = build_tokenizer("gpt2", TEXT)
    assert tok.name.startswith("hf-dir:") and str(gpt2_like / "gpt2") in tok.name
    assert tok.vocab_size == 300 and tok.decode(tok.encode(TEXT[:80])) == TEXT[:80]


def test_gpt2_tokenizer_missing_says_how_to_supply_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache
    monkeypatch.setenv(TOKENIZERS_ENV, str(tmp_path))  # holds no gpt2 folder
    with pytest.raises(SettingError) as exc:
        build_tokenizer("gpt2", TEXT)
    message = str(exc.value)
    assert exc.value.argument == "tokenizer" and "tokenizer='gpt2'" in message
    assert "save_pretrained" in message and TOKENIZERS_ENV in message


# ------------------------------------------------------------------ 4. the Q-learner's input
def test_info_keeps_the_raw_last_choice_per_layer(cache_dir):
    env = make(cache_dir, n_layer=5)
    _, info = env.reset(seed=0)
    assert info["choices"] == [0, 0, 0, 0, 0] and info["tie_map"] == [0, 0, 0, 0, 0]
    for action in (4, 1, 2, 4):  # 1 independent, 2 copies 1, 3 copies 2, 4 independent
        _, _, _, _, info = env.step(action)
    assert info["choices"] == [0, 1, 1, 2, 4]  # raw: what was chosen, as published
    assert info["tie_map"] == [0, 1, 1, 1, 4]  # resolved: 3 runs 2's root, 1
    _, _, _, _, info = env.step(0)  # layer 1 copies 0: layers 2 and 3 keep 1's weights
    assert info["tie_map"] == [0, 0, 2, 2, 4] and info["choices"] == [0, 0, 1, 2, 4]


def test_choices_in_vector_mode_and_from_an_untied_start(cache_dir):
    env = make(cache_dir, action_mode="vector", initial_ties="none")
    _, info = env.reset(seed=0)
    assert info["choices"] == [0, 1, 2, 3]
    _, _, _, _, info = env.step(np.array([0, 0, 1, 3]))
    assert info["choices"] == [0, 0, 1, 3] and info["tie_map"] == [0, 0, 0, 3]


def test_observation_can_hold_the_raw_choices(cache_dir):
    env = make(cache_dir, observation="choices")
    obs, info = env.reset(seed=0)
    for action in (1, 1, 2):
        obs, _, _, _, info = env.step(action)
    assert info["choices"] == [0, 1, 1, 2] and info["tie_map"] == [0, 1, 1, 1]
    assert obs[:4].tolist() == [0, 1, 1, 2]
    plain = make(cache_dir)
    plain.reset(seed=0)
    for action in (1, 1, 2):
        obs, _, _, _, info = plain.step(action)
    assert obs[:4].tolist() == info["tie_map"] == [0, 1, 1, 1]


@pytest.mark.parametrize(("state", "expected"), [
    ("choices", ([0, 1, 1, 2, 0], [0, 1, 1, 2, 4])),  # the default: raw, as published
    ("ties", ([0, 1, 1, 1, 0], [0, 1, 1, 1, 4])),
])
def test_the_qlearner_learns_from_its_state(cache_dir, state, expected):
    env = OneEpisode(make(cache_dir, n_layer=5, max_sweeps=1))
    agent = agents.make("qlearning", env, seed=0, **({} if state == "choices" else
                                                      {"state": state}))
    assert agent.cfg.state == state
    updates = []
    learn = agent.update

    def recorded(s: np.ndarray, layer: int, action: int, reward: float, s2: np.ndarray,
                 *rest: Any) -> float:
        updates.append((s.tolist(), s2.tolist()))
        return learn(s, layer, action, reward, s2, *rest)

    agent.update = recorded  # type: ignore[method-assign]
    obs, info = env.reset(seed=0)
    done = False
    for action in (4, 1, 2, 4):  # as in test_info_keeps_the_raw_last_choice_per_layer
        agent.act(obs, info)  # the state it acts on is the one it learns from
        next_obs, reward, terminated, truncated, info = env.step(action)
        agent.observe(obs, action, reward, next_obs, terminated, truncated, info)
        obs, done = next_obs, terminated or truncated
    assert done and updates[-1] == expected


def test_choices_and_tie_map_give_different_states(cache_dir):
    env = OneEpisode(make(cache_dir, n_layer=5))
    info = {"choices": [0, 0, 1, 1, 4], "tie_map": [0, 0, 2, 2, 4], "layer": 1, "sweep": 0}
    paper = agents.make("qlearning", env, seed=0)
    resolved = agents.make("qlearning", env, seed=0, state="ties")
    assert paper.state_of(info).tolist() == [0, 0, 1, 1, 4]
    assert resolved.state_of(info).tolist() == [0, 0, 2, 2, 4]
    assert agents.make("qlearning-plus", env, seed=0).cfg.state == "ties"
    with pytest.raises(ValueError, match="state='raw'.*allowed: choices, ties"):
        agents.make("qlearning", env, seed=0, state="raw")


def test_observe_needs_the_state_of_its_act(cache_dir):
    env = OneEpisode(make(cache_dir))
    agent = agents.make("qlearning", env, seed=0)
    obs, info = env.reset(seed=0)
    next_obs, reward, terminated, truncated, info = env.step(1)
    with pytest.raises(RuntimeError, match="act"):
        agent.observe(obs, 1, reward, next_obs, terminated, truncated, info)


# ------------------------------------------------------------------ 6. the published metric
def test_test_split_is_evaluated_after_each_sweep_and_the_best_kept(cache_dir):
    env = make(cache_dir, test_eval_every=1, max_sweeps=3, steps_per_decision=4)
    plain = make(cache_dir, max_sweeps=3, steps_per_decision=4)
    _, info = env.reset(seed=1)
    _, plain_info = plain.reset(seed=1)
    assert np.isnan(info["test_ppl"]) and np.isnan(info["best_test_ppl"])
    assert info["best_test_sweep"] == 0 and "test_ppl" not in plain_info
    seen = []
    for step in range(env.unwrapped.budget):
        _, _, _, _, info = env.step(1)
        _, _, _, _, plain_info = plain.step(1)
        assert info["val_loss"] == plain_info["val_loss"]  # evaluating changes no training
        if (step + 1) % 3 == 0:  # a sweep ended: the whole test split, now
            assert info["test_ppl"] == pytest.approx(env.unwrapped.evaluate_split("test"))
            seen.append(info["test_ppl"])
        elif seen:  # between sweeps: the last evaluation stands
            assert info["test_ppl"] == seen[-1]
        else:
            assert np.isnan(info["test_ppl"])
    assert info["best_test_ppl"] == min(seen)
    assert info["best_test_sweep"] == 1 + seen.index(min(seen))


def test_every_n_sweeps(cache_dir):
    env = make(cache_dir, test_eval_every=2, max_sweeps=3)
    env.reset(seed=0)
    sweeps = []
    for _ in range(env.unwrapped.budget):
        _, _, _, _, info = env.step(1)
        sweeps.append(info["best_test_sweep"])
    assert sweeps == [0] * 5 + [2] * 4  # evaluated when sweep 2 ends (decision 6) only


def test_result_json_labels_the_published_metric(tmp_path, cache_dir):
    from agents.runs.driver import run
    from agents.runs.spec import RunSpec

    spec = RunSpec(agent="qlearning", env_id=TINY_ID, env_kwargs={**FAST, "test_eval_every": 1},
                   seed=0, out=tmp_path / "run", cache_dir=cache_dir, progress=False)
    result = run(spec)
    assert result.best_test_ppl_selected_on == "test"
    assert result.best_test_ppl <= result.final_test_ppl + 1e-9
    assert result.best_test_sweep in (1, 2)
    assert any("selected on the test split" in note for note in result.notes)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["best_test_ppl"] == result.best_test_ppl
    plain = run(RunSpec(agent="qlearning", env_id=TINY_ID, env_kwargs=FAST, seed=0,
                        out=tmp_path / "plain", cache_dir=cache_dir, progress=False))
    assert plain.best_test_ppl is None  # not evaluated: not reported
    assert "best_test_ppl" not in json.loads((tmp_path / "plain" / "result.json").read_text())


# ------------------------------------------------------------------ 2. precision
def trained_env(cache_dir: Path, steps: int = 2, **overrides: Any) -> gym.Env:
    env = make(cache_dir, device="cpu", **overrides)
    env.reset(seed=0)
    for action in (1, 0)[:steps]:
        env.step(action)
    return env


@pytest.mark.parametrize(("precision", "dtype", "weight_bytes"), [
    ("fp32", torch.float32, 4), ("bf16-autocast", torch.float32, 4), ("bf16", torch.bfloat16, 2),
])
def test_precision_holds_weights_gradients_and_adamw_state_in_its_dtype(
        cache_dir, precision, dtype, weight_bytes):
    env = trained_env(cache_dir, precision=precision)
    base = env.unwrapped
    run = base.run
    params = run.model.trainable_parameters()
    assert run.precision == precision
    assert {p.dtype for p in run.model.net.parameters()} == {dtype}
    assert {p.grad.dtype for p in params} == {dtype}
    state = [run.optim.optimizer.state[p] for p in params]
    assert {s["exp_avg"].dtype for s in state} == {s["exp_avg_sq"].dtype for s in state} == {dtype}
    assert {s["step"].dtype for s in state} == {torch.float32}
    # the accounting is exact, and the estimate's static part is the same number
    trainable, _ = run.model.param_counts()
    mem = run.model.memory_bytes(run.optim.optimizer)
    assert mem.params == mem.grads == weight_bytes * trainable
    assert mem.optimizer == 2 * weight_bytes * trainable + 4 * len(params)
    est = estimate_bytes(base.cfg, base.corpus.vocab_size, "cpu", ties=run.model.ties)
    assert (est.params, est.grads, est.optimizer) == (mem.params, mem.grads, mem.optimizer)


def test_every_precision_starts_from_the_same_weights_and_computes_differently(cache_dir):
    envs = {p: make(cache_dir, precision=p) for p in ("fp32", "bf16-autocast", "bf16")}
    infos = {p: env.reset(seed=0)[1] for p, env in envs.items()}
    w = {p: env.unwrapped.model.block(0).mlp.c_fc.weight.detach() for p, env in envs.items()}
    assert torch.equal(w["fp32"], w["bf16-autocast"])
    assert torch.equal(w["fp32"].to(torch.bfloat16), w["bf16"])
    losses = {p: info["val_loss"] for p, info in infos.items()}
    assert losses["fp32"] != losses["bf16-autocast"] and losses["fp32"] != losses["bf16"]
    assert all(abs(v - losses["fp32"]) < 0.05 for v in losses.values())  # bf16 rounding only


def test_auto_precision_on_the_cpu_is_fp32(cache_dir):
    env = make(cache_dir, device="cpu")
    env.reset(seed=0)
    assert env.unwrapped.run.precision == "fp32"


# ------------------------------------------------------------------ 3. the published start
def test_frozen_start_keeps_each_blocks_own_init_frozen(cache_dir):
    env = make(cache_dir, initial_ties="frozen", dropout=0.0, steps_per_decision=2)
    _, info = env.reset(seed=0)
    run = env.unwrapped.run
    model = run.model
    assert info["tie_map"] == [0, 1, 2, 3] and info["frozen"] == [1, 2, 3]
    assert info["choices"] == [0, 0, 0, 0]  # what the published state says
    weights = {i: model.block(i).mlp.c_fc.weight.detach().clone() for i in range(4)}
    assert not any(torch.equal(weights[i], weights[j]) for i in range(4) for j in range(i))
    assert all(not p.requires_grad for i in (1, 2, 3) for p in model.block(i).parameters())
    trainable, total = model.param_counts()
    assert info["trainable_params"] == trainable == total - 3 * model.block_numel()
    assert info["memory_bytes"]["params"] == 4 * total  # frozen blocks are held

    _, _, _, _, info = env.step(0)  # layer 1 copies layer 0: its frozen block is freed
    assert info["tie_map"] == [0, 0, 2, 3] and info["frozen"] == [2, 3]
    assert info["changed"]
    for i in (2, 3):  # trained for two steps, and still their own init
        assert torch.equal(model.block(i).mlp.c_fc.weight, weights[i])
        assert all(p.grad is None and p not in run.optim.optimizer.state
                   for p in model.block(i).parameters())
    assert not torch.equal(model.block(0).mlp.c_fc.weight, weights[0])  # block 0 trains,
    assert model.block(0).mlp.c_fc.weight.grad is not None  # through the frozen blocks too

    _, _, _, _, info = env.step(2)  # layer 2 unties: it trains its own init from now on
    assert info["frozen"] == [3] and info["changed"] and info["tie_map"] == [0, 0, 2, 3]
    assert not torch.equal(model.block(2).mlp.c_fc.weight, weights[2])
    assert torch.equal(model.block(3).mlp.c_fc.weight, weights[3])
    mem = info["memory_bytes"]
    trainable, total = model.param_counts()
    assert mem["grads"] == 4 * trainable < mem["params"] == 4 * (total - model.block_numel())


def test_copying_a_frozen_block_runs_it_and_promotion_keeps_it_frozen():
    torch.manual_seed(0)
    model = TiedModel(gpt2_config(4, 16, 2, 8, 32), frozen=[1, 2, 3])
    w2 = model.block(2).mlp.c_fc.weight
    model.choose(3, 2)  # 3 runs 2's frozen block, as the published aliasing does
    assert model.ties == (0, 1, 2, 2) and model.block(3).mlp.c_fc.weight is w2
    assert model.frozen == (1, 2)
    model.choose(2, 0)  # 2 copies 0: 3 keeps the weights it ran, still frozen
    assert model.ties == (0, 1, 0, 3) and model.frozen == (1, 3)
    assert model.block(3).mlp.c_fc.weight is w2 and not w2.requires_grad
    model.untie(3)
    assert model.frozen == (1,) and w2.requires_grad
    with pytest.raises(ValueError, match="only roots can be frozen"):
        model.freeze([2])


# ------------------------------------------------------------------ exact resume
RESUME_CASES = {
    "published": dict(precision="bf16", initial_ties="frozen", observation="choices",
                      test_eval_every=1, reward="paper"),
    "autocast": dict(precision="bf16-autocast", initial_ties="frozen", dropout=0.5),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_new_options_resume_exactly(cache_dir, tmp_path, case):
    from tying_env import checkpoint as ckpt

    kwargs = dict(RESUME_CASES[case], max_sweeps=3, steps_per_decision=2)
    actions = [0, 2, 1, 1, 0, 3, 0, 2, 3]
    env = make(cache_dir, **kwargs)
    env.reset(seed=4)
    for a in actions[:4]:
        env.step(a)
    saved = env.unwrapped.get_state()
    ckpt.write_checkpoint(tmp_path, {"env": saved})  # bf16 tensors go through safetensors
    reference = [env.step(a) for a in actions[4:]]
    other = make(cache_dir, **kwargs)
    other.reset(seed=9)  # another episode entirely, replaced by the saved one
    _, info = other.unwrapped.set_state(*ckpt.read_checkpoint(tmp_path)["env"])
    assert info["frozen"] == saved[1]["run"]["frozen"] and info["choices"] == saved[1]["choices"]
    for a, (r_obs, r_reward, r_term, r_trunc, r_info) in zip(actions[4:], reference,
                                                             strict=True):
        o, reward, term, trunc, info = other.step(a)
        assert np.array_equal(o, r_obs) and reward == r_reward
        assert (term, trunc) == (r_term, r_trunc) and _same_with_nan(info, r_info)
    mine, theirs = (e.unwrapped.run.model.net.state_dict() for e in (env, other))
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def _same_with_nan(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal dicts where NaN equals NaN."""
    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (np.isnan(x) and np.isnan(y))
        return x == y

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


# ------------------------------------------------------------ 8. memory at the published shape
def test_memory_table_at_the_published_shape_checks_both_claims():
    from perf import memory as perf_memory

    rows = perf_memory.published_rows()  # built on the meta device, checked against the count
    by = {(r["precision"], r["roots"]): r for r in rows}
    assert {r for _, r in by} == {48, 12, 6, 4, 2, 1, "48 (47 frozen)"}
    four, two = by[("fp32", 4)], by[("fp32", 2)]
    assert round(four["fewer"], 3) == 0.869  # "up to 87% fewer trainable parameters"
    assert four["static_vs_same"] < 10 <= two["static_vs_same"]  # "up to 10x": 2 roots
    assert by[("bf16", 4)]["static_vs_fp32"] > 10 > by[("bf16", 4)]["static_vs_same"]
    assert max(r["total_vs_same"] for r in rows) < 2  # with activations: nowhere near 10x
    for precision, width in (("fp32", 4), ("bf16", 2)):
        untied, frozen = by[(precision, 48)], by[(precision, "48 (47 frozen)")]
        assert untied["params"] == width * 1_556_382_400 == frozen["params"]  # all held
        assert frozen["grads"] == by[(precision, 1)]["grads"]  # one block trains
    assert by[("bf16", 48)]["static"] * 2 == pytest.approx(by[("fp32", 48)]["static"], rel=1e-6)
    text = perf_memory.claims(rows)
    assert "86.9% fewer" in text and "2 roots or fewer" in text


# ------------------------------------------------------------------ 7. GPU cost model and recipe
def test_step_flops_is_6n_plus_attention_when_untied_and_less_when_copied():
    from perf.gpu import expected_run_cost, forward_flops, step_flops

    shape = dict(n_layer=48, n_embd=1600, seq_len=256, vocab_size=50257, batch_size=16)
    L, E, S, V, T = 48, 1600, 256, 50257, 16 * 256
    N = 12 * L * E * E + E * V  # the matrices
    assert step_flops(shape, None) == (6 * N + 12 * L * S * E) * T
    four = [12 * (i // 12) for i in range(48)]
    assert step_flops(shape, four) == step_flops(shape, None) - 44 * 24 * E * E * T
    assert step_flops(shape, four, "share") == step_flops(shape, None)
    cfg = make_config("paper", max_sweeps=2, reward="paper", test_eval_every=1)
    cost = expected_run_cost(cfg, 1000, step_seconds=0.5)
    assert cost["train_steps"] == 2 * 47 * 4 and cost["decisions"] == 2 * 47
    assert cost["eval_flops"] == forward_flops(shape, 2 * 47 * (4 + 1) * T) + 2 * forward_flops(
        shape, 1000)
    assert cost["seconds"] == pytest.approx(
        (cost["train_flops"] + cost["eval_flops"]) / (step_flops(shape, None) / 0.5))


def _table1_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "table1.py"
    spec = importlib.util.spec_from_file_location("table1", path)
    table1 = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = table1  # its dataclasses look their module up there
    spec.loader.exec_module(table1)
    return table1


def test_table1_baseline_budget_is_the_published_epochs_in_sweeps_of_about_one():
    table1 = _table1_module()
    # the paper's shape: 2.4 M tokens in blocks of 255 -> 9,411 blocks, 589 batches of 16
    b = table1.baseline_budget(2_400_000, seq_len=256, batch_size=16, n_layer=48)
    assert (b.blocks, b.steps_per_epoch, b.steps) == (9_411, 589, 58_900)
    assert (b.steps_per_decision, b.sweeps, b.run_steps) == (13, 97, 97 * 47 * 13)
    assert b.steps <= b.run_steps < b.steps + 47 * 13  # met, by less than one sweep more
    half = table1.baseline_budget(1000, seq_len=11, batch_size=4, n_layer=3, epochs=0.5)
    assert (half.blocks, half.steps_per_epoch, half.steps) == (100, 25, 13)
    assert (half.steps_per_decision, half.sweeps, half.run_steps) == (7, 1, 14)
    with pytest.raises(SettingError, match="baseline_epochs=0"):
        table1.baseline_budget(1000, seq_len=11, batch_size=4, n_layer=3, epochs=0)


def test_table1_reuses_a_finished_run_only_with_the_same_settings(tmp_path, monkeypatch):
    from agents.runs.result import RunResult

    table1 = _table1_module()
    planned, _ = table1.specs(tmp_path, smoke=True, seeds=(0,), rows=("qlearning-ours",),
                              progress=False)
    (name, spec), = planned
    ran = []
    monkeypatch.setattr(table1, "run", lambda s: ran.append(s) or "new result")
    recorded = {k: v for k, v in spec.env_kwargs.items() if k != "tie_semantics"}
    spec.folder.mkdir(parents=True)
    RunResult(agent="qlearning", seed=0, env_id=spec.env_id, env_kwargs=recorded,
              total_seconds=1.0).write(spec.folder)  # from before tie_semantics: ours
    assert table1.run_all(planned)[0][1].agent == "qlearning" and ran == []
    RunResult(agent="qlearning", seed=0, env_id=spec.env_id,
              env_kwargs={**spec.env_kwargs, "max_sweeps": 100},
              total_seconds=1.0).write(spec.folder)  # an older script's budget
    assert table1.run_all(planned) == [(name, "new result")]
    assert ran == [spec] and spec.overwrite and not spec.resume  # the old run moved aside


def test_table1_recipe_smoke_runs_the_published_protocol(tmp_path, cache_dir, capsys):
    table1 = _table1_module()
    out = tmp_path / "t1"
    argv = ["--smoke", "--seeds", "0", "1", "--out", str(out), "--cache-dir", str(cache_dir),
            "--no-progress"]
    assert table1.main(argv) == 0
    summary = json.loads((out / "table1.json").read_text())
    rows = summary["rows"]
    assert list(rows) == ["qlearning-published", "qlearning-ours", "vanilla"]
    # vanilla: 0.01 epochs of the synthetic train split (500,000 tokens) in blocks of 31
    budget = summary["baseline_budget"]
    assert (budget["blocks"], budget["steps_per_epoch"], budget["steps"]) == (16_129, 1_009, 11)
    assert (budget["steps_per_decision"], budget["sweeps"], budget["run_steps"]) == (4, 1, 12)
    semantics = {"qlearning-published": "published", "qlearning-ours": "ours",
                 "vanilla": "ours"}
    for name, row in rows.items():
        assert row["seeds"] == [0, 1] and row["best_test_ppl"]["n"] == 2
        assert row["tie_semantics"] == semantics[name] and row["reproduces"].startswith("smoke")
        result = json.loads((out / f"{name}-s1" / "result.json").read_text())
        cfg = result["env_kwargs"]
        assert (cfg["precision"], cfg["reward"], cfg["test_eval_every"]) == ("bf16", "paper", 1)
        assert cfg["tie_semantics"] == semantics[name]
        assert cfg["initial_ties"] == ("none" if name == "vanilla" else "frozen")
        assert result["best_test_ppl_selected_on"] == "test" and result["finished"]
        steps = budget["run_steps"] if name == "vanilla" else 1 * 3 * 4  # 1 sweep, 3 x 4
        assert result["train_steps"] == steps == row["train_steps"]["mean"]
    assert "published Q-learning run" in rows["qlearning-published"]["reproduces"]
    assert "reproduces nothing published" in rows["qlearning-ours"]["reproduces"]
    assert "`train.py --gpt`, 100 epochs" in rows["vanilla"]["reproduces"]
    assert rows["qlearning-published"]["published_trainable_fraction"]["n"] == 2
    assert rows["qlearning-ours"]["published_trainable_fraction"]["n"] == 0  # not recorded
    assert rows["vanilla"]["trainable_fraction"]["mean"] == 1.0
    assert rows["vanilla"]["blocks_stored"]["mean"] == 4
    text = (out / "table1.md").read_text()
    assert "best test ppl (selected on test)" in text and "what it reproduces" in text
    capsys.readouterr()
    assert table1.main(argv) == 0  # finished runs are skipped, not run again
    assert capsys.readouterr().err.count("finished, skipped") == 6
    assert table1.main(["--estimate"]) == 0
    printed = capsys.readouterr().out
    for name in rows:
        assert f"  {name}: " in printed
    assert "GiB" in printed and "all 9 runs" in printed and "reproduces:" in printed
    est = table1.estimate()
    assert est["runs"]["qlearning-published"]["train_steps"] == 300 * 47 * 4
    assert est["runs"]["vanilla"]["train_steps"] == est["budget"]["run_steps"]
    assert est["budget"]["steps"] == 100 * est["budget"]["steps_per_epoch"]
