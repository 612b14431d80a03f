"""Every model family (Llama, BERT, ViT; GPT-2 as the control) behaves as GPT-2 does.

For each family: the environment ids pass Gymnasium's and SB3's checkers; tied gradients
match a hand-built untied Hugging Face reference (`copy`: a root's own position only,
`share`: the sum over its positions); parameter counts and memory bytes match Hugging
Face's own counts and the analytic estimate; exports load into the family's class with the
same logits; runs are seeded and resume bit for bit; and every kind of agent runs on it.
Plus BERT's masking, ViT's accuracy and patch check, and bringing one's own HF config.
Causal BERT (the published BERT, `bert-causal`) runs the checks of the tying machinery
(gradients, counts, memory, export, resume); tests/test_published_families.py the rest.
All offline, on models a few thousand parameters large.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertLMHeadModel,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    ViTConfig,
    ViTForImageClassification,
)

import agents
import tying_env  # noqa: F401  (registers the ids)
from agents.base import OneEpisode
from tying_env import checkpoint as ckpt
from tying_env.errors import SettingError
from tying_env.export import load_compact, save_compact, save_expanded
from tying_env.memory import estimate_bytes
from tying_env.models import (
    TiedModel,
    bert_causal_config,
    bert_config,
    gpt2_config,
    llama_config,
    vit_config,
)
from tying_env.models.family import IGNORE, MaskedLM
from tying_env.presets import make_config

FAMILIES = ["gpt2", "llama", "bert", "vit"]
NEW_FAMILIES = ["llama", "bert", "vit"]
# the families with their own environment ids, and causal BERT (the published BERT, a
# preset of its own): it runs the cheap checks of the tying machinery too
TYING_FAMILIES = [*FAMILIES, "bert-causal"]
TINY_IDS = {"gpt2": "LayerTying-GPT2-Tiny-v0", "llama": "LayerTying-Llama-Tiny-v0",
            "bert": "LayerTying-BERT-Tiny-v0", "vit": "LayerTying-ViT-Tiny-v0",
            "bert-causal": "LayerTying-GPT2-Tiny-v0"}
TINY_PRESETS = {"bert-causal": "bert-causal-tiny"}  # for a family without an id of its own
# the non-tiny ids read WikiText or CIFAR-10 through the hub: only their settings are checked
FULL_IDS = {"llama": ("LayerTying-Llama-v0", "wikitext-2"),
            "bert": ("LayerTying-BERT-v0", "wikitext-2"),
            "vit": ("LayerTying-ViT-v0", "cifar10")}
# the tiny presets shrunk to a few milliseconds per decision
FAST = dict(n_layer=4, n_embd=16, n_head=2, seq_len=16, batch_size=4, eval_batches=1,
            steps_per_decision=1, max_sweeps=2, device="cpu", precision="fp32")
INFINITY_WARNING = "maximum value is infinity"

# each family's Hugging Face class and block list, written out here, not taken from the
# adapter (ViT's blocks moved from `vit.encoder.layer` to `vit.layers` in transformers 5)
HF = {"gpt2": (GPT2LMHeadModel, ("transformer.h",)),
      "llama": (LlamaForCausalLM, ("model.layers",)),
      "bert": (BertForMaskedLM, ("bert.encoder.layer",)),
      "vit": (ViTForImageClassification, ("vit.layers", "vit.encoder.layer")),
      "bert-causal": (BertLMHeadModel, ("bert.encoder.layer",))}

L = 4
WIDTH, HEADS, SEQ, VOCAB = 16, 2, 16, 50


def tiny_config(family: str, n_layer: int = L, dropout: float = 0.0):
    if family == "vit":
        return vit_config(n_layer, WIDTH, HEADS, (8, 8), channels=1, n_classes=10,
                          patch_size=2, dropout=dropout)
    build = {"gpt2": gpt2_config, "llama": llama_config, "bert": bert_config,
             "bert-causal": bert_causal_config}[family]
    return build(n_layer, WIDTH, HEADS, SEQ, VOCAB, dropout=dropout)


def make_model(family: str, ties=None, mode: str = "copy", seed: int = 0) -> TiedModel:
    torch.manual_seed(seed)
    return TiedModel(tiny_config(family), mode, ties=ties)


def hf_blocks(family: str, net: torch.nn.Module) -> torch.nn.ModuleList:
    for path in HF[family][1]:
        module: Any = net
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise AssertionError(f"no block list at {HF[family][1]}")


def examples(model: TiedModel, n: int = 4, seed: int = 1) -> np.ndarray:
    """Rows the family's task turns into a batch: token windows, or image rows + label."""
    rng = np.random.default_rng(seed)
    task = model.task
    if model.family.data_kind == "images":
        pixels = rng.integers(0, 256, (n, task.channels * task.height * task.width))
        labels = rng.integers(0, model.config.num_labels, (n, 1))
        return np.concatenate([pixels, labels], axis=1).astype(np.uint8)
    vocab = task.mask_id if isinstance(task, MaskedLM) else model.config.vocab_size
    return rng.integers(0, vocab, (n, SEQ + 1))


