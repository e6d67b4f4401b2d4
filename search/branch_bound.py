"""The least-cost configuration under a latency budget and a parameter budget at once, exactly, on a tree.

The three-criterion Pareto DP of `pareto_front` is exact but its sets grow fast. For one
(latency, params) budget pair this module runs the same leaf-to-root DP with three more exact
prunings of every candidate set: a partial configuration whose leanest completion misses
either budget; one whose Lagrangian lower bound on the total cost cannot beat the best known
feasible configuration (the incumbent, read off the cached two-criterion front or met by the
multiplier grid); and three-criterion dominance. The bound: for multipliers g, m >= 0 the
rest of a configuration (everything a partial set does not cover yet) has
cost_rest >= R(g, m) - g * lat_rest - m * par_rest, where R is the least completion of
cost + g lat + m par (`elimination.Completion`), and a feasible one has lat_rest <= B - lat,
par_rest <= P - par.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .budget import margin, slack, within
from .elimination import Completion, Plan
from .front_limits import DEFAULT_LIMITS, FrontLimits
from .front_merge import Mask
from .lagrangian import LagrangianInfeasible, solve
from .outside_fronts import OutsideFronts
from .pareto_front import FrontArrays, Guard, TreeFrontDP
from .tree import Terms, TreeMRF, min_sum

__all__ = ["Best", "SearchTooLarge", "SearchTimedOut", "SuffixFronts", "suffix_fronts", "best_within"]

#: Candidate points one DP step may hold before the search gives up (bounds memory).
MAX_CANDIDATES = 4_000_000
#: Multiples of the single-budget prices tried as Lagrange multipliers (latency x params).
GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Multiplier pairs (the best bounds at the root) used to bound every partial set.
PAIRS_KEPT = 6


class SearchTooLarge(RuntimeError):
    """The bounded DP still holds too many partial configurations for this table and budget pair.

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
    """What every two-budget query of one tree shares: the plan, the least latency, params and cost
    completions, and the outside (latency, cost) and (params, cost) staircases of every variable.

    Built once per tree (min-sum passes and one top-down pass per staircase) and passed back to
    `best_within`; `limits` caps the memory of its DP steps.
    """

    def __init__(self, tree: TreeMRF, limits: FrontLimits = DEFAULT_LIMITS) -> None:
        if tree.params is None:
            raise ValueError("max_params: the table has no params")
        self.plan = plan = Plan(tree)
        self.limits = limits
        self.latency = Completion(plan, tree.latency, tree.constant_ms)
        self.params = Completion(plan, tree.params)
        self.cost = Completion(plan, tree.cost)
        self.latency_stairs = OutsideFronts(plan, tree.latency, tree.cost, self.latency, self.cost, tree.constant_ms)
        self.params_stairs = OutsideFronts(plan, tree.params, tree.cost, self.params, self.cost)


def suffix_fronts(tree: TreeMRF, limits: FrontLimits = DEFAULT_LIMITS) -> SuffixFronts:
    """The shared bounds of a tree's two-budget queries (build once per tree, reuse per query)."""
    return SuffixFronts(tree, limits)


def params_view(tree: TreeMRF) -> TreeMRF:
    """The same tree with params in place of latency (for the params price)."""
    return tree.with_terms(latency=tree.params, constant_ms=0.0)


def _prices(tree: TreeMRF, budget_ms: float, max_params: float) -> tuple[float, float]:
    """The single-budget Lagrangian prices of latency and of params: the scales of the multiplier grid."""
    prices = []
    for view, budget in ((tree, budget_ms), (params_view(tree), max_params)):
        try:
            prices.append(float(solve(view, budget).gamma))
        except LagrangianInfeasible:
            prices.append(0.0)
    return prices[0], prices[1]


def weighted(tree: TreeMRF, lam: float, mu: float) -> Terms:
    """The terms of cost + lam * latency + mu * params."""
    return tree.cost.plus(tree.latency, lam).plus(tree.params, mu)


def _dual(tree: TreeMRF, budget_ms: float, max_params: float) -> tuple[list[tuple[float, float]], Best | None]:
    """Multiplier pairs ranked by their lower bound on the optimum, and the best feasible arg-min met."""
    gamma, mu = _prices(tree, budget_ms, max_params)
    gamma = gamma if np.isfinite(gamma) else 0.0
    pairs = [(gamma * a, mu * b) for a in GRID for b in GRID]
    scores, incumbent = [], None
    for g, m in pairs:
        value, idx = min_sum(tree, weighted(tree, g, m))
        scores.append(value + g * tree.constant_ms - g * budget_ms - m * max_params)
        incumbent = _better(tree, idx, budget_ms, max_params, incumbent)
    order = np.argsort(scores)[::-1][:PAIRS_KEPT]
    return [pairs[i] for i in order], incumbent


def _better(tree: TreeMRF, idx: tuple[int, ...], budget_ms: float, max_params: float, best: Best | None) -> Best | None:
    """`idx` as a Best when it fits both budgets and costs less than `best`, else `best`."""
    lat, par = tree.latency_of(idx), tree.params_of(idx)
    if within(lat, budget_ms) and within(par, max_params):
        cost = tree.cost_of(idx)
        if best is None or cost < best.cost:
            return Best(tuple(int(i) for i in idx), lat, cost, par)
    return best


