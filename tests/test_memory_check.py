"""Impossible models are refused up front: the memory estimate, its honesty, the refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import tying_env  # noqa: F401  (registers the ids)
from agents.runs.cli import main
from tying_env import memory
from tying_env import ties as tm
from tying_env.env import LayerTyingEnv
from tying_env.errors import ModelTooLargeError, SettingError, SettingTypeError
from tying_env.memory import estimate_bytes, format_bytes
from tying_env.presets import make_config
from tying_env.training import build_model, initial_ties

TINY_ID = "LayerTying-GPT2-Tiny-v0"
GiB = 2**30
# the small preset's shape on the synthetic corpus (no data folder needed), cheap settings
SMALL_SHAPED = dict(preset="small", dataset="synthetic", eval_batches=1, steps_per_decision=1,
                    max_sweeps=1)
# (case id, keyword arguments of the environment)
SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("tiny", dict(preset="tiny")),
    ("tiny untied", dict(preset="tiny", initial_ties="none")),
    ("tiny share", dict(preset="tiny", tie_mode="share")),
    ("tiny no dropout", dict(preset="tiny", dropout=0.0)),
    ("tiny wide vocab", dict(preset="tiny", n_layer=2, vocab_size=4096)),
    ("small-shaped", SMALL_SHAPED),
]


def fake_memory(monkeypatch: pytest.MonkeyPatch, available: int | None) -> list[str]:
    """Pretend the device has `available` bytes; returns the devices asked about."""
    asked: list[str] = []

    def available_bytes(device: str | torch.device) -> int | None:
        asked.append(torch.device(device).type)
        return available

    monkeypatch.setattr(memory, "available_bytes", available_bytes)
    return asked


def first_step(env: gym.Env) -> dict[str, Any]:
    """One step that keeps the starting tie map (copy layer 0, or stay independent)."""
    base: LayerTyingEnv = env.unwrapped
    keep = base.run.model.ties[base.layer]
    _, _, _, _, info = env.step(keep if keep < base.layer else base.layer)
    assert base.run.model.ties == (tm.all_first(base.cfg.n_layer)
                                   if base.cfg.initial_ties == "first"
                                   else tm.untied(base.cfg.n_layer))
    return info


# ------------------------------------------------------------------ the estimate is honest
@pytest.mark.parametrize("kwargs", [k for _, k in SHAPES], ids=[n for n, _ in SHAPES])
def test_weights_part_equals_the_real_accounting(cache_dir: Path, kwargs: dict[str, Any]):
    env = gym.make(TINY_ID, cache_dir=cache_dir, device="cpu", **kwargs)
    base: LayerTyingEnv = env.unwrapped
    est = estimate_bytes(base.cfg, base.corpus.vocab_size, base.device)
    _, info = env.reset(seed=0)
    at_reset = info["memory_bytes"]  # no gradients, no optimizer state before the first step
    assert (at_reset["params"], at_reset["grads"], at_reset["optimizer"]) == (est.params, 0, 0)
    mem = first_step(env)["memory_bytes"]
    assert mem == dict(params=est.params, grads=est.grads, optimizer=est.optimizer,
                       total=est.static)
    print(f"{kwargs}: estimate {est.to_dict()}, info {mem}")


class PeakTracker(TorchDispatchMode):
    """The peak of the bytes held by tensors created inside the mode (forward, backward,
    optimizer): every op's outputs are counted once per storage, until that storage dies."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        return out


@pytest.mark.parametrize("kwargs", [k for _, k in SHAPES], ids=[n for n, _ in SHAPES])
def test_activation_estimate_bounds_a_measured_training_step(cache_dir: Path,
                                                            kwargs: dict[str, Any]):
    """`activations + grads` lies within [1, 2] times the measured peak of one step.

    Measured on the CPU (float32): every tensor the step creates is counted while it lives;
    the parameters and the optimizer state exist before (a first step made them).
    """
    torch.manual_seed(0)
    env = gym.make(TINY_ID, cache_dir=cache_dir, device="cpu", **kwargs)
    base: LayerTyingEnv = env.unwrapped
    env.reset(seed=0)
    first_step(env)
    tracker = PeakTracker()
    with tracker:
        base.run.train(1)
    est = estimate_bytes(base.cfg, base.corpus.vocab_size, "cpu")
    bound = est.activations + est.grads
    print(f"{kwargs}: measured peak {format_bytes(tracker.peak)}, estimate "
          f"{format_bytes(bound)} ({bound / tracker.peak:.2f}x)")
    assert tracker.peak <= bound <= 2 * tracker.peak


