"""Named model/run shapes and the validated settings of one environment.

`make_config(preset, **overrides)` starts from a preset and applies explicit
arguments on top; every value is checked up front so that a mistake is
reported with the argument's name, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tying_env.data.corpus import DATASETS
from tying_env.data.images import IMAGE_DATASETS
from tying_env.errors import SettingError, SettingTypeError
from tying_env.ties import TIE_MODES

INITIAL_TIES = ("first", "none", "frozen")
TIE_SEMANTICS = ("ours", "published")
PRECISIONS = ("auto", "fp32", "bf16-autocast", "bf16")
OBSERVATIONS = ("ties", "choices")
REWARDS = ("log_ppl_delta", "ppl_delta", "paper", "paper-vit")
IMAGE_REWARDS = ("paper-vit",)  # rewards of image classification only
ACTION_MODES = ("layer", "vector")
DEVICES = ("auto", "cpu", "cuda")
ACTIVATIONS = ("gelu", "gelu_new")
# the model families (`tying_env.models.FAMILIES`) and the kind of data each trains on
FAMILY_DATA = {"gpt2": "text", "llama": "text", "bert": "text", "vit": "images",
               "bert-causal": "text"}


# settings added after runs and states were first saved: one without such a setting ran
# with this value (checkpoints, and the benchmark's comparison of recorded settings)
ADDED_SETTINGS = {"tie_semantics": "ours", "mlp_width": 0, "tie_embeddings": True,
                  "image_size": 0}


@dataclass(frozen=True)
class EnvConfig:
    """Every setting of one environment (model shape, data, inner training, RL protocol).

    `memory_check` (default True): refuse, when the environment is built, a run whose
    estimated peak memory (`tying_env.memory.estimate_bytes`) exceeds what the device has
    available, with a `ModelTooLargeError`. Turn it off to try anyway where the estimate
    or the available figure misleads: with swap, with unified memory that the GPU shares
    with the host, or when memory will be freed by someone else before the run starts.
    It does not change what the run computes.

    `precision`: `"fp32"`; `"bf16-autocast"` (fp32 weights, gradients and AdamW state, the
    forward and backward passes in bfloat16 under `torch.autocast`); `"bf16"` (the whole
    model in bfloat16, so weights, gradients and AdamW state too: the published code's
    `model.bfloat16()`); `"auto"` (default): `"bf16-autocast"` on CUDA, `"fp32"` on the CPU.

    `initial_ties="frozen"` reproduces the published start (not a recommendation): every
    block keeps its own random initialisation, frozen (no gradient, no optimizer state),
    until a decision about its layer unties it (`"first"`: every layer runs a real copy of
    block 0; `"none"`: every block trains from the start).

    `observation`: what the first `L` entries of the observation hold: `"ties"` (the tie
    map, resolved to roots) or `"choices"` (the raw last choice per layer, what the
    published Q-learner sees; also in `info["choices"]`).

    `family`: the model family (`"gpt2"`, `"llama"`, `"bert"` (masked LM), `"vit"` or
    `"bert-causal"` (BERT as a causal LM, the published `CustomBert`), see
    `tying_env.models`), built from the shape settings (`n_layer`, `n_embd`, `n_head`,
    `seq_len`, `dropout`; `activation` is GPT-2's, `patch_size` ViT's; ViT ignores `seq_len`
    and `vocab_size`, its images and classes come from the dataset). `mlp_width` (0: the
    family's own, `4 * n_embd`, Llama's `8/3 * n_embd`) sets the MLP's hidden width;
    `tie_embeddings=False` gives a text family an LM head of its own (Llama-2's layout);
    `image_size` (0: the dataset's) resizes a square image set for ViT (bilinear, on the
    model's device). `hf_config` (a dict
    of a Hugging Face config of a supported family, or the config object, turned into its
    dict) brings your own architecture: it sets `family` and the shape (`n_layer`,
    `n_embd`, `n_head` are read from it), and the data sets its vocabulary or classes.

    `tie_semantics`: `"ours"` (default, `tying_env.models.TiedModel`: an untied layer gets
    a clone of what it ran, a re-tied root's dependents keep its weights, tied blocks free
    their memory) or `"published"` (`tying_env.models.PublishedModel`: the published
    `apply_action` literally, storage aliasing and `requires_grad` flags, so storages only
    merge; a reproduction, not a recommendation; it needs `tie_mode="copy"`).

    `test_eval_every` (sweeps; 0: never): evaluate the whole test split after every that
    many sweeps, for the published metric, the best test perplexity over sweeps
    (`info["best_test_ppl"]`), which is selected on the test split.

    `reward="paper-vit"` (image families only): the published ViT reward, minus the
    accuracy on one training batch after the steps (so it rewards *lower* accuracy, as the
    published code's does).
    """

    preset: str = "tiny"
    # model family and shape
    family: str = "gpt2"
    hf_config: dict[str, Any] | None = None
    n_layer: int = 6
    n_embd: int = 64
    n_head: int = 4
    seq_len: int = 64
    vocab_size: int = 64
    dropout: float = 0.2
    activation: str = "gelu"
    patch_size: int = 2
    mlp_width: int = 0  # 0: the family's own
    tie_embeddings: bool = True
    image_size: int = 0  # 0: the dataset's own
    # data
    dataset: str = "synthetic"
    data_dir: str | None = None
    tokenizer: str | None = None
    precision: str = "auto"
    # inner training
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_steps: int = 0
    cosine_schedule: bool = False
    steps_per_decision: int = 4
    # tying and the RL protocol
    tie_mode: str = "copy"
    tie_semantics: str = "ours"
    initial_ties: str = "first"
    max_sweeps: int = 10
    reward: str = "log_ppl_delta"
    param_penalty: float = 0.0
    eval_batches: int = 4
    action_mode: str = "layer"
    observation: str = "ties"
    test_eval_every: int = 0
    device: str = "auto"
    # refuse runs that cannot fit in memory (see the docstring)
    memory_check: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # a whole sweep in a few seconds on 2 CPU cores, on the synthetic corpus
    "tiny": dict(n_layer=6, n_embd=64, n_head=4, seq_len=64, vocab_size=64, batch_size=16,
                 lr=1e-3, dataset="synthetic", max_sweeps=10),
    # CPU-sized 12-layer GPT-2 (the benchmarks' reference shape)
    "small": dict(n_layer=12, n_embd=128, n_head=4, seq_len=128, vocab_size=8192, batch_size=8,
                  lr=1e-3, dataset="wikitext-2", max_sweeps=20),
    # the 124M GPT-2 shape
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, seq_len=1024, vocab_size=50257,
                 batch_size=8, lr=1e-4, dataset="wikitext-2", max_sweeps=100),
    # the published GPT-2 run on WikiText-2 (every WikiText-2 launch script of the published
    # code): 48 x 1600, 16 heads, GPT-2's tokenizer, WikiText-2 with <unk> tokens, 300
    # sweeps (every committed Q-learning launch: `dqn_trainer.py --epochs=300`)
    "paper": dict(n_layer=48, n_embd=1600, n_head=16, seq_len=256, vocab_size=50257,
                  batch_size=16, lr=1e-4, dropout=0.2, dataset="wikitext-2-v1",
                  tokenizer="gpt2", max_sweeps=300),
    # the same at 12 layers: the shape of the published Shakespeare "reverse" ablation
    "paper-12": dict(n_layer=12, n_embd=1600, n_head=16, seq_len=256, vocab_size=50257,
                     batch_size=16, lr=1e-4, dropout=0.2, dataset="wikitext-2-v1",
                     tokenizer="gpt2", max_sweeps=300),
    # the other families, each at the shapes of `tiny` and `small`
    "llama-tiny": dict(family="llama", n_layer=6, n_embd=64, n_head=4, seq_len=64,
                       vocab_size=64, batch_size=16, lr=1e-3, dataset="synthetic",
                       max_sweeps=10),
    "llama-small": dict(family="llama", n_layer=12, n_embd=128, n_head=4, seq_len=128,
                        vocab_size=8192, batch_size=8, lr=1e-3, dataset="wikitext-2",
                        max_sweeps=20),
    "bert-tiny": dict(family="bert", n_layer=6, n_embd=64, n_head=4, seq_len=64,
                      vocab_size=64, batch_size=16, lr=1e-3, dataset="synthetic",
                      max_sweeps=10),
    "bert-small": dict(family="bert", n_layer=12, n_embd=128, n_head=4, seq_len=128,
                       vocab_size=8192, batch_size=8, lr=1e-3, dataset="wikitext-2",
                       max_sweeps=20),
    # ViT: scikit-learn's 8x8 digits in 2x2 patches; CIFAR-10's 32x32 images in 4x4 patches
    "vit-tiny": dict(family="vit", n_layer=6, n_embd=64, n_head=4, patch_size=2,
                     batch_size=32, lr=1e-3, dropout=0.1, dataset="digits", max_sweeps=10),
    "vit-small": dict(family="vit", n_layer=12, n_embd=128, n_head=4, patch_size=4,
                      batch_size=32, lr=1e-3, dropout=0.1, dataset="cifar10", max_sweeps=20),
    # BERT as a causal LM (the published CustomBert) at the shape of `tiny`
    "bert-causal-tiny": dict(family="bert-causal", n_layer=6, n_embd=64, n_head=4, seq_len=64,
                             vocab_size=64, batch_size=16, lr=1e-3, dataset="synthetic",
                             max_sweeps=10),
    # the families as the published code builds them (docs/method.md lists what differs):
    # CustomBert, BERT-base's shape with BertConfig's dropout, on the GPT-2 launches' data
    "bert-paper": dict(family="bert-causal", n_layer=12, n_embd=768, n_head=12, seq_len=256,
                       vocab_size=50257, batch_size=16, lr=1e-4, dropout=0.1,
                       dataset="wikitext-2-v1", tokenizer="gpt2", max_sweeps=300),
    # CustomLLAMA2: LlamaConfig's defaults (Llama-2-7B's shape, untied embeddings), GPT-2's
    # tokenizer as published (`LlamaConfig(len(tokenizer))`), the Llama launches' settings
    "llama-2-7b": dict(family="llama", n_layer=32, n_embd=4096, n_head=32, mlp_width=11008,
                       tie_embeddings=False, seq_len=256, vocab_size=50257, batch_size=16,
                       lr=1e-4, dropout=0.0, dataset="wikitext-2-v1", tokenizer="gpt2",
                       max_sweeps=300),
    # CustomVit: vit_trainer.py's defaults, 12 x 1600, 16 heads, MLP 5120, 16-px patches on
    # CIFAR-10 resized to 224 px, batch 20, 10 steps a decision, 200 sweeps
    "vit-paper": dict(family="vit", n_layer=12, n_embd=1600, n_head=16, mlp_width=5120,
                      patch_size=16, image_size=224, batch_size=20, lr=1e-4, dropout=0.0,
                      dataset="cifar10", steps_per_decision=10, max_sweeps=200),
}

_FIELD_TYPES = {f.name: f.type for f in fields(EnvConfig)}


def resolved_precision(precision: str, device: str | Any) -> str:
    """`precision` with `"auto"` resolved for `device`: bf16 autocast on CUDA, else fp32."""
    if precision not in PRECISIONS:
        raise SettingError("precision", f"precision={precision!r} is unknown; allowed: "
                                        f"{', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    kind = device if isinstance(device, str) else getattr(device, "type", str(device))
    return "bf16-autocast" if kind.startswith("cuda") else "fp32"


def make_config(preset: str = "tiny", **overrides: Any) -> EnvConfig:
    """The preset's settings with `overrides` applied, validated."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise SettingError("preset", f"preset={preset!r} is unknown; allowed: "
                                     f"{', '.join(PRESETS)}")
    unknown = sorted(set(overrides) - set(_FIELD_TYPES) - {"preset"})
    if unknown:
        given = ", ".join(f"{name}={overrides[name]!r}" for name in unknown)
        close = {name: difflib.get_close_matches(name, _FIELD_TYPES, n=1) for name in unknown}
        hints = "".join(f" (did you mean {match[0]}?)" for match in close.values() if match)
        raise SettingTypeError(
            unknown[0],
            f"unknown environment argument(s) {given}{hints}; "
            f"allowed: {', '.join(sorted(_FIELD_TYPES))}"
        )
    given = {k: v for k, v in overrides.items() if v is not None or k in ("data_dir", "tokenizer")}
    settings = {**PRESETS[preset], **given}
    if given.get("hf_config") is not None:
        settings.update(_hf_shape(given["hf_config"], given))
        limit = settings["hf_config"].get("max_position_embeddings",
                                          settings["hf_config"].get("n_positions"))
        if "seq_len" not in given and limit is not None:  # the preset's, if the config fits it
            settings["seq_len"] = min(settings.get("seq_len", EnvConfig.seq_len), int(limit))
    if "tokenizer" not in given and settings.get("dataset") == "synthetic":
        settings["tokenizer"] = None  # a preset's tokenizer is for text corpora only
    cfg = replace(EnvConfig(), preset=preset, **settings)
    validate(cfg)
    return cfg


def _hf_shape(hf_config: Any, given: dict[str, Any]) -> dict[str, Any]:
    """`family`, `hf_config` (as a dict) and the shape settings read from a Hugging Face
    config; a `SettingError` when an explicit setting contradicts it."""
    from tying_env.models import as_config, family_of

    config = as_config(hf_config.to_dict() if hasattr(hf_config, "to_dict") else hf_config)
    family = family_of(config)
    shape = {"family": family.name, **family.shape(config)}
    for name, value in shape.items():
        if name in given and given[name] != value:
            raise SettingError(name, f"{name}={given[name]!r} contradicts hf_config, which "
                                     f"says {name}={value!r}; give one of them")
    # its JSON form (e.g. `id2label`'s keys as strings), as a checkpoint stores it
    as_json = json.loads(json.dumps({**config.to_dict(), "model_type": family.name}))
    return {**shape, "hf_config": as_json}


def validate(cfg: EnvConfig) -> None:
    """Raise `SettingError` naming the first bad setting."""
    ints = dict(n_layer=1, n_embd=1, n_head=1, seq_len=2, vocab_size=2, batch_size=1,
                warmup_steps=0, steps_per_decision=1, max_sweeps=1, eval_batches=1,
                test_eval_every=0, patch_size=1, mlp_width=0, image_size=0)
    for name, low in ints.items():
        _check_int(name, getattr(cfg, name), low)
    floats = dict(dropout=(0.0, 1.0, True), lr=(0.0, float("inf"), False),
                  weight_decay=(0.0, float("inf"), True), grad_clip=(0.0, float("inf"), False),
                  param_penalty=(0.0, float("inf"), True))
    for name, (low, high, low_ok) in floats.items():
        _check_float(name, getattr(cfg, name), low, high, low_ok)
    if cfg.dropout >= 1.0:
        raise SettingError("dropout", f"dropout={cfg.dropout!r} must be in [0, 1)")
    if cfg.n_embd % cfg.n_head:
        raise SettingError(
            "n_embd",
            f"n_embd={cfg.n_embd} must be divisible by n_head={cfg.n_head} "
            f"(each head gets n_embd / n_head channels)"
        )
    if cfg.n_layer < 2:
        raise SettingError("n_layer", f"n_layer={cfg.n_layer} must be >= 2: layer 0 is never "
                                      "tied, so one layer leaves no decision to make")
    choices = dict(family=tuple(FAMILY_DATA), dataset=DATASETS + IMAGE_DATASETS,
                   tie_mode=TIE_MODES, tie_semantics=TIE_SEMANTICS, initial_ties=INITIAL_TIES,
                   reward=REWARDS, action_mode=ACTION_MODES,
                   activation=ACTIVATIONS, precision=PRECISIONS, observation=OBSERVATIONS)
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise SettingError(name, f"{name}={value!r} is unknown; allowed: "
                                     f"{', '.join(allowed)}")
    if cfg.tie_semantics == "published" and cfg.tie_mode != "copy":
        raise SettingError("tie_mode", f"tie_mode={cfg.tie_mode!r} does not apply to "
                                       "tie_semantics='published', which ties by aliasing a "
                                       "storage that the tied position does not train; allowed "
                                       "there: 'copy'")
    kind = FAMILY_DATA[cfg.family]
    if (cfg.dataset in IMAGE_DATASETS) != (kind == "images"):
        allowed = IMAGE_DATASETS if kind == "images" else DATASETS
        raise SettingError("dataset", f"dataset={cfg.dataset!r} is not {kind}, which "
                                      f"family={cfg.family!r} trains on; allowed: "
                                      f"{', '.join(allowed)}")
    _check_family_settings(cfg, kind)
    if cfg.hf_config is not None:
        if not isinstance(cfg.hf_config, dict):
            raise SettingTypeError("hf_config", f"hf_config={cfg.hf_config!r} must be a dict "
                                                "or a Hugging Face config")
        if cfg.hf_config.get("model_type") != cfg.family:
            raise SettingError("hf_config", f"hf_config has model_type="
                                            f"{cfg.hf_config.get('model_type')!r}, but "
                                            f"family={cfg.family!r}")
        limit = cfg.hf_config.get("max_position_embeddings", cfg.hf_config.get("n_positions"))
        if kind == "text" and limit is not None and cfg.seq_len > limit:
            raise SettingError("seq_len", f"seq_len={cfg.seq_len} is longer than hf_config's "
                                          f"{limit} positions")
    for name in ("cosine_schedule", "memory_check", "tie_embeddings"):
        if not isinstance(getattr(cfg, name), bool):
            raise SettingTypeError(name, f"{name}={getattr(cfg, name)!r} must be a bool")
    for name in ("data_dir", "tokenizer"):
        value = getattr(cfg, name)
        if value is not None and not isinstance(value, str):
            raise SettingTypeError(name, f"{name}={value!r} must be a string or None")
    if cfg.dataset == "text" and cfg.data_dir is None:
        raise SettingError("dataset", "dataset='text' needs data_dir=FOLDER holding train.txt, "
                                       "valid.txt, test.txt")
    check_device(cfg.device)


def _check_family_settings(cfg: EnvConfig, kind: str) -> None:
    """The settings that apply to one kind of family only, and those `hf_config` decides."""
    images = [f for f, k in FAMILY_DATA.items() if k == "images"]
    if cfg.reward in IMAGE_REWARDS and kind != "images":
        allowed = [r for r in REWARDS if r not in IMAGE_REWARDS]
        raise SettingError("reward", f"reward={cfg.reward!r} (minus the accuracy of a training "
                                     f"batch) is for image classification (family "
                                     f"{', '.join(images)}), not family={cfg.family!r}; "
                                     f"allowed: {', '.join(allowed)}")
    if cfg.image_size and kind != "images":
        raise SettingError("image_size", f"image_size={cfg.image_size} resizes images, for "
                                         f"family {', '.join(images)}; family={cfg.family!r} "
                                         "reads text: leave it 0")
    if cfg.tie_embeddings is False and kind == "images":
        raise SettingError("tie_embeddings", f"tie_embeddings=False unties an LM head from "
                                             f"the input embeddings; family={cfg.family!r} "
                                             "has none: leave it True")
    if cfg.hf_config is not None:
        given = [f"{name}={getattr(cfg, name)!r}" for name, default in
                 (("mlp_width", 0), ("tie_embeddings", True)) if getattr(cfg, name) != default]
        if given:
            raise SettingError(given[0].partition("=")[0],
                               f"{given[0]} does not apply with hf_config, which shapes the "
                               "model itself: set it in the config (intermediate_size, "
                               "tie_word_embeddings)")


def check_device(device: Any) -> None:
    """`device` is one of DEVICES or `cuda:N` (GPU N), and a CUDA device is here."""
    suffix = device[5:] if isinstance(device, str) and device.startswith("cuda:") else None
    if (device not in DEVICES and suffix is None) or (suffix is not None
                                                      and not suffix.isdigit()):
        raise SettingError("device", f"device={device!r} is unknown; allowed: "
                                     f"{', '.join(DEVICES)}, cuda:N (N a GPU index)")
    if device == "cuda" or suffix is not None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SettingError("device", f"device={device!r} is not available on this "
                                         "machine; allowed here: 'auto', 'cpu'")
        if suffix is not None and int(suffix) >= count:
            raise SettingError("device", f"device={device!r} is not on this machine, which has "
                                         f"{count} CUDA GPU(s); allowed here: 'auto', 'cpu', "
                                         f"'cuda', 'cuda:0' to 'cuda:{count - 1}'")


def resolve_device(device: str) -> Any:
    """The `torch.device` a checked `device` setting names: `auto` is CUDA where there is
    a GPU, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingTypeError(name, f"{name}={value!r} must be an int >= {low}")
    if value < low:
        raise SettingError(name, f"{name}={value!r} must be an int >= {low}")


def _check_float(name: str, value: Any, low: float, high: float, low_ok: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingTypeError(name, f"{name}={value!r} must be a number")
    ok = (value >= low if low_ok else value > low) and value <= high and math.isfinite(value)
    if not ok:
        bound = ">=" if low_ok else ">"
        raise SettingError(name, f"{name}={value!r} must be a finite number {bound} {low}")
