"""Variance sampling: on the grid, seeded and prefix-stable, coverage first, then the least certain draws."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.sampling import make_sampler
from widthwise.profiler.sampling.variance import VarianceSampler


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenet_v1", {"resolution": 32, "levels": 5})


def test_draws_are_on_the_grid_seeded_and_prefix_stable(space):
    plan = make_sampler("variance", space, seed=3).plan(40)
    assert all(w in layer.choices for widths in plan for w, layer in zip(widths, space.layers))
    assert make_sampler("variance", space, seed=3).plan(40) == plan
    assert make_sampler("variance", space, seed=3).plan(25) == plan[:25]
    assert make_sampler("variance", space, seed=4).plan(40) != plan


def test_the_opening_is_the_coverage_plan_and_the_rest_differs(space):
    opening = VarianceSampler.opening
    plan = make_sampler("variance", space, seed=0).plan(opening + 20)
    coverage = make_sampler("coverage", space, seed=0).plan(opening + 20)
    assert plan[:opening] == coverage[:opening]
    assert plan[opening:] != coverage[opening:]


def _variance_left(space, sampling: str, n: int, fresh: np.ndarray) -> float:
    """The largest relative predictive variance among fresh configurations after n draws of a plan."""
    judge = VarianceSampler(space, seed=0)
    for widths in make_sampler(sampling, space, seed=0).plan(n):
        judge._add(judge.layout.term_indices(np.asarray([widths]))[0])
    return float(np.max(judge.relative_variance(fresh)))


def test_each_draw_lowers_the_uncertainty_and_the_plan_leaves_less_of_it_at_its_worst_than_uniform(space):
    sampler = VarianceSampler(space, seed=1)
    for _ in range(VarianceSampler.opening):
        sampler.draw()
    rng = np.random.default_rng(7)
    fresh = np.stack([rng.choice(layer.choices, size=300) for layer in space.layers], axis=1)
    before = sampler.relative_variance(fresh)
    chosen = np.asarray([sampler.draw()])
    # the configuration just drawn is now far more certain than a fresh one on average
    assert sampler.relative_variance(chosen)[0] < float(np.min(sampler.relative_variance(fresh)))
    assert float(np.mean(sampler.relative_variance(fresh))) < float(np.mean(before))
    n = VarianceSampler.opening + 40
    assert _variance_left(space, "variance", n, fresh) < _variance_left(space, "uniform", n, fresh)
