"""How much memory a run needs, and whether the device has it: impossible models are refused
before their model is built.

`estimate_bytes(cfg, vocab_size, device)` is a pure function of the settings (no model is
built). Its parts, in bytes:

| part          | formula |
|---------------|---------|
| `params`      | `W * P`, where `P = V*E + S*E + 2E + R*(12E² + 13E)` |
| `grads`       | `W * T`, where `T = P - F*(12E² + 13E)` (the trainable parameters) |
| `optimizer`   | `2 * W * T + 4 * (4 + 12(R - F))`: two moments, a float32 `step` a tensor |
| `activations` | `X * B*S*L*(20E + A*H*S) + 4 * 3*B*S*V`, plus the terms below |

In pure bf16 the activations add `2 * B*S*V` (the bfloat16 logits); under autocast
`2 * (L*12E² + V*E)` (the bfloat16 copies of the weights).

`V` vocabulary, `E` = `n_embd`, `S` = `seq_len`, `L` = `n_layer`, `H` = `n_head`,
`B` = `batch_size`, `R` the roots of the tie map (1 for `initial_ties="first"`, `L` for
`"none"` and `"frozen"`), `F` the frozen roots (`L - 1` for `initial_ties="frozen"`, else
0); `W` the bytes of a weight, `X` those of a counted activation: 4 and 4 in
`precision="fp32"` and `"bf16-autocast"` (float32 weights, gradients and optimizer state),
2 and 2 in pure `"bf16"`. The loss is computed in float32 in every precision.

For the other families (Llama, BERT, ViT, causal BERT), and for GPT-2 with a `mlp_width`
or an untied LM head (`tie_embeddings=False`), the parameter counts come from the Hugging
Face model itself, built on PyTorch's `meta` device (no memory): `P = other + R * block`,
and the activations take GPT-2's calibration per token and layer, with `S` the tokens of
an example (ViT: the patches of the images the model sees, at `image_size` when they are
resized, and the `[CLS]` token) and `S*V` replaced by the outputs of an example (ViT: its
classes). That activation figure is an estimate by analogy, not measured per family.

The first three parts use the arithmetic of `TiedModel.memory_bytes` (embeddings
tied to the LM head and counted once, the blocks of roots only); they equal
`info["memory_bytes"]` once the first optimizer step has run (at reset there are no
gradients nor optimizer state yet).

`activations` is an estimate of one training step's transient memory, calibrated on the CPU
(float32) by counting every tensor PyTorch creates during a step of `TrainingRun.train`
(`tests/test_memory_check.py`):

- `20E` per token and layer: what a GPT-2 block keeps for the backward pass, measured
  18.6E for an untied block with dropout on the CPU (11E to 13E for a tied block in `copy`
  mode, which saves no input for weight gradients);
- `A*H*S` per token and layer: the attention matrix, `A = 3` (the probabilities, the
  dropout mask and the dropped probabilities, measured 3.0) where it is materialised, i.e.
  on the CPU with dropout; `A = 0` where a fused kernel computes attention (on CUDA, and
  on the CPU without dropout);
- `3*B*S*V`: the log-probabilities kept for the backward pass and, at its start, their
  gradient and the logits' gradient (measured 3.0).

The measured peak of a training step lies between 1/2 and 1 times `activations + grads`
(tested on the tiny and a small-shaped model, tied and untied, with and without dropout,
`copy` and `share`: 1.03 to 1.63 times). On CUDA the model trains
under bfloat16 autocast: the same element counts are taken at 4 bytes (autocast keeps the
residual stream, the layer norms and the loss in float32 and saves bfloat16 copies of the
rest), plus the bfloat16 copies of the weights every position's matrix products save. That
CUDA figure is derived, not measured.

Not counted: the CUDA context and the allocator's fragmentation, the corpus, Python and the
libraries. Gradients fill up as the activations are freed, so adding both over-counts, which
covers the optimizer's own temporaries. The check is about the run's *start*: an agent that
unties layers grows `params`, `grads` and `optimizer` towards the untied model's, which
`estimate_bytes(cfg, V, device, ties=tying_env.ties.untied(L))` gives.

Under `tie_semantics="published"` (`tying_env.models.PublishedModel`) a run starts from the
same tensors for every `initial_ties` (`"first"` aliases blocks 1..L-1 to block 0's storage:
one block stored, one trained), so the estimate is the same and equals its
`info["memory_bytes"]` after the first step too; `ties` and `frozen` describe that start
as ours would. Later the two mechanics part: under the published one storages only merge,
so `params` never grows, while every position made trainable adds a block's gradient and
AdamW moments (on a shared storage too) and state is never freed, up to L blocks of each.

`check(cfg, vocab_size, device)` compares the estimate with `available_bytes(device)` and
raises `ModelTooLargeError` when it does not fit. `available_bytes` is a public
module-level function so that it can be replaced (tests monkeypatch it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tying_env import ties as tm
from tying_env.errors import ModelTooLargeError
from tying_env.presets import PRESETS, EnvConfig, resolved_precision

BLOCK_TENSORS = 12  # ln_1, c_attn, c_proj, ln_2, c_fc, mlp c_proj: a weight and a bias each
OTHER_TENSORS = 4  # wte (also the LM head), wpe, ln_f weight and bias
BLOCK_WIDTH = 20  # activation elements kept per token, layer and channel (measured 18.6)
ATTENTION_COPIES = 3  # materialised attention matrices per layer (CPU with dropout)
LOGIT_COPIES = 3  # log-probabilities, their gradient, the logits' gradient
ADAM_STEP_BYTES = 4  # AdamW's `step`: a float32 scalar per tensor
WEIGHT_BYTES = 4  # float32 weights, gradients, optimizer state and counted activations
BF16_BYTES = 2  # the same in pure bfloat16 (precision="bf16")
AUTOCAST_BYTES = 2  # bfloat16 copies of the weights under autocast
MEMINFO = Path("/proc/meminfo")
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, by part (see the module's formulas)."""

    params: int
    grads: int
    optimizer: int
    activations: int
    device: str

    @property
    def static(self) -> int:
        """Parameters, gradients and optimizer state (what `info["memory_bytes"]` counts)."""
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> int:
        return self.static + self.activations

    def to_dict(self) -> dict[str, int]:
        return dict(params=self.params, grads=self.grads, optimizer=self.optimizer,
                    activations=self.activations, total=self.total)

    def describe(self) -> str:
        """`parameters 1.2 GiB, gradients ..., activations ...` for messages."""
        return (f"parameters {format_bytes(self.params)}, gradients {format_bytes(self.grads)}, "
                f"AdamW state {format_bytes(self.optimizer)}, activations of one training "
                f"batch {format_bytes(self.activations)}")


