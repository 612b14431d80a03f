"""Fit a surrogate's ensemble on logged transitions (PyTorch), and write it for the env.

    python -m agents.surrogate.fit runs/surrogate/deep-v1.npz --track deep \\
        --out tying_env/surrogate/deep-v1

Each of `members` MLPs (`tying_env.surrogate.model.Ensemble`) is fitted by Gaussian
negative log-likelihood on a bootstrap of the episodes (episodes drawn with replacement,
so members differ where the data are thin), from its own seed. Each decision's term is
weighted by its predicted variance to the power `beta` (held constant in the gradient;
Seitzer et al., ICLR 2022, "beta-NLL"): plain NLL (beta 0) lets a net explain the few
large changes of an episode's first decisions by a wide variance instead of fitting
their mean (on the deep track its error there was 0.055 in log-loss, with beta 0.5
0.010). Each member also has a level net, fitted on the same bootstrap (`fit_level`; the
model's docstring says why and how the change reverts to it). Then, on all the fitting
episodes: the residuals' lag-1 autocorrelation within
episodes is recorded (near 0 when the state carries what persists); the mean gap between
the logged training and validation losses gives the emulated `train_loss`; the
`OOD_QUANTILE` quantile of the members' disagreement (the standard deviation of their
means) is the threshold above which a decision counts as outside the logged data; the
starting losses give the reset's distribution. Deterministic for a seed and a thread count.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.benchmark.tracks import Track
from agents.surrogate.transitions import Transitions
from tying_env.surrogate.features import LOSS_FEATURES, feature_names
from tying_env.surrogate.model import LAYERS, LEVEL, Ensemble, Level, mlp

OOD_QUANTILE = 0.99
LEVEL_BINS = 10  # the rate of reverting to the level is measured per tenth of the episode


@dataclass(frozen=True)
class FitSettings:
    members: int = 5
    hidden: int = 64
    epochs: int = 40
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    beta: float = 0.5
    seed: int = 0


def fit_member(x: np.ndarray, y: np.ndarray, settings: FitSettings, seed: int
               ) -> dict[str, np.ndarray]:
    """One MLP `x -> (mean, log variance)` of the standardised `y`, fitted by beta-weighted
    Gaussian NLL; its weights as arrays (`LAYERS`, with inputs first)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], settings.hidden), nn.Tanh(),
                        nn.Linear(settings.hidden, settings.hidden), nn.Tanh(),
                        nn.Linear(settings.hidden, 2))
    optim = torch.optim.AdamW(net.parameters(), lr=settings.lr,
                              weight_decay=settings.weight_decay)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(settings.epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            out = net(xt[batch])
            log_var = out[:, 1].clamp(-20, 20)
            nll = 0.5 * (log_var + (yt[batch] - out[:, 0]) ** 2 / log_var.exp())
            loss = (nll * (settings.beta * log_var.detach()).exp()).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
    linear = [m for m in net if isinstance(m, nn.Linear)]
    arrays = []
    for layer in linear:
        arrays += [layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy()]
    return dict(zip(LAYERS, arrays, strict=True))


def fit_level(data: Transitions, samples: list[np.ndarray], settings: FitSettings
              ) -> tuple[dict[str, np.ndarray], Level]:
    """Per member (on its bootstrap `samples`), the level net: the loss after a decision
    minus the logged episodes' mean loss after that decision, from the features that see
    no loss; and the rate of reverting to it per tenth of the episode, one minus the lag-1
    autocorrelation of the loss's gap to the members' mean level within episodes."""
    names = feature_names(data.x.shape[1] - len(feature_names(0)))
    lengths = {int(n) for n in np.bincount(data.episode)}
    if len(lengths) != 1:
        raise ValueError(f"episodes of {sorted(lengths)} decisions: a surrogate is fitted on "
                         "the episodes of one track, which all have its budget")
    budget = lengths.pop()
    columns = [k for k, name in enumerate(names) if name not in LOSS_FEATURES]
    val_loss = names.index("val_loss")
    decision = np.minimum(np.rint(data.x[:, 0] * budget).astype(int), budget - 1)
    after = data.x[:, val_loss] + data.delta
    ref = np.bincount(decision, weights=after, minlength=budget) / np.maximum(
        np.bincount(decision, minlength=budget), 1)
    x = data.x[:, columns]
    x_mean, x_std = x.mean(0), x.std(0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    target = after - ref[decision]
    y_mean, y_std = float(target.mean()), float(target.std()) or 1.0
    z, y = (x - x_mean) / x_std, (target - y_mean) / y_std
    nets = [fit_member(z[rows], y[rows], settings, seed=settings.seed * 1000 + 500 + m)
            for m, rows in enumerate(samples)]
    weights = {f"level_{k}": np.stack([w[k] for w in nets]) for k in LAYERS}
    level = Level(columns, x_mean, x_std, y_mean, y_std, ref, [0.0] * LEVEL_BINS, val_loss)
    gap = after - (mlp(z, weights, LEVEL)[..., 0].mean(0) * y_std + y_mean + ref[decision])
    same = data.episode[1:] == data.episode[:-1]
    tenth = np.minimum((data.x[1:, 0] * LEVEL_BINS).astype(int), LEVEL_BINS - 1)
    for k in range(LEVEL_BINS):
        pairs = same & (tenth == k)
        if pairs.sum() > 2 and gap[1:][pairs].std() > 0 and gap[:-1][pairs].std() > 0:
            lag1 = float(np.corrcoef(gap[1:][pairs], gap[:-1][pairs])[0, 1])
            level.kappa[k] = float(np.clip(1.0 - lag1, 0.0, 1.0))
    return weights, level


def fit(data: Transitions, settings: FitSettings = FitSettings()) -> Ensemble:
    """The ensemble fitted on every episode of `data` (see the module's docstring)."""
    import torch

    torch.set_num_threads(1)
    x_mean, x_std = data.x.mean(0), data.x.std(0)
    x_std = np.where(x_std > 0, x_std, 1.0)
    y_mean, y_std = float(data.delta.mean()), float(data.delta.std())
    z, y = (data.x - x_mean) / x_std, (data.delta - y_mean) / y_std
    rng = np.random.default_rng(settings.seed)
    n_episodes = len(data.episodes)
    members, samples = [], []
    for m in range(settings.members):
        drawn = rng.integers(n_episodes, size=n_episodes)
        rows = np.concatenate([np.flatnonzero(data.episode == e) for e in drawn])
        samples.append(rows)
        members.append(fit_member(z[rows], y[rows], settings, seed=settings.seed * 1000 + m))
    weights = {k: np.stack([w[k] for w in members]) for k in LAYERS}
    level_weights, level = fit_level(data, samples, settings)
    ensemble = Ensemble(weights | level_weights, x_mean, x_std, y_mean, y_std, level=level)
    means, _ = ensemble.predict(data.x)
    residual = data.delta - means.mean(0)
    same = data.episode[1:] == data.episode[:-1]
    r1 = float(np.corrcoef(residual[1:][same], residual[:-1][same])[0, 1])
    initial = np.array([e["initial_val_loss"] for e in data.episodes])
    gaps = [e["train_val_gap"] for e in data.episodes if "train_val_gap" in e]
    ensemble.meta = {
        "format": "layer-tying-gym/surrogate", "format_version": 3,
        "features": feature_names(data.x.shape[1] - len(feature_names(0))),
        "data_sha256": data.content_hash, "episodes": n_episodes, "transitions": len(data.delta),
        "agents": sorted({e["agent"] for e in data.episodes}),
        "residual_lag1": r1,
        "ood_threshold": float(np.quantile(means.std(0), OOD_QUANTILE)),
        "initial_val_loss": {"mean": float(initial.mean()), "std": float(initial.std())},
        "train_val_gap": float(np.mean(gaps)) if gaps else 0.0,
        "settings": settings.__dict__}
    return ensemble


def describe(ensemble: Ensemble, track: Track, data: Transitions) -> None:
    """Record in `ensemble.meta` the track it emulates: its label, env id and resolved
    settings, the corpus's optimal perplexity and the code's commit."""
    from agents.benchmark.report import code_version
    from tying_env import ENV_IDS
    from tying_env.presets import make_config

    settings = {**ENV_IDS[track.env_id], **track.env_kwargs, "device": "cpu"}
    make_config(**settings)  # valid settings
    optimal = [e["optimal_ppl"] for e in data.episodes if e.get("optimal_ppl")]
    ensemble.meta |= {"track": track.label, "env_id": track.env_id,
                      # as given (every other setting at its default), so that a setting
                      # added to EnvConfig later keeps the model loadable
                      "env_settings": settings,
                      "optimal_ppl": optimal[0] if optimal else None, "code": code_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.surrogate.fit",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="transitions (agents.surrogate.transitions)")
    parser.add_argument("--track", required=True, help="the track the data come from")
    parser.add_argument("--out", type=Path, required=True,
                        help="the model's path without suffix (.safetensors and .json)")
    parser.add_argument("--members", type=int, default=FitSettings.members)
    parser.add_argument("--epochs", type=int, default=FitSettings.epochs)
    parser.add_argument("--beta", type=float, default=FitSettings.beta,
                        help="weight of each decision's NLL: its predicted variance ** beta "
                             "(0: plain NLL)")
    parser.add_argument("--seed", type=int, default=FitSettings.seed)
    parser.add_argument("--force", action="store_true", help="replace an existing model")
    args = parser.parse_args(argv)
    for name in ("members", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name}: {getattr(args, name)} is not allowed; expected "
                         "an int >= 1")
    if args.out.with_suffix(".json").exists() and not args.force:
        parser.error(f"argument --out: {args.out.with_suffix('.json')} exists; pass --force "
                     "to replace it")
    from agents.benchmark.tracks import get

    data = Transitions.load(args.data)
    ensemble = fit(data, FitSettings(members=args.members, epochs=args.epochs, beta=args.beta,
                                     seed=args.seed))
    describe(ensemble, get(args.track), data)
    ensemble.meta["command"] = shlex.join(["python", "-m", "agents.surrogate.fit",
                                           *(argv if argv is not None else sys.argv[1:])])
    weights, sidecar = ensemble.save(args.out)
    print(f"{ensemble.members} members on {len(data.episodes)} episodes "
          f"({ensemble.meta['transitions']} transitions, data {data.content_hash[:16]}): "
          f"residual lag-1 autocorrelation {ensemble.meta['residual_lag1']:.3f}, OOD threshold "
          f"{ensemble.meta['ood_threshold']:.2e} -> {weights}, {sidecar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
