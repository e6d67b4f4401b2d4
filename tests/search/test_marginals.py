"""Sum-product marginals on trees: normalised, equal to enumeration, and narrowing as the temperature falls."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.engine import QueryError, Searcher, make_objective
from widthwise.search.marginals import marginals
from widthwise.search.tree import build_tree
from tests.search.brute import brute_marginals, tree_instance
from tests.support.synthetic import TREE_SHAPES, mobilenet_v1_table, mobilenet_v2_like_table, random_costs, random_table

TEMPERATURES = st.sampled_from([0.05, 0.5, 1.0, 10.0])


def check(tree, gamma: float, temperature: float) -> None:
    got = marginals(tree, gamma, temperature)
    expected = brute_marginals(tree, gamma, temperature)
    assert len(got) == tree.num_layers
    for row, exp in zip(got, expected):
        assert row.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(row, exp, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(1, 4), st.floats(0.0, 3.0), TEMPERATURES)
def test_chain_marginals_equal_enumeration(seed, layers, choices, gamma, temperature):
    table = random_table(seed, layers, choices, integer=False)
    check(build_tree(table, make_objective(table, random_costs(table, seed, integer=False))), gamma, temperature)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TREE_SHAPES), st.integers(0, 10**6), st.integers(1, 7), st.integers(1, 3),
       st.sampled_from(["flops", "pairwise"]), st.floats(0.0, 3.0), TEMPERATURES)
def test_tree_marginals_equal_enumeration(shape, seed, variables, choices, kind, gamma, temperature):
    """Stars (many children per parent), caterpillars, random trees and forests, with pairwise costs."""
    table, objective = tree_instance(shape, seed, variables, choices, kind, integer=False)
    check(build_tree(table, objective), gamma, temperature)


def test_low_temperatures_keep_their_precision():
    """At T = 1e-4 the energies span ~1e5 in log space: still normalised and equal to enumeration."""
    table, objective = tree_instance("star", 5, 6, 3, "pairwise", integer=False)
    check(build_tree(table, objective), 0.5, 1e-4)


@pytest.mark.parametrize("table", [mobilenet_v1_table(seed=4), mobilenet_v2_like_table(14, seed=4)],
                         ids=["mobilenet_v1", "mobilenet_v2_like"])
def test_marginals_concentrate_on_the_lagrangian_answer_as_temperature_falls(table):
    searcher = Searcher(table, make_objective(table))
    budget = 0.5 * table.predict(tuple(max(c) for c in table.choices))
    target = searcher.query(budget, "lagrangian").widths
    previous = None
    for temperature in (1.0, 0.1, 0.01, 0.001, 1e-5, 1e-7):  # the v2-like table has an energy gap of 1.4e-5
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
