"""Greedy baseline (the NetAdapt / AutoSlim family), for comparison with the exact search.

From the widest configuration, repeatedly narrow the one variable whose narrowing costs the
least objective per millisecond saved (or per parameter, once only a params budget is
missed), until the budgets hold. A variable's local terms on a tree are its unary term,
its edge to its parent and the edges of its children, the others held fixed. It is fast and often good,
but it never widens a variable again, so it can miss the optimum or stall before the budget.
"""

from __future__ import annotations

import numpy as np

from .budget import within
from .tree import Terms, TreeMRF


class GreedyStuck(ValueError):
    """No narrowing saves anything more, yet the budget still does not hold."""


def _local_terms(tree: TreeMRF, terms: Terms, children: tuple[int, ...], idx: list[int], k: int) -> np.ndarray:
    """Per choice of variable k, the sum of the terms that touch it (every other variable fixed)."""
    local = terms.unary[k].copy()
    p = tree.parent[k]
    if p >= 0:
        local += terms.edge[k][idx[p], :]
    for c in children:
        local += terms.edge[c][:, idx[c]]
    return local


def greedy(tree: TreeMRF, budget_ms: float, max_params: float | None = None) -> tuple[int, ...]:
    """Choice indices found by narrowing the widest configuration until both budgets hold."""
    widths = [np.asarray(c) for c in tree.choices]
    children = tree.children()
    idx = [int(np.argmax(w)) for w in widths]
    use_params = max_params is not None and tree.params is not None
    while True:
        latency = tree.latency_of(idx)
        params = tree.params_of(idx) if use_params else 0.0
        slow = not within(latency, budget_ms)
        heavy = use_params and not within(params, max_params)
        if not slow and not heavy:
            return tuple(idx)
        best: tuple[float, float, int, int] | None = None
        for k, w in enumerate(widths):
            narrower = np.flatnonzero(w < w[idx[k]])
            if narrower.size == 0:
                continue
            lat_terms = _local_terms(tree, tree.latency, children[k], idx, k)
            cost_terms = _local_terms(tree, tree.cost, children[k], idx, k)
            saved = lat_terms[idx[k]] - lat_terms[narrower]
            if not slow:  # only the params budget is missed: save params instead
                par_terms = _local_terms(tree, tree.params, children[k], idx, k)
                saved = par_terms[idx[k]] - par_terms[narrower]
            lost = cost_terms[narrower] - cost_terms[idx[k]]
            ok = saved > 0
            if not ok.any():
                continue
            ratio = lost[ok] / saved[ok]
            pick = int(np.argmin(ratio))
            candidate = (float(ratio[pick]), -float(saved[ok][pick]), k, int(narrower[ok][pick]))
            if best is None or candidate < best:
                best = candidate
        if best is None:
            what = f"latency {latency:.6g} ms > budget {budget_ms:g} ms" if slow else f"params {params:.6g} > {max_params:g}"
            raise GreedyStuck(f"no narrowing saves more, {what}")
        idx[best[2]] = best[3]
