"""Samplers: which width configurations the collector measures, one named strategy each.

A sampler is built for a space and a seed and hands out configurations one after another
(`draw`). Its plans are prefix-stable: `plan(n)[:m] == plan(m)`, so a collection asked to
grow from 300 to 500 samples keeps the first 300 slots it already measured. Strategies
live in their own modules and are imported by name only when asked for, as in Optuna's
`optuna.samplers`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import ClassVar, Sequence

import numpy as np

from widthwise.device_agents.spaces import Space

from ..errors import UnknownSampler

Widths = tuple[int, ...]

class Sampler(ABC):
    """A seeded, deterministic source of width configurations on a space's grid."""

    #: the name the strategy is registered under (and stored in a db's identity).
    name: ClassVar[str] = ""

    def __init__(self, space: Space, *, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)
        self.reset()

    def reset(self) -> None:
        """Return to the state right after construction (the same seed gives the same draws)."""
        self.rng = np.random.default_rng(self.seed)
        self.drawn = 0
        self._reset_state()

    def _reset_state(self) -> None:
        """Strategy-specific state to clear on `reset` (none by default)."""

    @abstractmethod
    def _draw_indices(self) -> list[int]:
        """The next configuration as one choice index per variable."""

    def draw(self) -> Widths:
        """The next configuration of the plan, as widths."""
        indices = self._draw_indices()
        self.drawn += 1
        return tuple(layer.choices[i] for layer, i in zip(self.space.layers, indices))

    def plan(self, n: int) -> list[Widths]:
        """The first `n` configurations for this seed (from a fresh state)."""
        if n < 0:
            raise ValueError(f"a plan needs a non-negative number of samples, got {n}")
        self.reset()
        return [self.draw() for _ in range(n)]


#: strategy name -> module defining `SAMPLER`, a Sampler subclass.
SAMPLER_MODULES: dict[str, str] = {
    "coverage": "widthwise.profiler.sampling.coverage",
    "uniform": "widthwise.profiler.sampling.uniform",
    "variance": "widthwise.profiler.sampling.variance",
}


def sampler_class(name: str) -> type[Sampler]:
    """The Sampler subclass registered under `name`."""
    module_name = SAMPLER_MODULES.get(name)
    if module_name is None:
        raise UnknownSampler(f"unknown sampling {name!r}; known: {', '.join(sorted(SAMPLER_MODULES))}", field="sampling")
    return importlib.import_module(module_name).SAMPLER


def make_sampler(name: str, space: Space, *, seed: int = 0) -> Sampler:
    """A sampler of strategy `name` for `space`, seeded."""
    return sampler_class(name)(space, seed=seed)


def factor_entries(space: Space, indices: Sequence[int]) -> list[tuple[int, tuple[int, ...]]]:
    """The entry of every factor a configuration given as choice indices exercises: (factor,
    the choice indices of its variables, in the factor's variable order)."""
    return [(f, tuple(int(indices[v]) for v in factor.variables)) for f, factor in enumerate(space.factors)]


def factor_terms(space: Space, widths: Widths) -> list[tuple[int, tuple[int, ...]]]:
    """The factor entries a configuration given as widths exercises (for checks of a plan's
    coverage: the samplers count entries by index)."""
    return factor_entries(space, [layer.choices.index(w) for layer, w in zip(space.layers, widths)])
