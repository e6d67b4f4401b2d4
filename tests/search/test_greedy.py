"""Greedy baseline on trees: meets the budgets when it answers, and is never better than the optimum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import within
from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective
from widthwise.search.greedy import GreedyStuck, _local_terms, greedy
from widthwise.search.table import Block
from widthwise.search.tree import build_tree
from tests.search.brute import enumerate_tree, tree_instance
from tests.support.synthetic import TREE_SHAPES, mobilenet_v1_table, mobilenet_v2_like_table, random_costs, random_table

cases = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["flops", "pairwise"]),
    st.floats(0.0, 1.0),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)
tree_cases = st.tuples(
    st.sampled_from(TREE_SHAPES),
    st.integers(0, 10**6),
    st.integers(1, 6),
    st.integers(1, 3),
    st.sampled_from(["flops", "params", "pairwise"]),
    st.floats(0.0, 1.0),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)


def check_greedy(searcher: Searcher, where: float, where_params: float | None) -> None:
    """Greedy's answer, when it gives one, meets both budgets and costs no less than the brute-force optimum."""
    points = enumerate_tree(searcher.tree)
    lats = sorted(p[1] for p in points)
    pars = sorted(p[3] for p in points)
    budget = lats[0] + where * (lats[-1] - lats[0])
    max_params = None if where_params is None else pars[0] + where_params * (pars[-1] - pars[0])
    try:
        answer = searcher.query(budget, "greedy", max_params=max_params)
    except InfeasibleBudget:
        return  # greedy may stall where a configuration exists
    assert within(answer.latency_ms, budget)
    assert answer.latency_ms == pytest.approx(searcher.table.predict(answer.widths))
    if max_params is not None:
        assert within(answer.params, max_params)
    optimum = min(c for _, lat, c, par in points
                  if within(lat, budget) and (max_params is None or within(par, max_params)))
    assert answer.cost >= optimum - 1e-9


@settings(max_examples=150, deadline=None)
@given(cases)
def test_greedy_meets_budgets_and_never_beats_the_optimum_on_chain_tables(case):
    seed, layers, choices, kind, where, where_params = case
    table = random_table(seed, layers, choices)
    objective = make_objective(table, "flops" if kind == "flops" else random_costs(table, seed))
    check_greedy(Searcher(table, objective), where, where_params)


@settings(max_examples=200, deadline=None)
@given(tree_cases)
def test_greedy_meets_budgets_and_never_beats_the_optimum_on_trees(case):
    shape, seed, variables, choices, kind, where, where_params = case
    table, objective = tree_instance(shape, seed, variables, choices, kind)
    check_greedy(Searcher(table, objective), where, where_params)


def test_local_terms_of_a_tree_variable_are_its_unary_parent_edge_and_child_edges():
    """Narrowing one variable changes the latency by exactly what its local terms say (the rest fixed)."""
    table = mobilenet_v2_like_table(6, seed=3)
    tree = build_tree(table, make_objective(table))
    rng = np.random.default_rng(0)
    children = tree.children()
    for _ in range(20):
        idx = [int(rng.integers(k)) for k in tree.sizes]
        v = int(rng.integers(tree.num_layers))
        local = _local_terms(tree, tree.latency, children[v], idx, v)
        for j in range(tree.sizes[v]):
            moved = list(idx)
            moved[v] = j
            assert tree.latency_of(moved) - tree.latency_of(idx) == pytest.approx(local[j] - local[idx[v]], abs=1e-9)


def test_greedy_starts_from_the_widest_and_keeps_it_when_it_fits():
    table = mobilenet_v1_table(seed=2)
    searcher = Searcher(table, make_objective(table))
    widest = tuple(max(c) for c in table.choices)
    answer = searcher.query(table.predict(widest) + 1.0, "greedy")
    assert answer.widths == widest


@pytest.mark.parametrize("table", [mobilenet_v1_table(seed=2), mobilenet_v2_like_table(14, seed=2)],
                         ids=["mobilenet_v1", "mobilenet_v2_like"])
def test_greedy_on_mobilenet_meets_the_budget_and_trails_exact(table):
    searcher = Searcher(table, make_objective(table))
    budget = 0.5 * table.predict(tuple(max(c) for c in table.choices))
    answer = searcher.query(budget, "greedy")
    assert within(answer.latency_ms, budget)
    assert answer.cost >= searcher.query(budget, "exact").cost


def test_greedy_stalls_where_exact_succeeds():
    # Narrowing either layer alone is slower; narrowing both is fastest. Greedy cannot see it.
    table = random_table(0, 2, 1)
    for layer in table.space["layers"]:
        layer["choices"] = [8, 16]
    table.blocks[0] = Block("layer0", (3,), (8, 16), np.zeros((1, 2)))
    table.blocks[1] = Block("layer1", (8, 16), (8, 16), np.array([[0.0, 10.0], [10.0, 1.0]]))
    table.blocks[2] = Block("classifier", (8, 16), (10,), np.zeros((2, 1)))
    table.constant_ms = 0.0
    unary = {"format": "widthwise-costs/1", "unary": [[1.0, 0.0], [1.0, 0.0]]}
    searcher = Searcher(table, make_objective(table, unary))
    with pytest.raises(GreedyStuck):
        greedy(searcher.tree, 0.5)
    with pytest.raises(InfeasibleBudget, match="smallest achievable latency is 0 ms"):
        searcher.query(0.5, "greedy")
    assert searcher.query(0.5, "exact").widths == (8, 8)
