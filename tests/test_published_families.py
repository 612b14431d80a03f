"""The families as published (issue 26): causal BERT, the `llama-2-7b` shape, the published
ViT (`vit-paper`: images resized on the model, `reward="paper-vit"`).

Offline and small: causal BERT and ViT run at a few thousand parameters (ViT on
scikit-learn's digits), the 7B and published-ViT shapes are only built on the `meta`
device or estimated, and `llama-2-7b` is refused before anything is allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertLMHeadModel, LlamaConfig

import tying_env  # noqa: F401  (registers the ids)
from tying_env import memory
from tying_env.data.images import CIFAR10_CLASSES, ImageSet
from tying_env.errors import ModelTooLargeError, SettingError
from tying_env.models import (
    DataShape,
    PublishedModel,
    TiedModel,
    as_config,
    bert_causal_config,
    bert_config,
    family_of,
    get_family,
)
from tying_env.presets import make_config
from tying_env.published_ties import OurTies, PublishedTies
from tying_env.training import build_model

GPT2_TINY = "LayerTying-GPT2-Tiny-v0"  # its dataset is the synthetic corpus
VIT_TINY = "LayerTying-ViT-Tiny-v0"  # scikit-learn's 8x8 digits
FAST = dict(n_layer=4, n_embd=16, n_head=2, seq_len=16, batch_size=4, eval_batches=1,
            steps_per_decision=1, max_sweeps=2, device="cpu", precision="fp32")
GiB = 2**30


# ------------------------------------------------------------------ causal BERT
@pytest.mark.parametrize("semantics", ["ours", "published"])
def test_causal_bert_never_looks_ahead_and_masked_bert_does(semantics: str) -> None:
    """A later token changes no earlier position's logits, tied or not, in either tie
    mechanics; the masked LM's bidirectional attention does (the check can fail)."""
    x = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))
    later = x.clone()
    later[:, 8] = (later[:, 8] + 1) % 50
    torch.manual_seed(0)
    config = bert_causal_config(4, 16, 2, 12, 50)
    model = (TiedModel(config, ties=[0, 0, 2, 2]) if semantics == "ours"
             else PublishedModel(config, storage=[0, 0, 2, 2]))
    assert isinstance(model.net, BertLMHeadModel) and model.family.task == "causal-lm"
    masked = TiedModel(bert_config(4, 16, 2, 12, 50), ties=[0, 0, 2, 2])
    with torch.no_grad():
        a, b = model.eval()(x), model(later)
        assert torch.equal(a[:, :8], b[:, :8])  # not a bit changes
        assert (a[:, 8:] - b[:, 8:]).abs().amax() > 1e-2
        m, n = masked.eval()(x), masked(later)
        assert (m[:, :8] - n[:, :8]).abs().amax() > 1e-5
    # trained as a causal LM: `window[:-1]` predicts `window[1:]`, no [MASK] id is added
    inputs, targets = model.task.batch(np.arange(13)[None], None)
    assert inputs.tolist() == [list(range(12))] and targets.tolist() == [list(range(1, 13))]
    assert model.config.vocab_size == 50


def test_bert_configs_find_their_family() -> None:
    """`is_decoder` tells the two BERTs apart; a causal BERT dict gets the flag, and one
    that contradicts it is refused naming `hf_config`."""
    assert family_of(BertConfig(is_decoder=True)).name == "bert-causal"
    assert family_of(BertConfig()).name == "bert"
    assert family_of({"model_type": "bert", "is_decoder": True}).name == "bert-causal"
    assert family_of({"model_type": "bert"}).name == "bert"
    assert as_config({"model_type": "bert-causal", "hidden_size": 16}).is_decoder is True
    with pytest.raises(SettingError) as exc:
        as_config({"model_type": "bert-causal", "is_decoder": False})
    assert exc.value.argument == "hf_config" and "is_decoder=True" in str(exc.value)
    cfg = make_config("tiny", hf_config=bert_causal_config(3, 16, 2, 16, 10))
    assert (cfg.family, cfg.hf_config["model_type"], cfg.n_layer) == ("bert-causal",
                                                                       "bert-causal", 3)
    with pytest.raises(SettingError) as exc:
        make_config("tiny", family="bert", hf_config=bert_causal_config(3, 16, 2, 16, 10))
    assert exc.value.argument == "family"


