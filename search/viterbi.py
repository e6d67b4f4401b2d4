"""Min-sum Viterbi over a chain of pairwise blocks, vectorised per block: O(L K^2).

`min_sum` solves one chain of matrices; `LagrangianViterbi` solves `cost + gamma * latency`
for many gammas over the same chain, with the blocks stacked and padded once so that one
pass costs two numpy operations per block.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def min_sum(blocks: Sequence[np.ndarray]) -> tuple[float, tuple[int, ...]]:
    """Least total of one entry per block along the chain, and the arg-min states of the L layers.

    Block k has shape (K_{k-1}, K_k), the first has one row and the last one column.
    """
    value = np.asarray(blocks[0], dtype=np.float64)[0]
    back = []
    for m in blocks[1:]:
        total = value[:, None] + m
        arg = total.argmin(axis=0)
        value = total[arg, np.arange(total.shape[1])]
        back.append(arg)
    state, idx = 0, []
    for arg in reversed(back):
        state = int(arg[state])
        idx.append(state)
    return float(value[0]), tuple(reversed(idx))


class LagrangianViterbi:
    """Arg-min of `cost + gamma * latency` over one chain, for any gamma >= 0 (or latency alone)."""

    def __init__(self, latency: Sequence[np.ndarray], cost: Sequence[np.ndarray]) -> None:
        n = len(latency)
        k = max(max(m.shape) for m in latency)
        # Padded entries: cost +inf and latency 0, so they stay +inf for every finite gamma.
        self._cost = np.full((n, k, k), np.inf)
        self._latency = np.zeros((n, k, k))
        for b, (t, c) in enumerate(zip(latency, cost)):
            self._cost[b, : t.shape[0], : t.shape[1]] = c
            self._latency[b, : t.shape[0], : t.shape[1]] = t
        self._latency_only = np.where(np.isinf(self._cost), np.inf, self._latency)
        self._start = np.full(k, np.inf)
        self._start[0] = 0.0
        self._layers = n - 1

    def _run(self, work: np.ndarray) -> tuple[int, ...]:
        """Forward min-sum pass in place over `work` (padded blocks), then backtrack."""
        value = self._start
        for b in range(self._layers + 1):
            block = work[b]
            np.add(block, value[:, None], out=block)
            value = block.min(axis=0)
        state, idx = 0, [0] * self._layers
        for b in range(self._layers, 0, -1):
            state = int(work[b][:, state].argmin())
            idx[b - 1] = state
        return tuple(idx)

    def solve(self, gamma: float) -> tuple[int, ...]:
        """Choice indices minimising `cost + gamma * latency`."""
        work = self._latency * gamma  # a fresh buffer per call keeps concurrent callers apart
        work += self._cost
        return self._run(work)

    def fastest(self) -> tuple[int, ...]:
        """Choice indices of least latency (cost ignored; ties broken arbitrarily)."""
        return self._run(self._latency_only.copy())
