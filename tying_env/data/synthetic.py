"""A seeded hidden Markov model text source whose exact token probabilities are known.

The source has a few hidden states with sparse transitions and small, overlapping emission
sets, so the current symbol alone does not reveal the state: predicting well needs context.
Because the model is known, the forward algorithm gives the exact conditional probability of
every token in a window, hence the best perplexity any model can reach on the same windows.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class HMMSource:
    """An HMM over `vocab_size` symbols: dense `transition[K, K]`, `emission[K, V]`.

    `stationary[K]` (the start distribution of every chain and every window) is computed
    from `transition` when not given.
    """

    transition: np.ndarray
    emission: np.ndarray
    stationary: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.transition = np.asarray(self.transition, dtype=np.float64)
        self.emission = np.asarray(self.emission, dtype=np.float64)
        k = self.transition.shape[0]
        if self.transition.shape != (k, k) or self.emission.ndim != 2 or len(self.emission) != k:
            raise ValueError(
                f"transition must be [K, K] and emission [K, V]; got {self.transition.shape} "
                f"and {self.emission.shape}"
            )
        for label, m in (("transition", self.transition), ("emission", self.emission)):
            if (m < 0).any() or not np.allclose(m.sum(axis=1), 1.0):
                raise ValueError(f"{label} rows must be probability distributions")
        if self.stationary is None:
            self.stationary = stationary_distribution(self.transition)
        self.stationary = np.asarray(self.stationary, dtype=np.float64)

    @property
    def n_states(self) -> int:
        return self.transition.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.emission.shape[1]

    @classmethod
    def from_seed(
        cls,
        seed: int,
        vocab_size: int,
        n_states: int = 16,
        *,
        n_next: int = 3,
        n_emit: int = 4,
        alpha: float = 1.0,
    ) -> HMMSource:
        """Draw a sparse random HMM.

        Each state moves to `n_next` states (always including the next state in a cycle, so
        the chain is irreducible) and emits from `n_emit` symbols. All states draw their
        symbols from a shared pool of about half the emission slots, so each used symbol is
        emitted by about two states. The used symbols are a random subset of the vocabulary.
        Probabilities are Dirichlet(alpha) draws.
        """
        if vocab_size < 1 or n_states < 1:
            raise ValueError(
                f"need vocab_size >= 1 and n_states >= 1, got vocab_size={vocab_size}, "
                f"n_states={n_states}"
            )
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        k = n_states
        n_next = min(n_next, k)
        transition = np.zeros((k, k))
        for s in range(k):
            ring = (s + 1) % k
            others = np.delete(np.arange(k), ring)
            succ = np.concatenate([[ring], rng.choice(others, n_next - 1, replace=False)])
            transition[s, succ] = rng.dirichlet(np.full(n_next, alpha))

        pool_size = max(1, min(vocab_size, (k * n_emit) // 2))
        pool = rng.choice(vocab_size, pool_size, replace=False)
        n_emit = min(n_emit, pool_size)
        emission = np.zeros((k, vocab_size))
        for s in range(k):
            symbols = rng.choice(pool, n_emit, replace=False)
            emission[s, symbols] = rng.dirichlet(np.full(n_emit, alpha))
        return cls(transition, emission)

    def sample(self, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        """One chain of `n_tokens` symbols started from the stationary distribution (int64)."""
        k = self.n_states
        # The state chain is sequential; with sparse rows a bisect over Python lists is fast.
        succ = [np.flatnonzero(row) for row in self.transition]
        cum = [np.cumsum(self.transition[s, succ[s]]).tolist() for s in range(k)]
        succ_lists = [a.tolist() for a in succ]
        u = rng.random(n_tokens).tolist()
        states = np.empty(n_tokens, dtype=np.int64)
        s = int(rng.choice(k, p=self.stationary))
        for t in range(n_tokens):
            if t:
                row = cum[s]
                s = succ_lists[s][min(bisect.bisect_right(row, u[t]), len(row) - 1)]
            states[t] = s
        # Emissions given the states are independent: vectorise them.
        nnz = (self.emission > 0).sum(axis=1)
        order = np.argsort(-self.emission, axis=1, kind="stable")[:, : nnz.max()]
        emit_cum = np.cumsum(np.take_along_axis(self.emission, order, axis=1), axis=1)
        for state, n in enumerate(nnz):  # rounding guard: the last possible symbol takes the rest
            emit_cum[state, n - 1 :] = np.inf
        v = rng.random(n_tokens)
        idx = (v[:, None] >= emit_cum[states]).sum(axis=1)
        return order[states, idx]

    def window_nll(self, windows: np.ndarray) -> np.ndarray:
        """Exact `-log p(x[t+1] | x[0..t])` for windows [B, T+1] -> [B, T] (float64).

        The forward algorithm starts each window from the stationary prior at its first token,
        so this is the floor, in expectation, for any model that sees the same windows.
        """
        w = np.asarray(windows)
        if w.ndim != 2 or w.shape[1] < 2:
            raise ValueError(f"windows must have shape [B, T+1] with T >= 1, got {w.shape}")
        if w.min() < 0 or w.max() >= self.vocab_size:
            raise ValueError(f"window symbols must lie in [0, {self.vocab_size})")
        emit_t = self.emission.T  # [V, K]
        alpha = self.stationary[None, :] * emit_t[w[:, 0]]  # [B, K]
        norm = alpha.sum(axis=1, keepdims=True)
        if (norm <= 0).any():
            raise ValueError("a window starts with a symbol the source never emits")
        alpha = alpha / norm
        nll = np.empty((w.shape[0], w.shape[1] - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            for t in range(1, w.shape[1]):
                joint = (alpha @ self.transition) * emit_t[w[:, t]]  # p(state_t, x_t | past)
                p = joint.sum(axis=1)
                nll[:, t - 1] = -np.log(p)
                alpha = joint / p[:, None]
        return nll

    def optimal_ppl(self, windows: np.ndarray) -> float:
        """exp(mean exact NLL) over the windows: the perplexity floor on those windows."""
        return float(np.exp(self.window_nll(windows).mean()))


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """The stationary distribution pi with pi @ P = pi, sum(pi) = 1 (irreducible chain)."""
    k = transition.shape[0]
    a = np.vstack([transition.T - np.eye(k), np.ones((1, k))])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()
