"""The surrogate's model: an ensemble that predicts a decision's effect from its features.

It predicts the distribution of a decision's effect (the change of the validation loss
over the training steps that follow it), `delta ~ Normal(mu(x), sigma(x)^2)`, from the
features `x` of the decision and of the episode so far (`tying_env.surrogate.features`).

`mu` and `sigma` come from an ensemble of small MLPs, each fitted by (beta-weighted) Gaussian
negative log-likelihood on a bootstrap of the logged episodes (`agents.surrogate.fit`). An
episode runs one member, drawn at reset (trajectory sampling), so that what the model
does not know about a whole episode shows as a spread of episodes. The spread of the
members' means at a decision is the ensemble's
disagreement: above the threshold recorded with the model (a high quantile over the
logged decisions) the decision lies outside the logged data.

Alone, such a model of one decision lets an episode's loss wander: biases far below what
one decision's data resolve add up over hundreds of decisions, so that members end a
static schedule's episode further apart than real seeds do. So each member has a second
net, the level: the loss after the decision predicted from what the schedule did (the
features that see no loss), as a correction to the mean loss over the logged episodes at
that decision (`ref`). The predicted change reverts towards it by a rate `kappa` per tenth
of the episode, measured in the logged episodes as how fast the loss's gap to the level
decays (one minus the gap's lag-1 autocorrelation):

    mean change = mu(x) + kappa * (level(x) - (val_loss + mu(x)))

Inference is numpy only (no torch), so a surrogate decision costs microseconds. The
weights are a safetensors file; its JSON sidecar holds everything else (features,
normalisation, the initial loss, the data hash, how it was fitted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LAYERS = ("w1", "b1", "w2", "b2", "w3", "b3")  # per member, stacked on axis 0
LEVEL = tuple(f"level_{k}" for k in LAYERS)  # the level nets, stacked likewise


def mlp(z: np.ndarray, w: dict[str, np.ndarray], names: tuple[str, ...] = LAYERS
        ) -> np.ndarray:
    """The members' two-layer tanh nets on standardised inputs `z` (N, F): (M, N, 2)."""
    w1, b1, w2, b2, w3, b3 = (w[k] for k in names)
    h = np.tanh(z @ w1 + b1[:, None, :])  # (M, N, H)
    h = np.tanh(h @ w2 + b2[:, None, :])
    return h @ w3 + b3[:, None, :]


@dataclass
class Level:
    """What the members' level nets need beside their weights (the nets are fitted as the
    change nets are, `(mean, log variance)`; only the mean is used)."""

    columns: list[int]  # the features it sees (none of them a loss)
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float  # of the loss after a decision minus `ref` at it
    y_std: float
    ref: np.ndarray  # per decision, the mean logged loss after it
    kappa: list[float]  # per tenth of the episode, the rate of reverting to the level
    val_loss_column: int

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "y_mean": self.y_mean, "y_std": self.y_std,
                "kappa": self.kappa, "val_loss_column": self.val_loss_column}


@dataclass
class Ensemble:
    """M heteroscedastic MLPs (`x -> (mean, log variance)` of the standardised change), and
    per member the level net its mean reverts to (`level`; see the module)."""

    weights: dict[str, np.ndarray]  # LAYERS (and LEVEL), each stacked over the M members
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    meta: dict[str, Any] = field(default_factory=dict)
    level: Level | None = None  # without it, the change alone (no reverting)

    @property
    def members(self) -> int:
        return int(self.weights["w1"].shape[0])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per member, the mean (reverting to the level, where there is one) and variance of
        the loss change for features `x` (`(F,)` or `(N, F)`); arrays of shape `(M,)` or
        `(M, N)`."""
        single, x = np.ndim(x) == 1, np.atleast_2d(x)
        out = mlp((x - self.x_mean) / self.x_std, self.weights)  # (M, N, 2)
        mean = out[..., 0] * self.y_std + self.y_mean
        var = np.exp(np.minimum(np.maximum(out[..., 1], -20.0), 20.0)) * self.y_std ** 2
        if self.level is not None:
            lv = self.level
            progress = x[:, 0]
            decision = np.minimum(np.rint(progress * len(lv.ref)).astype(int), len(lv.ref) - 1)
            level = mlp((x[:, lv.columns] - lv.x_mean) / lv.x_std, self.weights, LEVEL)[..., 0]
            level = level * lv.y_std + lv.y_mean + lv.ref[decision]
            tenth = np.minimum((progress * len(lv.kappa)).astype(int), len(lv.kappa) - 1)
            mean = mean + np.asarray(lv.kappa)[tenth] * (
                level - x[:, lv.val_loss_column] - mean)
        if single:
            return mean[:, 0], var[:, 0]
        return mean, var

    # ------------------------------------------------------------ files
    def save(self, path: Path) -> tuple[Path, Path]:
        """`path` with suffix `.safetensors` (weights) and `.json` (the rest), atomically."""
        from safetensors.numpy import save_file

        from tying_env.files import write_json

        path = Path(path)
        tensors = {**{k: np.ascontiguousarray(v, dtype=np.float32)
                      for k, v in self.weights.items()},
                   "x_mean": self.x_mean.astype(np.float32),
                   "x_std": self.x_std.astype(np.float32)}
        meta = {**self.meta, "y_mean": self.y_mean, "y_std": self.y_std}
        if self.level is not None:
            tensors |= {f"level_{k}": getattr(self.level, k).astype(np.float32)
                        for k in ("x_mean", "x_std", "ref")}
            meta["level"] = self.level.to_json()
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = path.with_suffix(".safetensors")
        partial = weights.with_name(weights.name + ".partial")
        save_file(tensors, str(partial))
        partial.replace(weights)
        sidecar = write_json(path.with_suffix(".json"), meta)
        return weights, sidecar

    @classmethod
    def load(cls, path: Path) -> Ensemble:
        from safetensors.numpy import load_file

        path = Path(path)
        tensors = load_file(str(path.with_suffix(".safetensors")))
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        level_meta = meta.pop("level", None)
        names = LAYERS + (LEVEL if level_meta else ())
        weights = {k: tensors[k].astype(np.float64) for k in names}
        level = None
        if level_meta:
            level = Level(x_mean=tensors["level_x_mean"].astype(np.float64),
                          x_std=tensors["level_x_std"].astype(np.float64),
                          ref=tensors["level_ref"].astype(np.float64), **level_meta)
        return cls(weights, tensors["x_mean"].astype(np.float64),
                   tensors["x_std"].astype(np.float64), float(meta.pop("y_mean")),
                   float(meta.pop("y_std")), meta, level)
