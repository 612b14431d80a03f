"""Logged transitions of real episodes: the data a surrogate is fitted and judged on.

Every finished online cell of a benchmark folder is one episode; its `log.jsonl` gives,
per decision, the layer, the tie map after the decision and the validation loss after
the training steps that followed it, and its `result.json` the starting loss. From these
come one row per decision: the surrogate's features (`tying_env.surrogate.model`) and the
change of the validation loss. The cells of a v2 track are many behaviour policies on the
same seeds: random agents of both action semantics, static schedules at 1 to 12 roots, a
dynamic heuristic, the learners (whose exploration perturbs their greedy policies).

    python -m agents.surrogate.transitions runs/deep-v1 --out runs/surrogate/deep-v1.npz

The data set's identity is the SHA-256 of its arrays (`content_hash`), recorded with
every model fitted on it. Splits are by episode (seed) and by policy family
(`FAMILIES`), never by transition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.benchmark.cells import CELLS
from agents.runs.plots import read_log
from agents.runs.result import ONLINE, read_result
from tying_env import ties as tm
from tying_env.surrogate.features import History, feature_names

# behaviour policies by family: what a leave-one-family-out refit leaves out
FAMILIES = {"random": ("random", "random-unmasked"),
            "static": ("vanilla", "static-1", "static-2", "static-3", "static-4", "static-6",
                       "static-8", "static-12", "albert", "cycle", "paper-sequence"),
            "heuristic": ("untie-then-tie",),
            "qlearning": ("qlearning", "qlearning-plus", "qlearning-fast"),
            "sb3": ("maskable-ppo", "dqn", "ppo", "a2c", "qrdqn", "recurrent-ppo"),
            "bandit": ("schedule-bandit",)}


def family_of(agent: str) -> str:
    """The policy family of `agent` (`other` for an agent of no listed family)."""
    return next((f for f, members in FAMILIES.items() if agent in members), "other")


@dataclass
class Transitions:
    """Rows of decisions and the episodes they belong to."""

    x: np.ndarray  # (N, F) features
    delta: np.ndarray  # (N,) change of the validation loss
    episode: np.ndarray  # (N,) index into `episodes`
    episodes: list[dict[str, Any]]  # agent, seed, family, env settings, losses, return

    @property
    def content_hash(self) -> str:
        """SHA-256 of the arrays and the episodes' identities: the data set's version."""
        h = hashlib.sha256()
        for a in (self.x, self.delta, self.episode):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        h.update(json.dumps([(e["agent"], e["seed"]) for e in self.episodes]).encode())
        return h.hexdigest()

    def select(self, keep: np.ndarray) -> Transitions:
        """The rows of the episodes where `keep` (one bool per episode) is True."""
        rows = keep[self.episode]
        index = np.cumsum(keep) - 1
        return Transitions(self.x[rows], self.delta[rows], index[self.episode[rows]],
                           [e for e, k in zip(self.episodes, keep, strict=True) if k])

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez_compressed(partial, x=self.x, delta=self.delta, episode=self.episode,
                            episodes=np.array(json.dumps(self.episodes)))
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> Transitions:
        with np.load(path) as data:
            return cls(data["x"], data["delta"], data["episode"],
                       json.loads(str(data["episodes"])))


def episode_rows(records: Sequence[dict[str, Any]], start_ties: tuple[int, ...],
                 start_loss: float) -> tuple[np.ndarray, np.ndarray]:
    """Features and loss changes of one logged episode."""
    n_layer, budget = len(start_ties), int(records[0]["budget"])
    history = History(n_layer, budget, start_ties, start_loss)
    xs = []
    for r in records:
        xs.append(history.features(int(r["layer"]), tuple(int(t) for t in r["tie_map"])))
        history.observe(float(r["val_loss"]))
    return np.array(xs), np.array(history.deltas)


def collect(folders: Sequence[Path]) -> Transitions:
    """The transitions of every finished, online, non-diverged cell under `folders`."""
    xs, deltas, episode, episodes = [], [], [], []
    for out in folders:
        for cell in sorted((Path(out) / CELLS).glob("*/")):
            result = read_result(cell)
            if result is None or not result.complete or result.protocol != ONLINE \
                    or result.diverged or result.initial_val_ppl is None:
                continue
            records = read_log(cell / "log.jsonl")
            if len(records) != result.budget:
                continue
            start = (tm.untied(len(result.tie_map)) if
                     result.env_kwargs.get("initial_ties") == "none"
                     else tm.all_first(len(result.tie_map)))
            x, delta = episode_rows(records, start, math.log(result.initial_val_ppl))
            xs.append(x)
            deltas.append(delta)
            episode.append(np.full(len(delta), len(episodes)))
            episodes.append({"agent": result.agent, "seed": result.seed,
                             "family": family_of(result.agent), "track": result.track,
                             "initial_val_loss": math.log(result.initial_val_ppl),
                             "final_val_ppl": result.final_val_ppl,
                             "last_val_loss": float(records[-1]["val_loss"]),
                             "return": float(sum(r["reward"] for r in records)),
                             "trainable_fraction": result.trainable_fraction,
                             "optimal_ppl": result.optimal_ppl,
                             "train_val_gap": float(np.mean(
                                 [r["train_loss"] - r["val_loss"] for r in records])),
                             "param_penalty": result.env_kwargs.get("param_penalty", 0.0)})
    if not episodes:
        raise ValueError(f"no finished online cell under {', '.join(map(str, folders))}")
    return Transitions(np.concatenate(xs), np.concatenate(deltas), np.concatenate(episode),
                       episodes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.surrogate.transitions",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="benchmark folders (--out)")
    parser.add_argument("--out", type=Path, required=True, help="the data set (.npz)")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"argument --out: {args.out} exists; give a new path (a data set is "
                     "never replaced)")
    data = collect(args.folders)
    data.save(args.out)
    n_layer = data.x.shape[1] - len(feature_names(0))
    print(f"{len(data.episodes)} episodes, {len(data.delta)} transitions, {n_layer} layers, "
          f"sha256 {data.content_hash[:16]} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
