"""Pareto pruning and the two ways partial fronts grow on a tree: over an edge, and by a Minkowski sum.

A partial front is a `PointSet`: points (latency, cost and optionally params) grouped by the
state of one variable, each group free of dominated points. Eliminating a variable turns its
set into a message to its parent (`over_edge`: every point extended by the edge term to every
parent state, pruned per parent state); a parent combines its children's messages state by
state (`minkowski`: every pair of points summed, pruned). Pruning is per row of a candidate
matrix (row = state), with +inf latency as padding; a mask drops points a bound rules out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Candidate sets smaller than this are sorted directly, without the binned pre-filter.
PREFILTER_MIN = 4096
#: Latency bins per state in the pre-filter (more bins: fewer survivors, more memory).
PREFILTER_BINS = 2048
#: Bins per axis of the three-criterion pre-filter's (latency, params) grid.
PREFILTER_BINS_3D = 96

#: A mask of the candidates worth keeping: (latency, cost, params or None) matrices -> bool matrix.
Mask = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass(frozen=True, eq=False)
class PointSet:
    """Points grouped by `state` (ascending) of one variable; `par` is None for a two-criterion front."""

    lat: np.ndarray
    cost: np.ndarray
    par: np.ndarray | None
    state: np.ndarray
    states: int

    def __len__(self) -> int:
        return int(self.lat.size)

    def starts(self) -> np.ndarray:
        """Index of each state's first point (and the total at the end)."""
        return np.searchsorted(self.state, np.arange(self.states + 1))

    def shifted(self, lat: np.ndarray, cost: np.ndarray, par: np.ndarray | None) -> "PointSet":
        """Every point plus per-state terms (a unary term leaves each group's dominance unchanged)."""
        s = self.state
        return PointSet(self.lat + lat[s], self.cost + cost[s], None if self.par is None else self.par + par[s],
                        s, self.states)

    def padded(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`values` as a (states, widest group) matrix padded with +inf, and each point's column."""
        starts = self.starts()
        counts = np.diff(starts)
        column = np.arange(self.lat.size) - starts[self.state]
        out = np.full((self.states, max(int(counts.max()) if counts.size else 0, 1)), np.inf)
        out[self.state, column] = values
        return out, column


def prune_sorted(lat: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, (row, column) of the points not dominated in (latency, cost), each row by rising latency.

    +inf latencies mark padding and are never kept.
    """
    order = np.argsort(lat, axis=1, kind="stable")
    sorted_cost = np.take_along_axis(cost, order, axis=1)
    best = np.minimum.accumulate(sorted_cost, axis=1)
    keep = np.empty(order.shape, dtype=bool)
    keep[:, 0] = True
    np.less(sorted_cost[:, 1:], best[:, :-1], out=keep[:, 1:])
    rows, pos = np.nonzero(keep)
    cols = order[rows, pos]
    finite = np.isfinite(lat[rows, cols])
    return rows[finite], cols[finite]


def prune_2d(lat: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`prune_sorted`, after a linear-time pre-filter that drops most dominated points.

    The latency axis is cut into bins; a point whose cost is no lower than the least cost in
    an earlier bin of its row (so at a strictly smaller latency) is dominated. Only the few
    survivors are sorted, which is what keeps the exact front fast.
    """
    rows_n, cols_n = lat.shape
    if lat.size <= PREFILTER_MIN:
        return prune_sorted(lat, cost)
    finite = lat[np.isfinite(lat)]
    if finite.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = float(finite.min()), float(finite.max())
    bins = min(PREFILTER_BINS, cols_n)
    width = (hi - lo) / bins if hi > lo else 1.0
    with np.errstate(invalid="ignore"):
        which = np.nan_to_num((lat - lo) * (1.0 / width), posinf=bins - 1).astype(np.int64)
    np.clip(which, 0, bins - 1, out=which)
    which += (np.arange(rows_n) * bins)[:, None]
    least = np.full(rows_n * bins, np.inf)
    np.minimum.at(least, which.ravel(), cost.ravel())
    least = least.reshape(rows_n, bins)
    before = np.empty_like(least)
    before[:, 0] = np.inf
    np.minimum.accumulate(least[:, :-1], axis=1, out=before[:, 1:])
    alive = (cost < before.ravel()[which]) & np.isfinite(lat)
    rows, cols = np.nonzero(alive)
    counts = np.bincount(rows, minlength=rows_n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(rows.size) - np.repeat(starts, counts)
    span = int(counts.max()) if rows.size else 1
    packed_lat = np.full((rows_n, span), np.inf)
    packed_cost = np.full((rows_n, span), np.inf)
    packed_col = np.zeros((rows_n, span), dtype=np.int64)
    packed_lat[rows, pos] = lat[rows, cols]
    packed_cost[rows, pos] = cost[rows, cols]
    packed_col[rows, pos] = cols
    kept_rows, kept_pos = prune_sorted(packed_lat, packed_cost)
    return kept_rows, packed_col[kept_rows, kept_pos]


def _prefilter_3d(lat: np.ndarray, cost: np.ndarray, par: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Drop (from `alive`) points dominated by one in a strictly lower latency bin and params bin.

    Per state, a grid over (latency, params) bins holds the least cost; its two-way running
    minimum tells each point whether a point with smaller latency and params costs no more.
    """
    rows_n = lat.shape[0]
    bins = PREFILTER_BINS_3D
    cells = []
    for values in (lat, par):
        lo, hi = float(values[alive].min()), float(values[alive].max())
        width = (hi - lo) / bins if hi > lo else 1.0
        cell = np.where(alive, (values - lo) * (1.0 / width), 0.0).astype(np.int64)
        np.clip(cell, 0, bins - 1, out=cell)
        cells.append(cell)
    flat = (np.arange(rows_n)[:, None] * bins + cells[0]) * bins + cells[1]
    least = np.full(rows_n * bins * bins, np.inf)
    np.minimum.at(least, flat[alive], cost[alive])
    grid = least.reshape(rows_n, bins, bins)
    np.minimum.accumulate(grid, axis=1, out=grid)
    np.minimum.accumulate(grid, axis=2, out=grid)
    # the least cost over cells strictly below in both latency and params
    below = np.full((rows_n, bins + 1, bins + 1), np.inf)
    below[:, 1:, 1:] = grid
    lower = below[np.arange(rows_n)[:, None], cells[0], cells[1]]
    return alive & (cost < lower)


def dominated_3d(row: np.ndarray, lat: np.ndarray, cost: np.ndarray, par: np.ndarray,
                 tick: Callable[[], None] | None = None) -> np.ndarray:
    """Which points are dominated in (latency, cost, params) by another point of the same row (one of equals survives).

    In (row, latency, cost, params) order a point is dominated exactly when an earlier point of its row
    costs no more and has no more params. Divide and conquer over positions, vectorised per level:
    at level s every point of the right half of a block of 2s checks the left half, through the
    running minimum of params over the left half sorted by cost (O(n log^2 n), no quadratic step).
    `tick` is called once per level (a deadline check).
    """
    n = lat.size
    dominated = np.zeros(n, dtype=bool)
    if n < 2:
        return dominated
    order = np.lexsort((par, cost, lat, row))
    r, c, p = row[order], cost[order], par[order]
    counts = np.bincount(r)
    pos = np.arange(n) - (np.cumsum(counts) - counts)[r]
    by_cost = np.lexsort((c, r))  # dense ranks of (row, cost): exact integer keys
    fresh = np.ones(n, dtype=bool)
    fresh[1:] = (r[by_cost][1:] != r[by_cost][:-1]) | (c[by_cost][1:] != c[by_cost][:-1])
    rank = np.empty(n, dtype=np.int64)
    rank[by_cost] = np.cumsum(fresh) - 1
    ranks = int(rank.max()) + 1
    out = np.zeros(n, dtype=bool)
    s = 1
    while s < int(counts.max()):
        if tick is not None:
            tick()
        block = r * (int(counts.max()) // (2 * s) + 1) + pos // (2 * s)
        right = (pos // s) % 2 == 1
        left = np.flatnonzero(~right)
        key = block[left] * ranks + rank[left]
        sort = np.argsort(key, kind="stable")
        key, least = key[sort], p[left][sort]
        group = key // ranks
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        sizes = np.diff(np.r_[starts, key.size])
        gid = np.repeat(np.arange(starts.size), sizes)
        pad = np.full((starts.size, int(sizes.max())), np.inf)
        column = np.arange(key.size) - starts[gid]
        pad[gid, column] = least
        np.minimum.accumulate(pad, axis=1, out=pad)
        least = pad[gid, column]
        ask = np.flatnonzero(right)
        want = block[ask]
        at = np.searchsorted(key, want * ranks + rank[ask], side="right") - 1
        hit = at >= 0
        hit[hit] = group[at[hit]] == want[hit]
        out[ask[hit]] |= least[at[hit]] <= p[ask[hit]]
        s *= 2
    dominated[order] = out
    return dominated


def prune_3d(lat: np.ndarray, cost: np.ndarray, par: np.ndarray, alive: np.ndarray,
             tick: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like `prune_2d` over (latency, cost, params), among the points marked alive; rows ascending."""
    alive = alive & np.isfinite(lat)
    if alive.sum() > PREFILTER_MIN:
        alive = _prefilter_3d(lat, cost, par, alive)
    rows, cols = np.nonzero(alive)
    keep = ~dominated_3d(rows, lat[rows, cols], cost[rows, cols], par[rows, cols], tick)
    return rows[keep], cols[keep]


def prune(lat: np.ndarray, cost: np.ndarray, par: np.ndarray | None, mask: Mask | None,
          tick: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two- or three-criterion pruning of candidate matrices, after `mask` (when given) drops candidates."""
    if par is None and mask is None:
        return prune_2d(lat, cost)
    alive = np.isfinite(lat) if mask is None else mask(lat, cost, par) & np.isfinite(lat)
    if par is None:
        return prune_2d(np.where(alive, lat, np.inf), np.where(alive, cost, np.inf))
    return prune_3d(lat, cost, par, alive, tick)


def edge_candidates(points: PointSet, lat: np.ndarray, cost: np.ndarray,
                    par: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Candidate matrices (parent states x points): every point extended by the edge term to each parent state."""
    s = points.state
    cand_lat = np.take(lat, s, axis=1)
    cand_lat += points.lat
    cand_cost = np.take(cost, s, axis=1)
    cand_cost += points.cost
    cand_par = None
    if points.par is not None:
        cand_par = np.take(par, s, axis=1)
        cand_par += points.par
    return cand_lat, cand_cost, cand_par


def minkowski_candidates(a: PointSet, b: PointSet) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None], int]:
    """Candidate matrices (states x pairs) of the state-by-state sums of two sets, and b's padded width.

    Column c of row j pairs a's point c // width with b's point c % width of state j.
    """
    out = []
    width = 0
    for x, y in ((a.lat, b.lat), (a.cost, b.cost), (a.par, b.par)):
        if x is None:
            out.append(None)
            continue
        left, _ = a.padded(x)
        right, _ = b.padded(y)
        width = right.shape[1]
        out.append((left[:, :, None] + right[:, None, :]).reshape(a.states, -1))
    return (out[0], out[1], out[2]), width
