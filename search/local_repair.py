"""Local repair of a configuration within two budgets: re-choose one variable, or a variable and its parent.

The two-multiplier Lagrangian only reaches configurations on the lower convex hull of its
criteria; a feasible one inside the hull may cost less. `improve` walks from a feasible
configuration to cheaper feasible neighbours (every variable paired with its parent, each
root alone) until none is cheaper, so the approximate answer is at least locally optimal.
"""

from __future__ import annotations

import numpy as np

from .budget import margin, within
from .tree import Terms, TreeMRF

__all__ = ["improve", "IMPROVE_SWEEPS"]

#: Sweeps of the local search (each re-chooses every variable with its parent).
IMPROVE_SWEEPS = 20


def _touching(tree: TreeMRF, children: tuple[tuple[int, ...], ...], terms: Terms, idx: list[int], v: int,
              skip: int = -1) -> np.ndarray:
    """Per choice of v, the sum of the terms that involve v (all others fixed at `idx`), without v's edge to `skip`."""
    total = np.array(terms.unary[v], dtype=np.float64)
    p = tree.parent[v]
    if p >= 0 and p != skip:
        total = total + terms.edge[v][idx[p], :]
    for c in children[v]:
        if c != skip:
            total = total + terms.edge[c][:, idx[c]]
    return total


def _local(tree: TreeMRF, children: tuple[tuple[int, ...], ...], terms: Terms, idx: list[int], v: int) -> np.ndarray:
    """The terms that change when v and its parent (axes (K_parent, K_v)) or a root v alone (axis (1, K_v)) move."""
    p = tree.parent[v]
    if p < 0:
        return _touching(tree, children, terms, idx, v)[None, :]
    return (_touching(tree, children, terms, idx, v, p)[None, :] + _touching(tree, children, terms, idx, p, v)[:, None]
            + terms.edge[v])


def improve(tree: TreeMRF, idx: tuple[int, ...], budget_ms: float, max_params: float,
            sweeps: int = IMPROVE_SWEEPS) -> tuple[int, ...]:
    """From a configuration within both budgets, move to cheaper ones within both while a neighbour is cheaper."""
    assert tree.params is not None
    children = tree.children()
    current = [int(i) for i in idx]
    for _ in range(sweeps):
        moved = False
        for v in tree.order:
            p = tree.parent[v]
            here = (current[p] if p >= 0 else 0, current[v])
            totals = (tree.latency_of(current), tree.cost_of(current), tree.params_of(current))
            lat, cost, par = (t - local[here] + local for t, local in
                              ((t, _local(tree, children, terms, current, v))
                               for t, terms in zip(totals, (tree.latency, tree.cost, tree.params))))
            cost = np.where(within(lat, budget_ms) & within(par, max_params), cost, np.inf)
            pick = np.unravel_index(int(np.argmin(cost)), cost.shape)
            if cost[pick] < totals[1] - margin(totals[1]):
                if p >= 0:
                    current[p] = int(pick[0])
                current[v] = int(pick[1])
                moved = True
        if not moved:
            break
    return tuple(current)
