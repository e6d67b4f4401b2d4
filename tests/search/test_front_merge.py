"""Pareto pruning and the two growth steps of partial fronts, against direct definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import widthwise.search.front_merge as front_merge
from widthwise.search.front_merge import PointSet, dominated_3d, minkowski_candidates, prune, prune_2d, prune_sorted


def brute_dominated(row, lat, cost, par) -> np.ndarray:
    """Dominated by a strictly better point of its row, or an equal of lower index (one of equals survives)."""
    n = lat.size
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if j == i or row[j] != row[i] or not (lat[j] <= lat[i] and cost[j] <= cost[i] and par[j] <= par[i]):
                continue
            equal = lat[j] == lat[i] and cost[j] == cost[i] and par[j] == par[i]
            out[i] |= (not equal) or j < i
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 70), st.integers(1, 4), st.booleans())
def test_dominated_3d_equals_the_definition(seed: int, n: int, rows: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    draw = (lambda: rng.integers(0, 4, n).astype(float)) if ties else (lambda: rng.random(n))
    row, lat, cost, par = rng.integers(0, rows, n), draw(), draw(), draw()
    got = dominated_3d(row, lat, cost, par)
    want = brute_dominated(row, lat, cost, par)
    # among exact duplicates any one may survive: compare the survivors as sets of values
    keep = {(int(r), a, b, c) for r, a, b, c, d in zip(row, lat, cost, par, got) if not d}
    assert keep == {(int(r), a, b, c) for r, a, b, c, d in zip(row, lat, cost, par, want) if not d}
    assert (~got).sum() == (~want).sum()


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 5), st.integers(1, 300))
def test_prune_2d_keeps_each_rows_staircase_with_or_without_the_prefilter(seed: int, rows: int, cols: int) -> None:
    rng = np.random.default_rng(seed)
    lat, cost = rng.integers(0, 30, (rows, cols)).astype(float), rng.integers(0, 30, (rows, cols)).astype(float)
    lat[rng.random((rows, cols)) < 0.1] = np.inf  # padding is never kept
    plain = prune_sorted(lat, cost)
    saved = front_merge.PREFILTER_MIN
    front_merge.PREFILTER_MIN = 0
    try:
        filtered = prune_2d(lat, cost)
    finally:
        front_merge.PREFILTER_MIN = saved
    for r, c in (plain, filtered):
        for j in range(rows):
            kept = sorted(zip(lat[j, c[r == j]], cost[j, c[r == j]]))
            pts = [(a, b) for a, b in zip(lat[j], cost[j]) if np.isfinite(a)]
            front = {p for p in pts if not any(q[0] <= p[0] and q[1] < p[1] or q[0] < p[0] and q[1] <= p[1]
                                               for q in pts)}
            assert front <= set(kept) and len(set(kept)) == len(kept)
            # a kept point may tie a cheaper one in latency, never lose to a strictly faster one
            assert not any(q[0] < p[0] and q[1] <= p[1] for p in kept for q in pts)


def test_prune_with_a_mask_drops_what_the_mask_refuses() -> None:
    lat = np.array([[1.0, 2.0, 3.0]])
    cost = np.array([[3.0, 2.0, 1.0]])
    rows, cols = prune(lat, cost, None, lambda la, co, pa: la > 1.5)
    assert cols.tolist() == [1, 2]
    rows, cols = prune(lat, cost, cost.copy(), lambda la, co, pa: la < 2.5)
    assert cols.tolist() == [0, 1]


def test_minkowski_pairs_every_point_of_a_state_with_every_point_of_the_same_state() -> None:
    a = PointSet(np.array([1.0, 2.0, 5.0]), np.array([0.0, 1.0, 2.0]), None, np.array([0, 0, 1]), 2)
    b = PointSet(np.array([10.0, 20.0, 30.0]), np.array([3.0, 4.0, 5.0]), None, np.array([1, 1, 1]), 2)
    (lat, cost, par), width = minkowski_candidates(a, b)
    assert par is None and width == 3
    assert np.all(np.isinf(lat[0]))  # state 0 has no point in b
    assert sorted(lat[1][np.isfinite(lat[1])].tolist()) == [15.0, 25.0, 35.0]
    assert a.shifted(np.array([1.0, 2.0]), np.array([0.0, 0.0]), None).lat.tolist() == [2.0, 3.0, 7.0]


@pytest.mark.parametrize("n", [0, 1])
def test_dominated_3d_on_tiny_sets(n: int) -> None:
    x = np.zeros(n)
    assert dominated_3d(np.zeros(n, dtype=np.int64), x, x, x).tolist() == [False] * n
