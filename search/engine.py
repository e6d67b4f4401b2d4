"""The search engine (contract C4): one `Searcher` per (table, objective), answering budget queries.

The CLI and the daemon both go through here. A Searcher builds the chain arrays once and
caches, lazily and thread-safely, the exact Pareto front (per parameter budget) and the
Lagrangian's hull path, so after the first query of a kind every later one is a look-up.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .chain import Chain, build_chain, within
from .greedy import GreedyStuck, greedy
from .lagrangian import LagrangianInfeasible, LagrangianPath
from .marginals import marginals as chain_marginals
from .objectives import Objective, ObjectiveError, build_objective
from .pareto import Front, build_front
from .table import Table

__all__ = [
    "Answer",
    "InfeasibleBudget",
    "ObjectiveError",
    "Objective",
    "QueryError",
    "Searcher",
    "make_objective",
    "METHODS",
]

#: Parameter budgets whose exact fronts a Searcher keeps (least recently used dropped first).
PARAMS_FRONTS_KEPT = 8


class InfeasibleBudget(ValueError):
    """No configuration meets the budget; `.min_latency_ms` (and `.min_params`) say what would."""

    def __init__(self, message: str, min_latency_ms: float, min_params: float | None = None) -> None:
        super().__init__(message)
        self.min_latency_ms = min_latency_ms
        self.min_params = min_params


class QueryError(ValueError):
    """A query's parameters are invalid (a budget that is not a finite number >= 0, an unknown method)."""


@dataclass(frozen=True)
class Answer:
    """One configuration: its widths, predicted latency, objective cost, and how it was found."""

    widths: tuple[int, ...]
    latency_ms: float
    cost: float
    method: str
    params: float | None
    macs: float | None
    gamma: float | None

    def to_json(self) -> dict:
        return {
            "widths": list(self.widths),
            "latency_ms": self.latency_ms,
            "cost": self.cost,
            "method": self.method,
            "params": self.params,
            "macs": self.macs,
            "gamma": self.gamma,
        }


def make_objective(table: Table, objective: str | dict = "flops", loss_samples: list | None = None) -> Objective:
    """The objective over `table`: "flops", "params", a parsed widthwise-costs/1 dict, or fitted loss samples."""
    return build_objective(table, objective, loss_samples)


def _check_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise QueryError(f"{name}: must be a finite number >= 0, got {value!r}")
    return float(value)


