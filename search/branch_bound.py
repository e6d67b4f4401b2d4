"""The least-cost configuration under a latency budget and a parameter budget at once, by branch and bound.

The three-criterion Pareto DP of `pareto_front.build_front` is exact but its sets grow fast on a
wide chain. For one (latency, params) budget pair this module runs the same DP with three
extra, exact prunings: a prefix whose leanest completion misses either budget; a prefix whose
Lagrangian lower bound on the total cost cannot beat the best known feasible configuration
(the incumbent, read off the cached two-criterion front); and three-criterion dominance.
The bound: for multipliers g, m >= 0 every completion s from state j has
cost_s >= R_j(g, m) - g * lat_s - m * par_s, and a feasible one has lat_s <= B - lat_prefix,
par_s <= P - par_prefix, where R_j is a backward min-sum value of cost + g lat + m par.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .budget import margin, slack, within
from .chain import Chain
from .front_limits import DEFAULT_LIMITS, FrontLimits
from .lagrangian import LagrangianInfeasible, solve
from .pareto_front import FrontArrays, _prune_2d, _prune_3d, _rest_min
from .viterbi import min_sum

#: Candidate points one DP step may hold before the search gives up (bounds memory).
MAX_CANDIDATES = 4_000_000


#: Multiples of the single-budget prices tried as Lagrange multipliers (latency x params).
GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Multiplier pairs (the best bounds at the root) used to bound every prefix.
PAIRS_KEPT = 6


class SearchTooLarge(RuntimeError):
    """The bounded DP still holds too many prefixes for this table and budget pair.

    `incumbent` is the best configuration within both budgets known when it gave up (or None).
    """

    def __init__(self, message: str, incumbent: "Best | None" = None) -> None:
        super().__init__(message)
        self.incumbent = incumbent


class SearchTimedOut(SearchTooLarge):
    """The bounded DP passed its time bound (checked before every DP step)."""


@dataclass(frozen=True)
class Best:
    """The least-cost configuration within both budgets."""

    idx: tuple[int, ...]
    latency_ms: float
    cost: float
    params: float


class SuffixFronts:
    """For each layer k and state j, the Pareto set of (x, cost) over the blocks after layer k.

    x is latency or params. `least_cost` gives, for a prefix with `room` left of x, the least
    suffix cost that fits: an exact lower bound on the rest of the cost, blind to the other budget.
    """

    def __init__(self, xs: tuple[np.ndarray, ...], costs: tuple[np.ndarray, ...],
                 limits: FrontLimits = DEFAULT_LIMITS, what: str = "suffix front") -> None:
        last = len(xs) - 1
        x, c = xs[last][:, 0].copy(), costs[last][:, 0].copy()
        state = np.arange(x.size)
        self.sets: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(last)]
        self.sets[last - 1] = self._group(x, c, state, x.size)
        kept = x.size
        for k in range(last - 1, 0, -1):
            # the grouped sets of every later layer stay alive: count them as kept points
            limits.before_step(x.size * xs[k].shape[0], 2 * kept, last - k, last, what)
            cand_x = xs[k][:, state] + x
            cand_c = costs[k][:, state] + c
            rows, cols = _prune_2d(cand_x, cand_c)
            limits.after_step(rows.size, last - k, last, what)
            kept += rows.size
            x, c, state = cand_x[rows, cols], cand_c[rows, cols], rows
            self.sets[k - 1] = self._group(x, c, state, xs[k].shape[0])

    @staticmethod
    def _group(x: np.ndarray, c: np.ndarray, state: np.ndarray, states: int) -> list[tuple[np.ndarray, np.ndarray]]:
        order = np.lexsort((x, state))
        x, c, state = x[order], c[order], state[order]
        bounds = np.searchsorted(state, np.arange(states + 1))
        # keep each state's staircase: rising x, strictly falling cost
        out = []
        for j in range(states):
            xj, cj = x[bounds[j] : bounds[j + 1]], c[bounds[j] : bounds[j + 1]]
            if cj.size:
                best = np.minimum.accumulate(cj)
                keep = np.ones(cj.size, dtype=bool)
                keep[1:] = cj[1:] < best[:-1]
                xj, cj = xj[keep], cj[keep]
            out.append((xj, cj))
        return out

    def least_cost(self, k: int, room: np.ndarray) -> np.ndarray:
        """Rows = states of layer k: the least suffix cost with x <= room (+inf where none fits)."""
        out = np.full(room.shape, np.inf)
        for j, (xj, cj) in enumerate(self.sets[k]):
            if xj.size:
                pos = np.searchsorted(xj, room[j], side="right") - 1
                fits = pos >= 0
                out[j, fits] = cj[pos[fits]]
        return out


def suffix_fronts(chain: Chain, limits: FrontLimits = DEFAULT_LIMITS) -> tuple[SuffixFronts, SuffixFronts]:
    """The latency and the params suffix fronts of a chain (build once per chain, reuse per query)."""
    if chain.params is None:
        raise ValueError("max_params: the table has no params")
    return (SuffixFronts(chain.latency, chain.cost, limits, "latency suffix front"),
            SuffixFronts(chain.params, chain.cost, limits, "params suffix front"))


def _prices(chain: Chain, budget_ms: float, max_params: float) -> tuple[float, float]:
    """The single-budget Lagrangian prices of latency and of params: the scales of the multiplier grid."""
    prices = []
    for view, budget in ((chain, budget_ms), (_params_chain(chain), max_params)):
        try:
            prices.append(solve(view, budget).gamma)
        except LagrangianInfeasible:
            prices.append(0.0)
    return prices[0], prices[1]


def _params_chain(chain: Chain) -> Chain:
    """The same chain with params in place of latency (for the params price)."""
    return Chain(chain.choices, 0.0, chain.params, chain.cost, chain.params, chain.macs)


def _dual(chain: Chain, budget_ms: float, max_params: float) -> tuple[np.ndarray, Best | None]:
    """Multiplier pairs ranked by their lower bound on the optimum, and the best feasible arg-min met."""
    gamma, mu = _prices(chain, budget_ms, max_params)
    pairs = np.array([(gamma * a, mu * b) for a in GRID for b in GRID])
    scores, incumbent = [], None
    for g, m in pairs:
        mats = [c + g * t + m * p for c, t, p in zip(chain.cost, chain.latency, chain.params)]
        value, idx = min_sum(mats)
        scores.append(value + g * chain.constant_ms - g * budget_ms - m * max_params)
        lat, par = chain.latency_of(idx), chain.params_of(idx)
        if within(lat, budget_ms) and within(par, max_params):
            cost = chain.cost_of(idx)
            if incumbent is None or cost < incumbent.cost:
                incumbent = Best(idx, lat, cost, par)
    order = np.argsort(scores)[::-1][:PAIRS_KEPT]
    return pairs[order], incumbent


def _backward_values(chain: Chain, pairs: np.ndarray) -> list[np.ndarray]:
    """Per layer k (0..L), per multiplier pair and state: least cost + g lat + m par of the blocks after k."""
    values = [np.zeros((len(pairs), 1))]
    g, m = pairs[:, 0][:, None, None], pairs[:, 1][:, None, None]
    for k in range(len(chain.latency) - 1, 0, -1):
        weight = chain.cost[k][None] + g * chain.latency[k][None] + m * chain.params[k][None]
        values.append((weight + values[-1][:, None, :]).min(axis=2))
    values.reverse()
    return values


def best_within(
    chain: Chain,
    front: FrontArrays,
    budget_ms: float,
    max_params: float,
    suffixes: tuple[SuffixFronts, SuffixFronts] | None = None,
    deadline: float | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> Best | None:
    """The exact least-cost configuration with latency <= budget and params <= max_params, or None.

    `deadline` (a time.monotonic value) bounds the work: SearchTimedOut, with the incumbent, once
    passed; `max_candidates` the prefixes of one DP step: SearchTooLarge, with the incumbent.
    """
    if chain.params is None:
        raise ValueError("max_params: the table has no params")
    incumbent: Best | None = None
    if len(front):
        ok = within(front.latency, budget_ms) & within(front.params, max_params)
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmin(front.cost[ok])])
            incumbent = Best(tuple(int(v) for v in front.configs[i]), float(front.latency[i]), float(front.cost[i]),
                             float(front.params[i]))
            pos = front.position(budget_ms)
            if pos == i:  # the unconstrained optimum already fits the params budget
                return incumbent
    _check_clock(deadline, incumbent, "before the multiplier grid")
    pairs, lagrangian_best = _dual(chain, budget_ms, max_params)
    if lagrangian_best is not None and (incumbent is None or lagrangian_best.cost < incumbent.cost):
        incumbent = lagrangian_best
    _check_clock(deadline, incumbent, "before the bounded DP")
    found = _bounded_dp(chain, budget_ms, max_params, incumbent, pairs, suffixes or suffix_fronts(chain), deadline, max_candidates)
    if found is not None and (incumbent is None or found.cost < incumbent.cost):
        return found
    return incumbent


def _check_clock(deadline: float | None, incumbent: Best | None, where: str) -> None:
    """SearchTimedOut (carrying the incumbent) once `deadline` has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise SearchTimedOut(f"the time bound passed {where}", incumbent)


