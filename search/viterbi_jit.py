"""Compiled (numba) min-sum Viterbi and the whole Lagrangian bracket walk in one call.

A numpy pass over a 14 x 14 x 14 chain pays about a microsecond of call overhead per array
operation; here a pass is plain loops (a few microseconds), and `bracket_walk` runs every
pass of one budget query inside a single compiled call. The arithmetic repeats the numpy
reference in `search.viterbi` / `search.lagrangian` operation for operation (same order of
additions, first index on ties), so both give bit-equal answers. Importing this module
imports numba; callers go through `search.viterbi.compiled_kernels()`, which falls back to
numpy when numba is missing.

Padded input, as built by `LagrangianViterbi`: `weights[0]` latency, `weights[1]` cost,
`weights[2]` latency where the cost is finite (else +inf), `weights[3]` zeros, each of
shape (blocks, K, K); `shapes[0]`, `shapes[1]` the true rows and columns of every block.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Status codes of `bracket_walk`.
FOUND = 0
INFEASIBLE = 1


@njit(cache=True, nogil=True)
def _pass(weights, shapes, scale_at, add_at, gamma, back, value, nxt, idx):
    """One min-sum pass over `weights[scale_at] * gamma + weights[add_at]`; fills `idx` with the arg-min states."""
    blocks = weights.shape[1]
    rows, cols = shapes[0], shapes[1]
    value[0] = 0.0
    for b in range(blocks):
        for j in range(cols[b]):
            best = np.inf
            arg = 0
            for i in range(rows[b]):
                v = (weights[scale_at, b, i, j] * gamma + weights[add_at, b, i, j]) + value[i]
                if v < best:
                    best = v
                    arg = i
            nxt[j] = best
            back[b, j] = arg
        for j in range(cols[b]):
            value[j] = nxt[j]
    state = 0
    for b in range(blocks - 1, 0, -1):
        state = back[b, state]
        idx[b - 1] = state


@njit(cache=True, nogil=True)
def _chain_sum(weights, at, idx, start):
    """`start` plus the chain's entries of `weights[at]` at `idx`, added left to right like `Chain.latency_of`."""
    blocks = weights.shape[1]
    total = start
    prev = 0
    for b in range(blocks):
        cur = idx[b] if b < blocks - 1 else 0
        total += weights[at, b, prev, cur]
        prev = cur
    return total


@njit(cache=True, nogil=True)
def viterbi(weights, shapes, gamma, latency_only):
    """Choice indices minimising `cost + gamma * latency` (or latency alone when `latency_only`)."""
    blocks, k = weights.shape[1], weights.shape[2]
    back = np.zeros((blocks, k), dtype=np.int64)
    value = np.empty(k)
    nxt = np.empty(k)
    idx = np.zeros(blocks - 1, dtype=np.int64)
    if latency_only:
        _pass(weights, shapes, 2, 3, 1.0, back, value, nxt, idx)
    else:
        _pass(weights, shapes, 0, 1, gamma, back, value, nxt, idx)
    return idx


@njit(cache=True, nogil=True)
def _within(value, budget, budget_rtol):
    return value <= budget + budget_rtol * max(1.0, abs(budget))


@njit(cache=True, nogil=True)
def bracket_walk(weights, shapes, constant, budget, budget_rtol, edge_rtol, max_passes):
    """One Lagrangian query from scratch: both ends, then split the gamma bracket until no vertex lies below.

    Returns (status, choice indices, latency, cost, gamma, passes); status INFEASIBLE when even
    the fastest configuration misses the budget.
    """
    blocks, k = weights.shape[1], weights.shape[2]
    layers = blocks - 1
    back = np.zeros((blocks, k), dtype=np.int64)
    value = np.empty(k)
    nxt = np.empty(k)
    slow = np.zeros(layers, dtype=np.int64)
    fast = np.zeros(layers, dtype=np.int64)
    mid = np.zeros(layers, dtype=np.int64)

    _pass(weights, shapes, 0, 1, 0.0, back, value, nxt, slow)
    slow_lat = _chain_sum(weights, 0, slow, constant)
    slow_cost = _chain_sum(weights, 1, slow, 0.0)
    _pass(weights, shapes, 2, 3, 1.0, back, value, nxt, fast)
    fast_lat = _chain_sum(weights, 0, fast, constant)
    fast_cost = _chain_sum(weights, 1, fast, 0.0)
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
        _pass(weights, shapes, 0, 1, gamma, back, value, nxt, mid)
        mid_lat = _chain_sum(weights, 0, mid, constant)
        mid_cost = _chain_sum(weights, 1, mid, 0.0)
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
