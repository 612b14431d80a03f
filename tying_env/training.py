"""The inner training run: what one episode trains, with no Gymnasium in sight.

- `InnerOptimizer`: AdamW that follows every change of the tie map.
  After each decision, `InnerOptimizer.sync` receives the model's current
  trainable tensors: the state of tensors that are gone (a root became tied) is
  deleted, so its memory is freed, and new tensors (an untied clone) start with
  fresh state. Tensors that survive (a root handed to its lowest dependent
  included) keep their state. Under `tie_semantics="published"` the model is a
  `PublishedModel` and the optimizer holds every Parameter from the start, never
  synced, as the published one does (`tying_env.models.published`).
- Examples: a split is a 1-D stream of token ids, cut into windows of `seq_len + 1`
  tokens, or a 2-D table of examples (image rows, the label last), taken row by row:
  `sample_windows` (random training batches), `spread_windows` (a fixed evaluation
  subset), `split_windows` (a whole split). The model's task (`tying_env.models.family`)
  turns examples into inputs and targets.
- `TrainingRun`: one seeded training run of a tied model on a corpus:
  apply a decision, train a few steps, evaluate; its complete state for
  checkpoints (`TrainingRun.state` / `TrainingRun.restore`).
- Precision (`EnvConfig.precision`, see `model_dtype` and `autocast`): `fp32`;
  `bf16-autocast` (float32 weights, gradients and AdamW state, bfloat16 compute under
  `torch.autocast`); pure `bf16` (the whole model cast to bfloat16, so its gradients
  and AdamW moments are bfloat16 too, as published). The loss is float32 in all three.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tying_env import checkpoint as ckpt
from tying_env import ties as tm
from tying_env.data.corpus import Corpus
from tying_env.data.images import ImageSet
from tying_env.models import DataShape, PublishedModel, TiedModel, as_config, get_family
from tying_env.models.family import IGNORE
from tying_env.presets import EnvConfig, resolved_precision
from tying_env.published_ties import PublishedTies
from tying_env.ties import Transition


def lr_factor(step: int, warmup_steps: int, total_steps: int | None, cosine: bool) -> float:
    """Linear warm-up to 1, then constant or cosine decay to 0.1 at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine or not total_steps:
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class InnerOptimizer:
    """AdamW with weight decay, gradient clipping and an optional warm-up/cosine schedule."""

    def __init__(self, params: Sequence[nn.Parameter], lr: float, weight_decay: float = 0.01,
                 grad_clip: float = 1.0, warmup_steps: int = 0, total_steps: int | None = None,
                 cosine: bool = False, aliased: bool = False):
        """`aliased`: Parameters may share storage (the published mechanics); they are then
        updated one at a time (neither fused nor multi-tensor), so that the update of each
        lands on the shared storage in turn."""
        self.base_lr = lr
        self.grad_clip = grad_clip
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.cosine = cosine
        self.steps = 0
        params = list(params)
        kernel = (dict(foreach=False, fused=False) if aliased
                  else dict(fused=fused_supported(params)))
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kernel)
        self.set_lr()

    @property
    def params(self) -> list[nn.Parameter]:
        return self.optimizer.param_groups[0]["params"]

    def sync(self, params: Sequence[nn.Parameter]) -> None:
        """Follow the model's trainable tensors: free state of removed ones."""
        params = list(params)
        keep = {id(p) for p in params}
        for p in list(self.optimizer.state):
            if id(p) not in keep:
                del self.optimizer.state[p]
        for p in self.params:
            if id(p) not in keep:
                p.grad = None  # the gradient of a freed tensor must not linger either
        self.optimizer.param_groups[0]["params"] = params

    def step(self, loss: torch.Tensor) -> None:
        """Backward, clip (to a total norm of `grad_clip`), update."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.steps += 1
        self.set_lr()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self) -> None:
        """Set the learning rate of the schedule at the current step count."""
        factor = lr_factor(self.steps, self.warmup_steps, self.total_steps, self.cosine)
        self.optimizer.param_groups[0]["lr"] = self.base_lr * factor


EVAL_BATCH_FACTOR = 4  # evaluation batches hold this many training batches


def fused_supported(params: Sequence[torch.Tensor]) -> bool:
    """Whether AdamW's fused kernel (one pass over all tensors, same update) fits `params`.

    It needs floating-point tensors on the CPU or on CUDA, all on one device.
    """
    devices = {p.device.type for p in params}
    return (bool(params) and devices <= {"cpu", "cuda"} and len({p.device for p in params}) == 1
            and all(p.is_floating_point() for p in params))


# ------------------------------------------------------------------ windows
def sample_windows(tokens: np.ndarray, rng: np.random.Generator, batch_size: int,
                   seq_len: int) -> np.ndarray:
    """`batch_size` random windows of `seq_len + 1` tokens, shape [batch, seq_len + 1]
    (of a table of examples: `batch_size` random rows)."""
    if tokens.ndim == 2:
        return np.asarray(tokens[np.sort(rng.integers(0, len(tokens), size=batch_size))])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
    return np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)])


def spread_windows(tokens: np.ndarray, n: int, seq_len: int) -> np.ndarray:
    """`n` windows of `seq_len + 1` tokens spread evenly over `tokens` (of a table of
    examples: `n` rows spread evenly, all of them if it has fewer)."""
    if tokens.ndim == 2:
        rows = np.unique(np.linspace(0, len(tokens) - 1, min(n, len(tokens))).astype(np.int64))
        return np.asarray(tokens[rows])
    starts = np.linspace(0, len(tokens) - seq_len - 1, n).astype(np.int64)
    return np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)])


def split_windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """A whole split as non-overlapping windows [N, seq_len + 1] (neighbours share a token;
    of a table of examples: every row)."""
    if tokens.ndim == 2:
        return np.asarray(tokens)
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(f"a split of {len(tokens)} tokens is shorter than one window of "
                         f"{seq_len + 1}")
    return np.asarray(tokens[np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)])


# ------------------------------------------------------------------ precision
def model_dtype(precision: str) -> torch.dtype:
    """The dtype of the weights (and so of gradients and AdamW moments) in `precision`."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` for `"bf16-autocast"`; nothing otherwise."""
    if precision == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ the run