def best_within(
    tree: TreeMRF,
    front: FrontArrays,
    budget_ms: float,
    max_params: float,
    suffixes: SuffixFronts | None = None,
    *,
    deadline: float | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> Best | None:
    """The exact least-cost configuration with latency <= budget and params <= max_params, or None.

    `deadline` (a time.monotonic value) bounds the work: SearchTimedOut, with the incumbent, once
    passed; `max_candidates` the candidates of one DP step: SearchTooLarge, with the incumbent.
    """
    if tree.params is None:
        raise ValueError("max_params: the table has no params")
    incumbent: Best | None = None
    if len(front):
        ok = within(front.latency, budget_ms) & within(front.params, max_params)
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmin(front.cost[ok])])
            incumbent = Best(tuple(int(v) for v in front.configs[i]), float(front.latency[i]), float(front.cost[i]),
                             float(front.params[i]))
            if front.position(budget_ms) == i:  # the unconstrained optimum already fits the params budget
                return incumbent
    _check_clock(deadline, incumbent, "before the multiplier grid")
    pairs, lagrangian_best = _dual(tree, budget_ms, max_params)
    if lagrangian_best is not None and (incumbent is None or lagrangian_best.cost < incumbent.cost):
        incumbent = lagrangian_best
    _check_clock(deadline, incumbent, "before the bounded DP")
    shared = suffixes if suffixes is not None else suffix_fronts(tree)
    found = _bounded_dp(tree, budget_ms, max_params, incumbent, pairs, shared, deadline, max_candidates)
    if found is not None and (incumbent is None or found.cost < incumbent.cost):
        return found
    return incumbent


def _check_clock(deadline: float | None, incumbent: Best | None, where: str) -> None:
    """SearchTimedOut (carrying the incumbent) once `deadline` has passed."""
    if deadline is not None and time.monotonic() >= deadline:
        raise SearchTimedOut(f"the time bound passed {where}", incumbent)


def _masks(tree: TreeMRF, budget_ms: float, max_params: float, incumbent: Best | None,
           pairs: list[tuple[float, float]], shared: SuffixFronts) -> Callable[[int, frozenset, bool], Mask]:
    """Per partial set, the mask of candidates that can still beat the incumbent within both budgets."""
    cap_lat, cap_par = slack(budget_ms), slack(max_params)
    ceiling = np.inf if incumbent is None else incumbent.cost - margin(incumbent.cost)
    bounds = []
    if np.isfinite(ceiling):
        bounds = [(g, m, Completion(shared.plan, weighted(tree, g, m), g * tree.constant_ms)) for g, m in pairs]

    def mask_for(p: int, covered: frozenset, with_unary: bool) -> Mask:
        rest_lat = shared.latency.rest(p, covered, with_unary)[:, None]
        rest_par = shared.params.rest(p, covered, with_unary)[:, None]
        # the uncovered terms at p, each criterion at its least, then the outside staircases
        inner = [c.inner(p, covered, with_unary)[:, None] for c in (shared.latency, shared.params, shared.cost)]
        rests = [(g, m, c.rest(p, covered, with_unary)[:, None]) for g, m, c in bounds]

        def mask(lat: np.ndarray, cost: np.ndarray, par: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):  # padding (+inf latency) gives NaN bounds: never kept
                return _mask(lat, cost, par)

        def _mask(lat: np.ndarray, cost: np.ndarray, par: np.ndarray) -> np.ndarray:
            lat_room, par_room = cap_lat - lat, cap_par - par
            ok = (lat_room >= rest_lat) & (par_room >= rest_par)
            rest_cost = np.maximum(shared.latency_stairs.least_cost(p, lat_room - inner[0]),
                                   shared.params_stairs.least_cost(p, par_room - inner[1]))
            ok &= cost + inner[2] + rest_cost < ceiling
            if rests:
                bound = np.full(lat.shape, -np.inf)
                for g, m, rest in rests:
                    np.maximum(bound, rest - g * lat_room - m * par_room, out=bound)
                ok &= cost + bound < ceiling
            return ok
        return mask
    return mask_for


def _bounded_dp(tree: TreeMRF, budget_ms: float, max_params: float, incumbent: Best | None,
                pairs: list[tuple[float, float]], shared: SuffixFronts, deadline: float | None,
                max_candidates: int) -> Best | None:
    """The three-criterion DP with every bound; the least-cost configuration it keeps within both budgets."""
    guard = Guard(shared.plan, shared.limits.memory_only(), "search within both budgets", deadline,
                  lambda m: SearchTimedOut(m, incumbent), max_candidates, lambda m: SearchTooLarge(m, incumbent))
    dp = TreeFrontDP(tree, guard, True, _masks(tree, budget_ms, max_params, incumbent, pairs, shared))
    points, rid = dp.run()
    ok = np.flatnonzero(within(points.lat, budget_ms) & within(points.par, max_params))
    if ok.size == 0:
        return None
    best = int(ok[np.argmin(points.cost[ok])])
    idx = tuple(int(i) for i in dp.configs(rid, np.array([best]))[0])
    return Best(idx, float(points.lat[best]), float(points.cost[best]), float(points.par[best]))
