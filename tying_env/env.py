"""The Gymnasium environment: one episode is one training run of a fresh GPT-2."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from tying_env import checkpoint as ckpt
from tying_env import ties as tm
from tying_env.corpus import Corpus, load_corpus
from tying_env.model import TiedGPT2, gpt2_config
from tying_env.optim import InnerOptimizer
from tying_env.presets import EnvConfig, make_config


class LayerTyingEnv(gym.Env):
    """Decide, layer after layer, whether each block trains or reuses an earlier block.

    An episode trains a fresh, seeded GPT-2 from scratch (Hay & Wolf, ICLR 2024).
    Every step applies the agent's choice to the tie map, runs
    ``steps_per_decision`` AdamW steps on training batches, and evaluates the
    model on a fixed validation subset.

    ## Action space

    ``action_mode="layer"`` (default, the paper's protocol): ``Discrete(L)``,
    deciding the layer ``i`` given in ``info["layer"]`` (``1..L-1``, in order,
    sweep after sweep).

    | action      | meaning                                                     |
    |-------------|-------------------------------------------------------------|
    | ``j < i``   | layer i runs the weights of layer j (of j's root)           |
    | ``j >= i``  | layer i trains its own weights (a clone of what it ran)      |

    ``action_masks()`` marks the ``i + 1`` distinct choices ``0..i``.

    ``action_mode="vector"``: ``MultiDiscrete([1, 2, ..., L])``, a whole tie map
    per step: entry ``i`` is ``j < i`` (copy j) or ``i`` (independent); entries are
    applied for layers 1..L-1 in order, then ``steps_per_decision * (L - 1)``
    steps train, so a step costs one layer-mode sweep.

    ## Observation space

    ``Box(shape=(2L + 3,), float32)``:

    | index        | observation                                   | min | max     |
    |--------------|-----------------------------------------------|-----|---------|
    | ``0..L-1``   | tie map ``t`` (raw integers, ``t[i] <= i``)   | 0   | L - 1   |
    | ``L..2L-1``  | one-hot of the layer to decide (zeros in vector mode) | 0 | 1 |
    | ``2L``       | training progress (decisions done / budget)   | 0   | 1       |
    | ``2L + 1``   | last validation loss (nats per token)         | 0   | inf     |
    | ``2L + 2``   | trainable fraction of parameters              | 0   | 1       |

    ## Rewards

    | ``reward``                    | per step                                      |
    |-------------------------------|-----------------------------------------------|
    | ``"log_ppl_delta"`` (default) | ``log(ppl_before / ppl_after)`` on the fixed  |
    |                               | validation subset                             |
    | ``"ppl_delta"``               | ``ppl_before - ppl_after``                    |
    | ``"paper"``                   | minus the perplexity of one training batch    |
    |                               | after the steps (the published reward)        |

    With the default reward an episode's return telescopes to
    ``log(ppl_start / ppl_end)``: maximising it minimises the final perplexity.
    ``param_penalty * trainable_fraction`` is subtracted from every reward.

    ## Starting state

    A fresh GPT-2 initialised from the episode's seed. ``initial_ties="first"``
    (default, the published start): every layer runs a real copy of block 0;
    ``"none"``: every layer trains its own weights.

    ## Episode end

    Truncation after ``max_sweeps`` sweeps (``max_sweeps * (L - 1)`` steps in
    layer mode, ``max_sweeps`` in vector mode). Termination when the training
    diverges (a non-finite loss): ``info["diverged"]`` is True and the reward is 0.

    ## Info

    ``tie_map``, ``layer``, ``sweep``, ``decision``, ``val_loss``, ``val_ppl``,
    ``train_loss``, ``trainable_params``, ``total_params``, ``trainable_fraction``,
    ``memory_bytes`` (params, grads, optimizer, total), ``train_steps``, ``lr``,
    ``diverged``, ``changed`` (whether the tie map changed), and, on the
    synthetic corpus, ``optimal_ppl`` (the source's exact perplexity on the
    same validation windows: a floor no model can beat in expectation).

    ## Arguments

    ``preset`` (``tiny``, ``small``, ``gpt2``, ``paper``) then any field of
    :class:`tying_env.presets.EnvConfig` as a keyword; explicit arguments
    override the preset. ``cache_dir`` sets where tokenizers and tokenized
    corpora are cached. Every argument is checked up front: a mistake raises
    TypeError/ValueError (FileNotFoundError for a missing data folder) naming
    the argument, the bad value and what is allowed.

    ## Checkpoints

    :meth:`get_state` returns everything the episode needs to continue exactly
    (tensors and JSON-able metadata); :meth:`set_state` restores it, so that the
    continuation is bitwise identical on CPU.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, preset: str = "tiny", *, render_mode: str | None = None,
                 cache_dir: str | Path | None = None, **kwargs: Any):
        self.cfg: EnvConfig = make_config(preset, **kwargs)
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode={render_mode!r} is unknown; allowed: None, 'ansi'")
        if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
            raise TypeError(f"cache_dir={cache_dir!r} must be a folder path (str or Path) or None")
        self.render_mode = render_mode
        cfg = self.cfg
        self.device = torch.device(
            "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
            else "cpu")
        self.corpus: Corpus = _load_corpus(cfg, cache_dir)
        for split in ("train", "valid", "test"):
            n = len(getattr(self.corpus, split))
            if n < cfg.seq_len + 2:
                raise ValueError(
                    f"seq_len={cfg.seq_len} is too long for the corpus: the {split} split of "
                    f"dataset={cfg.dataset!r} has {n} tokens, and each split needs at least "
                    f"seq_len + 2 = {cfg.seq_len + 2}; use a smaller seq_len or more text")
        self.eval_windows = _spread_windows(self.corpus.valid, cfg.eval_batches * cfg.batch_size,
                                            cfg.seq_len)
        self.optimal_ppl = (self.corpus.source.optimal_ppl(self.eval_windows)
                            if self.corpus.source is not None else None)

        L = cfg.n_layer
        if cfg.action_mode == "layer":
            self.action_space: spaces.Space = spaces.Discrete(L)
        else:
            self.action_space = spaces.MultiDiscrete(np.arange(1, L + 1))
        low = np.zeros(2 * L + 3, dtype=np.float32)
        high = np.concatenate([np.full(L, L - 1), np.ones(L + 1), [np.inf, 1.0]]).astype(
            np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.decisions_per_sweep = L - 1
        self.model: TiedGPT2 | None = None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        cfg = self.cfg
        model_seed = int(self.np_random.integers(2**31 - 1))
        self._data_rng = np.random.default_rng(int(self.np_random.integers(2**31 - 1)))
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(model_seed)
            config = gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len,
                                 self.corpus.vocab_size, cfg.dropout, cfg.activation)
            initial = tm.all_first(cfg.n_layer) if cfg.initial_ties == "first" else None
            self.model = TiedGPT2(config, cfg.tie_mode, ties=initial).to(self.device)
            self._torch_state = _rng_state(self.device)
        self.optim = self._new_optimizer(self.model)
        self.layer = 1
        self.sweep = 0
        self.decision = 0
        self.diverged = False
        self._changed = False
        self.train_loss = float("nan")
        self.val_loss = self.evaluate_loss(self.eval_windows)
        self.start_val_loss = self.val_loss
        return self._obs(), self._info(changed=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.model is None:
            raise RuntimeError("call reset() before step()")
        if self.diverged:
            raise RuntimeError("the episode ended (training diverged); call reset()")
        candidate = _as_action(action, self.action_space)
        if candidate is None or not self.action_space.contains(candidate):
            raise ValueError(f"action {action!r} is outside the action space {self.action_space}"
                             + (f" (layer mode: an int in 0..{self.cfg.n_layer - 1})"
                                if self.cfg.action_mode == "layer" else ""))
        before = self.model.ties
        if self.cfg.action_mode == "layer":
            self.model.choose(self.layer, int(action))
            n_steps = self.cfg.steps_per_decision
        else:
            for i, choice in enumerate(np.asarray(action).tolist()[1:], start=1):
                self.model.choose(i, int(choice))
            n_steps = self.cfg.steps_per_decision * self.decisions_per_sweep
        changed = self.model.ties != before
        self._changed = changed
        if changed:
            self.optim.sync(self.model.trainable_parameters())

        prev_loss = self.val_loss
        self.train_loss = self._train(n_steps)
        val_loss = self.evaluate_loss(self.eval_windows) if math.isfinite(self.train_loss) \
            else float("nan")
        self.diverged = not (math.isfinite(self.train_loss) and math.isfinite(val_loss))
        reward = 0.0 if self.diverged else self._reward(prev_loss, val_loss)
        if not self.diverged:
            self.val_loss = val_loss
        self._advance()
        truncated = not self.diverged and self.sweep >= self.cfg.max_sweeps
        return self._obs(), reward, self.diverged, truncated, self._info(changed)

    def action_masks(self) -> np.ndarray:
        """Valid choices for the current decision (all True in vector mode)."""
        if self.cfg.action_mode == "vector":
            return np.ones(int(np.sum(self.action_space.nvec)), dtype=bool)
        return np.arange(self.cfg.n_layer) <= self.layer

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self.model is None:
            return None
        return (f"sweep {self.sweep} layer {self.layer} ties {list(self.model.ties)} "
                f"val_ppl {math.exp(self.val_loss):.3f}")

    def close(self) -> None:
        self.model = None

    # ---------------------------------------------------------- checkpoints
    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything the running episode needs to continue exactly as if never stopped.

        Tensors (``model/``: root blocks, embeddings, final norm; ``optim/``: the
        inner AdamW's state, per trainable tensor in the order of
        ``model.trainable_parameters()``; ``torch_rng/``: the episode's dropout
        generator) and JSON-able metadata (settings, corpus identity, tie map,
        counters, losses as exact floats, the schedule's step count, the numpy
        generators of the episode and of its data sampler).
        """
        if self.model is None:
            raise RuntimeError("call reset() before get_state()")
        model_tensors, model_meta = ckpt.module_state(self.model.lm)
        optim_tensors, optim_meta = ckpt.optimizer_state(self.optim.optimizer)
        tensors = {**ckpt.prefixed("model/", model_tensors),
                   **ckpt.prefixed("optim/", optim_tensors),
                   **{f"torch_rng/{i}": s.cpu() for i, s in enumerate(self._torch_state)}}
        params = self.model.trainable_parameters()
        meta = dict(
            format=STATE_FORMAT, config=self.cfg.to_dict(), corpus=self.corpus_identity(),
            tie_map=list(self.model.ties), model=model_meta,
            layer=self.layer, sweep=self.sweep, decision=self.decision, diverged=self.diverged,
            changed=self._changed, val_loss=ckpt.exact(self.val_loss),
            start_val_loss=ckpt.exact(self.start_val_loss),
            train_loss=ckpt.exact(self.train_loss),
            optim=dict(steps=self.optim.steps, torch=optim_meta),
            grads=[i for i, p in enumerate(params) if p.grad is not None],
            np_random=ckpt.generator_state(self.np_random),
            np_random_seed=getattr(self, "_np_random_seed", None),
            data_rng=ckpt.generator_state(self._data_rng),
            torch_rng=len(self._torch_state),
        )
        return tensors, meta

    def set_state(self, tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Continue the episode saved by :meth:`get_state`; returns its observation and info.

        Call it after ``reset()`` when the environment is wrapped (wrappers such as
        ``OrderEnforcing`` want one); it then replaces all of the episode's state.
        A state saved with other settings or another corpus is refused with a
        :class:`~tying_env.checkpoint.CheckpointError` naming what differs; the
        environment is left untouched when anything is refused.
        """
        cfg = self.cfg
        ckpt.require(meta, ("format", "config", "corpus", "tie_map", "model", "layer", "sweep",
                            "decision", "diverged", "changed", "val_loss", "start_val_loss",
                            "train_loss", "optim", "grads", "np_random", "data_rng",
                            "torch_rng"), "environment")
        if meta["format"] != STATE_FORMAT:
            raise ckpt.CheckpointError(f"environment state has format {meta['format']!r}; "
                                       f"expected {STATE_FORMAT!r}")
        diff = ckpt.differences(cfg.to_dict(), meta["config"],
                                ("this environment", "the saved state"))
        if diff:
            raise ckpt.CheckpointError("the saved environment has other settings: "
                                       + "; ".join(diff))
        diff = ckpt.differences(self.corpus_identity(), meta["corpus"],
                                ("this environment's corpus", "the saved state's"))
        if diff:
            raise ckpt.CheckpointError("the saved environment used another corpus or "
                                       "tokenizer: " + "; ".join(diff))
        try:
            ties = tm.validate(meta["tie_map"])
        except (TypeError, ValueError) as e:
            raise ckpt.CheckpointError(f"the saved tie map is invalid: {e}") from None
        if len(ties) != cfg.n_layer or not 1 <= int(meta["layer"]) < cfg.n_layer:
            raise ckpt.CheckpointError(f"the saved tie map {list(ties)} / layer {meta['layer']} "
                                       f"do not fit n_layer={cfg.n_layer}")
        config = gpt2_config(cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.seq_len,
                             self.corpus.vocab_size, cfg.dropout, cfg.activation)
        with torch.random.fork_rng(devices=self._rng_devices()):  # the init is overwritten
            model = TiedGPT2(config, cfg.tie_mode, ties=ties)
        ckpt.load_module_state(model.lm, ckpt.sub(tensors, "model/"), meta["model"], "model")
        model.to(self.device)
        optim = self._new_optimizer(model)
        ckpt.load_optimizer_state(optim.optimizer, ckpt.sub(tensors, "optim/"),
                                  meta["optim"]["torch"])
        optim.steps = int(meta["optim"]["steps"])
        params = model.trainable_parameters()
        if any(not 0 <= i < len(params) for i in meta["grads"]):
            raise ckpt.CheckpointError(f"the saved gradient list {meta['grads']} does not fit "
                                       f"{len(params)} trainable tensors")
        torch_state = [tensors[f"torch_rng/{i}"] for i in range(int(meta["torch_rng"]))]
        np_random = ckpt.make_generator(meta["np_random"])
        data_rng = ckpt.make_generator(meta["data_rng"])
        # everything is checked: from here on nothing can fail halfway
        for i in meta["grads"]:  # gradient values never matter (cleared before each step),
            params[i].grad = torch.zeros_like(params[i])  # but memory accounting sees them
        self.model, self.optim = model, optim
        self.layer, self.sweep = int(meta["layer"]), int(meta["sweep"])
        self.decision, self.diverged = int(meta["decision"]), bool(meta["diverged"])
        self._changed = bool(meta["changed"])
        self.val_loss = ckpt.from_exact(meta["val_loss"])
        self.start_val_loss = ckpt.from_exact(meta["start_val_loss"])
        self.train_loss = ckpt.from_exact(meta["train_loss"])
        self._torch_state = [s.to("cpu") for s in torch_state]
        self._np_random = np_random
        self._np_random_seed = meta.get("np_random_seed")
        self._data_rng = data_rng
        return self._obs(), self._info(self._changed)

    def corpus_identity(self) -> dict[str, Any]:
        """What identifies the token streams: corpus, tokenizer, sizes and a sha256 of the ids."""
        if getattr(self, "_corpus_identity", None) is None:
            c = self.corpus
            digest = hashlib.sha256()
            for split in (c.train, c.valid, c.test):
                for start in range(0, len(split), 1 << 22):
                    digest.update(np.ascontiguousarray(split[start:start + (1 << 22)]).tobytes())
            self._corpus_identity = dict(
                name=c.name, tokenizer=c.tokenizer, vocab_size=int(c.vocab_size),
                tokens=[len(c.train), len(c.valid), len(c.test)], sha256=digest.hexdigest())
        return dict(self._corpus_identity)

    def _new_optimizer(self, model: TiedGPT2) -> InnerOptimizer:
        cfg = self.cfg
        total = cfg.max_sweeps * self.decisions_per_sweep * cfg.steps_per_decision
        return InnerOptimizer(model.trainable_parameters(), cfg.lr,
                              weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
                              warmup_steps=cfg.warmup_steps, total_steps=total,
                              cosine=cfg.cosine_schedule)

    # ------------------------------------------------------------ training
    def _train(self, n_steps: int) -> float:
        """Run ``n_steps`` optimizer steps; returns the last training loss."""
        assert self.model is not None
        self.model.train()
        loss_value = float("nan")
        with self._own_rng():
            for _ in range(n_steps):
                x, y = self._batch(self._sample_windows())
                with self._autocast():
                    loss = self.model.loss(x, y)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    return loss_value
                self.optim.step(loss)
        return loss_value

    @torch.no_grad()
    def evaluate_loss(self, windows: np.ndarray, batch_size: int | None = None) -> float:
        """Mean next-token loss (nats) of the current model on ``windows`` [N, seq_len + 1]."""
        assert self.model is not None
        self.model.eval()
        batch_size = batch_size or self.cfg.batch_size
        total, count = 0.0, 0
        for start in range(0, len(windows), batch_size):
            x, y = self._batch(windows[start:start + batch_size])
            with self._autocast():
                loss = self.model.loss(x, y)
            total += float(loss) * y.numel()
            count += y.numel()
        return total / count

    def split_windows(self, split: str = "valid") -> np.ndarray:
        """A whole split cut into non-overlapping windows [N, seq_len + 1] (last token shared)."""
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split={split!r} is unknown; allowed: train, valid, test")
        tokens = getattr(self.corpus, split)
        seq_len = self.cfg.seq_len
        n = (len(tokens) - 1) // seq_len
        if n < 1:
            raise ValueError(f"the {split} split has {len(tokens)} tokens, fewer than one window")
        return np.asarray(tokens[np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)])

    def evaluate_split(self, split: str = "valid") -> float:
        """Perplexity of the current model on a whole split (non-overlapping windows)."""
        return math.exp(self.evaluate_loss(self.split_windows(split)))

    def _reward(self, prev_loss: float, val_loss: float) -> float:
        cfg = self.cfg
        if cfg.reward == "log_ppl_delta":
            reward = prev_loss - val_loss
        elif cfg.reward == "ppl_delta":
            reward = math.exp(prev_loss) - math.exp(val_loss)
        else:  # the published reward: minus the perplexity of one training batch
            reward = -math.exp(min(self.evaluate_loss(self._sample_windows()), 50.0))
        return float(reward - cfg.param_penalty * self.trainable_fraction)

    def _advance(self) -> None:
        self.decision += 1
        if self.cfg.action_mode == "vector":
            self.sweep += 1
            return
        self.layer += 1
        if self.layer >= self.cfg.n_layer:
            self.layer = 1
            self.sweep += 1

    # --------------------------------------------------------------- data
    def _sample_windows(self) -> np.ndarray:
        tokens = self.corpus.train
        starts = self._data_rng.integers(0, len(tokens) - self.cfg.seq_len - 1,
                                         size=self.cfg.batch_size)
        return np.asarray(tokens[starts[:, None] + np.arange(self.cfg.seq_len + 1)])

    def _batch(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.from_numpy(windows.astype(np.int64)).to(self.device)
        return w[:, :-1], w[:, 1:]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _rng_devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Dropout draws from the episode's own generator, not from the caller's."""
        with torch.random.fork_rng(devices=self._rng_devices()):
            _set_rng_state(self.device, self._torch_state)
            yield
            self._torch_state = _rng_state(self.device)

    # ---------------------------------------------------------- reporting
    @property
    def trainable_fraction(self) -> float:
        assert self.model is not None
        trainable, total = self.model.param_counts()
        return trainable / total

    @property
    def budget(self) -> int:
        """Decisions (steps) in one episode."""
        per_sweep = 1 if self.cfg.action_mode == "vector" else self.decisions_per_sweep
        return self.cfg.max_sweeps * per_sweep

    def _obs(self) -> np.ndarray:
        assert self.model is not None
        L = self.cfg.n_layer
        onehot = np.zeros(L, dtype=np.float32)
        if self.cfg.action_mode == "layer":
            onehot[self.layer] = 1.0
        tail = [min(1.0, self.decision / self.budget), self.val_loss, self.trainable_fraction]
        return np.concatenate([np.asarray(self.model.ties, dtype=np.float32), onehot,
                               np.asarray(tail, dtype=np.float32)])

    def _info(self, changed: bool) -> dict[str, Any]:
        assert self.model is not None
        trainable, total = self.model.param_counts()
        info: dict[str, Any] = dict(
            tie_map=list(self.model.ties), layer=self.layer, sweep=self.sweep,
            decision=self.decision, val_loss=self.val_loss, val_ppl=math.exp(self.val_loss),
            train_loss=self.train_loss, trainable_params=trainable, total_params=total,
            trainable_fraction=trainable / total,
            memory_bytes=self.model.memory_bytes(self.optim.optimizer).to_dict(),
            train_steps=self.optim.steps, lr=self.optim.lr, diverged=self.diverged,
            changed=changed,
        )
        if self.optimal_ppl is not None:
            info["optimal_ppl"] = self.optimal_ppl
        return info


STATE_FORMAT = "layer-tying-gym/env-state-v1"


def _load_corpus(cfg: EnvConfig, cache_dir: str | Path | None) -> Corpus:
    """The corpus of ``cfg``; errors caused by the data folder or tokenizer name them."""
    try:
        return load_corpus(cfg.dataset, data_dir=cfg.data_dir, tokenizer=cfg.tokenizer,
                           vocab_size=cfg.vocab_size, seed=0, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError) as e:
        message = str(e)
        about_folder = isinstance(e, FileNotFoundError) or (
            cfg.data_dir is not None and cfg.data_dir in message)
        if cfg.data_dir is None or "data_dir" in message or not about_folder:
            raise
        kind = FileNotFoundError if isinstance(e, FileNotFoundError) else ValueError
        raise kind(f"data_dir={cfg.data_dir!r}: {message}") from e


def _spread_windows(tokens: np.ndarray, n: int, seq_len: int) -> np.ndarray:
    """``n`` windows of ``seq_len + 1`` tokens spread evenly over ``tokens``."""
    starts = np.linspace(0, len(tokens) - seq_len - 1, n).astype(np.int64)
    return np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)])


def _as_action(action: Any, space: spaces.Space) -> Any:
    """``action`` as the space's own type, or None when it is not integral (never truncated)."""
    if isinstance(space, spaces.Discrete):
        if isinstance(action, (bool, np.bool_)):
            return None  # a bool is not a layer choice
        if isinstance(action, np.ndarray) and action.shape in ((), (1,)):
            return np.int64(action.reshape(())) if action.dtype.kind in "iu" else None
        if isinstance(action, (int, np.integer)):
            return np.int64(action)
        return None
    try:
        arr = np.asarray(action)
    except (TypeError, ValueError):  # ragged nesting and the like
        return None
    if arr.dtype.kind not in "iu" or arr.shape != space.shape:
        return None
    return arr.astype(np.int64)


def _rng_state(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set_rng_state(device: torch.device, states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)
