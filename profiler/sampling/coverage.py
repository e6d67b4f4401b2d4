"""Coverage sampling: each draw exercises the (block, in-width, out-width) terms measured least.

The latency model has one unknown per block and pair of adjacent widths. A configuration
touches exactly one term of every block, so the draw that covers the least-measured terms
is a best path through the chain: each term weighs `decay ** -count` (times a small seeded
jitter that breaks ties differently per seed), and a Viterbi pass picks the path of
largest total weight. Every unknown is thereby measured once before any is measured
often. The first two draws are the smallest and the largest configuration, which pin
the two ends of every layer's latency range.
"""

from __future__ import annotations

import numpy as np

from . import Sampler, chain_terms


class CoverageSampler(Sampler):
    """Greedy least-measured-terms sampling over the chain, exact per draw (Viterbi)."""

    name = "coverage"

    #: how much less a term measured once more is worth: larger keeps the counts flatter.
    decay: float = 4.0
    #: multiplicative jitter around 1 on each weight; below decay's ratio so counts dominate.
    jitter: float = 0.25

    def _reset_state(self) -> None:
        space = self.space
        self.counts = [
            np.zeros((len(space.block_in_choices(k)), len(space.block_out_choices(k))), dtype=np.int64)
            for k in range(space.num_layers + 1)
        ]

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
            indices = self._best_path()
        self._count(indices)
        return indices

    def _count(self, indices: list[int]) -> None:
        for k, i, j in chain_terms(indices):
            self.counts[k][i, j] += 1

    def _weights(self, k: int) -> np.ndarray:
        counts = self.counts[k]
        noise = self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter, size=counts.shape)
        return self.decay ** (-counts.astype(np.float64)) * noise

    def _best_path(self) -> list[int]:
        """Viterbi over the chain: the configuration whose terms weigh most in total."""
        num_layers = self.space.num_layers
        weights = [self._weights(k) for k in range(num_layers + 1)]
        score = weights[0][0].copy()  # block 0 has a single input width
        back: list[np.ndarray] = []
        for k in range(1, num_layers):
            total = score[:, None] + weights[k]
            back.append(np.argmax(total, axis=0))
            score = total.max(axis=0)
        score = score + weights[num_layers][:, 0]  # the classifier block, fixed output
        last = int(np.argmax(score))
        path = [last]
        for pointers in reversed(back):
            path.append(int(pointers[path[-1]]))
        return path[::-1]

    # uncovered, term_counts, lower_bound: the sampler's own account of its coverage, kept as API
    # because the coverage figures (docs/collect.md, README) are measured with them

    def uncovered(self) -> int:
        """How many terms no draw has exercised yet."""
        return int(sum((c == 0).sum() for c in self.counts))

    def term_counts(self) -> list[np.ndarray]:
        """Per block, how often each (in, out) term has been drawn so far (a copy)."""
        return [c.copy() for c in self.counts]

    def lower_bound(self) -> int:
        """The fewest draws that could cover every term: the largest block's term count."""
        return max(int(c.size) for c in self.counts)


SAMPLER = CoverageSampler
