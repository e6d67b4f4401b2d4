"""Paired timing: a target network alternated run by run with a fixed reference network.

On a shared or throttling device the speed of the machine moves within seconds; a target
and a reference timed back to back see the same machine, so their ratio is nearly free
of it. `time_pair` warms both up, calibrates `number` for each (as time_callable does),
then times `repeat` pairs, alternating which of the two goes first so that any order
effect (caches, frequency steps) cancels, and reports the per-pair ratios target/reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .statistics import STATISTICS
from .timing import (
    NO_DRIFT,
    DriftInjector,
    Measurement,
    TimingSettings,
    _calibrate,
    _timed_repeat,
    _warm_up,
    budget_note,
)


@dataclass(frozen=True)
class PairMeasurement:
    """The target's and the reference's measurements, taken alternately, and their ratios."""

    target: Measurement
    reference: Measurement

    def __post_init__(self) -> None:
        if self.target.count != self.reference.count:
            raise ValueError("a paired measurement needs as many reference repeats as target repeats")

    @property
    def ratios(self) -> np.ndarray:
        """Per pair: target ms per run / reference ms per run."""
        return np.asarray(self.target.times_ms) / np.asarray(self.reference.times_ms)

    def pair_json(self) -> dict:
        """The response's `pair` block (reference times, ratios and their summary)."""
        ratios = self.ratios
        return {
            "ref_times_ms": list(self.reference.times_ms),
            "ratios": [float(r) for r in ratios],
            "ratio_median": STATISTICS["median"](ratios),
            "ratio_iqr": STATISTICS["iqr"](ratios),
            "ref_median_ms": self.reference.median,
            "ref_number": self.reference.number,
            "order": "alternating",
        }


def time_pair(
    run_target: Callable[[], object],
    run_reference: Callable[[], object],
    settings: TimingSettings,
    *,
    drift: DriftInjector = NO_DRIFT,
) -> PairMeasurement:
    """Time target and reference alternately: pair k runs target first when k is even."""
    deadline = time.perf_counter_ns() + int(settings.max_total_s * 1e9)
    warmed, notes = _warm_up(lambda: (run_target(), run_reference()), settings, deadline, "pairs")
    numbers = [settings.number, settings.number]
    if settings.number == 0:
        min_repeat_ns = settings.min_repeat_ms * 1e6
        numbers = [_calibrate(run, min_repeat_ns, settings, deadline, drift) for run in (run_target, run_reference)]
    runs = (run_target, run_reference)
    times: tuple[list[float], list[float]] = ([], [])
    for k in range(settings.repeat):
        if k > 0 and time.perf_counter_ns() >= deadline:
            notes.append(f"stopped after {k} of {settings.repeat} pairs: {budget_note(settings)}")
            break
        cut = False
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            elapsed, done = _timed_repeat(runs[which], numbers[which], drift, settings.counter, deadline)
            times[which].append(max(elapsed, 1) / done / 1e6)
            cut = cut or done < numbers[which]
        if cut:  # both halves of the pair were timed (each at least one run): the ratio stands
            notes.append(f"stopped in pair {k + 1} of {settings.repeat} inside a repeat: {budget_note(settings)}")
            break
    target = Measurement(tuple(times[0]), number=numbers[0], warmup=warmed, notes=tuple(notes))
    reference = Measurement(tuple(times[1]), number=numbers[1], warmup=warmed)
    return PairMeasurement(target, reference)
