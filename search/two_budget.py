"""Two budgets at once, approximately: a Lagrangian over latency and params, with its dual bound.

When the exact branch and bound (`branch_bound.best_within`) does not finish within its time
bound, the least-cost configuration within both budgets is approximated by minimising
`cost + lam * latency + mu * params` with Viterbi. For each `mu` the single-multiplier walk
(`lagrangian.solve` on the chain whose cost carries `mu * params`) picks `lam`; `mu` is
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

import numpy as np

from .branch_bound import Best
from .budget import margin, slack, within
from .chain import Chain
from .front_limits import FrontLimitExceeded, FrontLimits
from .lagrangian import LagrangianInfeasible, solve
from .pareto_front import build_front
from .viterbi import min_sum

#: Multiplier steps the search always takes, whatever the clock says (so a 0 s bound still answers).
MIN_STEPS = 12
#: Multiplier steps the search never passes.
MAX_STEPS = 80
#: Steps of the exact-latency phase: at least (whatever the clock says) and at most.
MIN_FRONT_STEPS = 12
MAX_FRONT_STEPS = 40
#: Factor by which `mu` grows while the answer misses the params budget.
GROWTH = 4.0
#: Sweeps of the local search that polishes the answer (each re-chooses every pair of adjacent layers).
IMPROVE_SWEEPS = 20
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
    """Evaluates multipliers over one chain and budget pair; keeps the best feasible point and bound."""

    def __init__(self, chain: Chain, budget_ms: float, max_params: float) -> None:
        if chain.params is None:
            raise ValueError("max_params: the table has no params")
        self.chain = chain
        self.budget_ms = budget_ms
        self.max_params = max_params
        self.best: Best | None = None
        self.source = "lagrangian2"
        self.bound = -math.inf
        self.steps = 0

    def consider(self, idx: tuple[int, ...], source: str = "lagrangian2") -> None:
        """Keep `idx` when it fits both budgets and beats the best so far (`source`: what found it)."""
        chain = self.chain
        lat, par = chain.latency_of(idx), chain.params_of(idx)
        if within(lat, self.budget_ms) and within(par, self.max_params):
            cost = chain.cost_of(idx)
            if self.best is None or cost < self.best.cost:
                self.best = Best(tuple(int(i) for i in idx), lat, cost, par)
                self.source = source

    def at(self, mu: float) -> float:
        """Params of the latency-feasible Lagrangian answer at `mu` (its lam chosen by the bracket walk).

        Raises LagrangianInfeasible when no configuration meets the latency budget at all.
        """
        chain = self.chain
        self.steps += 1
        cost = tuple(c + mu * p for c, p in zip(chain.cost, chain.params))
        view = Chain(chain.choices, chain.constant_ms, chain.latency, cost, chain.params, chain.macs)
        found = solve(view, self.budget_ms)
        self.consider(found.idx)
        lam = found.gamma if math.isfinite(found.gamma) and found.gamma > 0 else 0.0
        self._bound_at(lam, mu, cost)
        return float(chain.params_of(found.idx))

    def at_front(self, mu: float, limits: FrontLimits) -> float:
        """Params of the least `cost + mu * params` within the latency budget, from the exact front.

        Its value minus mu * P bounds the optimum from below (only params is relaxed).
        """
        chain = self.chain
        self.steps += 1
        cost = tuple(c + mu * p for c, p in zip(chain.cost, chain.params))
        view = Chain(chain.choices, chain.constant_ms, chain.latency, cost, chain.params, chain.macs)
        front = build_front(view, None, limits, "(latency, cost + mu params) front")
        pos = front.position(self.budget_ms)
        if pos < 0:
            raise LagrangianInfeasible(self.budget_ms, float(front.latency[0]))
        idx = tuple(int(i) for i in front.configs[pos])
        self.consider(idx)
        q = float(front.cost[pos]) - mu * slack(self.max_params)
        if math.isfinite(q) and q > self.bound:
            self.bound = q
        return float(chain.params_of(idx))

    def _bound_at(self, lam: float, mu: float, cost: tuple) -> None:
        """The dual value q(lam, mu); its arg-min is a candidate too."""
        chain = self.chain
        value, idx = min_sum([c + lam * t for c, t in zip(cost, chain.latency)])
        q = value + lam * chain.constant_ms - lam * slack(self.budget_ms) - mu * slack(self.max_params)
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


def two_budget_lagrangian(chain: Chain, budget_ms: float, max_params: float, deadline: float,
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
    search = DualSearch(chain, budget_ms, max_params)
    if seed is not None:
        search.consider(seed.idx, "incumbent")
    for idx in repairs:
        search.consider(tuple(idx), "repair")

    scale = max(abs(chain.cost_of(min_sum(chain.cost)[1])), abs(chain.cost_of(min_sum(chain.params)[1])), 1e-12)
    # the Viterbi phase takes at most half the time left, leaving the rest to the exact-latency phase
    halfway = deadline - 0.5 * max(0.0, deadline - time.monotonic()) if front_limits is not None else deadline
    _bisect_mu(_budgeted(search.at, MIN_STEPS, MAX_STEPS, halfway), max_params, scale)
    if front_limits is not None:
        try:
            _bisect_mu(_budgeted(lambda mu: search.at_front(mu, front_limits), MIN_FRONT_STEPS, MAX_FRONT_STEPS,
                                 deadline), max_params, scale)
        except FrontLimitExceeded:
            pass  # the exact latency fronts of this objective are too large: the Viterbi bound stands
    if search.best is not None:
        search.consider(improve(chain, search.best.idx, budget_ms, max_params), search.source)
    return Approximate(search.best, search.bound, search.steps, search.source)


def _window(mats: tuple[np.ndarray, ...], path: list[int], k: int, width: int) -> np.ndarray:
    """Per choice of layers k (.. k+1 when width 2), the sum of the block entries that touch them."""
    prev, nxt = path[k], path[k + width + 1]
    if width == 1:
        return mats[k][prev] + mats[k + 1][:, nxt]
    return mats[k][prev][:, None] + mats[k + 1] + mats[k + 2][:, nxt][None, :]


def improve(chain: Chain, idx: tuple[int, ...], budget_ms: float, max_params: float,
            sweeps: int = IMPROVE_SWEEPS) -> tuple[int, ...]:
    """Local search from a configuration within both budgets: re-choose two adjacent layers at a time
    while that lowers the cost and keeps both budgets (the Lagrangian cannot reach inside its hull)."""
    assert chain.params is not None
    mats = (chain.latency, chain.cost, chain.params)
    current, width = list(idx), min(2, chain.num_layers)
    for _ in range(sweeps):
        moved = False
        for k in range(chain.num_layers - width + 1):
            path = [0, *current, 0]
            here = tuple(path[k + 1 : k + 1 + width])
            totals = (chain.latency_of(current), chain.cost_of(current), chain.params_of(current))
            lat, cost, par = (t - _window(m, path, k, width)[here] + _window(m, path, k, width)
                              for t, m in zip(totals, mats))
            cost = np.where(within(lat, budget_ms) & within(par, max_params), cost, np.inf)
            pick = np.unravel_index(int(np.argmin(cost)), cost.shape)
            if cost[pick] < totals[1] - margin(totals[1]):
                current[k : k + width] = [int(i) for i in pick]
                moved = True
        if not moved:
            break
    return tuple(current)


def gap_of(cost: float, dual_bound: float) -> tuple[float, float | None]:
    """(absolute, relative) gap of a feasible cost to a lower bound; relative to |cost| (None when cost is 0)."""
    gap = max(0.0, cost - dual_bound)
    if gap == 0.0:
        return 0.0, 0.0
    return gap, (gap / abs(cost) if cost != 0 else None)