def test_estimate_formula_by_hand():
    """The module's formula table, for the paper preset on both devices."""
    cfg = make_config("paper")
    V, E, S, L, H, B = 50257, 1600, 256, 48, 16, 16
    P = V * E + S * E + 2 * E + 1 * (12 * E * E + 13 * E)  # one root: initial_ties="first"
    cpu = estimate_bytes(cfg, V, "cpu")
    assert (cpu.params, cpu.grads, cpu.optimizer) == (4 * P, 4 * P, 8 * P + 4 * (4 + 12))
    assert cpu.activations == 4 * (B * S * L * (20 * E + 3 * H * S) + 3 * B * S * V)
    cuda = estimate_bytes(cfg, V, "cuda")
    assert cuda.activations == 4 * (B * S * L * 20 * E + 3 * B * S * V) \
        + 2 * (L * 12 * E * E + V * E)
    untied = estimate_bytes(cfg, V, "cpu", ties=tm.untied(L))
    assert untied.params == 4 * (V * E + S * E + 2 * E + L * (12 * E * E + 13 * E))
    assert untied.params == 4 * 1_556_382_400  # docs/environment.md's untied count
    doc = (Path(__file__).resolve().parents[1] / "docs" / "environment.md").read_text()
    for name in ("tiny", "small", "gpt2", "paper"):
        c = make_config(name)
        est = estimate_bytes(c, c.vocab_size, "cpu")
        print(f"{name}: {format_bytes(est.total)} ({est.describe()})")
        if name in ("gpt2", "paper"):  # the examples of docs/environment.md
            assert f"`{name}` about {format_bytes(est.total)}" in doc \
                or f"`{name}` preset needs about {format_bytes(est.total)}" in doc


@pytest.mark.parametrize("preset", ["gpt2", "paper"])
@pytest.mark.parametrize("start", ["first", "none"])
def test_parameters_of_the_large_presets_match_a_model_on_meta(preset, start):
    """Too large to train here: the parameter part is checked on a model without storage."""
    cfg = make_config(preset, initial_ties=start)
    with torch.device("meta"):
        model = build_model(cfg, cfg.vocab_size, initial_ties(cfg))
    assert model.memory_bytes().params == estimate_bytes(cfg, cfg.vocab_size).params
    assert len(model.trainable_parameters()) == (
        memory.OTHER_TENSORS + memory.BLOCK_TENSORS * len(tm.roots(model.ties)))


# ------------------------------------------------------------------ the refusal
def test_paper_preset_is_refused_before_its_model_is_built(monkeypatch, cache_dir):
    asked = fake_memory(monkeypatch, GiB)

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a training run was started before the memory check")

    monkeypatch.setattr("tying_env.env.TrainingRun", no_model)
    with pytest.raises(ModelTooLargeError) as exc:
        gym.make(TINY_ID, cache_dir=cache_dir, preset="paper", device="cpu")
    err = exc.value
    assert isinstance(err, SettingError) and isinstance(err, ValueError)
    assert err.argument == "preset" and asked == ["cpu"]
    est = estimate_bytes(make_config("paper"), 50257, "cpu")
    message = str(err)
    for words in ("preset='paper'", "n_layer=48", "n_embd=1600", "batch_size=16",
                  f"needs about {format_bytes(est.total)}",
                  f"parameters {format_bytes(est.params)}",
                  f"gradients {format_bytes(est.grads)}",
                  f"AdamW state {format_bytes(est.optimizer)}",
                  f"activations of one training batch {format_bytes(est.activations)}",
                  "cpu has 1.0 GiB available", "tiny, small", "memory_check=False"):
        assert words in message, (words, message)


@pytest.mark.parametrize(("preset", "overrides", "argument"), [
    ("paper", dict(), "preset"),  # the preset's own shape
    ("paper", dict(batch_size=64), "batch_size"),
    ("paper", dict(seq_len=1024, batch_size=4), "seq_len"),  # batch_size was made smaller
    ("paper", dict(n_embd=6400, batch_size=1, seq_len=16), "n_embd"),
    ("paper", dict(initial_ties="none", batch_size=1, seq_len=16), "initial_ties"),
    ("paper", dict(batch_size=1, seq_len=16), "preset"),  # changes that only save memory
    ("tiny", dict(vocab_size=2**20, n_layer=2), "vocab_size"),
    ("tiny", dict(seq_len=60_000, batch_size=4, n_layer=4), "seq_len"),
])
def test_the_setting_most_responsible_is_named(monkeypatch, preset, overrides, argument):
    fake_memory(monkeypatch, 256 * 2**20)
    cfg = make_config(preset, **overrides)
    with pytest.raises(ModelTooLargeError) as exc:
        memory.check(cfg, cfg.vocab_size, "cpu")
    assert exc.value.argument == argument
    if argument not in ("preset", "initial_ties"):
        assert f"use a smaller {argument}" in str(exc.value)


def test_disabled_check_builds_the_same_config(monkeypatch, cache_dir):
    asked = fake_memory(monkeypatch, GiB)
    env = gym.make(TINY_ID, cache_dir=cache_dir, preset="paper", device="cpu",
                   memory_check=False)  # not reset: it really would need about 36 GiB
    assert asked == [] and env.unwrapped.model is None
    assert env.unwrapped.cfg.memory_check is False
    env.close()


