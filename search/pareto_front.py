"""The exact Pareto front of (latency, cost) of a tree MRF, by dynamic programming over Pareto sets.

Leaves are eliminated towards the root (`elimination.Plan`, rooted where the work is least:
`elimination.choose_roots`): a variable's set holds, per state, the partial configurations of
its subtree that no other one with the same state beats on both latency and cost; it becomes
a message to its parent (each point extended by the edge term to every parent state, pruned
per parent state), and a parent sums its children's messages state by state (a Minkowski sum,
pruned after each child). A dominated partial configuration cannot start an optimal one, so
the virtual root's set, which merges the roots' states, is the exact front. Back-pointers
recover every front configuration. A chain is one case (each variable one child): a message
step per layer, no Minkowski sum.

With a parameter budget the parameters become a third criterion: a partial set is also
dropped when even its leanest completion would exceed the budget, and dominance compares all
three, so the front is exact under that budget too. `TreeFrontDP` is shared with the exact
two-budget search (`branch_bound.py`), which adds its own bounds as a mask.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .budget import within
from .elimination import Completion, Plan, choose_roots
from .front_limits import DEFAULT_LIMITS, FrontLimits
from .front_merge import Mask, PointSet, edge_candidates, minkowski_candidates, prune
from .tree import TreeMRF

__all__ = ["FrontArrays", "FrontTooLarge", "FrontTimedOut", "TreeFrontDP", "Guard", "build_front"]

#: Bound on the candidates of one step of the three-criterion DP (it grows much faster than two).
MAX_PARAMS_CANDIDATES = 1_000_000
#: Candidates a step must have had before its time per candidate predicts later steps (small steps are overhead).
FORESIGHT_MIN = 50_000


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


class Guard:
    """The checks before and after every DP step: deadline, candidate cap, memory and points caps."""

    def __init__(self, plan: Plan, limits: FrontLimits, what: str, deadline: float | None = None,
                 timed_out: Callable[[str], Exception] | None = None, max_candidates: int | None = None,
                 too_large: Callable[[str], Exception] | None = None) -> None:
        self.plan, self.limits, self.what = plan, limits, what
        self.deadline, self.timed_out = deadline, timed_out or FrontTimedOut
        self.max_candidates, self.too_large = max_candidates, too_large or FrontTooLarge
        self.step, self.steps, self.kept = 0, plan.steps(), 0
        #: seconds and candidates of the largest step so far, to foresee a step that would end past the deadline
        self.spent, self.done, self.started, self.pending = 0.0, 0, 0.0, 0

    def before(self, candidates: int, v: int) -> None:
        """Called before a step at variable v allocates `candidates` candidates.

        In order: the deadline, the memory cap, a step foreseen to end past the deadline, the candidate cap.
        """
        self.step += 1
        at = f"step {self.step} of {self.steps} ({self.plan.name(v)})"
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            raise self.timed_out(f"the {self.what} passed its time bound at {at}")
        self.limits.before_step(candidates, self.kept, self.step, self.steps, self.what, self.plan.name(v))
        if self.deadline is not None and self.done >= FORESIGHT_MIN:
            if now + candidates * self.spent / self.done >= self.deadline:
                raise self.timed_out(f"the {self.what} passed its time bound at {at} (foreseen)")
        if self.max_candidates is not None and candidates > self.max_candidates:
            raise self.too_large(f"the {self.what} needs {candidates:,} candidates at {at}, over {self.max_candidates:,}")
        self.started, self.pending = now, candidates

    def tick(self) -> None:
        """The deadline check inside a long step."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self.timed_out(f"the {self.what} passed its time bound at step {self.step} of {self.steps}")

    def after(self, points: int, v: int) -> None:
        self.limits.after_step(points, self.step, self.steps, self.what, self.plan.name(v))
        self.kept += points
        if self.pending >= self.done:  # the time per candidate of the largest step so far
            self.spent, self.done = time.monotonic() - self.started, self.pending


