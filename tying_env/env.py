"""The Gymnasium environment: the MDP around one training run of a fresh transformer.

Spaces, reset/step, reward, observation and info live here; the training run
they drive (tied model, inner optimizer, batches, evaluation) is
`tying_env.training.TrainingRun`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from tying_env import checkpoint as ckpt
from tying_env import memory
from tying_env import render as rendering
from tying_env.data.corpus import Corpus, load_corpus
from tying_env.data.images import ImageSet, load_images
from tying_env.errors import SettingError, SettingTypeError
from tying_env.models import PublishedModel, TiedModel, get_family
from tying_env.presets import (
    ADDED_SETTINGS,
    FAMILY_DATA,
    EnvConfig,
    make_config,
    resolve_device,
)
from tying_env.training import Evaluation, TrainingRun, model_config, split_windows, spread_windows

ENV_STATE_FORMAT = "layer-tying-gym/env-state-v3"
SPLITS = ("train", "valid", "test")
NOT_COMPUTED = ("memory_check",)  # settings a checkpoint may differ in


@dataclass(frozen=True)
class SplitEvaluation:
    """The current model on a whole split (`LayerTyingEnv.evaluate`)."""

    split: str
    loss: float  # mean nats per target
    perplexity: float  # exp(loss)
    accuracy: float | None  # image classification only
    optimal_ppl: float | None  # the source's exact perplexity on these windows, if known
    n_outputs: int  # outputs per prediction: a uniform prediction's perplexity


class LayerTyingEnv(gym.Env):
    """Decide, layer after layer, whether each block trains or reuses an earlier block.

    An episode trains a fresh, seeded transformer from scratch (Hay & Wolf, ICLR 2024):
    GPT-2 by default, or Llama, BERT, ViT or causal BERT (`family`, see docs/families.md;
    for BERT "perplexity" is the masked-token perplexity, for ViT the exponential of the
    validation cross-entropy, with `info["val_accuracy"]` beside it).
    Every step applies the agent's choice to the tie map, runs
    `steps_per_decision` AdamW steps on training batches, and evaluates the
    model on a fixed validation subset.

    ## Action space

    `action_mode="layer"` (default, the paper's protocol): `Discrete(L)`,
    deciding the layer `i` given in `info["layer"]` (`1..L-1`, in order,
    sweep after sweep).

    | action      | meaning                                                     |
    |-------------|-------------------------------------------------------------|
    | `j < i`   | layer i runs the weights of layer j (of j's root)           |
    | `j >= i`  | layer i trains its own weights (a clone of what it ran)      |

    `action_masks()` marks the `i + 1` distinct choices `0..i`.

    `action_mode="vector"`: `MultiDiscrete([1, 2, ..., L])`, a whole tie map
    per step: entry `i` is `j < i` (copy j) or `i` (independent); entries are
    applied for layers 1..L-1 in order, then `steps_per_decision * (L - 1)`
    steps train, so a step costs one layer-mode sweep.

    ## Observation space

    `Box(shape=(2L + 3,), float32)`:

    | index        | observation                                   | min | max     |
    |--------------|-----------------------------------------------|-----|---------|
    | `0..L-1`   | tie map `t` (raw integers, `t[i] <= i`);  | 0   | L - 1   |
    |              | with `observation="choices"`, the raw last    |     |         |
    |              | choice per layer (`info["choices"]`)          |     |         |
    | `L..2L-1`  | one-hot of the layer to decide (zeros in vector mode) | 0 | 1 |
    | `2L`       | training progress (decisions done / budget)   | 0   | 1       |
    | `2L + 1`   | last validation loss (nats per token)         | 0   | inf     |
    | `2L + 2`   | trainable fraction of parameters              | 0   | 1       |

    ## Rewards

    | `reward`                    | per step                                      |
    |-------------------------------|-----------------------------------------------|
    | `"log_ppl_delta"` (default) | `log(ppl_before / ppl_after)` on the fixed  |
    |                               | validation subset                             |
    | `"ppl_delta"`               | `ppl_before - ppl_after`                    |
    | `"paper"`                   | minus the perplexity of one training batch    |
    |                               | after the steps (the published reward)        |
    | `"paper-vit"` (image          | minus the accuracy on one training batch      |
    | families only)                | after the steps (the published ViT reward:    |
    |                               | it rewards *lower* accuracy)                  |

    With the default reward an episode's return telescopes to
    `log(ppl_start / ppl_end)`: maximising it minimises the final perplexity.
    `param_penalty * trainable_fraction` is subtracted from every reward.

    ## Starting state

    A fresh model initialised from the episode's seed. `initial_ties="first"`
    (default): every layer runs a real copy of block 0; `"none"`: every layer
    trains its own weights; `"frozen"` (the published start, reproduced, not
    recommended): every block keeps its own random initialisation, frozen, until a
    decision about its layer unties it (the tie map then shows every layer as its
    own root and `info["frozen"]` lists the frozen ones, while the raw choices,
    `info["choices"]`, start at 0 as the published state does).

    ## Episode end

    Truncation after `max_sweeps` sweeps (`max_sweeps * (L - 1)` steps in
    layer mode, `max_sweeps` in vector mode). Termination when the training
    diverges (a non-finite loss): `info["diverged"]` is True and the reward is 0.

    ## Info

    `tie_map`, `layer`, `sweep`, `decision`, `val_loss`, `val_ppl`,
    `train_loss`, `trainable_params`, `total_params`, `trainable_fraction`,
    `memory_bytes` (params, grads, optimizer, total), `train_steps`, `lr`,
    `diverged`, `changed` (whether the tie map changed, or a frozen block was
    unfrozen), `frozen` (the roots whose block is frozen), `budget`
    (decisions in the episode), `choices` (the raw index chosen last for each
    layer: `j < i` as chosen, `i` for independent; what the published Q-learner
    sees), and, on the synthetic corpus, `optimal_ppl` (the source's exact
    perplexity on the same validation windows: a floor no model can beat in
    expectation). With `test_eval_every = N > 0` the whole test split is
    evaluated after every N-th sweep: `test_ppl` (the latest; NaN before the
    first), `best_test_ppl` (the best so far: the published metric, *selected on
    the test split*, so an optimistic number) and `best_test_sweep` (the sweeps
    completed when it was measured; 0 before the first).

    With `tie_semantics="published"` (the published `apply_action`: storage aliasing
    and `requires_grad` flags, `tying_env.models.PublishedModel`) `tie_map` says which
    storage each position runs (the lowest position on it), `frozen` the roots whose
    storage no position trains, `trainable_params` counts each trained storage once, and
    info adds `published_trainable_params` (the published count: every trainable
    position's parameters, an aliased storage once per position), `distinct_storages`
    and `trainable_positions` (the published flags: positions whose parameters require
    grad); `changed` also notes a flag that changed. `memory_bytes` counts each storage
    once and every gradient and AdamW moment as it exists (one per trainable Parameter,
    stale state never freed).

    ## Rendering

    `render_mode="rgb_array"`: `render()` returns an RGB `uint8` image of shape
    `(320, 480, 3)`: the tie map after every decision so far (layers by decisions,
    coloured by root block) with the sweep, the layer to decide, the validation
    perplexity, the trainable fraction and the last step's reward (`tying_env.render`).
    `metadata["render_fps"]` is set for `gymnasium.wrappers.RecordVideo` (which needs
    `moviepy`: `pip install -e '.[video]'`). Stable-Baselines3's `make_vec_env` asks for
    this mode. `render_mode="ansi"`: one line of text.

    ## Arguments

    `preset` (`tiny`, `small`, `gpt2`, `paper`, `paper-12`; for the other families
    `llama-tiny`, `llama-small`, `bert-tiny`, `bert-small`, `vit-tiny`, `vit-small`,
    `bert-causal-tiny`; the other families as published: `bert-paper`, `llama-2-7b`,
    `vit-paper`) then
    any field of `tying_env.presets.EnvConfig` as a keyword; explicit arguments
    override the preset. `cache_dir` sets where tokenizers and tokenized
    corpora are cached. Every argument is checked up front: a mistake raises
    `SettingError` (a ValueError; a TypeError too for a
    wrong type, a FileNotFoundError too for a missing data folder) whose
    `argument` names the setting, with the bad value and what is allowed.
    A run whose estimated peak memory exceeds what the device has available is
    refused the same way, once the corpus is loaded and before the model is built, with a
    `ModelTooLargeError` giving the numbers (`tying_env.memory`);
    `memory_check=False` turns that check off.

    ## Checkpoints

    `get_state` returns everything the episode needs to continue exactly
    (tensors and JSON-able metadata); `set_state` restores it, so that the
    continuation is bitwise identical on CPU. The inner training run itself
    (model, optimizer, batches, evaluation) lives in
    `tying_env.training.TrainingRun`; this class is the MDP around it.
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}

    def __init__(self, preset: str = "tiny", *, render_mode: str | None = None,
                 cache_dir: str | Path | None = None, **kwargs: Any):
        self.cfg: EnvConfig = make_config(preset, **kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise SettingError("render_mode", f"render_mode={render_mode!r} is unknown; "
                                              "allowed: None, 'rgb_array', 'ansi'")
        if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
            raise SettingTypeError("cache_dir", f"cache_dir={cache_dir!r} must be a folder path "
                                                "(str or Path) or None")
        self.render_mode = render_mode
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        self.family = get_family(cfg.family)
        if FAMILY_DATA[cfg.family] == "images":
            self.corpus: Corpus | ImageSet = load_images(cfg.dataset, data_dir=cfg.data_dir,
                                                         cache_dir=cache_dir)
            _check_images(cfg, self.corpus)
        else:
            self.corpus = load_corpus(cfg.dataset, data_dir=cfg.data_dir,
                                      tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                                      seed=0, cache_dir=cache_dir)
        for split in SPLITS if isinstance(self.corpus, Corpus) else ():
            n = len(getattr(self.corpus, split))
            if n < cfg.seq_len + 2:
                raise SettingError(
                    "seq_len",
                    f"seq_len={cfg.seq_len} is too long for the corpus: the {split} split of "
                    f"dataset={cfg.dataset!r} has {n} tokens, and each split needs at least "
                    f"seq_len + 2 = {cfg.seq_len + 2}; use a smaller seq_len or more text")
        if cfg.memory_check:  # refuse a run that cannot fit before its model is built
            memory.check(cfg, self.corpus.vocab_size if isinstance(self.corpus, Corpus)
                         else self.corpus, self.device)
        self.eval_windows = spread_windows(self.corpus.valid, cfg.eval_batches * cfg.batch_size,
                                           cfg.seq_len)
        self.optimal_ppl = (self.corpus.source.optimal_ppl(self.eval_windows)
                            if self.corpus.source is not None
                            and self.family.task == "causal-lm" else None)

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
        self.run: TrainingRun | None = None
        self._tie_log = rendering.TieLog()  # what render() draws
        self._canvas: rendering.Canvas | None = None

    @property
    def model(self) -> TiedModel | PublishedModel | None:
        """The tied model of the current episode (None before the first reset)."""
        return None if self.run is None else self.run.model

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        model_seed = int(self.np_random.integers(2**31 - 1))
        data_seed = int(self.np_random.integers(2**31 - 1))
        self.run = TrainingRun(self.cfg, self.corpus, self.device, model_seed, data_seed)
        self.layer = 1
        self.sweep = 0
        self.decision = 0
        self.diverged = False
        self._changed = False
        self.choices = initial_choices(self.cfg)
        self.test_ppl = self.best_test_ppl = float("nan")
        self.best_test_sweep = 0
        self.train_loss = float("nan")
        evaluation = self.run.evaluate(self.eval_windows)
        self.val_loss, self.val_accuracy = evaluation.loss, _nan_if_none(evaluation.accuracy)
        self.start_val_loss = self.val_loss
        return self._obs(), self._info(changed=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        run = self.run
        if run is None:
            raise RuntimeError("call reset() before step()")
        if self.diverged:
            raise RuntimeError("the episode ended (training diverged); call reset()")
        candidate = _as_action(action, self.action_space)
        if candidate is None or not self.action_space.contains(candidate):
            raise ValueError(f"action {action!r} is outside the action space {self.action_space}"
                             + (f" (layer mode: an int in 0..{self.cfg.n_layer - 1})"
                                if self.cfg.action_mode == "layer" else ""))
        before = _layout(run.model)
        if self.cfg.action_mode == "layer":
            run.choose(self.layer, int(action))
            self.choices[self.layer] = min(int(action), self.layer)
            n_steps = self.cfg.steps_per_decision
        else:
            for i, choice in enumerate(np.asarray(action).tolist()[1:], start=1):
                run.choose(i, int(choice))
                self.choices[i] = min(int(choice), i)
            n_steps = self.cfg.steps_per_decision * self.decisions_per_sweep
        changed = _layout(run.model) != before
        self._changed = changed

        prev_loss = self.val_loss
        self.train_loss = run.train(n_steps)
        evaluation = (run.evaluate(self.eval_windows) if math.isfinite(self.train_loss)
                      else Evaluation(float("nan")))
        val_loss = evaluation.loss
        self.diverged = not (math.isfinite(self.train_loss) and math.isfinite(val_loss))
        reward = 0.0 if self.diverged else self._reward(prev_loss, val_loss)
        if not self.diverged:
            self.val_loss, self.val_accuracy = val_loss, _nan_if_none(evaluation.accuracy)
        sweeps = self.sweep
        self._advance()
        every = self.cfg.test_eval_every
        if every and not self.diverged and self.sweep > sweeps and self.sweep % every == 0:
            self._evaluate_test()
        truncated = not self.diverged and self.sweep >= self.cfg.max_sweeps
        self._tie_log.last_reward = reward
        return self._obs(), reward, self.diverged, truncated, self._info(changed)

    def action_masks(self) -> np.ndarray:
        """Valid choices for the current decision (all True in vector mode)."""
        if self.cfg.action_mode == "vector":
            return np.ones(int(np.sum(self.action_space.nvec)), dtype=bool)
        return np.arange(self.cfg.n_layer) <= self.layer

    def render(self) -> np.ndarray | str | None:
        """The episode so far as `render_mode` asks (None before `reset()` or without a mode).

        `"rgb_array"`: an RGB `uint8` image of shape `(320, 480, 3)`: the tie map after
        every decision so far (layers by decisions, coloured by root block) and the current
        numbers (see `tying_env.render`). `"ansi"`: one line,
        `sweep S layer I ties [...] val_ppl P`.
        """
        if self.render_mode is None or self.run is None:
            return None
        cfg = self.cfg
        view = rendering.EpisodeView(
            maps=self._tie_log.grid(cfg.n_layer, self.budget), ties=tuple(self.run.model.ties),
            decision=self.decision, budget=self.budget, sweep=self.sweep,
            max_sweeps=cfg.max_sweeps, layer=self.layer, vector=cfg.action_mode == "vector",
            val_ppl=math.exp(self.val_loss), optimal_ppl=self.optimal_ppl,
            trainable_fraction=self.trainable_fraction, last_reward=self._tie_log.last_reward,
            diverged=self.diverged,
            decisions_per_sweep=1 if cfg.action_mode == "vector" else self.decisions_per_sweep)
        if self.render_mode == "ansi":
            return rendering.ansi_line(view)
        if self._canvas is None:
            self._canvas = rendering.Canvas(cfg.n_layer, self.budget, view.decisions_per_sweep)
        return self._canvas.draw(view)

    def close(self) -> None:
        self.run = None
        self._canvas = None

    # ---------------------------------------------------------- evaluation
    def split_windows(self, split: str = "valid") -> np.ndarray:
        """A whole split cut into non-overlapping windows [N, seq_len + 1] (images: all its
        rows)."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is unknown; allowed: {', '.join(SPLITS)}")
        return split_windows(getattr(self.corpus, split), self.cfg.seq_len)

    def evaluate(self, split: str = "valid") -> SplitEvaluation:
        """The current model on a whole split (non-overlapping windows): loss, perplexity,
        accuracy where the task has one, the source's optimal perplexity where it is known,
        and the model's number of outputs."""
        if self.run is None:
            raise RuntimeError("call reset() before evaluate()")
        windows = self.split_windows(split)
        evaluation = self.run.evaluate(windows)
        source = self.corpus.source
        optimal = (source.optimal_ppl(windows) if source is not None
                   and self.optimal_ppl is not None else None)  # none for a masked LM
        return SplitEvaluation(split=split, loss=evaluation.loss,
                               perplexity=math.exp(evaluation.loss),
                               accuracy=evaluation.accuracy, optimal_ppl=optimal,
                               n_outputs=self.n_outputs)

    def evaluate_split(self, split: str = "valid") -> float:
        """Perplexity of the current model on a whole split (`evaluate(split).perplexity`,
        without the source's optimum: what the episode's test evaluations use)."""
        if self.run is None:
            raise RuntimeError("call reset() before evaluate_split()")
        return math.exp(self.run.evaluate_loss(self.split_windows(split)))

    @functools.cached_property
    def n_outputs(self) -> int:
        """The model's outputs per prediction (its vocabulary, BERT's `[MASK]` included, or
        its classes): the perplexity of a uniform prediction."""
        config = model_config(self.cfg, self.corpus)
        return int(config.num_labels if self.family.data_kind == "images"
                   else config.vocab_size)

    # ---------------------------------------------------------- checkpoints
    def get_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything the running episode needs to continue exactly as if never stopped.

        The training run's tensors and metadata (`TrainingRun.state`), plus the
        settings, the corpus identity, the episode's counters, its losses as exact
        floats and the episode's own generator.
        """
        if self.run is None:
            raise RuntimeError("call reset() before get_state()")
        tensors, run_meta = self.run.state()
        meta = dict(
            format=ENV_STATE_FORMAT, config=self.cfg.to_dict(), corpus=self.corpus.identity,
            run=run_meta, layer=self.layer, sweep=self.sweep, decision=self.decision,
            diverged=self.diverged, changed=self._changed, choices=list(self.choices),
            test_ppl=ckpt.exact(self.test_ppl), best_test_ppl=ckpt.exact(self.best_test_ppl),
            best_test_sweep=self.best_test_sweep, val_loss=ckpt.exact(self.val_loss),
            start_val_loss=ckpt.exact(self.start_val_loss),
            train_loss=ckpt.exact(self.train_loss), val_accuracy=ckpt.exact(self.val_accuracy),
            np_random=ckpt.generator_state(self.np_random),
        )
        return tensors, meta

    def set_state(self, tensors: dict[str, torch.Tensor],
                  meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Continue the episode saved by `get_state`; returns its observation and info.

        Call it after `reset()` when the environment is wrapped (wrappers such as
        `OrderEnforcing` want one); it then replaces all of the episode's state.
        A state saved with other settings or another corpus is refused with a
        `CheckpointError` naming what differs; the
        environment is left untouched when anything is refused.
        """
        cfg = self.cfg
        ckpt.require(meta, ("format", "config", "corpus", "run", "layer", "sweep", "decision",
                            "diverged", "changed", "choices", "test_ppl", "best_test_ppl",
                            "best_test_sweep", "val_loss", "start_val_loss", "train_loss",
                            "np_random"), "environment")
        if meta["format"] != ENV_STATE_FORMAT:
            raise ckpt.CheckpointError(f"environment state has format {meta['format']!r}; "
                                       f"expected {ENV_STATE_FORMAT!r}")
        diff = ckpt.differences(_computed(cfg.to_dict()), _computed(meta["config"]),
                                ("this environment", "the saved state"))
        if diff:
            raise ckpt.CheckpointError("the saved environment has other settings: "
                                       + "; ".join(diff))
        diff = ckpt.differences(self.corpus.identity, meta["corpus"],
                                ("this environment's corpus", "the saved state's"))
        if diff:
            raise ckpt.CheckpointError("the saved environment used another corpus or "
                                       "tokenizer: " + "; ".join(diff))
        if not 1 <= int(meta["layer"]) < cfg.n_layer:
            raise ckpt.CheckpointError(f"the saved layer {meta['layer']} does not fit "
                                       f"n_layer={cfg.n_layer}")
        choices = [int(c) for c in meta["choices"]]
        if len(choices) != cfg.n_layer or any(not 0 <= c <= i for i, c in enumerate(choices)):
            raise ckpt.CheckpointError(f"the saved choices {meta['choices']} do not fit "
                                       f"n_layer={cfg.n_layer} (entry i must be in 0..i)")
        run = TrainingRun.restore(cfg, self.corpus, self.device, tensors, meta["run"])
        np_random = ckpt.make_generator(meta["np_random"])
        # everything is checked: from here on nothing can fail halfway
        self.run = run
        self.layer, self.sweep = int(meta["layer"]), int(meta["sweep"])
        self.decision, self.diverged = int(meta["decision"]), bool(meta["diverged"])
        self._changed = bool(meta["changed"])
        self.choices = choices
        self.test_ppl = ckpt.from_exact(meta["test_ppl"])
        self.best_test_ppl = ckpt.from_exact(meta["best_test_ppl"])
        self.best_test_sweep = int(meta["best_test_sweep"])
        self.val_loss = ckpt.from_exact(meta["val_loss"])
        self.start_val_loss = ckpt.from_exact(meta["start_val_loss"])
        self.train_loss = ckpt.from_exact(meta["train_loss"])
        self.val_accuracy = ckpt.from_exact(meta.get("val_accuracy", ckpt.exact(float("nan"))))
        self.np_random = np_random
        return self._obs(), self._info(self._changed)

    # ------------------------------------------------------------ the MDP
    def _reward(self, prev_loss: float, val_loss: float) -> float:
        cfg = self.cfg
        if cfg.reward == "log_ppl_delta":
            reward = prev_loss - val_loss
        elif cfg.reward == "ppl_delta":
            reward = math.exp(prev_loss) - math.exp(val_loss)
        elif cfg.reward == "paper":  # the published reward: minus the perplexity of one
            assert self.run is not None  # training batch
            reward = -math.exp(min(self.run.train_batch_loss(), 50.0))
        else:  # "paper-vit", the published ViT's: minus the accuracy on one training batch
            assert self.run is not None
            reward = 0.0 - float(self.run.train_batch_evaluation().accuracy)
        return float(reward - cfg.param_penalty * self.trainable_fraction)

    def _evaluate_test(self) -> None:
        """The whole test split now; the best so far (the published metric) follows it."""
        self.test_ppl = self.evaluate_split("test")
        if math.isfinite(self.test_ppl) and not self.best_test_ppl <= self.test_ppl:
            self.best_test_ppl, self.best_test_sweep = self.test_ppl, self.sweep

    def _advance(self) -> None:
        self.decision += 1
        if self.cfg.action_mode == "vector":
            self.sweep += 1
            return
        self.layer += 1
        if self.layer >= self.cfg.n_layer:
            self.layer = 1
            self.sweep += 1

    @property
    def trainable_fraction(self) -> float:
        assert self.run is not None
        trainable, total = self.run.model.param_counts()
        return trainable / total

    @property
    def budget(self) -> int:
        """Decisions (steps) in one episode."""
        per_sweep = 1 if self.cfg.action_mode == "vector" else self.decisions_per_sweep
        return self.cfg.max_sweeps * per_sweep

    def _obs(self) -> np.ndarray:
        assert self.run is not None
        L = self.cfg.n_layer
        onehot = np.zeros(L, dtype=np.float32)
        if self.cfg.action_mode == "layer":
            onehot[self.layer] = 1.0
        tail = [min(1.0, self.decision / self.budget), self.val_loss, self.trainable_fraction]
        head = self.choices if self.cfg.observation == "choices" else self.run.model.ties
        return np.concatenate([np.asarray(head, dtype=np.float32), onehot,
                               np.asarray(tail, dtype=np.float32)])

    def _info(self, changed: bool) -> dict[str, Any]:
        run = self.run
        assert run is not None
        trainable, total = run.model.param_counts()
        self._tie_log.note(run, self.decision, run.model.ties)
        info: dict[str, Any] = dict(
            tie_map=list(run.model.ties), layer=self.layer, sweep=self.sweep,
            decision=self.decision, budget=self.budget, val_loss=self.val_loss,
            val_ppl=math.exp(self.val_loss), train_loss=self.train_loss,
            trainable_params=trainable, total_params=total, trainable_fraction=trainable / total,
            memory_bytes=run.model.memory_bytes(run.optim.optimizer).to_dict(),
            train_steps=run.optim.steps, lr=run.optim.lr, diverged=self.diverged,
            changed=changed, choices=list(self.choices), frozen=list(run.model.frozen),
        )
        if isinstance(run.model, PublishedModel):
            info.update(published_trainable_params=run.model.published_trainable_params(),
                        distinct_storages=run.model.distinct_storages,
                        trainable_positions=[i for i, t in enumerate(run.model.trainable) if t])
        if self.optimal_ppl is not None:
            info["optimal_ppl"] = self.optimal_ppl
        if self.family.task == "image-classification":
            info["val_accuracy"] = self.val_accuracy
        if self.cfg.test_eval_every:
            info.update(test_ppl=self.test_ppl, best_test_ppl=self.best_test_ppl,
                        best_test_sweep=self.best_test_sweep)
        return info


def _check_images(cfg: EnvConfig, images: ImageSet) -> None:
    """ViT cuts images into `patch_size` squares: it must divide the sides of the images the
    model sees (the dataset's, or `image_size`, to which only square images are resized); a
    config of one's own (`hf_config`) must be for images of that size and channel count."""
    if cfg.image_size and images.height != images.width:
        raise SettingError("image_size", f"image_size={cfg.image_size} resizes square images; "
                                         f"dataset={cfg.dataset!r} has {images.height}x"
                                         f"{images.width} ones: leave it 0")
    height, width = ((cfg.image_size, cfg.image_size) if cfg.image_size
                     else (images.height, images.width))
    size = cfg.patch_size
    if height % size or width % size:
        seen = (f"image_size={cfg.image_size}" if cfg.image_size else
                f"the {height}x{width} images of dataset={cfg.dataset!r}")
        raise SettingError("patch_size", f"patch_size={size} does not divide {seen}; use a "
                                         "divisor of both sides")
    if cfg.hf_config is None:
        return
    side = cfg.hf_config.get("image_size")
    sides = tuple(side) if isinstance(side, list) else (side, side)
    channels = cfg.hf_config.get("num_channels")
    want = height if height == width else [height, width]
    if sides != (height, width) or channels != images.channels:
        seen = f" (resized to image_size={cfg.image_size})" if cfg.image_size else ""
        raise SettingError("hf_config", f"hf_config is for {channels}-channel images of size "
                                        f"{side}, but dataset={cfg.dataset!r} has "
                                        f"{images.channels}-channel {images.height}x"
                                        f"{images.width} images{seen}; set image_size={want} "
                                        f"and num_channels={images.channels}")


def initial_choices(cfg: EnvConfig) -> list[int]:
    """The raw choices at reset: 0 for every layer (the published `[0] * L`, which also
    describes `"first"`), or each layer's own index when every layer starts independent."""
    return list(range(cfg.n_layer)) if cfg.initial_ties == "none" else [0] * cfg.n_layer


def _computed(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that change what a run computes (a checkpoint must match them)."""
    return {k: v for k, v in {**ADDED_SETTINGS, **config}.items() if k not in NOT_COMPUTED}


def _layout(model: TiedModel | PublishedModel) -> tuple[Any, ...]:
    """What a decision can change: the tie map and the frozen roots, and under the published
    mechanics the flags of every position."""
    flags = model.trainable if isinstance(model, PublishedModel) else ()
    return model.ties, model.frozen, flags


def _as_action(action: Any, space: spaces.Space) -> Any:
    """`action` as the space's own type, or None when it is not integral (never truncated)."""
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


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value
