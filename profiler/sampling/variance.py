"""Variance sampling: after a coverage opening, draw where the fit would be least certain.

The fit pulls every factor entry towards a prior and lets it deviate by a ridge-penalised
amount proportional to the entry's expected size. Under that model (deviations independent,
each with a standard deviation proportional to a rough cost of the entry: MACs, activation
traffic and a per-call cost), the variance of a configuration's predicted latency given
the configurations drawn so far depends on the widths alone, not on the timings, so the plan
stays seeded, deterministic and prefix-stable like every other. Each draw after the first
`opening` ones (coverage draws) is, among the coverage sampler's next draw and `candidates`
uniform ones, the configuration of largest predictive variance relative to its expected
latency squared (the error the stop rule and the held-out figures measure is relative).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from .coverage import CoverageSampler

#: rough cost of a term (ms): per GMAC, per G activation elements, per op call; only ranks candidates
MS_PER_GMAC, MS_PER_GELEM, MS_PER_CALL = 25.0, 150.0, 0.02


class VarianceSampler(CoverageSampler):
    """Coverage for the first `opening` draws, then the candidate of largest relative predictive variance."""

    name = "variance"

    #: coverage draws before the variance criterion takes over (the stop rule's first check sees them)
    opening: int = 20
    #: uniform candidates per draw, beside the coverage sampler's own next draw
    candidates: int = 64
    #: (measurement noise / prior misfit)^2, both relative: 2 % timing noise against entries 10 % off
    #: their prior; the costs are normalised so that the mean configuration's expected latency is 1
    ridge: float = 0.04

    def _reset_state(self) -> None:
        super()._reset_state()
        from widthwise.profiler.fit_design import term_layout  # noqa: PLC0415  (scipy, only when asked for)

        layout = term_layout(self.space)
        f = layout.features
        self.layout = layout
        cost = MS_PER_GMAC * 1e-9 * f[:, 0] + MS_PER_GELEM * 1e-9 * (f[:, 1] + f[:, 2]) + MS_PER_CALL
        per_factor = np.bincount(layout.factor_of_term, weights=cost) / np.bincount(layout.factor_of_term)
        mean_latency = float(per_factor.sum())
        self.cost = cost / mean_latency
        self.terms = np.zeros((0, layout.num_factors), dtype=np.int64)
        self.chol = np.zeros((0, 0))  # Cholesky factor of (gram of the draws + ridge I), grown a row per draw

    def _draw_indices(self) -> list[int]:
        if self.drawn < self.opening:
            indices = super()._draw_indices()
        else:
            indices = self._most_uncertain()
            self._count(indices)
        self._add(self.layout.term_indices(self._widths(indices))[0])
        return indices

    def _cross(self, cand: np.ndarray) -> np.ndarray:
        """(N, M): the prior covariance of each draw's latency with each candidate's."""
        s2 = self.cost**2
        return ((self.terms[:, None, :] == cand[None, :, :]) * s2[cand][None, :, :]).sum(axis=2)

    def _add(self, row: np.ndarray) -> None:
        """Append a draw's terms, extending the Cholesky factor by one row."""
        n = len(self.terms)
        cross = self._cross(row[None, :])[:, 0] if n else np.zeros(0)
        diag = float((self.cost[row] ** 2).sum()) + self.ridge
        low = solve_triangular(self.chol, cross, lower=True) if n else np.zeros(0)
        chol = np.zeros((n + 1, n + 1))
        chol[:n, :n] = self.chol
        chol[n, :n] = low
        chol[n, n] = np.sqrt(max(diag - float(low @ low), 1e-12))
        self.chol = chol
        self.terms = np.vstack([self.terms, row[None, :]])

    def _widths(self, indices: list[int]) -> np.ndarray:
        return np.asarray([[layer.choices[i] for layer, i in zip(self.space.layers, indices)]], dtype=np.int64)

    def _most_uncertain(self) -> list[int]:
        """Among the coverage draw and uniform candidates, the one of largest relative predictive variance."""
        options = [self._best_configuration()]
        options += [[int(self.rng.integers(len(layer.choices))) for layer in self.space.layers]
                    for _ in range(self.candidates)]
        widths = np.vstack([self._widths(o) for o in options])
        return options[int(np.argmax(self.relative_variance(widths)))]

    def relative_variance(self, widths: np.ndarray) -> np.ndarray:
        """Predictive variance of each configuration's latency given the draws so far, over its
        expected latency squared (Woodbury: an N x N solve for N draws)."""
        cand = self.layout.term_indices(widths)
        s2 = self.cost**2
        prior_var = s2[cand].sum(axis=1)
        if len(self.terms) == 0:
            return prior_var / self.cost[cand].sum(axis=1) ** 2
        half = solve_triangular(self.chol, self._cross(cand), lower=True)
        variance = (prior_var - (half * half).sum(axis=0)) / self.ridge
        return variance / self.cost[cand].sum(axis=1) ** 2


SAMPLER = VarianceSampler
