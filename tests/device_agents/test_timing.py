"""The timing loop and its statistics: settings validation, numpy-checked stats, the loop itself."""

import gc
import math
import time

import numpy as np
import pytest

from widthwise.device_agents.errors import BadRequest
from widthwise.device_agents.runtimes import InputSpec
from widthwise.device_agents.statistics import FIT_STATISTICS, STATISTICS
from widthwise.device_agents.timing import (
    DriftInjector,
    Measurement,
    TimingSettings,
    random_inputs,
    time_callable,
    time_session,
)
from tests.support.spin import cpu_spin, spin


# --- settings ------------------------------------------------------------------------------


def test_defaults_are_the_protocol_defaults():
    s = TimingSettings.from_dict(None)
    assert (s.warmup, s.repeat, s.number, s.min_repeat_ms, s.threads, s.max_total_s) == (3, 15, 0, 20.0, 1, 120.0)
    assert TimingSettings.from_dict({"repeat": 4, "min_repeat_ms": 5}).to_json()["repeat"] == 4


def test_unknown_timing_key_is_named():
    with pytest.raises(BadRequest, match="'repeats'") as exc:
        TimingSettings.from_dict({"repeats": 3})
    assert exc.value.details["field"] == "timing.repeats"


@pytest.mark.parametrize(
    "key, value",
    [
        ("warmup", -1),
        ("repeat", 0),
        ("number", -2),
        ("threads", 0),
        ("threads", 1.5),
        ("repeat", True),
        ("warmup", "3"),
        ("min_repeat_ms", -1.0),
        ("min_repeat_ms", float("nan")),
        ("max_total_s", 0),
        ("max_total_s", float("inf")),
    ],
)
def test_bad_values_are_named(key, value):
    with pytest.raises(BadRequest, match=f"timing.{key}"):
        TimingSettings.from_dict({key: value})


def test_timing_must_be_an_object():
    with pytest.raises(BadRequest, match="timing must be an object"):
        TimingSettings.from_dict([1, 2])


# --- statistics ----------------------------------------------------------------------------


def test_statistics_agree_with_numpy_on_known_timings():
    times = [1.0, 1.2, 0.9, 1.1, 5.0, 1.05, 0.95]
    m = Measurement(tuple(times), number=10, warmup=2)
    arr = np.array(times)
    assert m.count == m.repeat == 7
    assert m.min == 0.9
    assert m.median == pytest.approx(np.median(arr))
    assert m.mean == pytest.approx(arr.mean())
    assert m.p90 == pytest.approx(np.percentile(arr, 90))
    assert m.iqr == pytest.approx(np.percentile(arr, 75) - np.percentile(arr, 25))
    assert m.std == pytest.approx(arr.std(ddof=1))
    body = m.to_json()
    assert body["times_ms"] == times and body["number"] == 10 and body["warmup"] == 2 and body["repeat"] == 7
    assert set(body["stats"]) == {"min", "median", "mean", "p90", "iqr", "std", "count"}


def test_stats_are_the_one_definition_of_the_statistics():
    # device_agents.statistics is the only definition (the host imports it): the answer's
    # `stats` holds each of its statistics, computed by its function, plus `count`
    times = (3.0, 1.2, 0.9, 1.1, 5.0, 1.05)
    m = Measurement(times, number=4, warmup=1)
    stats = m.stats()
    assert list(stats) == [*STATISTICS, "count"]
    assert stats["count"] == len(times)
    for name, fn in STATISTICS.items():
        assert stats[name] == fn(np.asarray(times)), name
        assert getattr(m, name) == stats[name], name
    assert set(FIT_STATISTICS) <= set(STATISTICS)


def test_single_repeat_has_zero_spread():
    m = Measurement((2.5,), number=1, warmup=0)
    assert (m.median, m.p90, m.iqr, m.std, m.count) == (2.5, 2.5, 0.0, 0.0, 1)
    assert m.warnings == ()


