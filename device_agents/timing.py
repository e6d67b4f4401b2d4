"""The timing loop of the agent and what it measures.

`time_session` follows TVM's time_evaluator: warm-up runs, then `repeat` repeats of
`number` back-to-back runs each, `number` being grown until one repeat lasts at least
`min_repeat_ms` (so the clock's resolution and the loop's overhead vanish in the mean of a
repeat). Each repeat yields the mean time of one run; a `Measurement`, modelled on
torch.utils.benchmark's, keeps those raw times and derives its statistics from them.
The garbage collector is off inside timed regions, and a request is bounded in time.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import BadRequest
from .runtimes import InputSpec, Session
from .statistics import STATISTICS

#: IQR / median above which a measurement carries a spread warning
SPREAD_WARNING = 0.10

#: clock name -> nanosecond counter (the one definition: the host imports it). "thread_cpu"
#: counts only the calling thread's CPU time, so time the scheduler gives other processes is
#: left out; it is valid only when the model computes on the calling thread (one intra-op
#: thread; checked for ONNX Runtime and LiteRT).
CLOCKS: dict[str, Callable[[], int]] = {
    "wall": time.perf_counter_ns,
    "thread_cpu": time.thread_time_ns,
}


@dataclass(frozen=True)
class TimingSettings:
    """A request's `timing` object (PROTOCOL.md, section 6), validated; defaults are the protocol's."""

    warmup: int = 3
    repeat: int = 15
    number: int = 0  # 0: grow until one repeat lasts min_repeat_ms
    min_repeat_ms: float = 20.0
    threads: int = 1
    max_total_s: float = 120.0
    clock: str = "wall"  # an optional protocol field: "wall" | "thread_cpu"

    def __post_init__(self) -> None:
        _check_int("warmup", self.warmup, 0)
        _check_int("repeat", self.repeat, 1)
        _check_int("number", self.number, 0)
        _check_int("threads", self.threads, 1)
        _check_float("min_repeat_ms", self.min_repeat_ms, 0.0, allow_zero=True)
        _check_float("max_total_s", self.max_total_s, 0.0, allow_zero=False)
        if not isinstance(self.clock, str) or self.clock not in CLOCKS:
            raise BadRequest(
                f"timing.clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}", field="timing.clock"
            )
        if self.clock == "thread_cpu" and self.threads != 1:
            raise BadRequest(
                f"timing.clock=thread_cpu needs timing.threads=1 (got {self.threads}): with more intra-op "
                "threads the work is not on the calling thread, so its CPU clock misses it; use clock=wall",
                field="timing.clock",
            )

    @property
    def counter(self) -> Callable[[], int]:
        """The nanosecond counter of this clock."""
        return CLOCKS[self.clock]

    @classmethod
    def from_dict(cls, obj: Mapping[str, object] | None) -> "TimingSettings":
        """Settings from a request's `timing` object; an unknown key or bad value is a BadRequest."""
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise BadRequest(f"timing must be an object, got {type(obj).__name__}", field="timing")
        known = {f.name for f in fields(cls)}
        for key in obj:
            if key not in known:
                raise BadRequest(
                    f"unknown timing key {key!r}; known: {', '.join(sorted(known))}", field=f"timing.{key}"
                )
        return cls(**{str(k): v for k, v in obj.items()})  # type: ignore[arg-type]

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_int(key: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"timing.{key} must be an integer, got {value!r}", field=f"timing.{key}")
    if value < minimum:
        raise BadRequest(f"timing.{key} must be at least {minimum}, got {value}", field=f"timing.{key}")


def _check_float(key: str, value: object, minimum: float, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"timing.{key} must be a finite number, got {value!r}", field=f"timing.{key}")
    if value < minimum or (value == minimum and not allow_zero):
        bound = f"at least {minimum}" if allow_zero else f"greater than {minimum}"
        raise BadRequest(f"timing.{key} must be {bound}, got {value}", field=f"timing.{key}")


