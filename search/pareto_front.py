"""The exact Pareto front of (latency, cost) of a chain, by dynamic programming over Pareto sets.

After block k, every state (a width of layer k) keeps the partial configurations that no
other partial configuration ending in the same state beats on both latency and cost; a
dominated prefix cannot start an optimal configuration, so the last block's set is the
exact Pareto front of the whole chain, found in one pass. Each set is a flat numpy array
grouped by state, with a back-pointer per point to recover the configurations at the end.
The Searcher answers every exact single-budget query from this front by a binary search.

With a parameter budget the parameters become a third criterion: a prefix is also dropped
when even the leanest completion would exceed the budget, and the dominance test compares
all three, so the front is exact under that budget too. The pruning helpers here are shared
with the branch and bound under two budgets (`branch_bound.py`).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

import numpy as np

from .budget import within
from .chain import Chain
from .front_limits import DEFAULT_LIMITS, FrontLimits

#: Candidate sets smaller than this are sorted directly, without the binned pre-filter.
PREFILTER_MIN = 4096
#: Latency bins per state in the pre-filter (more bins: fewer survivors, more memory).
PREFILTER_BINS = 2048
#: Bins per axis of the three-criterion pre-filter's (latency, params) grid.
PREFILTER_BINS_3D = 96
#: Bound on the prefixes of one step of the three-criterion DP (it grows much faster than two).
MAX_PARAMS_CANDIDATES = 1_000_000
#: Rows compared at once in the three-criterion dominance test (bounds its memory).
DOMINANCE_CHUNK = 512


class FrontTooLarge(RuntimeError):
    """The three-criterion front of this table is too large to build in memory."""


class FrontTimedOut(FrontTooLarge):
    """The three-criterion front did not finish within its time bound (checked before every step)."""


@dataclass(frozen=True, eq=False)
class FrontArrays:
    """Pareto-optimal configurations sorted by latency (strictly falling cost), as arrays of choice indices."""

    latency: np.ndarray
    cost: np.ndarray
    params: np.ndarray | None
    configs: np.ndarray
    max_params: float | None = None

    def __len__(self) -> int:
        return len(self.latency)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_latencies", self.latency.tolist())

    def position(self, budget_ms: float) -> int:
        """Index of the least-cost point within the budget, or -1 when none is: a binary search."""
        lats = self._latencies  # type: ignore[attr-defined]
        pos = bisect.bisect_right(lats, budget_ms) - 1
        while pos + 1 < len(lats) and within(lats[pos + 1], budget_ms):
            pos += 1
        if pos < 0 and lats and within(lats[0], budget_ms):
            pos = 0
        return pos


def _prune_sorted(lat: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row (state), the positions of the points not dominated in (latency, cost), row-major.

    Returns (row, column) of the kept points, each row's kept points by rising latency.
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


def _prune_2d(lat: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_prune_sorted`, after a linear-time pre-filter that drops most dominated points.

    The latency axis is cut into bins; a point whose cost is no lower than the least cost in
    an earlier bin of its row (so at a strictly smaller latency) is dominated. Only the few
    survivors are sorted, which is what keeps the exact front fast.
    """
    rows_n, cols_n = lat.shape
    if lat.size <= PREFILTER_MIN:
        return _prune_sorted(lat, cost)
    lo, hi = float(lat.min()), float(lat.max())
    bins = min(PREFILTER_BINS, cols_n)
    width = (hi - lo) / bins if hi > lo else 1.0
    which = ((lat - lo) * (1.0 / width)).astype(np.int64)
    np.clip(which, 0, bins - 1, out=which)
    which += (np.arange(rows_n) * bins)[:, None]
    least = np.full(rows_n * bins, np.inf)
    np.minimum.at(least, which.ravel(), cost.ravel())
    least = least.reshape(rows_n, bins)
    before = np.empty_like(least)
    before[:, 0] = np.inf
    np.minimum.accumulate(least[:, :-1], axis=1, out=before[:, 1:])
    alive = cost < before.ravel()[which]
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
    kept_rows, kept_pos = _prune_sorted(packed_lat, packed_cost)
    return kept_rows, packed_col[kept_rows, kept_pos]


def _prefilter_3d(lat: np.ndarray, cost: np.ndarray, par: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Drop (from `alive`) points dominated by one in a strictly lower latency bin and params bin.

    Per state, a grid over (latency, params) bins holds the least cost; its two-way running
    minimum tells each point whether a point with smaller latency and params costs no more.
    """
    rows_n = lat.shape[0]
    if not alive.any():
        return alive
    bins = PREFILTER_BINS_3D
    cells = []
    for values in (lat, par):
        lo, hi = float(values[alive].min()), float(values[alive].max())
        width = (hi - lo) / bins if hi > lo else 1.0
        cell = ((values - lo) * (1.0 / width)).astype(np.int64)
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


def _prune_3d(lat: np.ndarray, cost: np.ndarray, par: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `_prune_2d` over three criteria, among the points marked alive (the params-feasible)."""
    if alive.sum() > PREFILTER_MIN:
        alive = _prefilter_3d(lat, cost, par, alive)
    out_rows, out_cols = [], []
    for j in range(lat.shape[0]):
        cols = np.flatnonzero(alive[j])
        if cols.size == 0:
            continue
        cols = cols[np.lexsort((par[j, cols], cost[j, cols], lat[j, cols]))]
        c, p = cost[j, cols], par[j, cols]
        dominated = np.zeros(cols.size, dtype=bool)
        for start in range(0, cols.size, DOMINANCE_CHUNK):
            stop = min(start + DOMINANCE_CHUNK, cols.size)
            # point p (rows) is dominated by an earlier q (columns) with cost and params no larger
            block = (c[None, :stop] <= c[start:stop, None]) & (p[None, :stop] <= p[start:stop, None])
            block &= np.arange(stop)[None, :] < np.arange(start, stop)[:, None]
            dominated[start:stop] = block.any(axis=1)
        keep = ~dominated
        out_rows.append(np.full(int(keep.sum()), j))
        out_cols.append(cols[keep])
    if not out_rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_rows), np.concatenate(out_cols)


