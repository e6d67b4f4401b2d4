"""Coverage sampling: each draw exercises the factor entries measured least.

The latency model has one unknown per entry of every factor (a unary factor's choice of
its variable, a pairwise factor's pair of choices). A configuration touches exactly one
entry of every factor, so the draw that covers the least-measured entries is the
configuration of largest total weight over the space's tree of factors: each entry weighs
`decay ** -count` (times a small seeded jitter that breaks ties differently per seed), and
a max-sum pass (leaves eliminated towards the root; on a chain, Viterbi) picks it exactly.
Every unknown is thereby measured once before any is measured often. The first two draws
are the smallest and the largest configuration, which pin the two ends of every
variable's latency range.
"""

from __future__ import annotations

import numpy as np

from widthwise.search.tree import Terms, TreeMRF, fold_terms, min_sum, tree_structure

from . import Sampler, factor_entries


class CoverageSampler(Sampler):
    """Greedy least-measured-entries sampling over the factors, exact per draw (max-sum on the tree)."""

    name = "coverage"

    #: how much less an entry measured once more is worth: larger keeps the counts flatter.
    decay: float = 4.0
    #: multiplicative jitter around 1 on each weight; below decay's ratio so counts dominate.
    jitter: float = 0.25

    def _reset_state(self) -> None:
        space = self.space
        self.sizes = tuple(len(layer.choices) for layer in space.layers)
        self.counts = [np.zeros([self.sizes[v] for v in f.variables], dtype=np.int64) for f in space.factors]
        pairs = [f.variables for f in space.factors if len(f.variables) == 2]
        self.parent, self.order = tree_structure(len(self.sizes), pairs, [layer.name for layer in space.layers])

    def _fixed_draw(self) -> list[int] | None:
        """The opening draws: all-smallest, then all-largest (once each)."""
        if self.drawn == 0:
            return [0] * self.space.num_layers
        if self.drawn == 1:
            return [len(layer.choices) - 1 for layer in self.space.layers]
        return None

    def _draw_indices(self) -> list[int]:
        indices = self._fixed_draw()
        if indices is None:
            indices = self._best_configuration()
        self._count(indices)
        return indices

    def _count(self, indices: list[int]) -> None:
        for f, entry in factor_entries(self.space, indices):
            self.counts[f][entry] += 1

    def _weights(self, f: int) -> np.ndarray:
        counts = self.counts[f]
        noise = self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter, size=counts.shape)
        return self.decay ** (-counts.astype(np.float64)) * noise

    def _best_configuration(self) -> list[int]:
        """The configuration whose entries weigh most in total: a min-sum of the negated weights."""
        factors = [(f.variables, -self._weights(k)) for k, f in enumerate(self.space.factors)]
        terms: Terms = fold_terms(self.sizes, self.parent, factors)
        tree = TreeMRF(
            choices=tuple(layer.choices for layer in self.space.layers),
            parent=self.parent,
            order=self.order,
            constant_ms=0.0,
            latency=terms,
            cost=terms,
            params=None,
            macs=None,
        )
        return list(min_sum(tree, terms)[1])

    # uncovered, term_counts, lower_bound: the sampler's own account of its coverage, kept as API
    # because the coverage figures (docs/collect.md, README) are measured with them

    def uncovered(self) -> int:
        """How many factor entries no draw has exercised yet."""
        return int(sum((c == 0).sum() for c in self.counts))

    def term_counts(self) -> list[np.ndarray]:
        """Per factor, how often each of its entries has been drawn so far (a copy, one axis per variable)."""
        return [c.copy() for c in self.counts]

    def lower_bound(self) -> int:
        """The fewest draws that could cover every entry: the largest factor's entry count."""
        return max(int(c.size) for c in self.counts)


SAMPLER = CoverageSampler