def test_causal_bert_trains_under_both_tie_mechanics(cache_dir: Path) -> None:
    """The `bert-causal-tiny` preset from the published frozen start: a causal LM on the
    synthetic corpus (so the source's optimum is reported) whose storages and flags follow
    the replay of either mechanics (`tying_env.published_ties`)."""
    actions = [1, 1, 2, 0, 2, 3]  # two sweeps of layers 1..3
    for semantics, oracle in (("ours", OurTies.start(4, "frozen")),
                              ("published", PublishedTies.start(4, "frozen"))):
        env = gym.make(GPT2_TINY, cache_dir=cache_dir, preset="bert-causal-tiny",
                       tie_semantics=semantics, initial_ties="frozen", **FAST)
        _, info = env.reset(seed=0)
        assert isinstance(env.unwrapped.model.net, BertLMHeadModel)
        assert info["optimal_ppl"] < info["val_ppl"]  # a causal LM's floor
        for step, action in enumerate(actions):
            _, reward, _, _, info = env.step(action)
            oracle = oracle.choose(step % 3 + 1, action)
            assert np.isfinite(reward) and np.isfinite(info["val_ppl"])
        if semantics == "published":
            assert info["distinct_storages"] == oracle.distinct_storages == 2
            assert info["trainable_positions"] == [i for i, t in enumerate(oracle.trainable)
                                                   if t] == [0, 2, 3]
        else:
            assert info["tie_map"] == list(oracle.storage) == [0, 0, 2, 3]
            assert info["frozen"] == sorted(oracle.frozen) == []


# ------------------------------------------------------------------ llama-2-7b
def test_llama_2_7b_is_llamas_default_shape_untied() -> None:
    """On the meta device: `LlamaConfig()`'s shape (Llama-2-7B's), an LM head of its own,
    GPT-2's vocabulary as the published `LlamaConfig(len(tokenizer))`."""
    cfg = make_config("llama-2-7b")
    with torch.device("meta"):
        model = build_model(cfg, cfg.vocab_size)
    got, default = model.config, LlamaConfig()
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "rms_norm_eps", "tie_word_embeddings",
                "attention_dropout"):
        assert getattr(got, key) == getattr(default, key), key
    assert got.vocab_size == 50257
    net = model.net
    assert net.lm_head.weight is not net.get_input_embeddings().weight
    total = model.param_counts()[1]
    assert total == 6_887_976_960  # docs/environment.md's untied count
    # Llama-2-7B's own count with its 32,000 tokens: 6.74 B
    assert total - 2 * (50257 - 32000) * 4096 == 6_738_415_616


def test_llama_2_7b_is_refused_before_its_model_is_built(monkeypatch, cache_dir: Path) -> None:
    def available_bytes(device: Any) -> int:
        return 16 * GiB  # a small machine

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a training run was started before the memory check")

    monkeypatch.setattr(memory, "available_bytes", available_bytes)
    monkeypatch.setattr("tying_env.env.TrainingRun", no_model)
    with pytest.raises(ModelTooLargeError) as exc:
        gym.make(GPT2_TINY, cache_dir=cache_dir, preset="llama-2-7b", device="cpu")
    err = exc.value
    assert err.argument == "preset"
    est = memory.estimate_bytes(make_config("llama-2-7b"), 50257, "cpu")
    for words in ("preset='llama-2-7b'", "n_layer=32", "n_embd=4096",
                  f"needs about {memory.format_bytes(est.total)}",
                  "cpu has 16.0 GiB available", "llama-tiny, llama-small",
                  "memory_check=False"):
        assert words in str(err), (words, str(err))
    doc = (Path(__file__).resolve().parents[1] / "docs" / "environment.md").read_text()
    frozen = memory.estimate_bytes(make_config("llama-2-7b", initial_ties="frozen"), 50257)
    assert (f"needs about {memory.format_bytes(est.total)} on the CPU at its start" in doc
            and f"{memory.format_bytes(frozen.total)} from the published" in doc)


def test_llama_2_7b_is_refused_on_this_machine_if_it_is_small() -> None:
    """The real check, with what this machine really has (the estimate allocates nothing:
    the model is counted on the meta device)."""
    cfg = make_config("llama-2-7b")
    est = memory.estimate_bytes(cfg, 50257, "cpu")
    available = memory.available_bytes("cpu")
    if available is None or available >= est.total:
        pytest.skip(f"this machine has {available} bytes, the estimate {est.total}")
    with pytest.raises(ModelTooLargeError):
        memory.check(cfg, 50257, "cpu")


# ------------------------------------------------------------------ the published ViT
def cifar_shaped(n: int = 10) -> ImageSet:
    """CIFAR-10's geometry (3 x 32 x 32, its 10 classes) in a few rows made here."""
    rows = np.random.default_rng(0).integers(0, 256, (n, 3 * 32 * 32 + 1)).astype(np.uint8)
    rows[:, -1] = np.arange(n) % 10
    return ImageSet("cifar10", rows, rows, rows, 3, 32, 32, CIFAR10_CLASSES)


