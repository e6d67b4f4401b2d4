"""Paired timing: target and reference alternated run by run, their per-pair ratios."""

import time

import numpy as np
import pytest

from widthwise.device_agents.pair_timing import PairMeasurement, time_pair
from widthwise.device_agents.timing import Measurement, TimingSettings
from tests.support.spin import cpu_spin, spin


def test_pairs_alternate_which_network_goes_first():
    order: list[str] = []
    settings = TimingSettings(warmup=1, repeat=4, number=1)
    pair = time_pair(lambda: order.append("t"), lambda: order.append("r"), settings)
    assert order == ["t", "r"] + ["t", "r", "r", "t", "t", "r", "r", "t"]  # warm-up, then ABBA
    assert pair.target.count == pair.reference.count == 4 and pair.target.warmup == 1


def _work(units: int) -> None:
    """A fixed amount of computation (not of time), so a descheduled thread does not finish it early."""
    total = 0
    for i in range(units * 20_000):
        total += i


@pytest.mark.parametrize("clock", ["wall", "thread_cpu"])
def test_pair_json_is_the_ratios_statistics(clock):
    settings = TimingSettings(warmup=1, repeat=7, number=1, clock=clock)
    pair = time_pair(lambda: _work(3), lambda: _work(1), settings)
    body = pair.pair_json()
    assert len(body["ratios"]) == len(body["ref_times_ms"]) == 7
    assert body["ratio_iqr"] >= 0 and body["ref_median_ms"] > 0
    assert body["ratio_median"] == pytest.approx(float(np.median(pair.ratios)))


def test_ratio_is_the_work_ratio_on_the_thread_clock():
    # thread CPU time is what the work costs, whatever else the machine runs; wall-clock ratios
    # swing with other processes, so they get no bound here
    settings = TimingSettings(warmup=1, repeat=7, number=1, clock="thread_cpu")
    pair = time_pair(lambda: _work(3), lambda: _work(1), settings)
    assert 2.2 < pair.pair_json()["ratio_median"] < 4.0  # 3x the work


def test_calibration_gives_each_network_its_own_number():
    settings = TimingSettings(warmup=0, repeat=2, number=0, min_repeat_ms=4.0, clock="thread_cpu")
    pair = time_pair(lambda: cpu_spin(2.0), lambda: cpu_spin(0.25), settings)
    assert pair.target.number < pair.reference.number


def test_max_total_s_bounds_the_pairs():
    settings = TimingSettings(warmup=0, repeat=100, number=1, max_total_s=0.1)
    pair = time_pair(lambda: spin(10), lambda: spin(10), settings)
    assert 1 <= pair.target.count < 100 and pair.reference.count == pair.target.count
    assert any("max_total_s" in w for w in pair.target.warnings)


def test_unequal_repeat_counts_are_refused():
    with pytest.raises(ValueError):
        PairMeasurement(Measurement((1.0, 2.0), 1, 0), Measurement((1.0,), 1, 0))