def test_the_check_is_the_only_gate(monkeypatch, cache_dir):
    """With the check off, a run refused for (fake) memory builds and trains."""
    fake_memory(monkeypatch, 2**20)
    with pytest.raises(ModelTooLargeError):
        gym.make(TINY_ID, cache_dir=cache_dir, n_layer=2, device="cpu")
    env = gym.make(TINY_ID, cache_dir=cache_dir, n_layer=2, device="cpu", memory_check=False,
                   eval_batches=1, steps_per_decision=1)
    env.reset(seed=0)
    env.step(0)


def test_tiny_preset_passes_on_this_machine(cache_dir):
    available = memory.available_bytes("cpu")
    est = estimate_bytes(make_config("tiny"), 64, "cpu")
    if available is not None:
        assert est.total < available
    env = gym.make(TINY_ID, cache_dir=cache_dir, device="cpu")
    assert env.unwrapped.cfg.memory_check is True
    env.close()


def test_the_boundary_and_an_unknown_amount(monkeypatch):
    cfg = make_config("paper")
    total = estimate_bytes(cfg, 50257, "cpu").total
    fake_memory(monkeypatch, total)
    assert memory.check(cfg, 50257, "cpu").total == total  # exactly enough passes
    fake_memory(monkeypatch, total - 1)
    with pytest.raises(ModelTooLargeError):
        memory.check(cfg, 50257, "cpu")
    fake_memory(monkeypatch, None)  # unknown: the check is skipped
    assert memory.check(cfg, 50257, "cpu").total == total


def test_a_tokenizer_sized_vocabulary_is_checked_after_loading(monkeypatch, tmp_path,
                                                               cache_dir):
    """`char` tokenizers bring their own size: the check then runs with the real one."""
    text = "the quick brown fox jumps over the lazy dog. " * 200
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(text)
    asked = fake_memory(monkeypatch, 2**20)
    with pytest.raises(ModelTooLargeError) as exc:
        LayerTyingEnv("tiny", dataset="text", data_dir=str(tmp_path), tokenizer="char",
                      device="cpu", cache_dir=cache_dir, vocab_size=50257)
    assert asked == ["cpu"]
    char_vocab = len(set(text)) + 1  # the characters and `<unk>`
    assert f"vocab_size={char_vocab}," in str(exc.value)


def test_available_bytes_of_this_machine():
    cpu = memory.available_bytes("cpu")
    assert cpu is None or cpu > 0
    if not torch.cuda.is_available():
        assert memory.available_bytes("cuda") is None


@pytest.mark.parametrize(("files", "expected"), [
    ({}, 8000 * 1024),  # no cgroup: MemAvailable
    ({"memory.max": "max\n", "memory.current": "5\n"}, 8000 * 1024),  # no limit
    ({"memory.max": "1000000\n", "memory.current": "600000\n",
      "memory.stat": "anon 1\ninactive_file 300000\n"}, 700_000),  # v2: cache reclaimable
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n",
      "memory/memory.usage_in_bytes": "1\n"}, 8000 * 1024),  # v1 without a limit
    ({"memory/memory.limit_in_bytes": "1000000\n", "memory/memory.usage_in_bytes": "900000\n",
      "memory/memory.stat": "total_inactive_file 100000\n"}, 200_000),
])
def test_available_cpu_memory_is_capped_by_the_cgroup(monkeypatch, tmp_path, files, expected):
    (tmp_path / "meminfo").write_text("MemTotal: 9999 kB\nMemAvailable:    8000 kB\n")
    for name, text in files.items():
        (tmp_path / "cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cgroup" / name).write_text(text)
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path / "cgroup")
    assert memory.available_bytes("cpu") == expected


def test_memory_check_must_be_a_bool():
    with pytest.raises(SettingTypeError) as exc:
        make_config("tiny", memory_check="no")
    assert exc.value.argument == "memory_check" and "bool" in str(exc.value)


def test_checkpoints_ignore_the_setting(cache_dir):
    """`memory_check` changes nothing a run computes: a checkpoint loads either way, and
    one saved before the setting existed loads too."""
    fast = dict(n_layer=3, eval_batches=1, steps_per_decision=1, device="cpu")
    env = LayerTyingEnv("tiny", cache_dir=cache_dir, **fast)
    env.reset(seed=0)
    env.step(1)
    tensors, meta = env.get_state()
    other = LayerTyingEnv("tiny", cache_dir=cache_dir, memory_check=False, **fast)
    other.set_state(tensors, meta)
    old = json.loads(json.dumps(meta))
    del old["config"]["memory_check"]
    other.set_state(tensors, old)
    assert other.run.model.ties == env.run.model.ties


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize(("options", "option"), [
    (["--preset", "paper"], "--preset"),
    (["--env-kwargs", '{"preset": "paper"}'], "--env-kwargs"),
])
def test_command_line_exits_2_naming_the_option(monkeypatch, tmp_path, cache_dir, capsys,
                                                options, option):
    fake_memory(monkeypatch, GiB)
    argv = ["--agent", "albert", "--device", "cpu", "--out", str(tmp_path / "run"),
            "--cache-dir", str(cache_dir), "--no-progress", *options]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err, err
    assert "too large" in err and "1.0 GiB available" in err and "memory_check=False" in err
    assert not (tmp_path / "run" / "run.json").exists()  # refused before the run started
