"""The search engine: one `Searcher` per (table, objective), answering budget queries.

The CLI and the daemon both go through here (by way of `answers.answer_*`). A Searcher builds
the tree MRF of its table and objective once (`search.tree`; a chain table is the
chain-shaped tree, through the same code) and caches, lazily and thread-safely, the exact
Pareto front (per parameter budget) and the Lagrangian's hull path, so after the first
query of a kind every later one is a look-up (`lookup` answers from those caches alone, or
says there is work). Every front it builds is capped in points and memory
(front_limits.FrontLimits).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from .answers import Answer, Front
from .branch_bound import Best, SearchTooLarge, SuffixFronts, best_within, suffix_fronts
from .budget import within
from .errors import FrontLimitError, InfeasibleBudget, ObjectiveError, QueryError
from .front_limits import DEFAULT_LIMITS, FrontLimitExceeded, FrontLimits
from .greedy import GreedyStuck, greedy
from .lagrangian import LagrangianInfeasible, LagrangianPath
from .marginals import marginals as tree_marginals
from .objectives import Objective, build_objective
from .pareto_front import FrontArrays, FrontTimedOut, FrontTooLarge, build_front
from .two_budget import two_budget_lagrangian
from .table import Table
from .tree import TreeMRF, build_tree

__all__ = [
    "Answer",
    "Front",
    "FrontLimitError",
    "FrontLimits",
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


def make_objective(table: Table, objective: str | dict = "flops", loss_samples: list | None = None) -> Objective:
    """The objective over `table`: "flops", "params", a parsed widthwise-costs/1 dict, or fitted loss samples."""
    return build_objective(table, objective, loss_samples)


def _check_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise QueryError(f"{name}: must be a finite number >= 0, got {value!r}", field=name)
    return float(value)


def _check_params_budget(tree: TreeMRF, max_params: float | None) -> float | None:
    if max_params is None:
        return None
    max_params = _check_number(max_params, "max_params")
    if tree.params is None:
        raise QueryError("max_params: the table has no params, so a params budget cannot be checked", field="max_params")
    return max_params


class Searcher:
    """Answers budget queries over one table and objective; caches the exact front lazily."""

    def __init__(self, table: Table, objective: Objective, limits: FrontLimits = DEFAULT_LIMITS) -> None:
        self.table = table
        self.objective = objective
        self.limits = limits
        self.tree: TreeMRF = build_tree(table, objective)
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._fronts: OrderedDict[float | None, tuple[FrontArrays, Front]] = OrderedDict()
        self._path: tuple[LagrangianPath, list[Answer]] | None = None
        self._latency_params_front: FrontArrays | None = None
        self._params_front: FrontArrays | None = None
        self._slowest: float | None = None
        self._suffixes: SuffixFronts | None = None
        self._min_latency: float | None = None
        self._methods: dict[str, Callable[[float, float | None], Answer]] = {
            "exact": self._exact,
            "lagrangian": self._lagrangian,
            "greedy": self._greedy,
        }

    # --- cached structures -------------------------------------------------------------

    def front(self, max_params: float | None = None) -> FrontArrays:
        """The exact Pareto front as arrays (built once on first use, by one thread, then kept)."""
        return self._front_entry(max_params)[0]

    def _front_entry(self, max_params: float | None, deadline: float | None = None) -> tuple[FrontArrays, Front]:
        """The front with its points already made Answers, so a query is a binary search and an index.

        `deadline` (time.monotonic) bounds a build within max_params (FrontTimedOut past it).
        """
        entry = self._cached_front(max_params)
        if entry is not None:
            return entry
        with self._build_lock:
            entry = self._cached_front(max_params)
            if entry is None:
                front = build_front(self.tree, max_params, self.limits, deadline=deadline)
                answers = self._answers_of(front.configs, front.latency, front.cost, "exact")
                entry = (front, Front(tuple(answers), max_params))
                with self._lock:
                    self._fronts[max_params] = entry
                    while len(self._fronts) > PARAMS_FRONTS_KEPT + 1:
                        del self._fronts[next(k for k in self._fronts if k is not None)]
        return entry

    def _cached_front(self, max_params: float | None) -> tuple[FrontArrays, Front] | None:
        with self._lock:
            entry = self._fronts.get(max_params)
            if entry is not None:
                self._fronts.move_to_end(max_params)
            return entry

    def _answers_of(self, configs: np.ndarray, latency: Any, cost: Any, method: str, gammas: Any = None) -> list[Answer]:
        """Answers for many configurations at once (rows of choice indices), counts summed vectorised."""
        tree, n = self.tree, len(configs)
        configs = np.asarray(configs, dtype=np.int64).reshape(n, tree.num_layers)
        widths = np.column_stack([np.asarray(c)[configs[:, k]] for k, c in enumerate(tree.choices)]) if n else configs
        params = tree.totals(tree.params, configs).tolist() if tree.params is not None else [None] * n
        macs = tree.totals(tree.macs, configs).tolist() if tree.macs is not None else [None] * n
        gammas = [None] * n if gammas is None else list(gammas)
        return [
            Answer(tuple(w), float(lat), float(c), method, p, m, g)
            for w, lat, c, p, m, g in zip(widths.tolist(), latency, cost, params, macs, gammas)
        ]

    def lagrangian_path(self) -> LagrangianPath:
        """Every configuration the Lagrangian can return, built on first use."""
        return self._path_entry()[0]

    def _path_entry(self) -> tuple[LagrangianPath, list[Answer]]:
        if self._path is None:
            with self._build_lock:
                if self._path is None:
                    path = LagrangianPath(self.tree)
                    vertices = path.vertices
                    answers = self._answers_of(
                        [v[0] for v in vertices], [v[1] for v in vertices], [v[2] for v in vertices], "lagrangian",
                        path.gammas,
                    )
                    self._path = (path, answers)
        return self._path

    @property
    def min_latency_ms(self) -> float:
        if self._min_latency is None:
            self._min_latency = self.tree.min_latency()
        return self._min_latency

    # --- answers -------------------------------------------------------------------------

    def _answer(self, idx: Any, method: str, gamma: float | None, latency: float | None = None, cost: float | None = None) -> Answer:
        idx = tuple(int(i) for i in idx)
        tree = self.tree
        return Answer(
            widths=tree.widths(idx),
            latency_ms=tree.latency_of(idx) if latency is None else float(latency),
            cost=tree.cost_of(idx) if cost is None else float(cost),
            method=method,
            params=tree.params_of(idx),
            macs=tree.macs_of(idx),
            gamma=gamma,
        )

    def _infeasible(self, budget_ms: float, max_params: float | None, what: str = "") -> InfeasibleBudget:
        min_lat = self.min_latency_ms
        if max_params is None:
            return InfeasibleBudget(
                f"{what}budget {budget_ms:g} ms is below the smallest achievable latency {min_lat:.6g} ms",
                min_lat,
            )
        min_params = self.tree.min_params()
        if not within(min_params, max_params):
            return InfeasibleBudget(
                f"{what}no configuration has at most {max_params:g} params (the fewest is {min_params:.6g})",
                min_lat,
                min_params,
                field="max_params",
            )
        fastest = self._fastest_within_params(max_params)
        return InfeasibleBudget(
            f"{what}budget {budget_ms:g} ms is below the smallest latency achievable within {max_params:g} params, "
            f"{fastest:.6g} ms (without the params budget {min_lat:.6g} ms)",
            fastest,
            min_params,
        )

    def _suffix_fronts(self) -> SuffixFronts:
        """The shared bounds of the exact two-budget search (built on the first two-budget query)."""
        if self._suffixes is None:
            with self._build_lock:
                if self._suffixes is None:
                    self._suffixes = suffix_fronts(self.tree, self.limits.memory_only())
        return self._suffixes

    def _max_latency(self) -> float:
        """The largest predicted latency of any configuration."""
        if self._slowest is None:
            self._slowest = self.tree.max_latency()
        return self._slowest

    def _params_cost_front(self) -> FrontArrays:
        """The Pareto front of (params, cost), for params budgets under a latency budget that cannot bind."""
        if self._params_front is None:
            tree = self.tree
            params_first = tree.with_terms(latency=tree.params, constant_ms=0.0, keep_counts=False)
            with self._build_lock:
                if self._params_front is None:
                    self._params_front = build_front(params_first, None, self.limits.memory_only(),
                                                     "(params, cost) front")
        return self._params_front

    def _fastest_within_params(self, max_params: float) -> float:
        """The least latency within the params budget (NaN if none fits): a look-up in the (latency, params) front."""
        front, first = self._fastest_point_within_params(max_params)
        return float(front.latency[first]) if first >= 0 else float("nan")

    def _fastest_point_within_params(self, max_params: float) -> tuple[FrontArrays, int]:
        """The (latency, params) front (built on first use) and its fastest point within max_params (-1: none)."""
        if self._latency_params_front is None:
            tree = self.tree
            as_cost = tree.with_terms(cost=tree.params, keep_counts=False)
            with self._build_lock:
                if self._latency_params_front is None:
                    self._latency_params_front = build_front(as_cost, None, self.limits.memory_only(),
                                                             "(latency, params) front")
        front = self._latency_params_front
        fits = np.flatnonzero(within(front.cost, max_params))
        return front, int(fits[0]) if fits.size else -1

    def _exact(self, budget_ms: float, max_params: float | None) -> Answer:
        if max_params is not None:
            return self._exact_within_params(budget_ms, max_params)
        front, answers = self._front_entry(None)
        pos = front.position(budget_ms)
        if pos < 0:
            raise self._infeasible(budget_ms, None)
        return answers[pos]

    def _exact_within_params(self, budget_ms: float, max_params: float) -> Answer:
        """Both budgets: the cached front answers when its optimum fits; else branch and bound."""
        with self._lock:
            cached = self._fronts.get(max_params)
        if cached is not None:
            pos = cached[0].position(budget_ms)
            if pos < 0:
                raise self._infeasible(budget_ms, max_params)
            return cached[1][pos]
        if within(self._max_latency(), budget_ms):
            # The latency budget cannot bind: least cost within the params budget, from the (params, cost) front.
            front = self._params_cost_front()
            pos = front.position(max_params)
            if pos < 0:
                raise self._infeasible(budget_ms, max_params)
            return self._answer(front.configs[pos], "exact", None)
        if not within(self._fastest_within_params(max_params), budget_ms):
            raise self._infeasible(budget_ms, max_params)
        bound = self.limits.max_search_seconds
        deadline = time.monotonic() + bound
        if time.monotonic() >= deadline:  # a 0 s bound: straight to the Lagrangian
            return self._approximate(budget_ms, max_params, None, deadline + bound)
        try:
            best = best_within(self.tree, self.front(), budget_ms, max_params, self._suffix_fronts(),
                               deadline=deadline, max_candidates=self.limits.max_search_candidates)
        except (SearchTooLarge, FrontLimitExceeded) as exc:  # past the time or candidate bound, or a front's caps
            return self._approximate(budget_ms, max_params, getattr(exc, "incumbent", None), deadline + bound)
        if best is None:
            raise self._infeasible(budget_ms, max_params)
        return self._answer(best.idx, "exact", None, best.latency_ms, best.cost)

    def _approximate(self, budget_ms: float, max_params: float, incumbent: Best | None, deadline: float) -> Answer:
        """Past the exact search's bounds: the two-multiplier Lagrangian's best, marked approximate, with its gap."""
        front, first = self._fastest_point_within_params(max_params)
        repairs = [tuple(int(i) for i in front.configs[first])] if first >= 0 else []
        try:
            repairs.append(greedy(self.tree, budget_ms, max_params))
        except GreedyStuck:
            pass
        try:
            found = two_budget_lagrangian(self.tree, budget_ms, max_params, deadline, incumbent, repairs, self.limits)
        except LagrangianInfeasible:
            raise self._infeasible(budget_ms, max_params) from None
        if found.best is None:
            raise self._infeasible(budget_ms, max_params)
        answer = self._answer(found.best.idx, found.source, None, found.best.latency_ms, found.best.cost)
        return replace(answer, **found.marks())

    def _lagrangian(self, budget_ms: float, max_params: float | None) -> Answer:
        if max_params is not None:
            raise QueryError("max_params: the lagrangian method has no parameter budget; use exact or greedy",
                             field="max_params")
        path, answers = self._path_entry()
        try:
            return answers[path.position(budget_ms)]
        except LagrangianInfeasible:
            raise self._infeasible(budget_ms, None) from None

    def _greedy(self, budget_ms: float, max_params: float | None) -> Answer:
        if budget_ms < self.min_latency_ms and not within(self.min_latency_ms, budget_ms):
            raise self._infeasible(budget_ms, max_params)
        try:
            idx = greedy(self.tree, budget_ms, max_params)
        except GreedyStuck as exc:
            raise InfeasibleBudget(
                f"greedy: {exc}; the smallest achievable latency is {self.min_latency_ms:.6g} ms "
                "(the exact method may still find a configuration)",
                self.min_latency_ms,
                self.tree.min_params() if max_params is not None else None,
            ) from None
        return self._answer(idx, "greedy", None)

    # --- the queries ---------------------------------------------------------------------

    def query(self, budget_ms: float, method: str = "exact", max_params: float | None = None) -> Answer:
        """The least-cost configuration within the latency (and optional params) budget, by `method`."""
        budget_ms = _check_number(budget_ms, "budget_ms")
        max_params = _check_params_budget(self.tree, max_params)
        solve = self._methods.get(method)
        if solve is None:
            raise QueryError(f"method: unknown {method!r}; use one of {', '.join(self._methods)}", field="method")
        try:
            return solve(budget_ms, max_params)
        except FrontLimitExceeded as exc:
            raise _limit_error(exc) from None

    def lookup(self, budget_ms: float, method: str = "exact", max_params: float | None = None) -> Answer | None:
        """`query` when cached structures answer it at once (a binary search), else None (work to do)."""
        if method == "exact":
            entry = self._cached_front(max_params)
        elif method == "lagrangian" and max_params is None:
            entry = self._path
        else:
            return None
        if entry is None or not (isinstance(budget_ms, float) and math.isfinite(budget_ms) and budget_ms >= 0):
            return None
        pos = entry[0].position(budget_ms) if method == "exact" else _path_position(entry[0], budget_ms)
        if pos >= 0:
            return entry[1][pos]
        if max_params is None and self._min_latency is not None:
            raise self._infeasible(budget_ms, None)
        return None   # the message needs work (the least latency within max_params)

    def pareto(self, max_params: float | None = None) -> Front:
        """The exact Pareto front of (latency, cost), sorted by latency."""
        max_params = _check_params_budget(self.tree, max_params)
        bound = self.limits.max_search_seconds
        try:
            return self._front_entry(max_params, None if max_params is None else time.monotonic() + bound)[1]
        except FrontLimitExceeded as exc:
            raise _limit_error(exc) from None
        except FrontTimedOut as exc:
            raise QueryError(f"max_params: {exc} ({bound:g} s, the search time bound); the query with max_params "
                             "answers one budget pair (approximately, with its gap, if need be)",
                             field="max_params") from None
        except FrontTooLarge as exc:
            raise QueryError(f"max_params: {exc}", field="max_params") from None

    def marginals(self, budget_ms: float, temperature: float) -> list[dict[int, float]]:
        """Per variable, width -> probability under exp(-(cost + gamma * latency) / T), gamma from the budget."""
        budget_ms = _check_number(budget_ms, "budget_ms")
        temperature = _check_number(temperature, "temperature")
        if temperature == 0:
            raise QueryError("temperature: must be > 0", field="temperature")
        try:
            found = self.lagrangian_path().query(budget_ms)
        except LagrangianInfeasible:
            raise self._infeasible(budget_ms, None) from None
        # Inside the answer's optimality range, so that T -> 0 concentrates on that one answer.
        gamma = found.gamma_inside if found.gamma_inside is not None else found.gamma
        probs = tree_marginals(self.tree, gamma, temperature)
        return [{int(w): float(p) for w, p in zip(choices, row)} for choices, row in zip(self.tree.choices, probs)]


def _limit_error(exc: FrontLimitExceeded) -> FrontLimitError:
    """A front over its cap, about the objective for the exact front, else about max_params."""
    field = "objective" if exc.what == "exact front" else "max_params"
    hint = ("the lagrangian method (method 'lagrangian') answers budget queries without the exact front"
            if field == "objective" else "drop max_params, or use the greedy method")
    return FrontLimitError(f"{field}: {exc}; {hint}", field=field, limit=exc.to_json())


def _path_position(path: LagrangianPath, budget_ms: float) -> int:
    try:
        return path.position(budget_ms)
    except LagrangianInfeasible:
        return -1


METHODS = ("exact", "lagrangian", "greedy")