def test_spread_warning_only_when_iqr_is_large():
    tight = Measurement((1.0, 1.01, 0.99, 1.02, 0.98), number=1, warmup=0)
    assert tight.warnings == ()
    loose = Measurement((1.0, 1.5, 0.7, 1.3, 0.8), number=1, warmup=0)
    assert len(loose.warnings) == 1 and "IQR/median" in loose.warnings[0]
    assert loose.to_json()["warnings"] == list(loose.warnings)


def test_empty_measurement_is_refused():
    with pytest.raises(ValueError):
        Measurement((), number=1, warmup=0)


# --- the loop ------------------------------------------------------------------------------


def test_number_grows_until_a_repeat_lasts_min_repeat_ms():
    calls = []
    settings = TimingSettings(warmup=2, repeat=3, min_repeat_ms=5, clock="thread_cpu")
    m = time_callable(lambda: calls.append(cpu_spin(0.2)), settings)
    # 5 ms of >= 0.2 ms runs on the thread's CPU clock (which a descheduled thread does not advance):
    # grown past 1, and never past 5 / 0.2 x 1.05
    assert 2 <= m.number <= 27
    assert m.count == 3 and m.warmup == 2
    assert all(t >= 0.2 for t in m.times_ms)
    assert len(calls) >= 2 + 3 * m.number


def test_fixed_number_and_warmup_are_honoured():
    calls = []
    m = time_callable(lambda: calls.append(1), TimingSettings(warmup=4, repeat=5, number=7, min_repeat_ms=1000))
    assert m.number == 7 and len(calls) == 4 + 5 * 7


def test_zero_min_repeat_ms_means_one_run_per_repeat():
    m = time_callable(lambda: None, TimingSettings(warmup=0, repeat=2, min_repeat_ms=0))
    assert m.number == 1


def test_measured_time_is_the_run_time():
    m = time_callable(lambda: spin(2.0), TimingSettings(warmup=1, repeat=3, number=2))
    assert m.min >= 2.0  # a lower bound: a busy machine can only lengthen a spin


def test_gc_is_off_in_the_timed_region_and_restored():
    seen = []
    assert gc.isenabled()
    time_callable(lambda: seen.append(gc.isenabled()), TimingSettings(warmup=0, repeat=2, number=3))
    assert seen == [False] * 6
    assert gc.isenabled()


def test_warmup_is_bounded_by_max_total_s():
    m = time_callable(lambda: spin(30), TimingSettings(warmup=20, repeat=2, number=1, max_total_s=0.1))
    assert any("warm-up cut" in w for w in m.warnings) and m.count == 1
    assert 1 <= m.warmup < 20  # the warm-up runs actually made


def test_max_total_s_stops_early_with_a_warning():
    m = time_callable(lambda: spin(20), TimingSettings(warmup=0, repeat=50, number=1, max_total_s=0.1))
    assert 1 <= m.count < 50
    assert any("max_total_s" in w for w in m.warnings)


def test_calibration_respects_max_total_s():
    m = time_callable(lambda: spin(1), TimingSettings(warmup=0, repeat=5, min_repeat_ms=10_000, max_total_s=0.3))
    assert m.number * m.count * 1.0 < 1000  # never plans 10 s repeats within a 0.3 s bound


def test_drift_injection_slows_runs_down():
    started_a_minute_ago = time.perf_counter_ns() - 60 * 10**9
    drift = DriftInjector(1.0, start_ns=started_a_minute_ago)  # +100% of run time per minute
    settings = TimingSettings(warmup=0, repeat=3, number=2)
    plain = time_callable(lambda: spin(1.0), settings)
    drifted = time_callable(lambda: spin(1.0), settings, drift=drift)
    # lower bounds only (a busy machine can only lengthen a spin): each run spins >= 1 ms, and
    # after a minute at rate 1.0 the injector spins at least as long again after every run
    assert plain.min >= 1.0 and drifted.min >= 2.0


def test_negative_drift_is_refused():
    with pytest.raises(BadRequest):
        DriftInjector(-0.1)
    with pytest.raises(BadRequest):
        DriftInjector(math.nan)