def _bounded_dp(
    chain: Chain,
    budget_ms: float,
    max_params: float,
    incumbent: Best | None,
    pairs: np.ndarray,
    suffixes: tuple[SuffixFronts, SuffixFronts],
    deadline: float | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> Best | None:
    lat_m, cost_m, par_m = chain.latency, chain.cost, chain.params
    rest_lat, rest_par = _rest_min(lat_m), _rest_min(par_m)
    bounds = _backward_values(chain, pairs)
    cap_lat, cap_par = slack(budget_ms), slack(max_params)
    ceiling = np.inf if incumbent is None else incumbent.cost - margin(incumbent.cost)
    last = len(lat_m) - 1

    def alive_mask(lat: np.ndarray, cost: np.ndarray, par: np.ndarray, k: int) -> np.ndarray:
        """(rows = states of layer k) which prefixes can still beat the incumbent within both budgets."""
        ok = (lat + rest_lat[k][:, None] <= cap_lat) & (par + rest_par[k][:, None] <= cap_par)
        if k < last:
            # exact suffix bounds, each blind to the other budget; +inf where nothing fits
            rest_cost = np.maximum(suffixes[0].least_cost(k, cap_lat - lat), suffixes[1].least_cost(k, cap_par - par))
            ok &= cost + rest_cost < ceiling
        if np.isfinite(ceiling):
            lat_room, par_room = budget_ms - lat, max_params - par
            bound = np.full(lat.shape, -np.inf)
            for (gamma, mu), rest in zip(pairs, bounds[k]):
                np.maximum(bound, rest[:, None] - gamma * lat_room - mu * par_room, out=bound)
            ok &= cost + bound < ceiling
        return ok

    lat = (chain.constant_ms + lat_m[0][0])[:, None]
    cost, par = cost_m[0][0][:, None], par_m[0][0][:, None]
    rows, cols = np.nonzero(alive_mask(lat, cost, par, 0))
    lat, cost, par, state = lat[rows, 0], cost[rows, 0], par[rows, 0], rows
    parents, states = [np.full(rows.size, -1)], [state]
    for k in range(1, len(lat_m)):
        if lat.size == 0:
            return None
        _check_clock(deadline, incumbent, f"at block {k} of {len(lat_m) - 1}")
        if lat.size * lat_m[k].shape[1] > max_candidates:
            raise SearchTooLarge(f"{lat.size * lat_m[k].shape[1]} candidate prefixes at block {k}", incumbent)
        cand_lat = np.ascontiguousarray(lat_m[k].T)[:, state] + lat
        cand_cost = np.ascontiguousarray(cost_m[k].T)[:, state] + cost
        cand_par = np.ascontiguousarray(par_m[k].T)[:, state] + par
        rows, cols = _prune_3d(cand_lat, cand_cost, cand_par, alive_mask(cand_lat, cand_cost, cand_par, k))
        lat, cost, par, state = cand_lat[rows, cols], cand_cost[rows, cols], cand_par[rows, cols], rows
        parents.append(cols)
        states.append(rows)
    ok = np.flatnonzero(within(lat, budget_ms) & within(par, max_params))
    if ok.size == 0:
        return None
    best = int(ok[np.argmin(cost[ok])])
    pointer, idx = parents[-1][best], []
    for k in range(chain.num_layers - 1, -1, -1):
        idx.append(int(states[k][pointer]))
        pointer = parents[k][pointer]
    return Best(tuple(reversed(idx)), float(lat[best]), float(cost[best]), float(par[best]))
