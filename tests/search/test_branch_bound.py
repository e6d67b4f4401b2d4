"""The exact search under a latency and a parameter budget, called directly, against brute force on trees."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.branch_bound import SearchTimedOut, SearchTooLarge, best_within, suffix_fronts
from widthwise.search.budget import within
from widthwise.search.pareto_front import build_front
from widthwise.search.tree import build_tree
from tests.search.brute import CASES, TREE_CASES, enumerate_tree, instance, make_objective, tree_instance
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table


def _check(tree, where_lat: float, where_par: float) -> None:
    points = enumerate_tree(tree)
    lats, pars = sorted(p[1] for p in points), sorted(p[3] for p in points)
    budget, max_params = lats[int(where_lat * (len(lats) - 1))], pars[int(where_par * (len(pars) - 1))]
    feasible = [p for p in points if within(p[1], budget) and within(p[3], max_params)]
    found = best_within(tree, build_front(tree), budget, max_params, suffix_fronts(tree))
    if not feasible:
        assert found is None
        return
    assert found is not None and found.cost == pytest.approx(min(p[2] for p in feasible), rel=1e-9, abs=1e-12)
    assert within(found.latency_ms, budget) and within(found.params, max_params)
    assert tree.latency_of(found.idx) == pytest.approx(found.latency_ms)
    assert tree.params_of(found.idx) == pytest.approx(found.params)


@settings(max_examples=150, deadline=None)
@given(TREE_CASES, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_best_within_equals_brute_force_on_trees(case, where_lat, where_par) -> None:
    table, objective = tree_instance(*case)
    _check(build_tree(table, objective), where_lat, where_par)


@settings(max_examples=60, deadline=None)
@given(CASES, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_best_within_equals_brute_force_on_chains(case, where_lat, where_par) -> None:
    table, objective = instance(*case)
    _check(build_tree(table, objective), where_lat, where_par)


def test_the_bounds_and_the_caps_stop_the_search_with_its_incumbent() -> None:
    table = mobilenet_v1_table(seed=8)
    tree = build_tree(table, make_objective(table, "flops"))
    front = build_front(tree)
    shared = suffix_fronts(tree)
    with pytest.raises(SearchTimedOut) as late:
        best_within(tree, front, 9.5, 1_500_000, shared, deadline=time.monotonic() - 1.0)
    assert late.value.incumbent is None or within(late.value.incumbent.params, 1_500_000)
    with pytest.raises(SearchTooLarge) as large:
        best_within(tree, front, 9.5, 1_500_000, shared, max_candidates=10)
    assert "candidates at step" in str(large.value)
    incumbent = large.value.incumbent
    assert incumbent is not None and within(incumbent.latency_ms, 9.5) and within(incumbent.params, 1_500_000)


def test_a_mobilenet_v2_like_pair_is_exact_and_beats_every_lagrangian_point() -> None:
    table = mobilenet_v2_like_table(levels=3, seed=2)
    tree = build_tree(table, make_objective(table, "flops"))
    front = build_front(tree)
    at = int(0.3 * len(front))
    mid, max_params = float(front.latency[at]), 0.8 * float(front.params[at])
    found = best_within(tree, front, mid, max_params, suffix_fronts(tree))
    assert found is not None and within(found.latency_ms, mid) and within(found.params, max_params)
    assert found.cost > float(front.cost[at])  # the params budget binds: dearer than the latency-only optimum
    for lam in (0.0, 0.1, 1.0):
        for mu in (0.0, 1e-7, 1e-6):
            idx = tree.argmin(tree.cost.plus(tree.latency, lam).plus(tree.params, mu))
            if within(tree.latency_of(idx), mid) and within(tree.params_of(idx), max_params):
                assert found.cost <= tree.cost_of(idx) + 1e-9


def test_no_params_is_a_value_error() -> None:
    table = mobilenet_v1_table(seed=0)
    tree = build_tree(table, make_objective(table, "flops")).with_terms(keep_counts=False)
    with pytest.raises(ValueError, match="no params"):
        suffix_fronts(tree)
    with pytest.raises(ValueError, match="no params"):
        best_within(tree, build_front(tree), 10.0, 1e6)
    assert np.isfinite(build_front(tree).latency).all()