def test_random_inputs_ranges_and_dtypes():
    specs = [InputSpec("x", (2, 3, 8, 8), "float32"), InputSpec("ids", (1, 64), "int64")]
    feeds = random_inputs(specs, seed=1, int_high=50)
    assert feeds["x"].dtype == np.float32 and feeds["x"].shape == (2, 3, 8, 8)
    assert -1.0 <= feeds["x"].min() and feeds["x"].max() <= 1.0 and feeds["x"].std() > 0.3
    assert feeds["ids"].dtype == np.int64 and 0 <= feeds["ids"].min() and feeds["ids"].max() < 50
    assert len(np.unique(feeds["ids"])) > 10


class _CountingSession:
    def __init__(self):
        self.inputs = [InputSpec("x", (1, 4), "float32")]
        self.info = {}
        self.feeds = []

    def run(self, feeds):
        self.feeds.append(feeds)
        return [feeds["x"] * 2]


def test_time_session_feeds_random_inputs_and_reports_peak_rss():
    session = _CountingSession()
    m = time_session(session, TimingSettings(warmup=1, repeat=2, number=3))
    assert len(session.feeds) == 7 and session.feeds[0]["x"].shape == (1, 4)
    assert m.peak_rss_kb is None or m.peak_rss_kb > 1000


def test_peak_rss_follows_an_allocation_after_a_reset():
    from widthwise.device_agents.timing import peak_rss_kb, reset_peak_rss

    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    before = peak_rss_kb()
    block = np.ones(64 << 18, dtype=np.float32)  # 64 MiB, touched
    after = peak_rss_kb()
    assert after - before > 48 * 1024
    del block


# --- clocks ------------------------------------------------------------------------------


def test_clock_defaults_to_wall_and_is_validated():
    assert TimingSettings.from_dict(None).clock == "wall"
    assert TimingSettings.from_dict({"clock": "thread_cpu"}).counter is time.thread_time_ns
    with pytest.raises(BadRequest, match="timing.clock must be one of wall, thread_cpu") as exc:
        TimingSettings.from_dict({"clock": "cpu"})
    assert exc.value.details["field"] == "timing.clock"


def test_thread_cpu_clock_is_refused_with_more_than_one_thread():
    with pytest.raises(BadRequest, match="thread_cpu needs timing.threads=1") as exc:
        TimingSettings.from_dict({"clock": "thread_cpu", "threads": 2})
    assert exc.value.details["field"] == "timing.clock"


def test_thread_cpu_clock_leaves_out_sleeping_but_counts_computing():
    settings = TimingSettings(warmup=0, repeat=3, number=1, clock="thread_cpu")
    asleep = time_callable(lambda: time.sleep(0.005), settings)
    busy = time_callable(lambda: cpu_spin(3.0), settings)
    wall_asleep = time_callable(lambda: time.sleep(0.005), TimingSettings(warmup=0, repeat=3, number=1))
    assert asleep.median < 1.0 <= wall_asleep.median * 0.5  # a sleep costs the thread no CPU
    assert busy.median >= 2.9  # 3 ms of the thread's CPU burnt per run, whatever the load


# --- the request's time budget inside a repeat ----------------------------------------------


def test_the_time_budget_stops_runs_inside_a_repeat():
    calls = []
    settings = TimingSettings(warmup=0, repeat=3, number=1_000_000, max_total_s=0.05)
    m = time_callable(lambda: calls.append(spin(2.0)), settings)
    # 10^6 runs of 2 ms would take half an hour: runs stop once the 50 ms budget is spent
    assert m.count == 1 and m.number == 1_000_000
    assert 1 <= len(calls) < 1_000_000
    assert any(f"after {len(calls)} of 1000000 runs" in w and "timing.max_total_s" in w for w in m.warnings)
    assert m.min >= 2.0  # the partial repeat's mean is per run actually made


def test_a_spent_budget_still_times_one_run():
    from widthwise.device_agents.timing import NO_DRIFT, _timed_repeat

    calls = []
    elapsed, done = _timed_repeat(lambda: calls.append(1), 50, NO_DRIFT, deadline=time.perf_counter_ns() - 1)
    assert done == 1 and calls == [1] and elapsed >= 0
    elapsed, done = _timed_repeat(lambda: calls.append(1), 5, NO_DRIFT)
    assert done == 5 and len(calls) == 6