def test_vit_paper_is_the_published_vit_at_224_px() -> None:
    cfg = make_config("vit-paper")
    assert (cfg.family, cfg.dataset, cfg.image_size, cfg.patch_size, cfg.batch_size,
            cfg.steps_per_decision) == ("vit", "cifar10", 224, 16, 20, 10)
    images = cifar_shaped()
    config = get_family("vit").make_config(cfg, DataShape(channels=3, height=32, width=32,
                                                          n_classes=10))
    assert (config.image_size, config.patch_size, config.hidden_size, config.num_hidden_layers,
            config.num_attention_heads, config.intermediate_size,
            config.hidden_dropout_prob) == (224, 16, 1600, 12, 16, 5120, 0.0)
    counts = memory.model_counts(cfg, images)
    assert counts.tokens == 14 * 14 + 1  # the patches of the resized image and [CLS]
    with torch.device("meta"):
        model = build_model(cfg, images)
    assert model.param_counts()[1] == 321_288_650  # docs/environment.md's untied count


def test_image_size_resizes_on_the_model(cache_dir: Path) -> None:
    """Digits (8 x 8) seen at 16 x 16: batches stay 8 x 8, the model resizes them as
    `F.interpolate` does before the plain Hugging Face model, and the memory estimate
    counts the resized image's patches."""
    env = gym.make(VIT_TINY, cache_dir=cache_dir, image_size=16, patch_size=4,
                   **{**FAST, "seq_len": 64})
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    u = env.unwrapped
    model = u.model
    assert model.config.image_size == 16
    x, _ = model.task.batch(u.corpus.valid[:3], None)
    assert x.shape == (3, 1, 8, 8)
    x = torch.from_numpy(x)
    with torch.no_grad():
        want = model.to_hf()(pixel_values=F.interpolate(x, size=(16, 16), mode="bilinear",
                                                        align_corners=False)).logits
        torch.testing.assert_close(model.eval()(x), want, rtol=0, atol=1e-5)
    est = memory.estimate_bytes(u.cfg, u.corpus, "cpu", ties=info["tie_map"],
                                frozen=info["frozen"])
    assert info["memory_bytes"]["params"] == est.params
    assert memory.model_counts(u.cfg, u.corpus).tokens == 4 * 4 + 1
    with pytest.raises(SettingError) as exc:  # the patches must divide the resized side
        gym.make(VIT_TINY, cache_dir=cache_dir, image_size=10, patch_size=4, **FAST)
    assert exc.value.argument == "patch_size" and "image_size=10" in str(exc.value)


def test_paper_vit_reward_is_minus_the_accuracy_of_a_training_batch(monkeypatch,
                                                                     cache_dir: Path) -> None:
    """The reward is minus the share of the last drawn training batch classified right,
    and choosing it changes nothing else: the batch is drawn as `reward="paper"` draws
    its own, so training goes on identically."""
    import tying_env.training as training

    drawn: list[np.ndarray] = []
    real = training.sample_windows

    def spy(*args: Any, **kwargs: Any) -> np.ndarray:
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(training, "sample_windows", spy)
    kwargs = {**FAST, "seq_len": 64, "batch_size": 8}
    runs = {}
    for reward in ("paper-vit", "paper"):
        env = gym.make(VIT_TINY, cache_dir=cache_dir, reward=reward, **kwargs)
        env.reset(seed=0)
        rewards, val = [], []
        for action in (1, 0, 3, 2):
            _, r, _, _, info = env.step(action)
            rewards.append(r)
            val.append(info["val_ppl"])
            if reward == "paper-vit":
                model = env.unwrapped.model.eval()
                x, y = model.task.batch(drawn[-1], None)
                with torch.no_grad():
                    right = (model(torch.from_numpy(x)).argmax(-1) == torch.from_numpy(y))
                assert r == -float(right.double().mean())
        runs[reward] = (rewards, val)
    rewards, val = runs["paper-vit"]
    assert all(-1.0 <= r <= 0.0 and (r * 8).is_integer() for r in rewards)
    assert val == runs["paper"][1]  # the same training whichever reward
    assert rewards != runs["paper"][0]


@pytest.mark.parametrize(("overrides", "argument"), [
    (dict(reward="paper-vit"), "reward"),
    (dict(image_size=32), "image_size"),
    (dict(preset="vit-tiny", tie_embeddings=False), "tie_embeddings"),
    (dict(hf_config=bert_causal_config(3, 16, 2, 16, 10), mlp_width=64), "mlp_width"),
    (dict(mlp_width=-1), "mlp_width"),
])
def test_settings_of_other_families_are_refused(overrides: dict[str, Any],
                                                argument: str) -> None:
    settings = {"preset": "tiny", **overrides}
    with pytest.raises(SettingError) as exc:
        make_config(**settings)
    assert exc.value.argument == argument
    name, value = next((k, v) for k, v in overrides.items() if k == argument)
    assert f"{name}={value!r}" in str(exc.value)