def block_numel(n_embd: int) -> int:
    """Parameters of one GPT-2 block: two layer norms, attention and a 4x MLP."""
    return 12 * n_embd * n_embd + 13 * n_embd


def starting_state(cfg: EnvConfig) -> tuple[tm.TieMap, tuple[int, ...]]:
    """The tie map and the frozen roots a fresh run of `cfg` starts from."""
    L = cfg.n_layer
    if cfg.initial_ties == "first":
        return tm.all_first(L), ()
    return tm.untied(L), tuple(range(1, L)) if cfg.initial_ties == "frozen" else ()


@dataclass(frozen=True)
class ModelCounts:
    """Parameter and tensor counts of a family's model, and the sizes activations scale
    with: tokens per example and outputs (logits) per example."""

    other: int  # parameters outside the blocks (embeddings, final norm, head)
    block: int  # parameters of one block
    other_tensors: int
    block_tensors: int
    tokens: int
    outputs: int


def by_formula(cfg: EnvConfig) -> bool:
    """Whether `cfg`'s model is the GPT-2 of the module's formulas (the `4 * n_embd` MLP,
    embeddings tied to the LM head)."""
    return (cfg.family == "gpt2" and cfg.hf_config is None and cfg.mlp_width in (0, 4 * cfg.n_embd)
            and cfg.tie_embeddings)


