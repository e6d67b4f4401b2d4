"""Two budgets at once, approximately: a Lagrangian over latency and params, with its dual bound.

When the exact search (`branch_bound.best_within`) does not finish within its time bound,
the least-cost configuration within both budgets is approximated by minimising
`cost + lam * latency + mu * params` by min-sum on the tree. For each `mu` the single-multiplier
walk (`lagrangian.solve` on the tree whose cost carries `mu * params`) picks `lam`; `mu` is
raised geometrically until the answer fits the params budget, then bisected. Every arg-min
met that fits both budgets is a candidate (the best is kept), and every (lam, mu) gives a
lower bound on the optimum, the dual value

    q(lam, mu) = min_x [cost + lam * latency + mu * params] - lam * B - mu * P,

taken with B and P widened by the budgets' rounding slack, so any configuration the search
counts as within the budgets costs at least q. The answer's gap is its cost minus the best q.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .branch_bound import Best
from .budget import margin, slack, within
from .front_limits import FrontLimitExceeded, FrontLimits
from .lagrangian import LagrangianInfeasible, solve
from .local_repair import improve
from .pareto_front import build_front
from .tree import Terms, TreeMRF, min_sum

#: Multiplier steps the search always takes, whatever the clock says (so a 0 s bound still answers).
MIN_STEPS = 12
#: Multiplier steps the search never passes.
MAX_STEPS = 80
#: Steps of the exact-latency phase: at least (whatever the clock says) and at most.
MIN_FRONT_STEPS = 12
MAX_FRONT_STEPS = 40
#: Factor by which `mu` grows while the answer misses the params budget.
GROWTH = 4.0
#: Relative width of the `mu` bracket at which bisection stops.
BRACKET_RTOL = 1e-8


@dataclass(frozen=True)
class Approximate:
    """The best configuration found within both budgets (None if none was met), and the best dual bound."""

    best: Best | None
    dual_bound: float
    steps: int
    #: what found `best`: "lagrangian2" (an arg-min of the multipliers), "incumbent" (the exact search's), "repair"
    source: str

    def marks(self) -> dict[str, Any]:
        """The Answer fields of `best`: exact (only when its cost meets the bound), dual_bound, gap, gap_relative."""
        if self.best is None or not math.isfinite(self.dual_bound):
            return {"exact": False, "dual_bound": None, "gap": None, "gap_relative": None}
        gap, relative = gap_of(self.best.cost, self.dual_bound)
        return {"exact": gap <= margin(self.best.cost), "dual_bound": self.dual_bound, "gap": gap,
                "gap_relative": relative}


class DualSearch:
    """Evaluates multipliers over one tree and budget pair; keeps the best feasible point and bound."""

    def __init__(self, tree: TreeMRF, budget_ms: float, max_params: float) -> None:
        if tree.params is None:
            raise ValueError("max_params: the table has no params")
        self.tree = tree
        self.budget_ms = budget_ms
        self.max_params = max_params
        self.best: Best | None = None
        self.source = "lagrangian2"
        self.bound = -math.inf
        self.steps = 0

    def consider(self, idx: tuple[int, ...], source: str = "lagrangian2") -> None:
        """Keep `idx` when it fits both budgets and beats the best so far (`source`: what found it)."""
        tree = self.tree
        lat, par = tree.latency_of(idx), tree.params_of(idx)
        if within(lat, self.budget_ms) and within(par, self.max_params):
            cost = tree.cost_of(idx)
            if self.best is None or cost < self.best.cost:
                self.best = Best(tuple(int(i) for i in idx), lat, cost, par)
                self.source = source

    def at(self, mu: float) -> float:
        """Params of the latency-feasible Lagrangian answer at `mu` (its lam chosen by the bracket walk).

        Raises LagrangianInfeasible when no configuration meets the latency budget at all.
        """
        tree = self.tree
        self.steps += 1
        cost = tree.cost.plus(tree.params, mu)
        found = solve(tree.with_terms(cost=cost), self.budget_ms)
        self.consider(found.idx)
        lam = found.gamma if math.isfinite(found.gamma) and found.gamma > 0 else 0.0
        self._bound_at(lam, mu, cost)
        return float(tree.params_of(found.idx))

    def at_front(self, mu: float, limits: FrontLimits) -> float:
        """Params of the least `cost + mu * params` within the latency budget, from the exact front.

        Its value minus mu * P bounds the optimum from below (only params is relaxed).
        """
        tree = self.tree
        self.steps += 1
        front = build_front(tree.with_terms(cost=tree.cost.plus(tree.params, mu)), None, limits,
                            "(latency, cost + mu params) front")
        pos = front.position(self.budget_ms)
        if pos < 0:
            raise LagrangianInfeasible(self.budget_ms, float(front.latency[0]))
        idx = tuple(int(i) for i in front.configs[pos])
        self.consider(idx)
        q = float(front.cost[pos]) - mu * slack(self.max_params)
        if math.isfinite(q) and q > self.bound:
            self.bound = q
        return float(tree.params_of(idx))

    def _bound_at(self, lam: float, mu: float, cost: Terms) -> None:
        """The dual value q(lam, mu); its arg-min is a candidate too."""
        tree = self.tree
        value, idx = min_sum(tree, cost.plus(tree.latency, lam))
        q = value + lam * tree.constant_ms - lam * slack(self.budget_ms) - mu * slack(self.max_params)
        if math.isfinite(q) and q > self.bound:
            self.bound = q
        self.consider(tuple(int(i) for i in idx))


class _OutOfSteps(Exception):
    """A phase of the multiplier search has used its steps (or its time)."""


def _budgeted(at: Callable[[float], float], least: int, most: int, deadline: float) -> Callable[[float], float]:
    """`at`, refusing (_OutOfSteps) after `most` calls, or after `least` once `deadline` has passed."""
    calls = [0]

    def step(mu: float) -> float:
        if calls[0] >= most or (calls[0] >= least and time.monotonic() >= deadline):
            raise _OutOfSteps
        calls[0] += 1
        return at(mu)
    return step


def _bisect_mu(at: Callable[[float], float], max_params: float, scale: float) -> None:
    """Raise `mu` geometrically from 0 until `at(mu)` (the answer's params) fits, then bisect the bracket.

    `scale` is a typical cost (the first `mu` tried is scale per excess parameter).
    """
    try:
        params0 = at(0.0)
        if within(params0, max_params):
            return
        low, high = 0.0, scale / max(params0 - max_params, 1e-12)
        while not within(at(high), max_params):
            low, high = high, high * GROWTH
        while high - low > BRACKET_RTOL * high:
            mid = math.sqrt(low * high) if low > 0 else high / GROWTH
            if within(at(mid), max_params):
                high = mid
            else:
                low = mid
    except _OutOfSteps:
        return


def two_budget_lagrangian(tree: TreeMRF, budget_ms: float, max_params: float, deadline: float,
                          seed: Best | None = None, repairs: Sequence[tuple[int, ...]] = (),
                          front_limits: FrontLimits | None = None) -> Approximate:
    """The best configuration a (lam, mu) Lagrangian finds within both budgets, and the dual bound.

    Takes at least MIN_STEPS and at most MAX_STEPS multiplier steps, stopping between them once
    `deadline` (time.monotonic) has passed. `seed` (the exact search's incumbent) and `repairs`
    (configurations from simple fallbacks) are candidates too, so a feasible one is never lost.
    With `front_limits`, a second phase bisects `mu` alone with the latency budget kept exact
    (an exact (latency, cost + mu params) front per step, within those caps): a tighter bound.
    LagrangianInfeasible: nothing meets the latency budget.
    """
    search = DualSearch(tree, budget_ms, max_params)
    if seed is not None:
        search.consider(seed.idx, "incumbent")
    for idx in repairs:
        search.consider(tuple(idx), "repair")

    scale = max(abs(tree.cost_of(tree.argmin(tree.cost))), abs(tree.cost_of(tree.argmin(tree.params))), 1e-12)
    # the min-sum phase takes at most half the time left, leaving the rest to the exact-latency phase
    halfway = deadline - 0.5 * max(0.0, deadline - time.monotonic()) if front_limits is not None else deadline
    _bisect_mu(_budgeted(search.at, MIN_STEPS, MAX_STEPS, halfway), max_params, scale)
    if front_limits is not None:
        try:
            _bisect_mu(_budgeted(lambda mu: search.at_front(mu, front_limits), MIN_FRONT_STEPS, MAX_FRONT_STEPS,
                                 deadline), max_params, scale)
        except FrontLimitExceeded:
            pass  # the exact latency fronts of this objective are too large: the min-sum bound stands
    if search.best is not None:
        search.consider(improve(tree, search.best.idx, budget_ms, max_params), search.source)
    return Approximate(search.best, search.bound, search.steps, search.source)


def gap_of(cost: float, dual_bound: float) -> tuple[float, float | None]:
    """(absolute, relative) gap of a feasible cost to a lower bound; relative to |cost| (None when cost is 0)."""
    gap = max(0.0, cost - dual_bound)
    if gap == 0.0:
        return 0.0, 0.0
    return gap, (gap / abs(cost) if cost != 0 else None)
