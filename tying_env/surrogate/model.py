"""The surrogate's model: an ensemble that predicts a decision's effect from its features.

It predicts the distribution of a decision's effect (the change of the validation loss
over the training steps that follow it), `delta ~ Normal(mu(x), sigma(x)^2)`, from the
features `x` of the decision and of the episode so far (`tying_env.surrogate.features`).

`mu` and `sigma` come from an ensemble of small MLPs, each fitted by (beta-weighted) Gaussian
negative log-likelihood on a bootstrap of the logged episodes (`agents.surrogate.fit`). An
episode runs one member, drawn at reset (trajectory sampling): members differ as runs of
different seeds do. The spread of the members' means at a decision is the ensemble's
disagreement: above the threshold recorded with the model (a high quantile over the
logged decisions) the decision lies outside the logged data.

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
