"""Greedy baseline: meets the budgets when it answers, and is never better than exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import within
from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective
from widthwise.search.greedy import GreedyStuck, greedy
from tests.support.synthetic import mobilenet_v1_table, random_costs, random_table
from widthwise.search.table import Block

cases = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["flops", "pairwise"]),
    st.floats(0.0, 1.0),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)


@settings(max_examples=150, deadline=None)
@given(cases)
def test_greedy_meets_budgets_and_never_beats_exact(case):
    seed, layers, choices, kind, where, where_params = case
    table = random_table(seed, layers, choices)
    objective = make_objective(table, "flops" if kind == "flops" else random_costs(table, seed))
    searcher = Searcher(table, objective)
    chain = searcher.chain
    configs = list(itertools.product(*(range(len(c)) for c in chain.choices)))
    lats = sorted(chain.latency_of(c) for c in configs)
    pars = sorted(chain.params_of(c) for c in configs)
    budget = lats[0] + where * (lats[-1] - lats[0])
    max_params = None if where_params is None else pars[0] + where_params * (pars[-1] - pars[0])
    try:
        answer = searcher.query(budget, "greedy", max_params=max_params)
    except InfeasibleBudget:
        return  # greedy may stall; exact may or may not find something
    assert within(answer.latency_ms, budget)
    if max_params is not None:
        assert within(answer.params, max_params)
    exact = searcher.query(budget, "exact", max_params=max_params)
    assert answer.cost >= exact.cost - 1e-9


def test_greedy_starts_from_the_widest_and_keeps_it_when_it_fits():
    table = mobilenet_v1_table(seed=2)
    searcher = Searcher(table, make_objective(table))
    widest = tuple(max(c) for c in table.choices)
    answer = searcher.query(table.predict(widest) + 1.0, "greedy")
    assert answer.widths == widest


def test_greedy_on_mobilenet_meets_the_budget_and_trails_exact():
    table = mobilenet_v1_table(seed=2)
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
        greedy(searcher.chain, 0.5)
    with pytest.raises(InfeasibleBudget, match="smallest achievable latency is 0 ms"):
        searcher.query(0.5, "greedy")
    assert searcher.query(0.5, "exact").widths == (8, 8)
