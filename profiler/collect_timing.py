"""Per-sample timing: aim each sample's timed repeats at a fixed budget (e.g. 250 ms).

A fixed repeat count with `number` grown until a repeat lasts `min_repeat_ms` overshoots
badly when a run is just under that bound (12 repeats of 2 x 19 ms is 456 ms, not 250).
The collector instead predicts each configuration's latency from what it has already
measured (a straight line in MACs, refitted as samples arrive) and asks for as many
single-run repeats as fill the budget (runs are grouped only when one is shorter than
`repeat_floor_ms`, default 1 ms). Until a few samples exist it falls back to the
agent's own calibration (`repeat` repeats of at least `min_repeat_ms`). `timed_bench`
builds the bench request of one configuration, paired or not, from these settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import CollectError

#: collector-side timing keys (not sent to the agent) and the agent's own.
POLICY_KEYS = ("target_ms", "repeat_floor_ms", "max_repeat")
AGENT_KEYS = ("warmup", "repeat", "number", "min_repeat_ms", "max_total_s")


class LatencyEstimator:
    """A least-squares line of latency (ms) in MACs through the samples measured so far."""

    min_points = 3

    def __init__(self) -> None:
        self.macs: list[float] = []
        self.ms: list[float] = []
        self._line: tuple[float, float] | None = None

    def add(self, macs: float, ms: float) -> None:
        """One more measured configuration (its MACs and its per-run latency)."""
        if ms > 0 and math.isfinite(ms):
            self.macs.append(float(macs))
            self.ms.append(float(ms))
            self._line = None

    def latest(self) -> float | None:
        """The median of the last few latencies added (a fixed configuration's current level)."""
        return float(np.median(self.ms[-5:])) if self.ms else None

    def predict(self, macs: float) -> float | None:
        """The expected latency of a configuration with these MACs; None until enough samples."""
        if len(self.ms) < self.min_points or len(set(self.macs)) < 2:
            return None
        if self._line is None:
            slope, intercept = np.polyfit(np.asarray(self.macs), np.asarray(self.ms), 1)
            self._line = (float(slope), float(intercept))
        slope, intercept = self._line
        return max(slope * macs + intercept, 0.5 * min(self.ms))


@dataclass(frozen=True)
class TimingPolicy:
    """The `timing` settings of a collection: agent keys plus the collector's repeat budget."""

    settings: Mapping[str, object]

    @property
    def target_ms(self) -> float | None:
        value = self.settings.get("target_ms")
        return None if value is None else float(value)  # type: ignore[arg-type]

    def validate(self) -> None:
        """ValueError naming a collector-side key whose value is out of range."""
        for key, low in (("target_ms", 0.0), ("repeat_floor_ms", 0.0)):
            value = self.settings.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low):
                raise ValueError(f"timing.{key} must be a number above {low:g}, got {value!r}")
        cap = self.settings.get("max_repeat")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 5):
            raise ValueError(f"timing.max_repeat must be an integer of at least 5, got {cap!r}")

    def agent_fixed(self) -> dict:
        """The agent keys as given (what is sent when there is no estimate yet)."""
        return {k: v for k, v in self.settings.items() if k in AGENT_KEYS}

    def for_estimate(self, estimate_ms: float | None) -> dict:
        """Agent timing for a configuration expected to take `estimate_ms` per run."""
        fixed = self.agent_fixed()
        target = self.target_ms
        if target is None or estimate_ms is None:
            return fixed
        floor = float(self.settings.get("repeat_floor_ms", 1.0))  # type: ignore[arg-type]
        max_repeat = int(self.settings.get("max_repeat", 400))  # type: ignore[call-overload]
        number = max(1, math.ceil(floor / estimate_ms))  # a repeat lasts at least the floor
        repeat = min(max_repeat, max(5, math.ceil(target / (number * estimate_ms))))
        fixed.pop("min_repeat_ms", None)
        return {**fixed, "number": number, "repeat": repeat}


def timed_bench(
    client,
    spec: Mapping[str, object],
    policy: TimingPolicy,
    *,
    runtime: str | None,
    threads: int,
    clock: str | None,
    estimate_ms: float | None,
    pair_widths: Sequence[int] | None = None,
    pair_estimate_ms: float | None = None,
    options: dict | None = None,
) -> dict:
    """Time one configuration on the agent with the repeat budget `policy` sets for its estimated ms.

    With `pair_widths`, the same network at those widths is timed alternately with it, run by
    run (the answer's `pair` block is checked), and the budget covers both networks. The one
    place a sample's request is built: the collector and `widthwise run`'s re-timing use it.
    """
    if pair_widths is not None:
        estimate_ms = None if estimate_ms is None or pair_estimate_ms is None else estimate_ms + pair_estimate_ms
    timing = {**policy.for_estimate(estimate_ms), "threads": threads, "clock": clock}
    if pair_widths is None:
        return client.bench_spec(dict(spec), runtime=runtime, options=options, timing=timing)
    reference = {**spec, "widths": list(pair_widths)}
    response = client.bench_spec(dict(spec), pair_with=reference, runtime=runtime, options=options, timing=timing)
    if not isinstance(response.get("pair"), dict):
        raise CollectError("the agent answered without a `pair` block: it predates paired timing; "
                           "update it or collect with pairing off", field="pairing")
    return response
