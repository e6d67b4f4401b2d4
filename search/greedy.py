"""Greedy baseline (the NetAdapt / AutoSlim family), for comparison with the exact search.

From the widest configuration, repeatedly narrow the one layer whose narrowing costs the
least objective per millisecond saved, until the budget holds. It is fast and often good,
but it never widens a layer again, so it can miss the optimum or stall before the budget.
"""

from __future__ import annotations

import numpy as np

from .budget import within
from .chain import Chain


class GreedyStuck(ValueError):
    """No narrowing saves anything more, yet the budget still does not hold."""


def _local_terms(mats: tuple[np.ndarray, ...], idx: list[int], k: int) -> np.ndarray:
    """Per choice of layer k, the sum of the two block entries that touch it (the rest fixed)."""
    prev = idx[k - 1] if k > 0 else 0
    nxt = idx[k + 1] if k + 1 < len(idx) else 0
    return mats[k][prev, :] + mats[k + 1][:, nxt]


def greedy(chain: Chain, budget_ms: float, max_params: float | None = None) -> tuple[int, ...]:
    """Choice indices found by narrowing the widest configuration until both budgets hold."""
    widths = [np.asarray(c) for c in chain.choices]
    idx = [int(np.argmax(w)) for w in widths]
    use_params = max_params is not None and chain.params is not None
    while True:
        latency = chain.latency_of(idx)
        params = chain.params_of(idx) if use_params else 0.0
        slow = not within(latency, budget_ms)
        heavy = use_params and not within(params, max_params)
        if not slow and not heavy:
            return tuple(idx)
        best: tuple[float, float, int, int] | None = None
        for k, w in enumerate(widths):
            narrower = np.flatnonzero(w < w[idx[k]])
            if narrower.size == 0:
                continue
            lat_terms = _local_terms(chain.latency, idx, k)
            cost_terms = _local_terms(chain.cost, idx, k)
            saved = lat_terms[idx[k]] - lat_terms[narrower]
            if not slow:  # only the params budget is missed: save params instead
                par_terms = _local_terms(chain.params, idx, k)
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