def batch(model: TiedModel, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = model.task.batch(examples(model, seed=seed), np.random.default_rng(seed))
    x = torch.from_numpy(np.ascontiguousarray(x))
    return (x.float() if x.is_floating_point() else x.long()), torch.from_numpy(y).long()


def reference_loss(model: TiedModel, ref: torch.nn.Module, x: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
    logits = ref(**{model.family.input_name: x}).logits
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=IGNORE)


def grads(block: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in block.parameters()]


def assert_all_close(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def make_env(cache_dir, family: str, **overrides: Any) -> gym.Env:
    preset = {"preset": TINY_PRESETS[family]} if family in TINY_PRESETS else {}
    return gym.make(TINY_IDS[family], cache_dir=cache_dir, **{**preset, **FAST, **overrides})


def data_of(env: gym.Env) -> Any:
    """What `estimate_bytes` takes: the vocabulary size (text) or the image set."""
    corpus = env.unwrapped.corpus
    return corpus if env.unwrapped.family.data_kind == "images" else corpus.vocab_size


# ------------------------------------------------------------------ the ids and the checkers
@pytest.mark.parametrize("action_mode", ["layer", "vector"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_ids_pass_gymnasium_and_sb3_checkers(cache_dir, family, action_mode):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make_env(cache_dir, family, action_mode=action_mode, n_layer=3, max_sweeps=3)
        assert env.unwrapped.cfg.family == family
        gym_check_env(env.unwrapped, skip_render_check=True)
        other = make_env(cache_dir, family, action_mode=action_mode, n_layer=3, max_sweeps=3)
        sb3_check_env(other.unwrapped, warn=True)
    others = [str(w.message) for w in caught if INFINITY_WARNING not in str(w.message)]
    assert not others, others


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_full_ids_are_registered_with_valid_settings(family):
    env_id, dataset = FULL_IDS[family]
    spec = gym.spec(env_id)
    assert spec.entry_point == tying_env.ENV_ENTRY_POINT
    for action_mode in ("layer", "vector"):
        cfg = make_config(**spec.kwargs, action_mode=action_mode)
        assert (cfg.family, cfg.dataset, cfg.n_layer, cfg.action_mode) == (
            family, dataset, 12, action_mode)
    tiny = make_config(**gym.spec(TINY_IDS[family]).kwargs)
    assert tiny.family == family and tiny.dataset in ("synthetic", "digits")


# ------------------------------------------------------------------ gradients
TIE_MAPS = [[0, 0, 2, 0], [0, 1, 1, 0]]


def positions(ties: list[int]) -> dict[int, list[int]]:
    """Each root and the positions that run it."""
    return {r: [i for i, t in enumerate(ties) if t == r] for r in sorted(set(ties))}


@pytest.mark.parametrize("ties", TIE_MAPS, ids=str)
@pytest.mark.parametrize("family", TYING_FAMILIES)
def test_copy_mode_root_gets_only_its_own_positions_gradient(family, ties):
    model = make_model(family, ties, "copy")
    x, y = batch(model)
    model.train()
    loss = model.loss(x, y)
    loss.backward()
    ref = model.to_hf().train()
    ref_blocks = model.family.block_list(ref)
    for i, r in enumerate(ties):
        if r != i:
            ref_blocks[i].requires_grad_(False)  # a tied position's weights get no gradient
    ref_loss = reference_loss(model, ref, x, y)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    for root in positions(ties):
        assert_all_close(grads(model.block(root)), grads(ref_blocks[root]))
    # the gradient still flows *through* tied positions, into the embeddings and below
    prefix = model.family.blocks_path(model.net) + "."
    ref_params = dict(ref.named_parameters())
    outside = [(n, p) for n, p in model.net.named_parameters() if not n.startswith(prefix)]
    assert outside
    for name, p in outside:
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-5, atol=1e-6)
    # the sum over a root's positions differs: the test tells the modes apart
    untied = model.to_hf().train()
    reference_loss(model, untied, x, y).backward()
    blocks = model.family.block_list(untied)
    for root, where in positions(ties).items():
        if len(where) > 1:
            summed = [sum(g) for g in zip(*(grads(blocks[i]) for i in where), strict=True)]
            assert any((g - s).abs().max() > 1e-4
                       for g, s in zip(grads(model.block(root)), summed, strict=True))


@pytest.mark.parametrize("ties", TIE_MAPS, ids=str)
@pytest.mark.parametrize("family", TYING_FAMILIES)
def test_share_mode_root_gets_the_sum_over_its_positions(family, ties):
    model = make_model(family, ties, "share")
    x, y = batch(model)
    model.train()
    loss = model.loss(x, y)
    loss.backward()
    ref = model.to_hf().train()
    ref_loss = reference_loss(model, ref, x, y)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    blocks = model.family.block_list(ref)
    for root, where in positions(ties).items():
        want = [sum(g) for g in zip(*(grads(blocks[i]) for i in where), strict=True)]
        assert_all_close(grads(model.block(root)), want)
        if len(where) > 1:  # differs from the root's own position's gradient
            assert any((w - own).abs().max() > 1e-4
                       for w, own in zip(want, grads(blocks[root]), strict=True))


# ------------------------------------------------------------------ counts and memory
@pytest.mark.parametrize("family", TYING_FAMILIES)
def test_untying_adds_hugging_faces_block_count(family):
    cls = HF[family][0]
    torch.manual_seed(0)
    hf = cls(tiny_config(family))
    hf_block = sum(p.numel() for p in hf_blocks(family, hf)[0].parameters())
    model = make_model(family, [0] * L)

    def trainable() -> int:
        return sum(p.numel() for p in model.trainable_parameters())

    start = trainable()
    assert model.param_counts() == (start, hf.num_parameters())
    for i in range(1, L):
        model.untie(i)
        assert trainable() == start + i * hf_block
    assert trainable() - start == (L - 1) * hf_block
    unique = {p.data_ptr(): p.numel() for p in hf.parameters()}  # tied embeddings once
    assert model.param_counts() == (hf.num_parameters(), hf.num_parameters())
    assert hf.num_parameters() == sum(unique.values())


@pytest.mark.parametrize("initial_ties", ["first", "frozen"])
@pytest.mark.parametrize("family", TYING_FAMILIES)
def test_memory_bytes_equal_the_estimate(cache_dir, family, initial_ties):
    env = make_env(cache_dir, family, initial_ties=initial_ties, max_sweeps=1)
    _, info = env.reset(seed=0)
    est = estimate_bytes(env.unwrapped.cfg, data_of(env), "cpu")  # the starting state
    assert info["memory_bytes"] == dict(params=est.params, grads=0, optimizer=0,
                                        total=est.params)  # no step yet: no grads, no state
    for action in (1, 1, 0):  # untie layer 1, copy it at layer 2, layer 3 copies layer 0
        _, _, _, _, info = env.step(action)
        est = estimate_bytes(env.unwrapped.cfg, data_of(env), "cpu", ties=info["tie_map"],
                             frozen=info["frozen"])
        assert info["memory_bytes"] == dict(params=est.params, grads=est.grads,
                                            optimizer=est.optimizer, total=est.static)
    assert info["tie_map"] == [0, 1, 1, 0]


# ------------------------------------------------------------------ export
@pytest.mark.parametrize("family", TYING_FAMILIES)
def test_exports_give_the_same_logits(tmp_path, family):
    model = make_model(family, [0, 0, 2, 2]).eval()
    x, _ = batch(model)
    save_expanded(model, tmp_path / "expanded")
    loaded = HF[family][0].from_pretrained(tmp_path / "expanded").eval()
    assert len(hf_blocks(family, loaded)) == L
    compact = load_compact(save_compact(model, tmp_path / "compact"))
    assert compact.ties == model.ties and compact.family is model.family
    with torch.no_grad():
        want = model(x)
        got = loaded(**{model.family.input_name: x}).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(compact(x), want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ determinism and resume
ACTIONS = [1, 0, 2, 0, 1, 3]  # two sweeps of layers 1..3


def play(env: gym.Env, actions: list[int]) -> list[tuple[float, float, bytes]]:
    out = []
    for action in actions:
        obs, _, _, _, info = env.step(action)
        out.append((info["val_ppl"], info["train_loss"], obs.tobytes()))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_numbers_other_seed_others(cache_dir, family):
    def run(seed: int) -> list[tuple[float, float, bytes]]:
        env = make_env(cache_dir, family)
        env.reset(seed=seed)
        return play(env, ACTIONS)

    first = run(3)
    assert first == run(3)
    assert [v for v, _, _ in first] != [v for v, _, _ in run(4)]
    assert [t for _, t, _ in first] != [t for _, t, _ in run(4)]


@pytest.mark.parametrize("family", TYING_FAMILIES)
def test_saved_state_continues_bit_for_bit(cache_dir, family):
    env = make_env(cache_dir, family)
    env.reset(seed=1)
    straight = play(env, ACTIONS)
    env.reset(seed=1)
    head = play(env, ACTIONS[:3])
    tensors, meta = env.unwrapped.get_state()
    other = make_env(cache_dir, family)
    other.reset(seed=2)  # another episode, then replaced by the saved one
    other.unwrapped.set_state(tensors, meta)
    assert head + play(other, ACTIONS[3:]) == straight


@pytest.mark.parametrize("own_config", [False, True], ids=["preset", "own-config"])
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_a_checkpoint_folder_resumes(cache_dir, tmp_path, family, own_config):
    """Through the files a run's checkpoint is (JSON metadata), not only in memory."""
    if own_config:
        config, dataset = BYO[family]
        kwargs = dict(hf_config=config, dataset=dataset, batch_size=4, eval_batches=1,
                      steps_per_decision=1, device="cpu", max_sweeps=2)
        env_id = "LayerTying-GPT2-Tiny-v0"
    else:
        kwargs, env_id = FAST, TINY_IDS[family]
    env = gym.make(env_id, cache_dir=cache_dir, **kwargs)
    env.reset(seed=1)
    straight = play(env, [1, 0, 1, 0])
    env.reset(seed=1)
    head = play(env, [1, 0])
    ckpt.write_checkpoint(tmp_path, {"env": env.unwrapped.get_state()})
    tensors, meta = ckpt.read_checkpoint(tmp_path)["env"]
    other = gym.make(env_id, cache_dir=cache_dir, **kwargs)
    other.reset(seed=2)
    other.unwrapped.set_state(tensors, meta)
    assert head + play(other, [1, 0]) == straight


# ------------------------------------------------------------------ BERT and ViT specifics
def test_bert_masks(cache_dir):
    env = make_env(cache_dir, "bert")
    env.reset(seed=0)
    u = env.unwrapped
    run, corpus = u.run, u.corpus
    task = run.model.task
    assert task.mask_id == corpus.vocab_size == run.model.config.vocab_size - 1
    for split in (corpus.train, corpus.valid, corpus.test):
        assert int(np.max(split)) < task.mask_id  # the corpus never holds [MASK]
    # evaluation masks are fixed: the same loss every time, whatever the batch size
    loss = run.evaluate_loss(u.eval_windows)
    assert run.evaluate_loss(u.eval_windows) == loss
    assert run.evaluate_loss(u.eval_windows, batch_size=1) == pytest.approx(loss, rel=1e-6)
    windows = u.split_windows("valid")
    x1, y1 = task.batch(windows, None)
    x2, y2 = task.batch(windows, None)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # training masks follow the generator
    x3, y3 = task.batch(windows, np.random.default_rng(0))
    assert not np.array_equal(y1, y3)
    # 15% of the tokens are targets: 80% [MASK], 10% a random corpus id, 10% kept
    tokens = windows[:, :-1]
    for x, y in ((x1, y1), (x3, y3)):
        chosen = y != IGNORE
        assert chosen.mean() == pytest.approx(0.15, abs=0.01)
        assert np.array_equal(y[chosen], tokens[chosen])
        assert np.array_equal(x[~chosen], tokens[~chosen])  # the rest is left alone
        masked = chosen & (x == task.mask_id)
        swapped = chosen & (x != task.mask_id) & (x != tokens)
        assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.02)
        assert swapped.sum() / chosen.sum() == pytest.approx(0.1 * 63 / 64, abs=0.02)
        assert x.max() <= task.mask_id and x[swapped].max() < task.mask_id
    # random replacements never draw [MASK]: with one corpus id (0) and [MASK] = 1, exactly
    # the 80% are 1 (a draw over [0, mask_id] would add a third of the random 10%)
    ones = MaskedLM(mask_id=1)
    x, y = ones.batch(np.zeros((2000, 101), np.int64), np.random.default_rng(0))
    chosen = y != IGNORE
    assert (x[chosen] == 1).mean() == pytest.approx(0.8, abs=0.01)
    assert (x[~chosen] == 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_says_what_the_task_has(cache_dir, family):
    """`evaluate(split)`: one value with the loss, its perplexity, the accuracy for image
    classification only, the source's optimum for causal LMs on the synthetic corpus only,
    and the model's outputs per prediction."""
    env = make_env(cache_dir, family).unwrapped
    env.reset(seed=0)
    for split in ("valid", "test"):
        result = env.evaluate(split)
        assert result.split == split and result.perplexity == math.exp(result.loss)
        assert result.perplexity == env.evaluate_split(split)
        assert (result.accuracy is not None) == (family == "vit")
        assert (result.optimal_ppl is not None) == (family in ("gpt2", "llama"))
        if result.optimal_ppl is not None:
            assert result.optimal_ppl == env.corpus.source.optimal_ppl(env.split_windows(split))
        head = env.model.net.get_output_embeddings()
        outputs = env.model.net.config.num_labels if family == "vit" else head.out_features
        assert result.n_outputs == outputs


def test_vit_accuracy_and_patch_size(cache_dir):
    env = make_env(cache_dir, "vit")
    _, info = env.reset(seed=0)
    infos = [info] + [env.step(a)[4] for a in (1, 0)]
    for info in infos:
        assert 0.0 <= info["val_accuracy"] <= 1.0
        assert info["val_ppl"] > 1.0
    assert "optimal_ppl" not in infos[0]
    for kwargs in (dict(patch_size=3),
                   dict(hf_config=vit_config(3, 16, 2, (8, 8), 1, 10, patch_size=3))):
        with pytest.raises(SettingError) as exc:
            make_env(cache_dir, "vit", **{**kwargs, "n_layer": 3})
        assert exc.value.argument == "patch_size"


# ------------------------------------------------------------------ bring your own config
def test_a_config_object_or_dict_makes_its_family(cache_dir):
    config = llama_config(3, 16, 2, 16, 64)
    for given in (config, config.to_dict()):
        env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, hf_config=given,
                       eval_batches=1, batch_size=4, steps_per_decision=1, device="cpu")
        cfg = env.unwrapped.cfg
        assert (cfg.family, cfg.n_layer, cfg.n_embd, cfg.n_head) == ("llama", 3, 16, 2)
        assert cfg.hf_config["model_type"] == "llama"
        env.reset(seed=0)
        _, _, _, _, info = env.step(1)
        model = env.unwrapped.model
        assert isinstance(model.net, LlamaForCausalLM) and len(info["tie_map"]) == 3
        assert model.config.vocab_size == env.unwrapped.corpus.vocab_size


BYO = {  # shapes the presets do not make: grouped-query attention and an untied LM head,
    # BERT with its own MLP width and context, ViT in 4x4 patches
    "llama": (LlamaConfig(vocab_size=10, hidden_size=32, intermediate_size=40,
                          num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=16, tie_word_embeddings=False), "synthetic"),
    "bert": (BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=24,
                        max_position_embeddings=32), "synthetic"),
    "vit": (ViTConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                      intermediate_size=24, image_size=8, patch_size=4, num_channels=1),
            "digits"),
}


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_own_configs_train_and_are_counted_exactly(cache_dir, family):
    config, dataset = BYO[family]
    env = gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, hf_config=config.to_dict(),
                   dataset=dataset, batch_size=4, eval_batches=1, steps_per_decision=1,
                   device="cpu", precision="fp32")
    u = env.unwrapped
    assert (u.cfg.family, u.cfg.n_layer, u.cfg.n_embd) == (family, 3, config.hidden_size)
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    model = u.model
    assert isinstance(model.net, HF[family][0])
    if family == "vit":  # the data sets the classes, the config the patches
        assert (model.config.num_labels, model.config.patch_size) == (u.corpus.n_classes, 4)
    else:  # the data sets the vocabulary (BERT: one more, its [MASK])
        assert model.config.vocab_size == u.corpus.vocab_size + (family == "bert")
    if family == "llama":
        assert model.config.num_key_value_heads == 2 and not model.config.tie_word_embeddings
    est = estimate_bytes(u.cfg, data_of(env), "cpu", ties=info["tie_map"],
                         frozen=info["frozen"])
    assert info["memory_bytes"] == dict(params=est.params, grads=est.grads,
                                        optimizer=est.optimizer, total=est.static)
    hf = HF[family][0](model.config)
    assert info["total_params"] == model.param_counts()[1] == hf.num_parameters()