def _rest_min(mats: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """For each layer k (0..L, L the output), per state, the least sum of the blocks after it."""
    rest = [np.zeros(1)]
    for m in reversed(mats[1:]):
        rest.append((m + rest[-1][None, :]).min(axis=1))
    rest.reverse()
    return rest


def build_front(chain: Chain, max_params: float | None = None, limits: FrontLimits = DEFAULT_LIMITS,
                what: str = "exact front", deadline: float | None = None) -> FrontArrays:
    """The exact Pareto front of (latency, cost), optionally among configurations within `max_params`.

    `limits` is checked at every step (FrontLimitExceeded names the cap and how far it got);
    `deadline` (time.monotonic) too, when given: FrontTimedOut once it has passed.
    """
    if max_params is not None and chain.params is None:
        raise ValueError("max_params: the table has no params")
    dp = _FrontDP(chain, max_params)
    blocks = len(chain.latency)
    limits.after_step(dp.lat.size, 0, blocks, what)
    kept = dp.lat.size
    for k in range(1, blocks):
        if deadline is not None and time.monotonic() > deadline:
            within_params = f" within {max_params:g} params" if max_params is not None else ""
            raise FrontTimedOut(f"the {what}{within_params} passed its time bound at block {k} of {blocks}")
        limits.before_step(dp.lat.size * chain.latency[k].shape[1], kept, k, blocks, what)
        dp.step(k)
        limits.after_step(dp.lat.size, k, blocks, what)
        kept += dp.lat.size
    return dp.front()


class _FrontDP:
    """The state of the front DP after each block: the kept points, their states and back-pointers."""

    def __init__(self, chain: Chain, max_params: float | None) -> None:
        self.chain, self.max_params = chain, max_params
        self.par_m = chain.params if max_params is not None else None
        self.rest = _rest_min(self.par_m) if self.par_m is not None else None
        self.lat = chain.constant_ms + chain.latency[0][0]
        self.cost = chain.cost[0][0].copy()
        self.state = np.arange(self.lat.size)
        self.par = self.par_m[0][0].copy() if self.par_m is not None else None
        self.parents: list[np.ndarray] = [np.full(self.lat.size, -1)]
        self.states: list[np.ndarray] = [self.state]
        if self.par is not None:
            feasible = np.flatnonzero(within(self.par + self.rest[0], max_params))
            self.lat, self.cost, self.par = self.lat[feasible], self.cost[feasible], self.par[feasible]
            self.state = self.state[feasible]
            self.parents[0], self.states[0] = self.parents[0][feasible], self.state

    def step(self, k: int) -> None:
        """Extend every kept point by block k and keep the non-dominated ones per state."""
        if self.par is not None and self.lat.size * self.chain.latency[k].shape[1] > MAX_PARAMS_CANDIDATES:
            raise FrontTooLarge(
                f"the front within {self.max_params:g} params needs over {MAX_PARAMS_CANDIDATES} prefixes "
                f"at block {k}; query single budgets instead"
            )
        # candidates[j, p]: point p extended to state j of the next layer,
        # gathered from transposed copies so that rows (states) are contiguous
        cand_lat = np.ascontiguousarray(self.chain.latency[k].T)[:, self.state]
        cand_lat += self.lat
        cand_cost = np.ascontiguousarray(self.chain.cost[k].T)[:, self.state]
        cand_cost += self.cost
        if self.par is None:
            rows, cols = _prune_2d(cand_lat, cand_cost)
        else:
            cand_par = np.ascontiguousarray(self.par_m[k].T)[:, self.state]
            cand_par += self.par
            alive = within(cand_par + self.rest[k][:, None], self.max_params)
            rows, cols = _prune_3d(cand_lat, cand_cost, cand_par, alive)
            self.par = cand_par[rows, cols]
        self.lat, self.cost, self.state = cand_lat[rows, cols], cand_cost[rows, cols], rows
        self.parents.append(cols)
        self.states.append(rows)

    def front(self) -> FrontArrays:
        """The last block's points, ties in latency tidied (the cheapest of each kept), configurations traced back."""
        lat, cost, par, chain = self.lat, self.cost, self.par, self.chain
        if lat.size:
            order = np.lexsort((cost, lat))
            lat, cost, tail = lat[order], cost[order], self.parents[-1][order]
            best = np.minimum.accumulate(cost)
            keep = np.ones(lat.size, dtype=bool)
            keep[1:] = cost[1:] < best[:-1]
            lat, cost, tail = lat[keep], cost[keep], tail[keep]
            par = par[order][keep] if par is not None else None
        else:
            tail = np.zeros(0, dtype=np.int64)
        configs = np.empty((lat.size, chain.num_layers), dtype=np.int64)
        pointer = tail
        for k in range(chain.num_layers - 1, -1, -1):
            configs[:, k] = self.states[k][pointer]
            pointer = self.parents[k][pointer]
        if par is None and chain.params is not None:
            par = chain.totals(chain.params, configs)
        return FrontArrays(lat, cost, par, configs, self.max_params)
