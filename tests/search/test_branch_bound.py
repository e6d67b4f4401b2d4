"""Branch and bound under a latency and a parameter budget, called directly, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.branch_bound import best_within, suffix_fronts
from widthwise.search.budget import within
from widthwise.search.chain import build_chain
from widthwise.search.engine import make_objective
from widthwise.search.pareto_front import build_front
from tests.search.brute import enumerate_chain
from tests.support.synthetic import random_objective, random_table


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10**6), st.integers(2, 4), st.integers(2, 4), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_best_within_equals_brute_force(seed, layers, choices, where_lat, where_par):
    table = random_table(seed, layers, choices, integer=False)
    chain = build_chain(table, make_objective(table, random_objective(table, seed + 1, "pairwise")))
    points = enumerate_chain(chain)
    lats, pars = sorted(p[1] for p in points), sorted(p[3] for p in points)
    budget, max_params = lats[int(where_lat * (len(lats) - 1))], pars[int(where_par * (len(pars) - 1))]
    feasible = [p for p in points if within(p[1], budget) and within(p[3], max_params)]
    found = best_within(chain, build_front(chain), budget, max_params, suffix_fronts(chain))
    if not feasible:
        assert found is None
        return
    assert found is not None and found.cost == pytest.approx(min(p[2] for p in feasible))
    assert within(found.latency_ms, budget) and within(found.params, max_params)
    assert chain.latency_of(found.idx) == pytest.approx(found.latency_ms)


def test_suffix_fronts_bound_the_rest_of_the_cost():
    table = random_table(3, 3, 3, integer=False)
    chain = build_chain(table, make_objective(table, random_objective(table, 4, "unary")))
    latency_suffix, _ = suffix_fronts(chain)
    # after layer 0, from each of its states: the least cost of blocks 1.. with their latency <= room
    for state in range(len(chain.choices[0])):
        rests = [(sum(float(chain.latency[k][([state, *idx][k - 1]), ([state, *idx, 0][k])]) for k in range(1, 4)),
                  sum(float(chain.cost[k][([state, *idx][k - 1]), ([state, *idx, 0][k])]) for k in range(1, 4)))
                 for idx in itertools.product(*(range(len(c)) for c in chain.choices[1:]))]
        lats = sorted({lat for lat, _ in rests})
        # rooms between the suffix latencies (the solver adds them in another order: never exactly on one)
        for room in [(a + b) / 2 for a, b in zip(lats, lats[1:])] + [lats[-1] + 1.0]:
            expected = min(c for lat, c in rests if lat <= room)
            got = latency_suffix.least_cost(0, np.full((len(chain.choices[0]), 1), room))[state, 0]
            assert got == pytest.approx(expected)