@pytest.mark.parametrize("geometry", [dict(image_size=16, num_channels=1),
                                      dict(image_size=8, num_channels=3)],
                         ids=["16x16", "3-channels"])
def test_an_own_vit_config_for_other_images_is_refused_or_fitted(cache_dir, geometry):
    """The digits are 1x8x8: a config for other images is refused up front with a
    `SettingError` (as a wrong `patch_size` is), or fitted to the data as its classes are;
    it never crashes later, in `reset`."""
    config = ViTConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                       intermediate_size=24, patch_size=4, **geometry)
    try:
        env = make_env(cache_dir, "vit", hf_config=config, n_layer=3)
    except SettingError as e:
        assert e.argument in ("hf_config", "dataset")
        return
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert 0.0 <= info["val_accuracy"] <= 1.0


def test_a_contradicting_n_layer_is_refused(cache_dir):
    config = llama_config(3, 16, 2, 16, 64)
    make_config(hf_config=config, n_layer=3)  # agreeing is fine
    for given in (config, config.to_dict()):
        with pytest.raises(SettingError) as exc:
            gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, hf_config=given,
                     n_layer=4)
        assert exc.value.argument == "n_layer"
        assert "n_layer=4" in str(exc.value) and "n_layer=3" in str(exc.value)