def data_shape(data: Corpus | ImageSet | int) -> DataShape:
    """What a model config needs to know about `data` (an int: a vocabulary size)."""
    if isinstance(data, ImageSet):
        return DataShape(channels=data.channels, height=data.height, width=data.width,
                         n_classes=data.n_classes)
    return DataShape(vocab_size=data if isinstance(data, int) else data.vocab_size)


def model_config(cfg: EnvConfig, data: Corpus | ImageSet | int):
    """The Hugging Face config of `cfg`'s model: `cfg.hf_config` when given (the data's
    vocabulary or classes filled in), else built from the shape settings."""
    family = get_family(cfg.family)
    shape = data_shape(data)
    if cfg.hf_config is None:
        return family.make_config(cfg, shape)
    config = as_config(dict(cfg.hf_config))
    if family.data_kind == "images":
        config.num_labels = shape.n_classes
    else:
        config.vocab_size = shape.vocab_size + family.extra_tokens
    return config


def build_model(cfg: EnvConfig, data: Corpus | ImageSet | int,
                ties: Sequence[int] | None = None, frozen: Sequence[int] = ()) -> TiedModel:
    """The tied model of `cfg` for `data` (initialised from torch's current random state,
    float32)."""
    return TiedModel(model_config(cfg, data), cfg.tie_mode, ties=ties, frozen=frozen)


def build_published_model(cfg: EnvConfig, data: Corpus | ImageSet | int,
                          storage: Sequence[int] | None = None,
                          trainable: Sequence[bool] | None = None) -> PublishedModel:
    """The model of `cfg` for `data` under the published mechanics, in `cfg.initial_ties`'s
    published start (`PublishedTies.start`) unless a layout is given (initialised from
    torch's current random state, float32)."""
    if storage is None:
        start = PublishedTies.start(cfg.n_layer, cfg.initial_ties)
        storage, trainable = start.storage, start.trainable
    return PublishedModel(model_config(cfg, data), storage=storage, trainable=trainable)