@dataclass(frozen=True)
class Measurement:
    """Raw per-repeat times (ms per run) and the statistics the agent reports on them
    (computed by device_agents.statistics, where each is defined)."""

    times_ms: tuple[float, ...]
    number: int
    warmup: int
    notes: tuple[str, ...] = ()  # what the loop had to say (e.g. stopped early)
    peak_rss_kb: int | None = None
    spread_limit: float = field(default=SPREAD_WARNING, repr=False)

    def __post_init__(self) -> None:
        if not self.times_ms:
            raise ValueError("a measurement needs at least one repeat")

    @property
    def warnings(self) -> tuple[str, ...]:
        """The loop's notes, plus a spread warning when IQR/median exceeds `spread_limit`."""
        median = self.median
        if median > 0 and self.iqr > self.spread_limit * median:
            spread = (
                f"large spread: IQR/median = {self.iqr / median:.1%} > {self.spread_limit:.0%}; "
                "the device may be busy or throttling"
            )
            return (*self.notes, spread)
        return self.notes

    @property
    def _arr(self) -> np.ndarray:
        return np.asarray(self.times_ms, dtype=np.float64)

    @property
    def count(self) -> int:
        return len(self.times_ms)

    @property
    def repeat(self) -> int:
        return len(self.times_ms)

    def statistic(self, name: str) -> float:
        """One of the statistics named in device_agents.statistics, of the per-repeat times."""
        return STATISTICS[name](self._arr)

    @property
    def min(self) -> float:
        return self.statistic("min")

    @property
    def median(self) -> float:
        return self.statistic("median")

    @property
    def mean(self) -> float:
        return self.statistic("mean")

    @property
    def p90(self) -> float:
        return self.statistic("p90")

    @property
    def iqr(self) -> float:
        return self.statistic("iqr")

    @property
    def std(self) -> float:
        return self.statistic("std")

    def stats(self) -> dict:
        """The answer's `stats` object: every statistic of device_agents.statistics, and `count`."""
        times = self._arr
        return {**{name: fn(times) for name, fn in STATISTICS.items()}, "count": self.count}

    def to_json(self) -> dict:
        """The timing part of a bench response (times_ms, stats, warmup, number, repeat, ...)."""
        return {
            "times_ms": list(self.times_ms),
            "stats": self.stats(),
            "warmup": self.warmup,
            "number": self.number,
            "repeat": self.repeat,
            "peak_rss_kb": self.peak_rss_kb,
            "warnings": list(self.warnings),
        }


# --- drift injection (a testing aid: `serve --inject-drift RATE`) -----------------------


class DriftInjector:
    """After each timed run, busy-spin for run_time x rate x minutes since the agent started."""

    def __init__(self, rate_per_min: float = 0.0, start_ns: int | None = None) -> None:
        if not math.isfinite(rate_per_min) or rate_per_min < 0:
            raise BadRequest(f"drift rate must be a finite number >= 0, got {rate_per_min!r}")
        self.rate_per_min = float(rate_per_min)
        self.start_ns = time.perf_counter_ns() if start_ns is None else start_ns

    @property
    def active(self) -> bool:
        return self.rate_per_min > 0.0

    def spin_after(self, run_ns: int) -> None:
        """Burn CPU for the drift owed by a run that took `run_ns`."""
        now = time.perf_counter_ns()
        minutes = (now - self.start_ns) / 60e9
        end = now + int(run_ns * self.rate_per_min * minutes)
        while time.perf_counter_ns() < end:
            pass


NO_DRIFT = DriftInjector(0.0)


# --- inputs and the loop ---------------------------------------------------------------


def random_inputs(specs: Sequence[InputSpec], *, seed: int = 0, int_high: int = 1) -> dict[str, np.ndarray]:
    """Random feeds: floats uniform in [-1, 1], integers (token ids) in [0, int_high)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.uniform(-1.0, 1.0, spec.shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, max(1, int_high), spec.shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
        else:
            raise BadRequest(f"cannot make a random input of dtype {spec.dtype} for {spec.name}", input=spec.name)
    return feeds


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (Linux >= 4.0), so the next reading covers one request."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_kb() -> int | None:
    """Peak resident set size in KiB: VmHWM (since the last reset) on Linux, else getrusage's."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not a Unix: the OS gives no peak
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # macOS reports bytes


