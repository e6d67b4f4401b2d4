"""Sum-product marginals: normalised, equal to enumeration, and narrowing as the temperature falls."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.chain import build_chain
from widthwise.search.engine import QueryError, Searcher, make_objective
from widthwise.search.marginals import marginals
from tests.support.synthetic import mobilenet_v1_table, random_costs, random_table


def brute_marginals(chain, gamma, temperature):
    """Per-layer probabilities by enumerating every configuration's Gibbs weight."""
    configs = list(itertools.product(*(range(len(c)) for c in chain.choices)))
    energy = np.array([chain.cost_of(c) + gamma * chain.latency_of(c) for c in configs])
    weights = np.exp(-(energy - energy.min()) / temperature)
    weights /= weights.sum()
    out = [np.zeros(len(c)) for c in chain.choices]
    for cfg, w in zip(configs, weights):
        for k, j in enumerate(cfg):
            out[k][j] += w
    return out


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 4),
    st.floats(0.0, 3.0),
    st.sampled_from([0.05, 0.5, 1.0, 10.0]),
)
def test_marginals_equal_enumeration(seed, layers, choices, gamma, temperature):
    table = random_table(seed, layers, choices, integer=False)
    chain = build_chain(table, make_objective(table, random_costs(table, seed, integer=False)))
    got = marginals(chain, gamma, temperature)
    expected = brute_marginals(chain, gamma, temperature)
    for row, exp in zip(got, expected):
        assert row.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(row, exp, atol=1e-9)


def test_marginals_concentrate_on_the_lagrangian_answer_as_temperature_falls():
    table = mobilenet_v1_table(seed=4)
    searcher = Searcher(table, make_objective(table))
    budget = 0.5 * table.predict(tuple(max(c) for c in table.choices))
    target = searcher.query(budget, "lagrangian").widths
    previous = None
    for temperature in (1.0, 0.1, 0.01, 0.001, 1e-5):
        probs = searcher.marginals(budget, temperature)
        assert all(sum(p.values()) == pytest.approx(1.0) for p in probs)
        mass = np.mean([p[w] for p, w in zip(probs, target)])
        entropy = -sum(v * math.log(v) for p in probs for v in p.values() if v > 0)
        if previous is not None:
            assert entropy <= previous[1] + 1e-9
        previous = (mass, entropy)
    assert previous[0] > 0.99


def test_marginals_refuse_bad_temperatures():
    table = random_table(1, 2, 2)
    searcher = Searcher(table, make_objective(table))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(QueryError, match="temperature"):
            searcher.marginals(100.0, bad)