def initial_ties(cfg: EnvConfig) -> tm.TieMap | None:
    """The tie map a fresh run starts from (None: every layer its own root)."""
    return tm.all_first(cfg.n_layer) if cfg.initial_ties == "first" else None


def initial_frozen(cfg: EnvConfig) -> tuple[int, ...]:
    """The roots a fresh run starts frozen: blocks 1..L-1 for `initial_ties="frozen"`."""
    return tuple(range(1, cfg.n_layer)) if cfg.initial_ties == "frozen" else ()


@dataclass(frozen=True)
class Evaluation:
    """The model on a set of examples: mean loss (nats per target) and, for image
    classification, accuracy (the share of examples whose highest logit is right; None
    for language models, whose argmax over the vocabulary is not computed)."""

    loss: float
    accuracy: float | None = None


class TrainingRun:
    """One seeded training run of a tied model on a corpus (text or images).

    `model_seed` initialises the weights (in float32, then cast to the precision's
    dtype, so every precision starts from the same values; both `tie_semantics` start
    from the same weights: the model is a `TiedModel`, or under `"published"` a
    `PublishedModel` whose optimizer holds every Parameter); `data_seed` drives the
    choice of training windows and, through a torch generator state kept apart from the
    caller's, dropout. `seconds` accumulates the time spent training and
    evaluating (for performance measurements). `precision` is `cfg.precision` resolved
    for `device`.
    """

    def __init__(self, cfg: EnvConfig, corpus: Corpus, device: torch.device, model_seed: int,
                 data_seed: int):
        self.cfg = cfg
        self.corpus = corpus
        self.device = device
        self.precision = resolved_precision(cfg.precision, device)
        self.data_rng = np.random.default_rng(data_seed)
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(model_seed)
            model = (build_published_model(cfg, corpus) if self.published
                     else build_model(cfg, corpus, initial_ties(cfg), initial_frozen(cfg)))
            self.model = model.to(device, model_dtype(self.precision))
            self.torch_rng = _rng_state(device)
        self.optim = self._new_optimizer(self.model)
        self.seconds = {"train": 0.0, "evaluate": 0.0}

    @property
    def published(self) -> bool:
        """Whether the run ties as the published code does (`tie_semantics="published"`)."""
        return self.cfg.tie_semantics == "published"

    # ---------------------------------------------------------------- decisions
    def choose(self, layer: int, choice: int) -> Transition:
        """Apply one decision (`choice < layer` copies it, else independent)."""
        if self.published:  # its optimizer holds every Parameter already: nothing to sync
            return self.model.choose(layer, choice)
        frozen = self.model.frozen
        transition = self.model.choose(layer, choice)
        if transition.changed or self.model.frozen != frozen:
            self.optim.sync(self.model.trainable_parameters())
        return transition

    # ---------------------------------------------------------------- compute
    def train(self, n_steps: int) -> float:
        """Run `n_steps` optimizer steps on random windows; returns the last training loss.

        Stops early, returning the non-finite loss, when the loss is NaN or inf.
        """
        t0 = time.perf_counter()
        cfg = self.cfg
        self.model.train()
        loss_value = float("nan")
        try:
            with self._own_rng():
                for _ in range(n_steps):
                    windows = sample_windows(self.corpus.train, self.data_rng, cfg.batch_size,
                                             cfg.seq_len)
                    x, y = self._batch(windows, self.data_rng)
                    with autocast(self.precision, self.device):
                        loss = self.model.loss(x, y)
                    loss_value = float(loss.detach())
                    if not math.isfinite(loss_value):
                        return loss_value
                    self.optim.step(loss)
        finally:
            self.seconds["train"] += time.perf_counter() - t0
        return loss_value

    def evaluate_loss(self, windows: np.ndarray, batch_size: int | None = None) -> float:
        """Mean loss (nats per target) of the current model on `windows` (`evaluate`)."""
        return self.evaluate(windows, batch_size).loss

    @torch.no_grad()  # not inference_mode: a tied block's twin built here is used in training
    def evaluate(self, windows: np.ndarray, batch_size: int | None = None) -> Evaluation:
        """The current model on `windows` (examples): its mean loss and, for image
        classification, its accuracy.

        Without autograd or dropout; by default in batches of `EVAL_BATCH_FACTOR`
        training batches (no activations are kept for a backward pass). The task's
        targets are made for all the examples at once (BERT's masks from a fixed seed),
        so the result does not depend on the batch size.
        """
        t0 = time.perf_counter()
        self.model.eval()
        batch_size = batch_size or EVAL_BATCH_FACTOR * self.cfg.batch_size
        inputs, targets = self.model.task.batch(windows, None)
        classify = self.model.family.task == "image-classification"
        total, count, correct = 0.0, 0, 0
        for start in range(0, len(windows), batch_size):
            x, y = (self._tensor(a[start:start + batch_size]) for a in (inputs, targets))
            n = int((y != IGNORE).sum())
            if n == 0:
                continue
            with autocast(self.precision, self.device):
                loss, logits = self.model.loss_and_logits(x, y)
            total += float(loss) * n
            count += n
            if classify:  # not for language models: an argmax over the vocabulary costs
                correct += int((logits.argmax(-1) == y).sum())
        self.seconds["evaluate"] += time.perf_counter() - t0
        return Evaluation(loss=total / count if count else float("nan"),
                          accuracy=(correct / count if count else float("nan")) if classify
                          else None)

    def train_batch_loss(self) -> float:
        """The loss of the model (eval mode) on one random training batch."""
        windows = sample_windows(self.corpus.train, self.data_rng, self.cfg.batch_size,
                                 self.cfg.seq_len)
        return self.evaluate_loss(windows)

    def train_batch_evaluation(self) -> Evaluation:
        """The model (eval mode) on one random training batch: loss and, for images,
        accuracy (the published ViT reward's batch, drawn as `train_batch_loss` draws)."""
        windows = sample_windows(self.corpus.train, self.data_rng, self.cfg.batch_size,
                                 self.cfg.seq_len)
        return self.evaluate(windows)

    def _batch(self, windows: np.ndarray,
               rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.model.task.batch(windows, rng)
        return self._tensor(x), self._tensor(y)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if t.is_floating_point():
            return t.to(self.device, model_dtype(self.precision))
        return t.to(self.device, torch.int64)

    def _rng_devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Dropout draws from the run's own generator state, not from the caller's."""
        with torch.random.fork_rng(devices=self._rng_devices()):
            _set_rng_state(self.device, self.torch_rng)
            yield
            self.torch_rng = _rng_state(self.device)

    def _new_optimizer(self, model: TiedModel | PublishedModel) -> InnerOptimizer:
        cfg = self.cfg
        total = cfg.max_sweeps * (cfg.n_layer - 1) * cfg.steps_per_decision
        aliased = isinstance(model, PublishedModel)  # the published optimizer: every Parameter
        params = model.optimizer_parameters() if aliased else model.trainable_parameters()
        return InnerOptimizer(params, cfg.lr,
                              weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                              warmup_steps=cfg.warmup_steps, total_steps=total,
                              cosine=cfg.cosine_schedule, aliased=aliased)

    # ---------------------------------------------------------------- state
    def state(self) -> ckpt.Part:
        """Everything the run needs to continue exactly: tensors and JSON-able metadata.

        Tensors: `model/` (root blocks, embeddings, final norm; under the published
        mechanics every storage once), `optim/` (the AdamW state, per tensor in the
        order of the optimizer's parameters: `model.trainable_parameters()`, or every
        Parameter of a `PublishedModel`, stale state included), `torch_rng/` (the dropout
        generator). Metadata: the tie map (published: which storage each position runs),
        the frozen roots, the published flags (`published.trainable`, published only),
        the schedule's step count, which tensors hold a gradient (memory accounting sees
        them), the data sampler's generator.
        """
        model_tensors, model_meta = ckpt.module_state(self.model.net)
        optim_tensors, optim_meta = ckpt.optimizer_state(self.optim.optimizer)
        tensors = {**ckpt.prefixed("model/", model_tensors),
                   **ckpt.prefixed("optim/", optim_tensors),
                   **{f"torch_rng/{i}": s.cpu() for i, s in enumerate(self.torch_rng)}}
        params = self.optim.params  # the model's trainable tensors, or all (published)
        meta = dict(tie_map=list(self.model.ties), frozen=list(self.model.frozen),
                    model=model_meta,
                    optim=dict(steps=self.optim.steps, torch=optim_meta),
                    grads=[i for i, p in enumerate(params) if p.grad is not None],
                    data_rng=ckpt.generator_state(self.data_rng),
                    torch_rng=len(self.torch_rng))
        if self.published:
            meta["published"] = dict(trainable=list(self.model.trainable))
        return tensors, meta

    @classmethod
    def restore(cls, cfg: EnvConfig, corpus: Corpus, device: torch.device,
                tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainingRun:
        """The run saved by `state`; `CheckpointError`
        names anything that does not fit `cfg`."""
        ckpt.require(meta, ("tie_map", "frozen", "model", "optim", "grads", "data_rng",
                            "torch_rng"), "training run")
        try:
            ties = tm.validate(meta["tie_map"])
        except (TypeError, ValueError) as e:
            raise ckpt.CheckpointError(f"the saved tie map is invalid: {e}") from None
        if len(ties) != cfg.n_layer:
            raise ckpt.CheckpointError(f"the saved tie map {list(ties)} does not fit "
                                       f"n_layer={cfg.n_layer}")
        frozen = meta["frozen"]
        if not isinstance(frozen, list) or any(not isinstance(i, int) or not 0 <= i < len(ties)
                                               or ties[i] != i for i in frozen):
            raise ckpt.CheckpointError(f"the saved frozen roots {frozen} do not fit the tie map "
                                       f"{list(ties)}")
        run = cls.__new__(cls)
        run.cfg, run.corpus, run.device = cfg, corpus, device
        run.precision = resolved_precision(cfg.precision, device)
        with torch.random.fork_rng(devices=run._rng_devices()):  # the init is overwritten
            model = (_restored_published_model(cfg, corpus, ties, meta) if run.published
                     else build_model(cfg, corpus, ties, frozen))
        model.to(dtype=model_dtype(run.precision))
        ckpt.load_module_state(model.net, ckpt.sub(tensors, "model/"), meta["model"], "model")
        run.model = model.to(device)
        run.optim = run._new_optimizer(run.model)
        ckpt.load_optimizer_state(run.optim.optimizer, ckpt.sub(tensors, "optim/"),
                                  meta["optim"]["torch"])
        run.optim.steps = int(meta["optim"]["steps"])
        run.optim.set_lr()
        params = run.optim.params
        if any(not 0 <= i < len(params) for i in meta["grads"]):
            raise ckpt.CheckpointError(f"the saved gradient list {meta['grads']} does not fit "
                                       f"{len(params)} trainable tensors")
        for i in meta["grads"]:  # gradient values never matter (cleared before each step),
            params[i].grad = torch.zeros_like(params[i])  # but memory accounting sees them
        run.torch_rng = [tensors[f"torch_rng/{i}"].to("cpu", copy=True)  # the saved state
                         for i in range(int(meta["torch_rng"]))]  # stays as it was
        run.data_rng = ckpt.make_generator(meta["data_rng"])
        run.seconds = {"train": 0.0, "evaluate": 0.0}
        return run


def _restored_published_model(cfg: EnvConfig, corpus: Corpus | ImageSet, ties: tm.TieMap,
                              meta: dict[str, Any]) -> PublishedModel:
    """A `PublishedModel` in the saved layout: which storage each position runs and the
    published flags (`TrainingRun.state`)."""
    published = meta.get("published")
    trainable = published.get("trainable") if isinstance(published, dict) else None
    if (not isinstance(trainable, list) or len(trainable) != len(ties)
            or any(not isinstance(t, bool) for t in trainable)):
        raise ckpt.CheckpointError(f"the saved published flags {trainable!r} do not fit "
                                   f"n_layer={len(ties)} (a list of bools per position, "
                                   "saved with tie_semantics='published')")
    return build_published_model(cfg, corpus, ties, trainable)


def _rng_state(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(device: torch.device, states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
