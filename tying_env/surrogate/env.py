"""`SurrogateEnv`: a benchmark track's environment, emulated by a fitted model of its runs.

It is the real environment's MDP (`tying_env.env.LayerTyingEnv`, layer mode) with the
transformer's training replaced by a draw from the surrogate
(`tying_env.surrogate.model`): the same action and observation spaces, masks, budget,
episode structure, reward and info keys, so every agent and wrapper runs on it
unchanged, in microseconds a decision and without torch.

What is exact is computed as the real environment computes it, not learned: the tie map
(`tying_env.ties`), the parameter counts and the memory of parameters, gradients and
AdamW state (`tying_env.memory`, checked against the real environment in the tests), the
learning rate and the training steps. What is learned is the validation loss after each
decision's training steps; `train_loss` is that loss plus the mean gap between the logged
training and validation losses (NaN at reset, as in the real environment).

An episode runs one ensemble member, drawn at reset (or `reset(options={"member": k})`);
the same seed and actions give the same run.

| info key                 | meaning                                                      |
|--------------------------|--------------------------------------------------------------|
| (every real info key)    | as in `LayerTyingEnv` (`train_loss`: see above)              |
| `surrogate_member`       | the ensemble member this episode runs                        |
| `surrogate_disagreement` | the spread of the members' mean predictions at this decision |
| `surrogate_ood`          | whether that spread exceeds the model's threshold: the       |
|                          | decision lies outside the logged data                        |
| `surrogate_ood_steps`    | such decisions so far in the episode                         |

`env.model_sha256` identifies the model (its weights and sidecar), which a sim-to-real
result records as `train_env_model`. Training never diverges here (`terminated` is always
False). `tying_env.SURROGATE_IDS` lists the shipped models by id;
`gym.make("LayerTying-Surrogate-Deep-v0")` runs the `deep` track's.
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from tying_env import memory
from tying_env import ties as tm
from tying_env.errors import SettingError
from tying_env.presets import make_config
from tying_env.surrogate.features import History, feature_names
from tying_env.surrogate.model import Ensemble
from tying_env.training import lr_factor

HERE = Path(__file__).resolve().parent  # the shipped models lie beside this module


class SurrogateEnv(gym.Env):
    """The real environment's MDP on a surrogate of its training (see the module)."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, model: str | Path = "deep-v1", render_mode: str | None = None,
                 initial_ties: str | None = None):
        path = Path(model) if Path(model).suffix or "/" in str(model) else HERE / str(model)
        if not path.with_suffix(".json").is_file():
            from tying_env import SURROGATE_IDS

            known = ", ".join(sorted(SURROGATE_IDS.values()))
            raise SettingError("model", f"model={str(model)!r} has no surrogate file "
                                        f"{path.with_suffix('.json').name}; allowed: {known}, "
                                        "or the path of a fitted model")
        if render_mode not in (None, "ansi"):
            raise SettingError("render_mode", f"render_mode={render_mode!r} is unknown; "
                                              "allowed: None, 'ansi'")
        self.render_mode = render_mode
        self.ensemble = Ensemble.load(path.with_suffix(""))
        self.model_path = path
        meta = self.ensemble.meta
        start = {} if initial_ties is None else {"initial_ties": initial_ties}
        self.cfg = make_config(**{**meta["env_settings"], **start})
        if self.cfg.initial_ties == "frozen":
            raise SettingError("initial_ties", "initial_ties='frozen' is not emulated; "
                                               "allowed: 'first', 'none'")
        if self.cfg.action_mode != "layer":
            raise SettingError("model", "the surrogate emulates layer mode only")
        L = self.cfg.n_layer
        if meta.get("features") != feature_names(L):
            raise SettingError("model", f"model={str(model)!r} was fitted on the features "
                                        f"{meta.get('features')}; this version computes "
                                        f"{feature_names(L)}: refit it "
                                        "(python -m agents.surrogate.fit)")
        self.counts = memory.model_counts(self.cfg, self.cfg.vocab_size)
        # the memory of parameters, gradients and AdamW state by number of roots
        self.memory = {r: memory.estimate_bytes(self.cfg, self.cfg.vocab_size, "cpu",
                                                ties=tuple(range(r)) + (0,) * (L - r))
                       for r in range(1, L + 1)}
        self.optimal_ppl = meta.get("optimal_ppl")
        self.action_space = spaces.Discrete(L)
        low = np.zeros(2 * L + 3, dtype=np.float32)
        high = np.concatenate([np.full(L, L - 1), np.ones(L + 1), [np.inf, 1.0]]).astype(
            np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.decisions_per_sweep = L - 1
        self.ties: tm.TieMap = tm.all_first(L)

    @cached_property
    def model_sha256(self) -> str:
        """SHA-256 of the model's weights and sidecar (read when first asked)."""
        return hashlib.sha256(b"".join(self.model_path.with_suffix(suffix).read_bytes()
                                       for suffix in (".safetensors", ".json"))).hexdigest()

    @property
    def budget(self) -> int:
        return self.cfg.max_sweeps * self.decisions_per_sweep

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        cfg, L = self.cfg, self.cfg.n_layer
        self.ties = tm.untied(L) if cfg.initial_ties == "none" else tm.all_first(L)
        self.choices = list(range(L)) if cfg.initial_ties == "none" else [0] * L
        # drawn even when options name one, so that the seed's later draws stay the same
        self.member = int(self.np_random.integers(self.ensemble.members))
        member = (options or {}).get("member")
        if member is not None:
            if isinstance(member, bool) or not isinstance(member, (int, np.integer)) or not (
                    0 <= member < self.ensemble.members):
                raise SettingError("member", f"options['member']={member!r} is not a member of "
                                             f"the ensemble; allowed: an int in "
                                             f"0..{self.ensemble.members - 1}")
            self.member = int(member)
        start = self.ensemble.meta["initial_val_loss"]
        self.val_loss = float(start["mean"] + start["std"] * self.np_random.standard_normal())
        self.train_loss = float("nan")  # no training step yet, as in the real env
        self.layer, self.sweep, self.decision = 1, 0, 0
        self.history = History(L, self.budget, self.ties, self.val_loss)
        self.disagreement, self.ood_steps = 0.0, 0
        return self._obs(), self._info(changed=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not hasattr(self, "history"):
            raise RuntimeError("call reset() before step()")
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(
                np.int64(action) if isinstance(action, (int, np.integer)) else action):
            raise ValueError(f"action {action!r} is outside the action space "
                             f"{self.action_space} (layer mode: an int in "
                             f"0..{self.cfg.n_layer - 1})")
        before = self.ties
        self.ties = tm.apply_choice(before, self.layer, int(action)).after
        self.choices[self.layer] = min(int(action), self.layer)
        changed = self.ties != before
        x = self.history.features(self.layer, self.ties)
        means, variances = self.ensemble.predict(x)
        self.disagreement = float(means.std())
        self.ood_steps += self.disagreement > self.ensemble.meta["ood_threshold"]
        k = self.member
        delta = float(means[k] + math.sqrt(variances[k]) * self.np_random.standard_normal())
        prev_loss, self.val_loss = self.val_loss, self.val_loss + delta
        self.history.observe(self.val_loss)
        self.train_loss = self.val_loss + self.ensemble.meta.get("train_val_gap", 0.0)
        reward = prev_loss - self.val_loss - self.cfg.param_penalty * self.trainable_fraction
        self.decision += 1
        self.layer += 1
        if self.layer >= self.cfg.n_layer:
            self.layer, self.sweep = 1, self.sweep + 1
        truncated = self.sweep >= self.cfg.max_sweeps
        return self._obs(), float(reward), False, truncated, self._info(changed)

    def action_masks(self) -> np.ndarray:
        return np.arange(self.cfg.n_layer) <= self.layer

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return (f"sweep {self.sweep} layer {self.layer} ties {list(self.ties)} "
                f"val ppl {math.exp(self.val_loss):.3f} (surrogate)")

    # ------------------------------------------------------------ exact parts
    def param_counts(self) -> tuple[int, int]:
        """(trainable, total), as `TiedModel.param_counts` gives them."""
        roots = len(tm.roots(self.ties))
        return (self.counts.other + roots * self.counts.block,
                self.counts.other + self.cfg.n_layer * self.counts.block)

    @property
    def trainable_fraction(self) -> float:
        trainable, total = self.param_counts()
        return trainable / total

    def memory_bytes(self) -> dict[str, int]:
        """Parameters, gradients and AdamW state of the current tie map (after a step)."""
        est = self.memory[len(tm.roots(self.ties))]
        return {"params": est.params, "grads": est.grads, "optimizer": est.optimizer,
                "total": est.static}

    def _obs(self) -> np.ndarray:
        L = self.cfg.n_layer
        onehot = np.zeros(L, dtype=np.float32)
        onehot[self.layer] = 1.0
        tail = [min(1.0, self.decision / self.budget), self.val_loss, self.trainable_fraction]
        head = self.choices if self.cfg.observation == "choices" else self.ties
        return np.concatenate([np.asarray(head, dtype=np.float32), onehot,
                               np.asarray(tail, dtype=np.float32)])

    def _info(self, changed: bool) -> dict[str, Any]:
        cfg = self.cfg
        trainable, total = self.param_counts()
        steps = self.decision * cfg.steps_per_decision
        info: dict[str, Any] = dict(
            tie_map=list(self.ties), layer=self.layer, sweep=self.sweep,
            decision=self.decision, budget=self.budget, val_loss=self.val_loss,
            val_ppl=math.exp(self.val_loss), train_loss=self.train_loss,
            trainable_params=trainable, total_params=total, trainable_fraction=trainable / total,
            memory_bytes=self.memory_bytes(), train_steps=steps,
            lr=cfg.lr * lr_factor(steps, cfg.warmup_steps, self.budget * cfg.steps_per_decision,
                                  cfg.cosine_schedule),
            diverged=False, changed=changed, choices=list(self.choices), frozen=[],
            surrogate_member=self.member, surrogate_disagreement=self.disagreement,
            surrogate_ood=self.disagreement > self.ensemble.meta["ood_threshold"],
            surrogate_ood_steps=self.ood_steps)
        if self.optimal_ppl is not None:
            info["optimal_ppl"] = self.optimal_ppl
        return info
