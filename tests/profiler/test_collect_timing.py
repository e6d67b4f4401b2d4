"""Per-sample timing: the latency estimate and the repeats it asks for."""

from __future__ import annotations

import pytest

from widthwise.profiler.collect_timing import LatencyEstimator, TimingPolicy


def test_estimator_needs_a_few_distinct_samples_then_follows_a_line():
    est = LatencyEstimator()
    assert est.predict(1e6) is None
    for macs in (1e6, 1e6, 1e6):
        est.add(macs, 2.0)
    assert est.predict(1e6) is None  # one MACs value does not make a line
    est.add(3e6, 4.0)
    est.add(2e6, float("nan"))  # ignored
    assert est.predict(2e6) == pytest.approx(3.0)
    assert est.predict(0.0) == pytest.approx(1.0)  # floored at half the smallest seen


def test_policy_fills_the_budget_with_single_runs():
    policy = TimingPolicy({"warmup": 1, "repeat": 12, "min_repeat_ms": 20.0, "target_ms": 250.0})
    assert policy.for_estimate(None) == {"warmup": 1, "repeat": 12, "min_repeat_ms": 20.0}
    assert policy.for_estimate(19.0) == {"warmup": 1, "number": 1, "repeat": 14}
    assert policy.for_estimate(100.0) == {"warmup": 1, "number": 1, "repeat": 5}  # never fewer than 5
    tiny = policy.for_estimate(0.05)  # sub-millisecond runs are grouped to last the 1 ms floor
    assert tiny["number"] == 20 and tiny["repeat"] == 250
    capped = TimingPolicy({"target_ms": 1000.0, "max_repeat": 50}).for_estimate(1.0)
    assert capped == {"number": 1, "repeat": 50}


def test_without_a_target_the_agent_keys_pass_through():
    policy = TimingPolicy({"warmup": 2, "repeat": 7})
    assert policy.for_estimate(3.0) == {"warmup": 2, "repeat": 7}


@pytest.mark.parametrize(
    "settings,message",
    [({"target_ms": 0}, "target_ms"), ({"repeat_floor_ms": -1}, "repeat_floor_ms"), ({"max_repeat": 2}, "max_repeat"),
     ({"target_ms": "fast"}, "target_ms")],
)
def test_bad_policy_values_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        TimingPolicy(settings).validate()