def _timed_repeat(
    run: Callable[[], object],
    number: int,
    drift: DriftInjector,
    clock: Callable[[], int] = time.perf_counter_ns,
    deadline: int | None = None,
) -> tuple[int, int]:
    """(nanoseconds on `clock`, runs done) of up to `number` back-to-back runs, gc off (drift
    spins counted in). Once `deadline` (perf_counter_ns) has passed no further run starts:
    the request's time budget holds inside a repeat too; at least one run is always done."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    now = time.perf_counter_ns
    done = 0
    try:
        start = clock()
        while done < number:
            if drift.active:
                t0 = now()
                run()
                drift.spin_after(now() - t0)
            else:
                run()
            done += 1
            if deadline is not None and done < number and now() >= deadline:
                break
        return clock() - start, done
    finally:
        if gc_was_enabled:
            gc.enable()


def budget_note(settings: TimingSettings | None = None) -> str:
    """Why a loop stopped early: the request's time budget."""
    return "the request's time budget (timing.max_total_s) is spent"


def _warm_up(run: Callable[[], object], settings: TimingSettings, deadline: int, unit: str) -> tuple[int, list[str]]:
    """Up to `settings.warmup` untimed calls of `run`, none started once `deadline` has passed:
    (calls made, a note if the time budget cut them short); `unit` names a call in that note."""
    warmed = 0
    while warmed < settings.warmup:
        if time.perf_counter_ns() >= deadline:
            return warmed, [f"warm-up cut to {warmed} of {settings.warmup} {unit}: {budget_note(settings)}"]
        run()
        warmed += 1
    return warmed, []


def time_callable(
    run: Callable[[], object], settings: TimingSettings, *, drift: DriftInjector = NO_DRIFT
) -> Measurement:
    """Time a zero-argument callable with the time-evaluator protocol (see the module docstring).

    The request's time budget (`max_total_s`) is checked before every warm-up run, every
    repeat and every run inside a repeat: once it is spent no new run starts, and the
    answer's warnings say where the loop stopped.
    """
    deadline = time.perf_counter_ns() + int(settings.max_total_s * 1e9)
    min_repeat_ns = settings.min_repeat_ms * 1e6
    warmed, warnings = _warm_up(run, settings, deadline, "runs")
    number = settings.number
    if number == 0:
        number = _calibrate(run, min_repeat_ns, settings, deadline, drift)
    times_ms: list[float] = []
    for k in range(settings.repeat):
        if k > 0 and time.perf_counter_ns() >= deadline:
            warnings.append(f"stopped after {k} of {settings.repeat} repeats: {budget_note(settings)}")
            break
        elapsed, done = _timed_repeat(run, number, drift, settings.counter, deadline)
        times_ms.append(elapsed / done / 1e6)
        if done < number:
            warnings.append(
                f"stopped in repeat {k + 1} of {settings.repeat} after {done} of {number} runs: {budget_note(settings)}"
            )
            break
    return Measurement(tuple(times_ms), number=number, warmup=warmed, notes=tuple(warnings))


def _calibrate(
    run: Callable[[], object], min_repeat_ns: float, settings: TimingSettings, deadline: int, drift: DriftInjector
) -> int:
    """Grow `number` until one repeat lasts min_repeat_ms: double while far off, then scale."""
    number = 1
    while True:
        elapsed, done = _timed_repeat(run, number, drift, settings.counter, deadline)
        elapsed = max(elapsed, 1)
        if elapsed >= min_repeat_ns or done < number:  # long enough, or the time budget is spent
            return number
        remaining = deadline - time.perf_counter_ns()
        per_run = elapsed / number
        # never plan repeats that cannot fit in what is left of max_total_s
        affordable = max(1, int(remaining / (per_run * settings.repeat))) if remaining > 0 else number
        if elapsed * 10 < min_repeat_ns:
            proposal = number * 2
        else:
            proposal = math.ceil(number * min_repeat_ns / elapsed * 1.05)
        proposal = min(proposal, affordable)
        if proposal <= number:
            return number
        number = proposal


def time_session(
    session: Session,
    settings: TimingSettings,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    int_high: int = 1,
    seed: int = 0,
    drift: DriftInjector = NO_DRIFT,
) -> Measurement:
    """Time one loaded model: random inputs unless `feeds` are given, peak RSS afterwards."""
    inputs = dict(feeds) if feeds is not None else random_inputs(session.inputs, seed=seed, int_high=int_high)
    measurement = time_callable(lambda: session.run(inputs), settings, drift=drift)
    return replace(measurement, peak_rss_kb=peak_rss_kb())