class TreeFrontDP:
    """Leaf-to-root elimination over Pareto sets of (latency, cost[, params]), with back-pointers.

    `mask_for(p, covered, with_unary)` gives, for a set at p covering those children's subtrees
    (and p's unary term when `with_unary`), the mask of candidates worth keeping (None: all).
    """

    def __init__(self, tree: TreeMRF, guard: Guard, with_params: bool = False,
                 mask_for: Callable[[int, frozenset, bool], Mask | None] | None = None) -> None:
        if with_params and tree.params is None:
            raise ValueError("max_params: the table has no params")
        self.tree, self.plan, self.guard = tree, guard.plan, guard
        self.with_params, self.mask_for = with_params, mask_for or (lambda p, covered, with_unary: None)
        self.terms = (tree.latency, tree.cost, tree.params if with_params else None)
        #: per recorded set: its variable, its points' states and links (set id, pointer per point)
        self.records: list[tuple[int, np.ndarray, list[tuple[int, np.ndarray]]]] = []

    def _record(self, v: int, state: np.ndarray, links: list[tuple[int, np.ndarray]]) -> int:
        self.records.append((v, state, links))
        return len(self.records) - 1

    def run(self) -> tuple[PointSet, int]:
        """The virtual root's set (one state: every kept configuration) and its record id."""
        plan = self.plan
        messages: dict[int, tuple[PointSet, int]] = {}
        for v in plan.order[:-1]:  # the plan ends at its virtual root
            points, rid = self._at(v, [messages.pop(c) for c in plan.children[v]])
            messages[v] = self._message(v, points, rid)
        return self._at(plan.virtual, [messages.pop(c) for c in plan.children[plan.virtual]])

    def _unary(self, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        lat, cost, par = self.terms
        u = self.plan.unary
        return (u(lat, v, self.tree.constant_ms), u(cost, v), None if par is None else u(par, v))

    def _at(self, v: int, messages: list[tuple[PointSet, int]]) -> tuple[PointSet, int]:
        """Variable v's set: its unary term plus its children's messages, summed state by state."""
        lat_u, cost_u, par_u = self._unary(v)
        k = self.plan.sizes[v]
        if not messages:
            points = PointSet(lat_u, cost_u, par_u, np.arange(k), k)
            mask = self.mask_for(v, frozenset(), True)
            if mask is not None:
                alive = np.flatnonzero(mask(lat_u[:, None], cost_u[:, None], None if par_u is None else par_u[:, None]))
                points = PointSet(lat_u[alive], cost_u[alive], None if par_u is None else par_u[alive], alive, k)
                return points, self._record(v, alive, [])
            return points, self._record(v, points.state, [])
        messages = sorted(messages, key=lambda m: -len(m[0]))  # the largest first costs nothing to add
        first, first_id = messages[0]
        points = first.shifted(lat_u, cost_u, par_u)
        rid = self._record(v, points.state, [(first_id, np.arange(len(points)))])
        covered = {self._child_of(first_id)}
        for message, mid in messages[1:]:
            left_starts, right_starts = points.starts(), message.starts()
            widest = int(np.diff(left_starts).max(initial=0)) * int(np.diff(right_starts).max(initial=0))
            self.guard.before(k * widest, v)
            (lat, cost, par), width = minkowski_candidates(points, message)
            covered.add(self._child_of(mid))
            rows, cols = prune(lat, cost, par, self.mask_for(v, frozenset(covered), True), self.guard.tick)
            left = left_starts[rows] + cols // width
            right = right_starts[rows] + cols % width
            points = PointSet(lat[rows, cols], cost[rows, cols], None if par is None else par[rows, cols], rows, k)
            rid = self._record(v, rows, [(rid, left), (mid, right)])
            self.guard.after(len(points), v)
        return points, rid

    def _child_of(self, message_id: int) -> int:
        """The child whose message is record `message_id` (its only link is the child's own set)."""
        return self.records[self.records[message_id][2][0][0]][0]

    def _message(self, v: int, points: PointSet, rid: int) -> tuple[PointSet, int]:
        """v's set extended by the edge to its parent, pruned per parent state."""
        p = self.plan.parent[v]
        k = self.plan.sizes[p]
        self.guard.before(k * len(points), v)
        edge = self.plan.edge
        lat_t, cost_t, par_t = self.terms
        lat, cost, par = edge_candidates(points, edge(lat_t, v), edge(cost_t, v), None if par_t is None else edge(par_t, v))
        rows, cols = prune(lat, cost, par, self.mask_for(p, frozenset((v,)), False), self.guard.tick)
        message = PointSet(lat[rows, cols], cost[rows, cols], None if par is None else par[rows, cols], rows, k)
        self.guard.after(len(message), v)
        return message, self._record(p, rows, [(rid, cols)])

    def configs(self, rid: int, pointer: np.ndarray) -> np.ndarray:
        """Rows of choice indices of the points `pointer` of record `rid`, traced back through the links."""
        out = np.zeros((pointer.size, self.tree.num_layers), dtype=np.int64)
        stack = [(rid, pointer)]
        while stack:
            rid, pointer = stack.pop()
            v, state, links = self.records[rid]
            if v < self.tree.num_layers:
                out[:, v] = state[pointer]
            stack.extend((lid, link[pointer]) for lid, link in links)
        return out


def _params_mask(completion: Completion, max_params: float) -> Callable[[int, frozenset, bool], Mask]:
    """Masks dropping candidates whose leanest completion would pass the params budget."""

    def mask_for(p: int, covered: frozenset, with_unary: bool) -> Mask:
        rest = completion.rest(p, covered, with_unary)[:, None]
        return lambda lat, cost, par: within(par + rest, max_params)
    return mask_for


def build_front(tree: TreeMRF, max_params: float | None = None, limits: FrontLimits = DEFAULT_LIMITS,
                what: str = "exact front", deadline: float | None = None) -> FrontArrays:
    """The exact Pareto front of (latency, cost), optionally among configurations within `max_params`.

    `limits` is checked at every step (FrontLimitExceeded names the cap and how far it got);
    `deadline` (time.monotonic) too, when given: FrontTimedOut once it has passed.
    """
    if max_params is not None and tree.params is None:
        raise ValueError("max_params: the table has no params")
    plan = Plan(tree, choose_roots(tree))
    if max_params is None:
        dp = TreeFrontDP(tree, Guard(plan, limits, what, deadline))
    else:
        within_params = f"{what} within {max_params:g} params"
        guard = Guard(plan, limits, within_params, deadline, max_candidates=MAX_PARAMS_CANDIDATES,
                      too_large=lambda m: FrontTooLarge(f"{m}; query single budgets instead"))
        dp = TreeFrontDP(tree, guard, True, _params_mask(Completion(plan, tree.params), max_params))
    points, rid = dp.run()
    return tidy_front(dp, points, rid, max_params)


def tidy_front(dp: TreeFrontDP, points: PointSet, rid: int, max_params: float | None) -> FrontArrays:
    """The final set as a front: sorted by latency, strictly falling cost, configurations traced back."""
    lat, cost, par = points.lat, points.cost, points.par
    order = np.lexsort((cost, lat))
    lat, cost, index = lat[order], cost[order], order
    if lat.size:
        best = np.minimum.accumulate(cost)
        keep = np.ones(lat.size, dtype=bool)
        keep[1:] = cost[1:] < best[:-1]
        lat, cost, index = lat[keep], cost[keep], index[keep]
    configs = dp.configs(rid, index)
    tree = dp.tree
    if par is not None:
        par = par[index]
    elif tree.params is not None:
        par = tree.totals(tree.params, configs)
    return FrontArrays(lat, cost, par, configs, max_params)
