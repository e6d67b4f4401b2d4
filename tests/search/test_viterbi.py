"""Min-sum passes over trees (chains, stars, caterpillars, random trees, forests) against enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.tree import build_tree
from widthwise.search.viterbi import EDGE_OFF, ORDER, PARENT, SIZE, UNARY_OFF, LagrangianViterbi
from tests.search.brute import CASES, TREE_CASES, enumerate_tree, instance, make_objective, tree_instance
from tests.support.synthetic import random_costs, random_tree_table

GAMMAS = st.sampled_from([0.0, 1e-3, 0.25, 1.0, 3.0, 1e6])


def check_pass(tree, gamma: float) -> None:
    """The pass's configuration attains the least `cost + gamma * latency`, and `fastest` the least latency."""
    points = enumerate_tree(tree)
    solver = LagrangianViterbi(tree)
    value = lambda p: p[2] + gamma * p[1]  # noqa: E731
    best = min(value(p) for p in points)
    got = solver.solve(gamma)
    assert tree.cost_of(got) + gamma * tree.latency_of(got) == pytest.approx(best, rel=1e-9, abs=1e-9)
    fastest = solver.fastest()
    assert tree.latency_of(fastest) == pytest.approx(min(p[1] for p in points), rel=1e-9, abs=1e-9)
    assert tree.min_latency() == pytest.approx(tree.latency_of(fastest), rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(TREE_CASES, GAMMAS)
def test_pass_minimises_cost_plus_gamma_latency_on_trees(case, gamma):
    table, objective = tree_instance(*case)
    check_pass(build_tree(table, objective), gamma)


@settings(max_examples=100, deadline=None)
@given(CASES, GAMMAS)
def test_pass_minimises_cost_plus_gamma_latency_on_chain_tables(case, gamma):
    table, objective = instance(*case)
    check_pass(build_tree(table, objective), gamma)


@pytest.mark.parametrize("shape", ["chain", "star", "caterpillar", "random", "forest"])
def test_ties_go_to_the_first_state(shape):
    """Every configuration takes and costs the same: state 0 everywhere, whatever the shape."""
    table = random_tree_table(shape, 3, levels=4, variables=6, exact_levels=True)
    tree = build_tree(table, make_objective(table))
    zero = tree.latency.scaled(0.0)
    tied = tree.with_terms(latency=zero, cost=zero)
    solver = LagrangianViterbi(tied)
    assert solver.solve(1.0) == solver.fastest() == (0,) * 6


def test_flat_layout_of_the_compiled_kernels():
    """`flat` and `index`: each variable's unary, then each edge row-major, with sizes, parents and order."""
    table = random_tree_table("caterpillar", 11, levels=4, variables=6)
    tree = build_tree(table, make_objective(table, random_costs(table, 11, integer=False)))
    solver = LagrangianViterbi(tree)
    flat, index = solver.flat, solver.index
    assert index.shape == (5, tree.num_layers)
    assert tuple(index[SIZE]) == tree.sizes and tuple(index[PARENT]) == tree.parent
    assert tuple(index[ORDER]) == tree.order
    entries = sum(tree.sizes) + sum(e.size for e in tree.latency.edge if e is not None)
    assert flat.shape == (2, entries)
    for v in range(tree.num_layers):
        u = index[UNARY_OFF, v]
        assert np.array_equal(flat[0, u : u + tree.sizes[v]], tree.latency.unary[v])
        assert np.array_equal(flat[1, u : u + tree.sizes[v]], tree.cost.unary[v])
        e = tree.latency.edge[v]
        if e is None:
            assert index[EDGE_OFF, v] == -1
            continue
        off = index[EDGE_OFF, v]
        assert np.array_equal(flat[0, off : off + e.size].reshape(e.shape), e)
        assert np.array_equal(flat[1, off : off + e.size].reshape(e.shape), tree.cost.edge[v])

