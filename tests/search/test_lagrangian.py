"""Lagrangian search on trees: meets the budget, never beats the optimum, and returns only hull vertices."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import within
from widthwise.search.engine import InfeasibleBudget, QueryError, Searcher
from widthwise.search.lagrangian import LagrangianInfeasible, LagrangianPath, solve
from widthwise.search.tree import build_tree
from tests.search.brute import CASES, TREE_CASES, enumerate_tree, instance, make_objective, tree_instance
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table, random_table

#: A chain table (`widthwise-table/1`) or a tree table of any shape, small enough to enumerate.
SMALL = st.one_of(CASES.map(lambda c: instance(*c)), TREE_CASES.map(lambda c: tree_instance(*c)))


def least(points, gamma: float) -> float:
    """The least `cost + gamma * latency` over every configuration."""
    return min(c + gamma * lat for _, lat, c, _ in points)


def tol(value: float) -> float:
    return 1e-7 * (1.0 + abs(value))


@settings(max_examples=200, deadline=None)
@given(SMALL, st.floats(0.0, 1.0))
def test_answer_meets_the_budget_and_minimises_its_lagrangian(instance_, where):
    table, objective = instance_
    tree = build_tree(table, objective)
    points = enumerate_tree(tree)
    lats = sorted(p[1] for p in points)
    budget = lats[0] + where * (lats[-1] - lats[0])
    optimum = min(c for _, lat, c, _ in points if within(lat, budget))
    for compiled in (False, True):
        answer = solve(tree, budget, compiled=compiled)
        assert within(answer.latency_ms, budget)
        assert answer.cost >= optimum - 1e-9
        value = answer.cost + answer.gamma * answer.latency_ms if answer.gamma != float("inf") else None
        if value is not None:
            assert value <= least(points, answer.gamma) + tol(value)
    # The cached hull path answers the same budget with the same cost (ties in cost may differ in latency).
    path = LagrangianPath(tree).query(budget)
    assert path.cost == pytest.approx(answer.cost, rel=1e-9, abs=1e-9) and within(path.latency_ms, budget)


@settings(max_examples=200, deadline=None)
@given(SMALL)
def test_path_is_the_lower_convex_hull(instance_):
    """Every vertex is optimal for its gamma, and nothing lies below the edge between two vertices."""
    table, objective = instance_
    tree = build_tree(table, objective)
    points = enumerate_tree(tree)
    path = LagrangianPath(tree)
    lats = [v[1] for v in path.vertices]
    costs = [v[2] for v in path.vertices]
    assert lats == sorted(lats) and all(a > b for a, b in zip(costs, costs[1:]))
    assert lats[0] == pytest.approx(min(p[1] for p in points), rel=1e-9, abs=1e-9)
    assert costs[-1] == pytest.approx(min(p[2] for p in points), rel=1e-9, abs=1e-9)
    # Slopes between consecutive vertices flatten (convexity): gammas fall along the path.
    assert all(g1 >= g2 - 1e-9 for g1, g2 in zip(path.gammas, path.gammas[1:]))
    for i, (_, lat, cost) in enumerate(path.vertices):
        gamma = path.gammas[i]  # where vertex i ties with vertex i + 1: both optimal there
        assert cost + gamma * lat <= least(points, gamma) + tol(cost + gamma * lat)
        # ... and optimal inside its whole range of gammas, up to where it ties with the faster vertex.
        inside = 0.5 * (gamma + path.gammas[i - 1]) if i > 0 else 2.0 * gamma + 1.0
        assert cost + inside * lat <= least(points, inside) + tol(cost + inside * lat)


def test_infeasible_budget_names_the_smallest_latency():
    for table in (random_table(5, 3, 3), mobilenet_v2_like_table(4, seed=1)):
        tree = build_tree(table, make_objective(table))
        low = tree.min_latency()
        with pytest.raises(LagrangianInfeasible) as err:
            solve(tree, low - 0.5)
        assert err.value.min_latency_ms == pytest.approx(low)
        assert f"{low:.6g}" in str(err.value)
        searcher = Searcher(table, make_objective(table))
        with pytest.raises(InfeasibleBudget) as info:
            searcher.query(low - 0.5, "lagrangian")
        assert info.value.min_latency_ms == pytest.approx(low)


def test_lagrangian_refuses_a_params_budget():
    table = random_table(5, 3, 3)
    searcher = Searcher(table, make_objective(table))
    with pytest.raises(QueryError, match="max_params"):
        searcher.query(100.0, "lagrangian", max_params=10)


@pytest.mark.parametrize("table", [mobilenet_v1_table(seed=1), mobilenet_v2_like_table(14, seed=1)],
                         ids=["mobilenet_v1", "mobilenet_v2_like"])
def test_mobilenet_gap_to_exact_is_never_negative(table):
    searcher = Searcher(table, make_objective(table))
    front = searcher.front()
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    for i in range(8):
        budget = lo + (hi - lo) * i / 7
        lag, exact = searcher.query(budget, "lagrangian"), searcher.query(budget, "exact")
        assert within(lag.latency_ms, budget) and lag.cost >= exact.cost - 1e-12
        assert solve(searcher.tree, budget).idx == tuple(table.indices(lag.widths))
