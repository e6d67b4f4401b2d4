"""Compiled (numba) min-sum Viterbi and the whole Lagrangian bracket walk in one call.

A numpy pass over a 14 x 14 x 14 chain pays about a microsecond of call overhead per array
operation; here a pass is plain loops (a few microseconds), and `bracket_walk` runs every
pass of one budget query inside a single compiled call. The arithmetic repeats the numpy
reference in `search.viterbi` / `search.lagrangian` operation for operation (same order of
additions, first index on ties), so both give bit-equal answers. Importing this module
imports numba; callers go through `search.viterbi.compiled_kernels()`, which falls back to
numpy when numba is missing.

Input, as `LagrangianViterbi` lays it out: `flat[0]` every block's latency and `flat[1]` its
cost, row-major, one block after another; `index[0]`, `index[1]`, `index[2]` each block's
rows, columns and offset into `flat`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Status codes of `bracket_walk`.
FOUND = 0
INFEASIBLE = 1


@njit(cache=True, nogil=True)
def _pass(flat, index, gamma, latency_only, back, value, best, idx):
    """One min-sum pass over `latency * gamma + cost` (or latency alone where the cost is finite).

    Rows are scanned in order and replace the best only when strictly lower, so ties go to
    the first state, as numpy's argmin does. Fills `idx` with the arg-min states.
    """
    blocks = index.shape[1]
    value[0] = 0.0
    for b in range(blocks):
        rows, cols, off = index[0, b], index[1, b], index[2, b]
        for j in range(cols):
            best[j] = np.inf
            back[b, j] = 0
        for i in range(rows):
            start = value[i]
            row = off + i * cols
            for j in range(cols):
                if latency_only:
                    v = np.inf if np.isinf(flat[1, row + j]) else flat[0, row + j] + start
                else:
                    v = (flat[0, row + j] * gamma + flat[1, row + j]) + start
                if v < best[j]:
                    best[j] = v
                    back[b, j] = i
        for j in range(cols):
            value[j] = best[j]
    state = 0
    for b in range(blocks - 1, 0, -1):
        state = back[b, state]
        idx[b - 1] = state


@njit(cache=True, nogil=True)
def _chain_sum(flat, index, at, idx, start):
    """`start` plus the chain's entries of `flat[at]` at `idx`, added left to right like `Chain.latency_of`."""
    blocks = index.shape[1]
    total = start
    prev = 0
    for b in range(blocks):
        cur = idx[b] if b < blocks - 1 else 0
        total += flat[at, index[2, b] + prev * index[1, b] + cur]
        prev = cur
    return total


@njit(cache=True, nogil=True)
def viterbi(flat, index, gamma, latency_only):
    """Choice indices minimising `cost + gamma * latency` (or latency alone when `latency_only`)."""
    blocks = index.shape[1]
    k = max(index[0].max(), index[1].max())
    back = np.zeros((blocks, k), dtype=np.int64)
    value = np.empty(k)
    best = np.empty(k)
    idx = np.zeros(blocks - 1, dtype=np.int64)
    _pass(flat, index, gamma, latency_only, back, value, best, idx)
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
    blocks = index.shape[1]
    k = max(index[0].max(), index[1].max())
    layers = blocks - 1
    back = np.zeros((blocks, k), dtype=np.int64)
    value = np.empty(k)
    best = np.empty(k)
    slow = np.zeros(layers, dtype=np.int64)
    fast = np.zeros(layers, dtype=np.int64)
    mid = np.zeros(layers, dtype=np.int64)

    _pass(flat, index, 0.0, False, back, value, best, slow)
    slow_lat = _chain_sum(flat, index, 0, slow, constant)
    slow_cost = _chain_sum(flat, index, 1, slow, 0.0)
    _pass(flat, index, 1.0, True, back, value, best, fast)
    fast_lat = _chain_sum(flat, index, 0, fast, constant)
    fast_cost = _chain_sum(flat, index, 1, fast, 0.0)
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
        _pass(flat, index, gamma, False, back, value, best, mid)
        mid_lat = _chain_sum(flat, index, 0, mid, constant)
        mid_cost = _chain_sum(flat, index, 1, mid, 0.0)
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