class Searcher:
    """Answers budget queries over one table and objective; caches the exact front lazily."""

    def __init__(self, table: Table, objective: Objective) -> None:
        self.table = table
        self.objective = objective
        self.chain: Chain = build_chain(table, objective)
        self._lock = threading.Lock()
        self._fronts: OrderedDict[float | None, Front] = OrderedDict()
        self._path: LagrangianPath | None = None
        self._min_latency: float | None = None
        self._methods: dict[str, Callable[[float, float | None], Answer]] = {
            "exact": self._exact,
            "lagrangian": self._lagrangian,
            "greedy": self._greedy,
        }

    # --- cached structures -------------------------------------------------------------

    def front(self, max_params: float | None = None) -> Front:
        """The exact Pareto front (built on first use, then kept)."""
        with self._lock:
            front = self._fronts.get(max_params)
            if front is not None:
                self._fronts.move_to_end(max_params)
                return front
        built = build_front(self.chain, max_params)
        with self._lock:
            self._fronts[max_params] = built
            while len(self._fronts) > PARAMS_FRONTS_KEPT + 1:
                oldest = next(k for k in self._fronts if k is not None)
                del self._fronts[oldest]
        return built

    def lagrangian_path(self) -> LagrangianPath:
        """Every configuration the Lagrangian can return, built on first use."""
        path = self._path
        if path is None:
            path = LagrangianPath(self.chain)
            self._path = path
        return path

    @property
    def min_latency_ms(self) -> float:
        if self._min_latency is None:
            self._min_latency = self.chain.min_latency()
        return self._min_latency

    # --- answers -------------------------------------------------------------------------

    def _answer(self, idx: Any, method: str, gamma: float | None, latency: float | None = None, cost: float | None = None) -> Answer:
        idx = tuple(int(i) for i in idx)
        chain = self.chain
        return Answer(
            widths=chain.widths(idx),
            latency_ms=chain.latency_of(idx) if latency is None else float(latency),
            cost=chain.cost_of(idx) if cost is None else float(cost),
            method=method,
            params=chain.params_of(idx),
            macs=chain.macs_of(idx),
            gamma=gamma,
        )

    def _infeasible(self, budget_ms: float, max_params: float | None, what: str = "") -> InfeasibleBudget:
        min_lat = self.min_latency_ms
        if max_params is None:
            return InfeasibleBudget(
                f"{what}budget {budget_ms:g} ms is below the smallest achievable latency {min_lat:.6g} ms",
                min_lat,
            )
        min_params = self.chain.min_params()
        front = self.front(max_params)
        if len(front) == 0:
            return InfeasibleBudget(
                f"{what}no configuration has at most {max_params:g} params (the fewest is {min_params:.6g})",
                min_lat,
                min_params,
            )
        return InfeasibleBudget(
            f"{what}budget {budget_ms:g} ms is below the smallest latency achievable within {max_params:g} params, "
            f"{float(front.latency[0]):.6g} ms (without the params budget {min_lat:.6g} ms)",
            float(front.latency[0]),
            min_params,
        )

    def _exact(self, budget_ms: float, max_params: float | None) -> Answer:
        front = self.front(max_params)
        pos = front.position(budget_ms)
        if pos < 0:
            raise self._infeasible(budget_ms, max_params)
        return self._answer(front.configs[pos], "exact", None, front.latency[pos], front.cost[pos])

    def _lagrangian(self, budget_ms: float, max_params: float | None) -> Answer:
        if max_params is not None:
            raise QueryError("max_params: the lagrangian method has no parameter budget; use exact or greedy")
        try:
            found = self.lagrangian_path().query(budget_ms)
        except LagrangianInfeasible:
            raise self._infeasible(budget_ms, None) from None
        return self._answer(found.idx, "lagrangian", found.gamma, found.latency_ms, found.cost)

    def _greedy(self, budget_ms: float, max_params: float | None) -> Answer:
        if budget_ms < self.min_latency_ms and not within(self.min_latency_ms, budget_ms):
            raise self._infeasible(budget_ms, max_params)
        try:
            idx = greedy(self.chain, budget_ms, max_params)
        except GreedyStuck as exc:
            raise InfeasibleBudget(
                f"greedy: {exc}; the smallest achievable latency is {self.min_latency_ms:.6g} ms "
                "(the exact method may still find a configuration)",
                self.min_latency_ms,
                self.chain.min_params() if max_params is not None else None,
            ) from None
        return self._answer(idx, "greedy", None)

    # --- contract C4 -----------------------------------------------------------------------

    def query(self, budget_ms: float, method: str = "exact", max_params: float | None = None) -> Answer:
        """The least-cost configuration within the latency (and optional params) budget, by `method`."""
        budget_ms = _check_number(budget_ms, "budget_ms")
        if max_params is not None:
            max_params = _check_number(max_params, "max_params")
            if self.chain.params is None:
                raise QueryError("max_params: the table has no params, so a params budget cannot be checked")
        solve = self._methods.get(method)
        if solve is None:
            raise QueryError(f"method: unknown {method!r}; use one of {', '.join(self._methods)}")
        return solve(budget_ms, max_params)

    def pareto(self, max_params: float | None = None) -> list[Answer]:
        """The exact Pareto front of (latency, cost), sorted by latency."""
        if max_params is not None:
            max_params = _check_number(max_params, "max_params")
            if self.chain.params is None:
                raise QueryError("max_params: the table has no params, so a params budget cannot be checked")
        front = self.front(max_params)
        return [
            self._answer(front.configs[i], "exact", None, front.latency[i], front.cost[i]) for i in range(len(front))
        ]

    def marginals(self, budget_ms: float, temperature: float) -> list[dict[int, float]]:
        """Per layer, width -> probability under exp(-(cost + gamma * latency) / T), gamma from the budget."""
        budget_ms = _check_number(budget_ms, "budget_ms")
        temperature = _check_number(temperature, "temperature")
        if temperature == 0:
            raise QueryError("temperature: must be > 0")
        try:
            found = self.lagrangian_path().query(budget_ms)
        except LagrangianInfeasible:
            raise self._infeasible(budget_ms, None) from None
        # Inside the answer's optimality range, so that T -> 0 concentrates on that one answer.
        gamma = found.gamma_inside if found.gamma_inside is not None else found.gamma
        probs = chain_marginals(self.chain, gamma, temperature)
        return [{int(w): float(p) for w, p in zip(choices, row)} for choices, row in zip(self.chain.choices, probs)]


METHODS = ("exact", "lagrangian", "greedy")
