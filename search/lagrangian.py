"""Lagrangian search: minimise `cost + gamma * latency` and move gamma until the budget holds.

The arg-min as a function of gamma is piecewise constant; its values are the vertices of the
lower convex hull of the (latency, cost) set. `solve` brackets gamma between a configuration
that misses the budget and one that meets it and splits the bracket at the gamma where the two
tie (the secant of the hull), which lands on a hull vertex in a handful of min-sum passes
over the tree (`search.viterbi`) instead of a fixed number of halvings; with numba the whole
walk is one compiled call (`search.viterbi_jit.bracket_walk`), the numpy passes here its
fallback and reference.
`LagrangianPath` enumerates every vertex once, so a later query is a binary search. Either
way the answer is the hull vertex of largest latency within the budget: the Lagrangian cannot
reach Pareto points inside the hull.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .budget import BUDGET_RTOL, within
from .tree import TreeMRF
from .viterbi import LagrangianViterbi, compiled_kernels

#: Relative margin by which a configuration must beat a hull edge to count as a new vertex.
EDGE_RTOL = 1e-10
#: Bound on min-sum passes of one query (the walk normally needs far fewer).
MAX_PASSES = 200


class LagrangianInfeasible(ValueError):
    """No configuration meets the budget; carries the smallest achievable latency."""

    def __init__(self, budget_ms: float, min_latency_ms: float) -> None:
        super().__init__(f"budget {budget_ms:g} ms is below the smallest achievable latency {min_latency_ms:.6g} ms")
        self.min_latency_ms = min_latency_ms


@dataclass(frozen=True)
class LagrangianAnswer:
    """A hull vertex: choice indices, latency, cost, and the gamma at which it was chosen."""

    idx: tuple[int, ...]
    latency_ms: float
    cost: float
    gamma: float
    passes: int = 0
    #: A gamma strictly inside the range where this vertex is the unique arg-min (when known).
    gamma_inside: float | None = None


class Evaluator:
    """Min-sum passes plus the latency and cost of their answers, over one tree.

    `compiled` chooses the passes as `compiled_kernels` does (False: numpy); both give the
    same configurations.
    """

    def __init__(self, tree: TreeMRF, compiled: bool | None = False) -> None:
        self.tree = tree
        self.viterbi = LagrangianViterbi(tree)
        self.compiled = compiled
        self._ends: tuple[tuple, tuple] | None = None

    def point(self, idx: tuple[int, ...]) -> tuple[tuple[int, ...], float, float]:
        return idx, self.tree.latency_of(idx), self.tree.cost_of(idx)

    def at(self, gamma: float) -> tuple[tuple[int, ...], float, float]:
        return self.point(self.viterbi.solve(gamma, self.compiled))

    def ends(self) -> tuple[tuple, tuple]:
        """The least-cost configuration (gamma = 0) and the fastest one (gamma -> infinity).

        They do not depend on the budget, so they are found once per tree and kept.
        """
        if self._ends is None:
            self._ends = (self.at(0.0), self.point(self.viterbi.fastest(self.compiled)))
        return self._ends

    def split(self, slow: tuple, fast: tuple) -> tuple[float, tuple | None]:
        """The gamma where `slow` and `fast` tie, and a configuration strictly below their edge (or None)."""
        gamma = (fast[2] - slow[2]) / (slow[1] - fast[1])
        mid = self.at(gamma)
        edge = slow[2] + gamma * slow[1]
        value = mid[2] + gamma * mid[1]
        margin = EDGE_RTOL * max(1.0, abs(slow[2]) + abs(gamma * slow[1]))
        return gamma, (mid if value < edge - margin else None)


def solve(
    tree: TreeMRF, budget_ms: float, evaluator: Evaluator | None = None, *, compiled: bool | None = None
) -> LagrangianAnswer:
    """From scratch: the hull vertex of largest latency within the budget, by splitting the gamma bracket.

    `compiled` None takes the numba walk when available (see `compiled_kernels`), True
    insists on it, False runs the numpy passes. Both return the same answer.
    """
    ev = evaluator or Evaluator(tree)
    kernels = compiled_kernels(compiled)
    if kernels is not None:
        return _solve_compiled(kernels, ev, budget_ms)
    fresh = ev._ends is None
    slow, fast = ev.ends()
    passes = 2 if fresh else 0
    if within(slow[1], budget_ms):
        return LagrangianAnswer(slow[0], slow[1], slow[2], 0.0, passes)
    if not within(fast[1], budget_ms):
        raise LagrangianInfeasible(budget_ms, tree.min_latency())
    gamma = float("inf")
    while passes < MAX_PASSES:
        if slow[1] <= fast[1]:  # the bracket closed: the fast end is also the slow end's better
            break
        gamma, mid = ev.split(slow, fast)
        passes += 1
        if mid is None:
            break
        if within(mid[1], budget_ms):
            fast = mid
        else:
            slow = mid
    return LagrangianAnswer(fast[0], fast[1], fast[2], gamma, passes)


def _solve_compiled(kernels, ev: Evaluator, budget_ms: float) -> LagrangianAnswer:
    """The bracket walk as one compiled call (both ends included: it keeps nothing between calls)."""
    v = ev.viterbi
    status, idx, latency, cost, gamma, passes = kernels.bracket_walk(
        v.flat, v.index, ev.tree.constant_ms, float(budget_ms), BUDGET_RTOL, EDGE_RTOL, MAX_PASSES
    )
    if status == kernels.INFEASIBLE:
        raise LagrangianInfeasible(budget_ms, ev.tree.min_latency())
    return LagrangianAnswer(tuple(idx.tolist()), latency, cost, gamma, passes)


class LagrangianPath:
    """Every configuration the Lagrangian can return (the hull vertices), sorted by latency.

    Its passes are the compiled ones when `compiled_kernels(compiled)` gives them (the default
    follows WIDTHWISE_JIT), else numpy's; the vertices are the same.
    """

    def __init__(self, tree: TreeMRF, compiled: bool | None = None) -> None:
        ev = Evaluator(tree, compiled)
        slow, fast = ev.ends()
        found = {slow[0]: slow, fast[0]: fast}
        stack = [(slow, fast)] if slow[1] > fast[1] else []
        passes = 2
        while stack:
            a, b = stack.pop()
            _, mid = ev.split(a, b)
            passes += 1
            if mid is None or mid[0] in found:
                continue
            found[mid[0]] = mid  # strictly below the edge: a vertex (perhaps as fast as an end, but cheaper)
            for slower, faster in ((a, mid), (mid, b)):
                if slower[1] > faster[1]:
                    stack.append((slower, faster))
        # Keep the lower-left staircase: by latency, each vertex strictly cheaper than the faster ones.
        vertices = []
        for point in sorted(found.values(), key=lambda p: (p[1], p[2])):
            if not vertices or point[2] < vertices[-1][2]:
                vertices.append(point)
        self.passes = passes
        self.vertices = vertices
        self.latencies = [v[1] for v in vertices]
        # The gamma at which vertex i ties with the next slower one: the least gamma choosing it.
        self.gammas = [
            (vertices[i][2] - vertices[i + 1][2]) / (vertices[i + 1][1] - vertices[i][1])
            for i in range(len(vertices) - 1)
        ] + [0.0]

    def query(self, budget_ms: float) -> LagrangianAnswer:
        """The vertex of largest latency within the budget: one binary search."""
        pos = self.position(budget_ms)
        idx, latency, cost = self.vertices[pos]
        low = self.gammas[pos]
        high = self.gammas[pos - 1] if pos > 0 else None
        inside = 0.5 * (low + high) if high is not None else (2.0 * low if low > 0 else 0.0)
        return LagrangianAnswer(idx, latency, cost, low, gamma_inside=inside)

    def position(self, budget_ms: float) -> int:
        """Index of the vertex the Lagrangian returns for this budget; LagrangianInfeasible if none fits."""
        pos = bisect.bisect_right(self.latencies, budget_ms) - 1
        while pos + 1 < len(self.latencies) and within(self.latencies[pos + 1], budget_ms):
            pos += 1
        if pos < 0:
            if within(self.latencies[0], budget_ms):
                pos = 0
            else:
                raise LagrangianInfeasible(budget_ms, self.latencies[0])
        return pos
