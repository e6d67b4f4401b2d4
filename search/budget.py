"""The one tolerance every budget comparison of the search uses.

A predicted latency (or parameter count) is a sum of float terms, so a configuration whose
exact sum equals the budget may land a rounding error above it. Every solver compares
against `slack(limit)`, the limit plus a relative margin, so they all agree on what fits.
"""

from __future__ import annotations

import numpy as np

#: Relative slack when comparing a predicted latency (or params) against a budget.
BUDGET_RTOL = 1e-9

def margin(limit: float) -> float:
    """The rounding allowance at `limit`: BUDGET_RTOL of its size, at least BUDGET_RTOL."""
    return BUDGET_RTOL * max(1.0, abs(limit))


def slack(limit: float) -> float:
    """The largest value that still counts as within `limit`."""
    return limit + margin(limit)


def within(value: float | np.ndarray, limit: float) -> bool | np.ndarray:
    """Whether `value` (a number or an array of them) meets `limit`, allowing for float rounding."""
    return value <= slack(limit)
