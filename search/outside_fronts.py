"""Per variable and state, a staircase of least cost against x over the rest of the tree: a bound on completions.

For variable v in state j, the outside of v is everything not in v's subtree: the edge to its
parent and all beyond it. `least_cost(v, room)` bounds from below the cost the outside can
add while its x (latency or params) stays within `room`: the two-budget search drops a partial
configuration whose cost plus that bound cannot beat the best known one.

The staircases are built from the virtual root down on a grid of `BINS` bins of x (bin width
w = the largest possible x / BINS): each step from a parent p to a child c adds, per pair of
states, p's unary term, the least (x, cost) of c's siblings' subtrees (each at its own least:
a lower bound) and the edge term, with x rounded down to whole bins and cost exact. Rounding
down only lowers the bound, so it stays valid; a configuration whose x fits the room also fits
it in bins. Each table is kept as a running minimum over x (a staircase), so a look-up is one
index. A step costs K_p * K_c vector operations of BINS entries, whatever the front sizes.
"""

from __future__ import annotations

import numpy as np

from .budget import BUDGET_RTOL
from .elimination import Completion, Plan
from .tree import Terms

__all__ = ["OutsideFronts", "BINS"]

#: Bins of x per staircase (the bound is weaker by at most the tree's depth times one bin).
BINS = 8192


class OutsideFronts:
    """Binned (x, least cost) staircases of every variable's outside, per state; built once per tree and criterion."""

    def __init__(self, plan: Plan, x: Terms, cost: Terms, x_rest: Completion, cost_rest: Completion,
                 constant: float = 0.0, bins: int = BINS) -> None:
        n = plan.virtual
        self.plan = plan
        xs_u = [plan.unary(x, v, constant) for v in range(n + 1)]
        xs_e = [plan.edge(x, v) for v in range(n)]
        # no rounding down makes sense for negative terms: then the bound is off (-inf everywhere)
        self.enabled = all(float(a.min(initial=0.0)) >= 0 for a in (*xs_u, *xs_e))
        top = sum(float(a.max(initial=0.0)) for a in (*xs_u, *xs_e)) * (1 + BUDGET_RTOL)
        self.width = top / bins if top > 0 else 1.0
        self.tables: list[np.ndarray | None] = [None] * (n + 1)
        if not self.enabled:
            return
        root = np.full((1, bins + 1), np.inf)
        root[0, :] = 0.0
        self.tables[n] = root
        for p in reversed(plan.order):
            for c in plan.children[p]:
                siblings = [s for s in plan.children[p] if s != c]
                x_shift = xs_u[p] + sum((x_rest.message[s] for s in siblings), np.zeros(plan.sizes[p]))
                cost_shift = plan.unary(cost, p) + sum((cost_rest.message[s] for s in siblings), np.zeros(plan.sizes[p]))
                self.tables[c] = self._down(self.tables[p], x_shift[:, None] + xs_e[c], cost_shift[:, None]
                                            + plan.edge(cost, c))

    def _down(self, table: np.ndarray, x: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """The child's staircases: per child state, the least over parent states of the shifted parent staircase."""
        width = table.shape[1]
        shift = np.floor(x / self.width).astype(np.int64)
        out = np.full((x.shape[1], width), np.inf)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                s = int(shift[i, j])
                if s < width:
                    np.minimum(out[j, s:], table[i, : width - s] + cost[i, j], out=out[j, s:])
        return out

    def least_cost(self, v: int, room: np.ndarray) -> np.ndarray:
        """Rows = states of v: a lower bound on the outside cost with x <= room (+inf where nothing can fit)."""
        if not self.enabled:
            return np.full(room.shape, -np.inf)
        table = self.tables[v]
        with np.errstate(invalid="ignore"):
            # a hair above room / width, so float rounding never lifts the bound above a fitting point
            scaled = np.floor(np.minimum(room * ((1.0 + BUDGET_RTOL) / self.width) + BUDGET_RTOL, table.shape[1] - 1.0))
        fits = scaled >= 0
        cell = np.where(fits, scaled, 0).astype(np.int64)
        out = table[np.arange(table.shape[0])[:, None], cell]
        return np.where(fits, out, np.inf)
