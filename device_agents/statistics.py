"""The per-sample statistics of a set of repeat times: one definition for agent, store, fit and tables.

The agent reports them in every bench answer; the host imports this module (device_agents
is the bottom layer), so the names and the arithmetic cannot drift apart. `std` is the
sample standard deviation (n-1), 0 for a single repeat; percentiles use linear
interpolation (numpy's default), so `iqr` = p75 - p25.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: statistic name -> its function of the per-repeat times (ms).
STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda t: float(np.min(t)),
    "median": lambda t: float(np.median(t)),
    "mean": lambda t: float(np.mean(t)),
    "p90": lambda t: float(np.percentile(t, 90)),
    "iqr": lambda t: float(np.subtract(*np.percentile(t, [75, 25]))),
    "std": lambda t: float(np.std(t, ddof=1)) if len(t) > 1 else 0.0,
}

#: the statistics a latency table may be fitted on (a sample's summary of its repeats).
FIT_STATISTICS = ("min", "median", "mean")
