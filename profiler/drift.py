"""Drift correction: a robust trend of the reference configuration's latency over time.

The collector re-times one fixed configuration at intervals. Its latency should not
change, so how it does change (throttling, a busier machine) is taken as a factor shared
by every configuration timed at that moment. The trend is, at each reference, a robust
(Theil-Sen) line through the log latencies of its few neighbours: exact on a steady
drift, and blind to a burst that hits one reference of a window. It is linearly
interpolated in time and stays flat beyond the first and last reference. Dividing a
sample by the trend at its time, and multiplying by the trend's median level, removes
the drift while keeping the unit in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def theil_sen(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Robust line through (t, y): median pairwise slope, median intercept."""
    if len(t) < 2:
        return 0.0, float(np.median(y))
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    ok = dt > 0
    slope = float(np.median((y[j] - y[i])[ok] / dt[ok])) if ok.any() else 0.0
    return slope, float(np.median(y - slope * t))


def running_theil_sen(t: np.ndarray, y: np.ndarray, window: int) -> np.ndarray:
    """Each point replaced by a robust local line's value there; windows slide, not shrink, at the ends."""
    n = len(t)
    size = min(window, n)
    out = np.empty(n)
    for i in range(n):
        lo = min(max(0, i - size // 2), n - size)
        slope, intercept = theil_sen(t[lo : lo + size], y[lo : lo + size])
        out[i] = intercept + slope * t[i]
    return out


@dataclass(frozen=True)
class DriftTrend:
    """The reference's smoothed log latency at its re-timing times, and the level to scale to."""

    times: np.ndarray
    log_level: np.ndarray
    log_scale: float

    @property
    def empty(self) -> bool:
        return len(self.times) == 0

    def factor(self, t: np.ndarray | float) -> np.ndarray:
        """What to multiply a latency timed at t by to remove the drift (1 without references)."""
        if self.empty:
            return np.ones(np.shape(t))
        return np.exp(self.log_scale - np.interp(t, self.times, self.log_level))


def fit_trend(times: np.ndarray, latency_ms: np.ndarray, *, window: int = 5) -> DriftTrend:
    """The robust trend of a reference series (times in seconds, latencies > 0 in ms)."""
    times = np.asarray(times, dtype=np.float64)
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    if times.shape != latency_ms.shape:
        raise ValueError(f"{len(times)} reference times but {len(latency_ms)} latencies")
    keep = np.isfinite(times) & np.isfinite(latency_ms) & (latency_ms > 0)
    times, latency_ms = times[keep], latency_ms[keep]
    if len(times) == 0:
        return DriftTrend(times, times.copy(), 0.0)
    order = np.argsort(times, kind="stable")
    times, logs = times[order], np.log(latency_ms[order])
    level = running_theil_sen(times - times[0], logs, window)
    return DriftTrend(times, level, float(np.median(level)))
