"""Busy loops of a known length, for timing tests: on the wall clock or on this thread's CPU clock."""

from __future__ import annotations

import time


def spin(ms: float) -> None:
    """Busy-wait `ms` of wall time."""
    end = time.perf_counter_ns() + int(ms * 1e6)
    while time.perf_counter_ns() < end:
        pass


def cpu_spin(ms: float) -> None:
    """Burn `ms` of this thread's CPU time: load on the machine stretches it in wall time only."""
    end = time.thread_time_ns() + int(ms * 1e6)
    while time.thread_time_ns() < end:
        pass
