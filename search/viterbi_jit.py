"""Compiled (numba) min-sum over a tree MRF and the whole Lagrangian bracket walk in one call.

A numpy pass over a 14-variable, 14-choice tree pays about a microsecond of call overhead
per array operation; here a pass is plain loops (a few microseconds), and `bracket_walk`
runs every pass of one budget query inside a single compiled call. The arithmetic repeats
the numpy reference in `search.viterbi` / `search.lagrangian` operation for operation (same
combinations of the terms, same order of additions, first index on ties), so both give
bit-equal answers. Importing this module imports numba; callers go through
`search.viterbi.compiled_kernels()`, which falls back to numpy when numba is missing.

Input, as `LagrangianViterbi` lays it out: `flat[0]` latency and `flat[1]` cost of every
variable's unary term, then of every edge ((K_parent, K_v) row-major); `index` rows: each
variable's size, parent (-1 at a root), the elimination order (children first), and the
offsets of its unary and its edge in `flat`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Status codes of `bracket_walk`.
FOUND = 0
INFEASIBLE = 1
#: Rows of `index` (as in `search.viterbi`).
SIZE, PARENT, ORDER, UNARY_OFF, EDGE_OFF = 0, 1, 2, 3, 4


@njit(cache=True, nogil=True)
def _pass(flat, index, gamma, latency_only, belief, idx):
    """One min-sum pass: leaves eliminated towards the roots into `belief`, then the backtrack into `idx`.

    Each variable's belief starts at its unary `latency * gamma + cost` (latency alone when
    `latency_only`); each edge entry, the same combination, plus the child's belief is
    reduced into the parent's belief, child by child in elimination order. Entries are
    scanned in order and replace the best only when strictly lower, so ties go to the first
    state, as numpy's argmin does.
    """
    n = index.shape[1]
    for v in range(n):
        off = index[UNARY_OFF, v]
        for j in range(index[SIZE, v]):
            belief[v, j] = flat[0, off + j] if latency_only else flat[0, off + j] * gamma + flat[1, off + j]
    for t in range(n):
        v = index[ORDER, t]
        p = index[PARENT, v]
        if p < 0:
            continue
        rows, cols, off = index[SIZE, p], index[SIZE, v], index[EDGE_OFF, v]
        for i in range(rows):
            best = np.inf
            row = off + i * cols
            for j in range(cols):
                if latency_only:
                    x = flat[0, row + j] + belief[v, j]
                else:
                    x = (flat[0, row + j] * gamma + flat[1, row + j]) + belief[v, j]
                if x < best:
                    best = x
            belief[p, i] += best
    for t in range(n - 1, -1, -1):
        v = index[ORDER, t]
        p = index[PARENT, v]
        cols = index[SIZE, v]
        arg = 0
        best = np.inf
        if p < 0:
            for j in range(cols):
                if belief[v, j] < best:
                    best = belief[v, j]
                    arg = j
        else:
            row = index[EDGE_OFF, v] + idx[p] * cols
            for j in range(cols):
                if latency_only:
                    x = flat[0, row + j] + belief[v, j]
                else:
                    x = (flat[0, row + j] * gamma + flat[1, row + j]) + belief[v, j]
                if x < best:
                    best = x
                    arg = j
        idx[v] = arg


@njit(cache=True, nogil=True)
def _tree_sum(flat, index, at, idx, start):
    """`start` plus the raw terms of `flat[at]` at `idx`, added in elimination order like `TreeMRF.total`."""
    total = start
    for t in range(index.shape[1]):
        v = index[ORDER, t]
        total += flat[at, index[UNARY_OFF, v] + idx[v]]
        p = index[PARENT, v]
        if p >= 0:
            total += flat[at, index[EDGE_OFF, v] + idx[p] * index[SIZE, v] + idx[v]]
    return total


@njit(cache=True, nogil=True)
def _buffers(index):
    """The beliefs of one pass: (variables, most choices)."""
    return np.zeros((index.shape[1], index[SIZE].max()))


@njit(cache=True, nogil=True)
def viterbi(flat, index, gamma, latency_only):
    """Choice indices minimising `cost + gamma * latency` (or latency alone when `latency_only`)."""
    belief = _buffers(index)
    idx = np.zeros(index.shape[1], dtype=np.int64)
    _pass(flat, index, gamma, latency_only, belief, idx)
    return idx


@njit(cache=True, nogil=True)
def _within(value, budget, budget_rtol):
    return value <= budget + budget_rtol * max(1.0, abs(budget))


@njit(cache=True, nogil=True)
def bracket_walk(flat, index, constant, budget, budget_rtol, edge_rtol, max_passes):
    """One Lagrangian query from scratch: both ends, then split the gamma bracket until no vertex lies below.

    Returns (status, choice indices, latency, cost, gamma, passes); status INFEASIBLE when even
    the fastest configuration misses the budget.
    """
    n = index.shape[1]
    belief = _buffers(index)
    slow = np.zeros(n, dtype=np.int64)
    fast = np.zeros(n, dtype=np.int64)
    mid = np.zeros(n, dtype=np.int64)

    _pass(flat, index, 0.0, False, belief, slow)
    slow_lat = _tree_sum(flat, index, 0, slow, constant)
    slow_cost = _tree_sum(flat, index, 1, slow, 0.0)
    _pass(flat, index, 1.0, True, belief, fast)
    fast_lat = _tree_sum(flat, index, 0, fast, constant)
    fast_cost = _tree_sum(flat, index, 1, fast, 0.0)
    passes = 2
    if _within(slow_lat, budget, budget_rtol):
        return FOUND, slow, slow_lat, slow_cost, 0.0, passes
    if not _within(fast_lat, budget, budget_rtol):
        return INFEASIBLE, fast, fast_lat, fast_cost, np.inf, passes
    gamma = np.inf
    while passes < max_passes:
        if slow_lat <= fast_lat:
            break
        gamma = (fast_cost - slow_cost) / (slow_lat - fast_lat)
        passes += 1
        if not np.isfinite(gamma):  # the numpy pass would yield NaNs here and find nothing below the edge
            break
        _pass(flat, index, gamma, False, belief, mid)
        mid_lat = _tree_sum(flat, index, 0, mid, constant)
        mid_cost = _tree_sum(flat, index, 1, mid, 0.0)
        edge = slow_cost + gamma * slow_lat
        below = mid_cost + gamma * mid_lat
        margin = edge_rtol * max(1.0, abs(slow_cost) + abs(gamma * slow_lat))
        if not below < edge - margin:
            break
        if _within(mid_lat, budget, budget_rtol):
            fast[:] = mid
            fast_lat, fast_cost = mid_lat, mid_cost
        else:
            slow[:] = mid
            slow_lat, slow_cost = mid_lat, mid_cost
    return FOUND, fast, fast_lat, fast_cost, gamma, passes
