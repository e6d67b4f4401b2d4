"""The exact Pareto front (the DP of pareto_front.py) and the two-budget branch and bound, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import widthwise.search.pareto_front as pareto_front
from widthwise.search.budget import within
from widthwise.search.chain import build_chain
from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective
from tests.search.brute import CASES, enumerate_chain, instance
from tests.support.synthetic import mobilenet_v1_table, random_costs, random_table


def brute_best(points, budget, max_params=None):
    ok = [p for p in points if within(p[1], budget) and (max_params is None or within(p[3], max_params))]
    return min(ok, key=lambda p: p[2]) if ok else None


def brute_front(points, max_params=None):
    """(latency, cost) of the brute-force Pareto set, one entry per distinct non-dominated pair."""
    ok = [(p[1], p[2]) for p in points if max_params is None or within(p[3], max_params)]
    front = []
    for lat, cost in sorted(set(ok)):
        if not front or cost < front[-1][1]:
            front.append((lat, cost))
    return front


@settings(max_examples=120, deadline=None)
@given(CASES)
def test_front_equals_brute_force_front(case):
    table, objective = instance(*case)
    searcher = Searcher(table, objective)
    points = enumerate_chain(searcher.chain)
    front = searcher.front()
    expected = np.array(brute_front(points)).reshape(-1, 2)
    np.testing.assert_allclose(np.column_stack([front.latency, front.cost]).reshape(-1, 2), expected, rtol=1e-12)
    for row, lat, cost in zip(front.configs, front.latency, front.cost):
        assert searcher.chain.latency_of(row) == pytest.approx(lat)
        assert searcher.chain.cost_of(row) == pytest.approx(cost)


@settings(max_examples=120, deadline=None)
@given(CASES, st.floats(0.0, 1.0))
def test_exact_query_equals_brute_force(case, where):
    table, objective = instance(*case)
    searcher = Searcher(table, objective)
    points = enumerate_chain(searcher.chain)
    lats = sorted(p[1] for p in points)
    for budget in {lats[int(where * (len(lats) - 1))], lats[0], lats[-1], (lats[0] + lats[-1]) / 2}:
        best = brute_best(points, budget)
        answer = searcher.query(budget, "exact")
        assert answer.cost == pytest.approx(best[2])
        assert within(answer.latency_ms, budget)
        assert table.predict(answer.widths) == pytest.approx(answer.latency_ms)
    if lats[0] > 0:
        with pytest.raises(InfeasibleBudget) as err:
            searcher.query(lats[0] * 0.99, "exact")
        assert err.value.min_latency_ms == pytest.approx(lats[0])


@settings(max_examples=120, deadline=None)
@given(CASES, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_exact_with_params_budget_equals_brute_force(case, where_lat, where_par):
    table, objective = instance(*case)
    searcher = Searcher(table, objective)
    points = enumerate_chain(searcher.chain)
    lats = sorted(p[1] for p in points)
    pars = sorted(p[3] for p in points)
    budget = lats[int(where_lat * (len(lats) - 1))]
    max_params = pars[int(where_par * (len(pars) - 1))]
    best = brute_best(points, budget, max_params)
    if best is None:
        with pytest.raises(InfeasibleBudget):
            searcher.query(budget, "exact", max_params=max_params)
        return
    answer = searcher.query(budget, "exact", max_params=max_params)
    assert answer.cost == pytest.approx(best[2])
    assert within(answer.latency_ms, budget) and within(answer.params, max_params)
    got = np.array([(a.latency_ms, a.cost) for a in searcher.pareto(max_params)]).reshape(-1, 2)
    np.testing.assert_allclose(got, np.array(brute_front(points, max_params)).reshape(-1, 2), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(CASES)
def test_prefilter_changes_nothing(case):
    table, objective = instance(*case)
    chain = build_chain(table, objective)
    plain = pareto_front.build_front(chain)
    saved = pareto_front.PREFILTER_MIN
    pareto_front.PREFILTER_MIN = 0  # force the binned pre-filter on even for tiny candidate sets
    try:
        filtered = pareto_front.build_front(chain)
    finally:
        pareto_front.PREFILTER_MIN = saved
    assert filtered.latency.tolist() == plain.latency.tolist()
    assert filtered.cost.tolist() == plain.cost.tolist()


def test_mobilenet_front_spans_fastest_to_widest():
    table = mobilenet_v1_table(seed=3)
    searcher = Searcher(table, make_objective(table, "flops"))
    front = searcher.front()
    assert front.latency[0] == pytest.approx(searcher.chain.min_latency())
    widest = tuple(max(c) for c in table.choices)
    assert searcher.pareto()[-1].widths == widest
    assert np.all(np.diff(front.latency) > 0) and np.all(np.diff(front.cost) < 0)
    assert searcher.front() is front  # cached per (table, objective)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_medium_chain_equals_vectorised_brute_force(seed):
    """Six layers of up to six widths (tens of thousands of configurations), with the pre-filters on."""
    table = random_table(100 + seed, 6, 6, integer=seed == 0)
    searcher = Searcher(table, make_objective(table, random_costs(table, seed, pairwise=True, integer=False)))
    chain = searcher.chain
    configs = np.array(list(itertools.product(*(range(len(c)) for c in chain.choices))))
    lat = chain.totals(chain.latency, configs, chain.constant_ms)
    cost = chain.totals(chain.cost, configs)
    par = chain.totals(chain.params, configs)
    saved = pareto_front.PREFILTER_MIN
    pareto_front.PREFILTER_MIN = 0
    try:
        rng = np.random.default_rng(seed)
        for _ in range(6):
            budget = float(rng.uniform(lat.min(), lat.max()))
            max_params = float(rng.uniform(par.min(), par.max()))
            fits = lat <= budget + 1e-9
            assert searcher.query(budget).cost == pytest.approx(cost[fits].min())
            both = fits & (par <= max_params + 1e-9)
            if both.any():
                assert searcher.query(budget, max_params=max_params).cost == pytest.approx(cost[both].min())
            else:
                with pytest.raises(InfeasibleBudget):
                    searcher.query(budget, max_params=max_params)
    finally:
        pareto_front.PREFILTER_MIN = saved