@pytest.mark.parametrize("given", [T5Config(), {"model_type": "t5", "d_model": 16}],
                         ids=["object", "dict"])
def test_an_unsupported_config_names_the_families_and_the_adapter(cache_dir, given):
    with pytest.raises(SettingError) as exc:
        gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, hf_config=given)
    message = str(exc.value)
    assert exc.value.argument == "hf_config"
    assert "t5" in message
    for family in FAMILIES:
        assert f"{family}" in message
    assert "adapter" in message and "block list" in message and "task" in message


def test_family_and_dataset_must_agree(cache_dir):
    with pytest.raises(SettingError) as exc:
        gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, family="vit")
    assert exc.value.argument == "dataset" and "synthetic" in str(exc.value)
    with pytest.raises(SettingError) as exc:
        gym.make("LayerTying-ViT-Tiny-v0", cache_dir=cache_dir, dataset="synthetic")
    assert exc.value.argument == "dataset"
    with pytest.raises(SettingError) as exc:
        gym.make("LayerTying-BERT-Tiny-v0", cache_dir=cache_dir, dataset="digits")
    assert exc.value.argument == "dataset"
    with pytest.raises(SettingError) as exc:
        gym.make("LayerTying-GPT2-Tiny-v0", cache_dir=cache_dir, family="t5")
    assert exc.value.argument == "family"


# ------------------------------------------------------------------ agents
AGENTS = {"qlearning": {}, "albert": {}, "vanilla": {}, "random": {},
          "maskable-ppo": dict(n_steps=3, batch_size=3, n_epochs=1)}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kind_of_agent_runs_an_episode(cache_dir, family):
    for name, hparams in AGENTS.items():
        env = OneEpisode(make_env(cache_dir, family, max_sweeps=1,
                                  **agents.env_settings(name)))
        agent = agents.make(name, env, seed=0, **hparams)
        agent.run()
        u = env.unwrapped
        assert env.finished, name
        assert u.decision == u.budget == 3 and u.run.optim.steps == 3, name
        if name == "albert":
            assert u.model.ties == (0, 0, 0, 0)
        if name == "vanilla":
            assert u.model.ties == (0, 1, 2, 3)
    assert agent.model.num_timesteps == 3  # the SB3 agent, last


def test_the_settings_know_every_family_and_its_data():
    """`tying_env.presets` stays light (no transformers import), so it names the families
    and their data kind itself: it must say what the adapters say."""
    from tying_env.models import FAMILIES
    from tying_env.presets import FAMILY_DATA

    assert FAMILY_DATA == {name: family.data_kind for name, family in FAMILIES.items()}
