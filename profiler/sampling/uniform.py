"""Uniform sampling: every variable's value drawn independently and uniformly from its choices."""

from __future__ import annotations

from . import Sampler


class UniformSampler(Sampler):
    """Independent uniform choices per variable: the plain baseline that coverage sampling beats."""

    name = "uniform"

    def _draw_indices(self) -> list[int]:
        return [int(self.rng.integers(len(layer.choices))) for layer in self.space.layers]


SAMPLER = UniformSampler
