"""Lagrangian search: meets the budget, never beats exact, and picks true Lagrangian minimisers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import within
from widthwise.search.chain import build_chain
from widthwise.search.engine import InfeasibleBudget, QueryError, Searcher, make_objective
from widthwise.search.lagrangian import LagrangianInfeasible, LagrangianPath, solve
from tests.search.brute import CASES, enumerate_chain, instance
from tests.support.synthetic import mobilenet_v1_table, random_table

@settings(max_examples=150, deadline=None)
@given(CASES, st.floats(0.0, 1.0))
def test_lagrangian_meets_budget_and_never_beats_exact(case, where):
    table, objective = instance(*case)
    searcher = Searcher(table, objective)
    points = enumerate_chain(searcher.chain)
    lats = sorted(p[1] for p in points)
    budget = lats[0] + where * (lats[-1] - lats[0])
    exact = searcher.query(budget, "exact")
    answer = searcher.query(budget, "lagrangian")
    assert within(answer.latency_ms, budget)
    assert answer.cost >= exact.cost - 1e-9
    # The answer minimises cost + gamma * latency over every configuration (a hull vertex).
    value = answer.cost + answer.gamma * answer.latency_ms
    assert value <= min(c + answer.gamma * lat for _, lat, c, _ in points) + 1e-7 * (1 + abs(value))
    # From scratch (bracket splitting) and the cached path agree (ties in cost may differ in latency).
    fresh = solve(searcher.chain, budget)
    assert fresh.cost == pytest.approx(answer.cost) and within(fresh.latency_ms, budget)


@settings(max_examples=80, deadline=None)
@given(CASES)
def test_path_is_the_lower_convex_staircase(case):
    table, objective = instance(*case)
    chain = build_chain(table, objective)
    path = LagrangianPath(chain)
    lats = [v[1] for v in path.vertices]
    costs = [v[2] for v in path.vertices]
    assert lats == sorted(lats) and all(a > b for a, b in zip(costs, costs[1:]))
    assert lats[0] == pytest.approx(chain.min_latency())
    # Slopes between consecutive vertices flatten (convexity): gammas fall along the path.
    assert all(g1 >= g2 - 1e-9 for g1, g2 in zip(path.gammas, path.gammas[1:]))


def test_infeasible_budget_names_the_smallest_latency():
    table = random_table(5, 3, 3)
    searcher = Searcher(table, make_objective(table))
    low = searcher.chain.min_latency()
    with pytest.raises(InfeasibleBudget) as err:
        searcher.query(low - 0.5, "lagrangian")
    assert err.value.min_latency_ms == pytest.approx(low)
    assert f"{low:.6g}" in str(err.value)
    with pytest.raises(LagrangianInfeasible):
        solve(searcher.chain, low - 0.5)


def test_lagrangian_refuses_a_params_budget():
    table = random_table(5, 3, 3)
    searcher = Searcher(table, make_objective(table))
    with pytest.raises(QueryError, match="max_params"):
        searcher.query(100.0, "lagrangian", max_params=10)


def test_mobilenet_gap_to_exact_is_never_negative():
    table = mobilenet_v1_table(seed=1)
    searcher = Searcher(table, make_objective(table))
    front = searcher.front()
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    for i in range(8):
        budget = lo + (hi - lo) * i / 7
        lag, exact = searcher.query(budget, "lagrangian"), searcher.query(budget, "exact")
        assert within(lag.latency_ms, budget) and lag.cost >= exact.cost - 1e-12
        assert solve(searcher.chain, budget).idx == tuple(table.indices(lag.widths))