def model_counts(cfg: EnvConfig, data: Any) -> ModelCounts:
    """`ModelCounts` of `cfg`'s model for `data` (a vocabulary size, a corpus or an image
    set): GPT-2's by formula, the others' from the model built on the `meta` device."""
    from tying_env.models import get_family
    from tying_env.models.vit import image_size
    from tying_env.training import data_shape, model_config

    shape = data_shape(data)
    if by_formula(cfg):
        E, V = cfg.n_embd, shape.vocab_size
        return ModelCounts(V * E + cfg.seq_len * E + 2 * E, block_numel(E), OTHER_TENSORS,
                           BLOCK_TENSORS, cfg.seq_len, cfg.seq_len * V)
    family = get_family(cfg.family)
    config = model_config(cfg, shape.vocab_size if family.data_kind == "text" else data)
    with torch.device("meta"):
        net = family.model_class(config)
    params = {id(p): p for p in net.parameters()}
    block = list(family.block_list(net)[0].parameters())
    n_block = sum(p.numel() for p in block)
    L = len(family.block_list(net))
    other = sum(p.numel() for p in params.values()) - L * n_block
    if family.data_kind == "images":
        height, width = image_size(config)  # what the model sees (resized or not)
        patches = (height // config.patch_size) * (width // config.patch_size)
        tokens, outputs = patches + 1, shape.n_classes
    else:
        tokens, outputs = cfg.seq_len, cfg.seq_len * int(config.vocab_size)
    return ModelCounts(other, n_block, len(params) - L * len(block), len(block), tokens,
                       outputs)


def estimate_bytes(cfg: EnvConfig, vocab_size: Any, device: str | torch.device = "cpu",
                   ties: Sequence[int] | None = None,
                   frozen: Sequence[int] | None = None) -> MemoryEstimate:
    """The bytes a training step of `cfg` needs on `device`, by part, building nothing.

    `ties` and `frozen` (root positions whose block is frozen) default to the run's
    starting state (`cfg.initial_ties`, see `starting_state`); `vocab_size` is the
    corpus's (the tokenizer's real size for text corpora), or the corpus or image set
    itself. The precision is `cfg.precision` resolved for `device`.
    """
    counts = model_counts(cfg, vocab_size)
    E, S, L, H, B = (cfg.n_embd, counts.tokens, cfg.n_layer, cfg.n_head, cfg.batch_size)
    if ties is None:
        ties, start_frozen = starting_state(cfg)
        frozen = start_frozen if frozen is None else frozen
    frozen = frozen or ()
    n_roots = len(tm.roots(ties))
    n_frozen = len(set(frozen) & set(tm.roots(ties)))
    precision = resolved_precision(cfg.precision, torch.device(device))
    W = BF16_BYTES if precision == "bf16" else WEIGHT_BYTES
    held = counts.other + n_roots * counts.block
    trainable = held - n_frozen * counts.block
    n_tensors = counts.other_tensors + counts.block_tensors * (n_roots - n_frozen)
    optimizer = 2 * W * trainable + ADAM_STEP_BYTES * n_tensors
    cuda = torch.device(device).type == "cuda"
    materialised = not cuda and cfg.dropout > 0.0
    per_token_layer = BLOCK_WIDTH * E + (ATTENTION_COPIES * H * S if materialised else 0)
    outputs = B * counts.outputs  # logits of a batch
    activations = W * B * S * L * per_token_layer + WEIGHT_BYTES * LOGIT_COPIES * outputs
    if precision == "bf16":  # the bfloat16 logits, before the float32 loss
        activations += BF16_BYTES * outputs
    if precision == "bf16-autocast":
        if by_formula(cfg):  # the matrices' weights
            activations += AUTOCAST_BYTES * (L * 12 * E * E + (counts.outputs // S) * E)
        else:
            activations += AUTOCAST_BYTES * (L * counts.block + counts.other)
    return MemoryEstimate(params=W * held, grads=W * trainable, optimizer=optimizer,
                          activations=activations, device=torch.device(device).type)


def available_bytes(device: str | torch.device) -> int | None:
    """Memory a new run can still take on `device`, or None when it cannot be told.

    CUDA: the device's free memory (`torch.cuda.mem_get_info`) plus what this process's
    caching allocator holds unused. CPU: `MemAvailable` of `/proc/meminfo` (else free
    pages from `os.sysconf`), capped by the cgroup's limit where one is set (containers).
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type != "cpu":
        return None
    found = [n for n in (_meminfo_available(), _cgroup_available()) if n is not None]
    return min(found) if found else None


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_available() -> int | None:
    """The limit of this process's cgroup minus what it holds that cannot be reclaimed
    (usage less inactive file cache), as container runtimes count it; None without a limit.
    Reads cgroup v2, else v1, as mounted at `/sys/fs/cgroup` (inside a container: its own)."""
    root = CGROUP_ROOT
    for limit_file, usage_file, stat_file, inactive_key in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
             "memory/memory.stat", "total_inactive_file")):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if not limit.isdigit() or int(limit) >= 2**60:  # "max", or v1's huge "no limit"
            return None
        inactive = 0
        try:
            for line in (root / stat_file).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == inactive_key:
                    inactive = int(value)
        except (OSError, ValueError):
            pass
        return max(0, int(limit) - max(0, usage - inactive))
    return None


def format_bytes(n: int) -> str:
    """`512.0 MiB`, `3.2 GiB`, `1.5 TiB`."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**20:.1f} MiB"


def check(cfg: EnvConfig, vocab_size: Any, device: str | torch.device) -> MemoryEstimate:
    """Raise `ModelTooLargeError` if `estimate_bytes` exceeds `available_bytes(device)`.

    Returns the estimate; does nothing more when the available memory is unknown.
    The error's `argument` is the setting to change (see `blame`). The environment
    calls it once the corpus is loaded (the vocabulary size is the tokenizer's) and before
    the model is built.
    """
    estimate = estimate_bytes(cfg, vocab_size, device)
    available = available_bytes(device)
    if available is None or estimate.total <= available:
        return estimate
    argument = blame(cfg, vocab_size, device)
    raise ModelTooLargeError(
        argument,
        f"the model is too large for this machine: a training step of preset={cfg.preset!r} "
        f"(n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, seq_len={cfg.seq_len}, "
        f"{_data_label(vocab_size, cfg.image_size)}, batch_size={cfg.batch_size}) needs about "
        f"{format_bytes(estimate.total)} ({estimate.describe()}), but "
        f"{torch.device(device).type} has {format_bytes(available)} available; "
        f"{_advice(argument, cfg, device, available)}, or pass "
        "memory_check=False to try anyway "
        "(e.g. with swap or unified memory)")


# settings that change the estimate, besides the preset itself
SHAPE_SETTINGS = ("n_layer", "n_embd", "n_head", "seq_len", "vocab_size", "batch_size",
                  "initial_ties", "dropout", "precision", "mlp_width", "tie_embeddings",
                  "image_size")

# shape settings most presets leave at these values (a preset proposed instead sets them)
UNSET_BY_PRESETS = {"mlp_width": 0, "tie_embeddings": True, "image_size": 0}


def _data_label(data: Any, image_size: int = 0) -> str:
    if isinstance(data, int):
        return f"vocab_size={data}"
    if hasattr(data, "n_classes"):
        resized = f" resized to {image_size}x{image_size}" if image_size else ""
        return f"{data.height}x{data.width} images{resized}, {data.n_classes} classes"
    return f"vocab_size={data.vocab_size}"


def blame(cfg: EnvConfig, vocab_size: Any, device: str | torch.device) -> str:
    """The setting most responsible for the estimate: of the settings given a value other
    than the preset's, the one whose preset value would save the most memory; `"preset"`
    when there is none (the preset's own shape is too large)."""
    preset = {**EnvConfig().to_dict(), **PRESETS.get(cfg.preset, {})}
    total = estimate_bytes(cfg, vocab_size, device).total
    best, saving = "preset", 0
    for name in SHAPE_SETTINGS:
        if getattr(cfg, name) == preset[name] or (not isinstance(vocab_size, int) and name in
                                                  ("vocab_size", "seq_len")):
            continue
        reverted = replace(cfg, **{name: preset[name]})
        vocab = preset[name] if name == "vocab_size" else vocab_size
        saved = total - estimate_bytes(reverted, vocab, device).total
        if saved > saving:
            best, saving = name, saved
    return best


def _advice(argument: str, cfg: EnvConfig, device: str | torch.device, available: int) -> str:
    if argument == "preset":
        fit = [name for name, values in PRESETS.items() if name != cfg.preset
               and values.get("family", "gpt2") == cfg.family
               and "vocab_size" in values
               and estimate_bytes(replace(cfg, **{**UNSET_BY_PRESETS, **values}),
                                  values["vocab_size"], device).total <= available]
        presets = f"a preset that fits ({', '.join(fit)})" if fit else "a smaller preset"
        return f"use {presets} or a smaller batch_size, seq_len, n_embd or n_layer"
    if argument == "initial_ties":
        return "start tied (initial_ties='first') or use a smaller n_embd or n_layer"
    if argument == "precision":
        return ("use precision='bf16' (weights, gradients and AdamW state in bfloat16) or "
                "'auto'")
    return f"use a smaller {argument}"
