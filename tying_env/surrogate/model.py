"""The surrogate's model: features of a decision, and an ensemble that predicts its effect.

A decision's effect is the change of the validation loss over the training steps that
follow it, `delta = val_loss_after - val_loss_before`. The surrogate predicts its
distribution, `delta ~ Normal(mu(x), sigma(x)^2)`, from features `x` of the decision and
of the episode so far, the current loss and the last change among them: a run ahead of
its expected curve learns slower, and a run's changes persist (their lag-1
autocorrelation is about +0.5 given the decision alone), so both enter the state.

`mu` and `sigma` come from an ensemble of small MLPs, each fitted by Gaussian negative
log-likelihood on a bootstrap of the logged episodes (`agents.surrogate.fit`). An
episode runs one member, drawn at reset (trajectory sampling): members differ as runs of
different seeds do. The spread of the members' means at a decision is the ensemble's
disagreement: above the threshold recorded with the model (a high quantile over the
logged decisions) the decision lies outside the logged data.

| feature        | meaning                                                          |
|----------------|------------------------------------------------------------------|
| `progress`     | decisions done before this one / budget                          |
| `layer`        | the layer decided / (L - 1)                                      |
| `roots`        | roots after the decision / L                                     |
| `root_change`  | roots after minus roots before (-1, 0 or 1)                      |
| `changed`      | whether the tie map changed                                      |
| `own`          | whether the decided layer is a root afterwards                   |
| `mean_roots`   | mean of `roots` over the episode's decisions so far, this one in |
| `since_change` | decisions since the tie map last changed / budget               |
| `val_loss`     | the validation loss before the decision                          |
| `last_delta`   | the previous decision's change of the validation loss (0 first)  |
| `root_k`       | whether position k is a root afterwards, k = 0 .. L - 1           |

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

FEATURES = ("progress", "layer", "roots", "root_change", "changed", "own", "mean_roots",
            "since_change", "val_loss", "last_delta")
LAYERS = ("w1", "b1", "w2", "b2", "w3", "b3")  # per member, stacked on axis 0


def feature_names(n_layer: int) -> list[str]:
    return [*FEATURES, *(f"root_{k}" for k in range(n_layer))]


@dataclass
class History:
    """What the features need of an episode's past: updated after every decision."""

    n_layer: int
    budget: int
    decision: int = 0
    roots_sum: float = 0.0
    last_change: int = 0

    def features(self, layer: int, before: tuple[int, ...], after: tuple[int, ...],
                 val_loss: float, last_delta: float) -> np.ndarray:
        """The features of deciding `layer` (tie map `before` -> `after`) at `val_loss`
        after a change of `last_delta`; then records the decision."""
        L = self.n_layer
        is_root = [float(t == k) for k, t in enumerate(after)]
        roots = sum(is_root)
        roots_before = sum(t == k for k, t in enumerate(before))
        changed = before != after
        if changed:
            self.last_change = self.decision
        self.roots_sum += roots
        x = np.array([self.decision / self.budget, layer / (L - 1), roots / L,
                      roots - roots_before, float(changed), float(after[layer] == layer),
                      self.roots_sum / (self.decision + 1) / L,
                      (self.decision - self.last_change) / self.budget, val_loss, last_delta,
                      *is_root])
        self.decision += 1
        return x


@dataclass
class Ensemble:
    """M heteroscedastic MLPs (`x -> (mean, log variance)` of the standardised change)."""

    weights: dict[str, np.ndarray]  # LAYERS, each stacked over the M members
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def members(self) -> int:
        return int(self.weights["w1"].shape[0])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per member, the mean and variance of the loss change for features `x` (`(F,)`
        or `(N, F)`); arrays of shape `(M,)` or `(M, N)`."""
        w = self.weights
        z = (np.atleast_2d(x) - self.x_mean) / self.x_std  # (N, F)
        h = np.tanh(z @ w["w1"] + w["b1"][:, None, :])  # (M, N, H)
        h = np.tanh(h @ w["w2"] + w["b2"][:, None, :])
        out = h @ w["w3"] + w["b3"][:, None, :]  # (M, N, 2)
        mean = out[..., 0] * self.y_std + self.y_mean
        var = np.exp(np.minimum(np.maximum(out[..., 1], -20.0), 20.0)) * self.y_std ** 2
        if np.ndim(x) == 1:
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
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = path.with_suffix(".safetensors")
        partial = weights.with_name(weights.name + ".partial")
        save_file(tensors, str(partial))
        partial.replace(weights)
        sidecar = write_json(path.with_suffix(".json"),
                             {**self.meta, "y_mean": self.y_mean, "y_std": self.y_std})
        return weights, sidecar

    @classmethod
    def load(cls, path: Path) -> Ensemble:
        from safetensors.numpy import load_file

        path = Path(path)
        tensors = load_file(str(path.with_suffix(".safetensors")))
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        weights = {k: tensors[k].astype(np.float64) for k in LAYERS}
        return cls(weights, tensors["x_mean"].astype(np.float64),
                   tensors["x_std"].astype(np.float64), float(meta.pop("y_mean")),
                   float(meta.pop("y_std")), meta)
