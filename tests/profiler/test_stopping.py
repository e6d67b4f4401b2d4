"""The stop rule of `collect --until-error`: the target's syntax, when it checks, when it stops, resuming."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.errors import UsageError
from widthwise.profiler.fit import fit_table, table_predictions
from widthwise.profiler.fit_design import term_layout
from widthwise.profiler.stopping import (
    IMPROVEMENT,
    ErrorEstimator,
    StopRule,
    check_interval,
    parse_error_target,
)
from tests.support.fit_synthetic import make_ground_truth, random_widths, synthetic_samples


@pytest.mark.parametrize("text, value", [("2%", 0.02), ("0.02", 0.02), (" 1.5 % ", 0.015), ("5e-2", 0.05), ("99%", 0.99)])
def test_targets_read_as_fractions_or_percentages(text, value):
    assert parse_error_target(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "2%%", "-1%", "0", "0%", "100%", "1", "1.5", "two"])
def test_a_malformed_or_out_of_range_target_is_a_usage_error_naming_the_option(text):
    with pytest.raises(UsageError) as err:
        parse_error_target(text)
    assert err.value.field == "--until-error" and "--until-error" in err.value.message


def _drive(rule: StopRule, estimates: dict[int, float], cap: int) -> int:
    """Feed the rule the estimate of each count at which a check is due; the count it stops at."""
    for count in range(cap + 1):
        if rule.reason is not None:
            return count - 1
        if rule.due(count) and rule.record(count, estimates.get(count, 0.5)):
            return count
    return cap


def test_checks_start_at_the_minimum_and_space_out_with_the_count():
    rule = StopRule(0.02, cap=1000, min_samples=20)
    assert not rule.due(19) and rule.due(20)
    rule.record(20, 0.5)
    assert not rule.due(24) and rule.due(25)
    rule.record(200, 0.5)
    assert check_interval(200) == 20 and not rule.due(219) and rule.due(220)
    assert not rule.due(1000)  # the cap ends the collection without a check


def test_stops_when_below_the_target_and_no_longer_improving():
    estimates = {20: 0.05, 25: 0.03, 30: 0.019, 35: 0.012, 40: 0.0115, 45: 0.011}
    rule = StopRule(0.02, cap=300, min_samples=20)
    stopped = _drive(rule, estimates, 300)
    # 30 and 35: below but still improving by 37 %; 40: 4 % better: stop
    assert stopped == 40 and rule.reason == "estimate"
    assert rule.summary(40)["reason"] == "estimate" and rule.estimate == pytest.approx(0.0115)
    assert 0.0115 > (1 - IMPROVEMENT) * 0.012
    slight = StopRule(0.02, cap=300, min_samples=20)
    assert _drive(slight, {20: 0.0205, 25: 0.0195}, 300) == 25  # below now, 5 % better than above it: stop
    first = StopRule(0.02, cap=300, min_samples=20)
    assert not first.record(20, 0.001)  # the first check alone cannot tell whether it still improves


def test_never_stops_above_the_target_and_respects_the_cap():
    rule = StopRule(0.02, cap=60, min_samples=20)
    stopped = _drive(rule, {n: 0.021 for n in range(61)}, 60)
    assert stopped == 60 and rule.reason is None and rule.summary(60)["reason"] == "cap"
    assert max(n for n, _ in rule.history) < 60


def test_never_checks_before_the_minimum():
    rule = StopRule(0.5, cap=100, min_samples=30)
    stopped = _drive(rule, {n: 0.01 for n in range(101)}, 100)
    assert rule.history[0][0] == 30 and stopped == 35


def test_a_resumed_rule_continues_from_the_dbs_note():
    first = StopRule(0.02, cap=300)
    for count, est in ((20, 0.05), (25, 0.03), (30, 0.019)):
        first.record(count, est)
    note = first.note()
    again = StopRule(0.02, cap=300)
    again.resume(note, 32)  # two samples arrived after the last check: the next check is due at 35
    assert again.history == first.history and again.reason is None
    assert not again.due(32) and again.due(35)
    assert again.record(35, 0.018)  # below, improved by 5 %: stop
    stopped = StopRule(0.02, cap=300)
    stopped.resume(again.note(), 35)
    assert stopped.reason == "estimate"  # a finished collection stays finished
    tighter = StopRule(0.01, cap=300)
    tighter.resume(again.note(), 35)
    assert tighter.reason is None and tighter.due(40)  # a tighter target continues the same checks


def test_the_estimate_tracks_the_error_on_fresh_configurations():
    """On a synthetic device (noise 2 %) the out-of-fold MAPE is within a factor of
    two of the fitted table's error on fresh configurations, and falls as samples are added."""
    space = make_space("mobilenet_v1", {"resolution": 224, "levels": 6})
    truth = make_ground_truth(space, seed=3)
    run = synthetic_samples(truth, 120, seed=4, noise=0.02, burst_rate=0.0)
    layout = term_layout(space)
    fresh = random_widths(space, 300, np.random.default_rng(5))
    clean = truth.latency(fresh)
    estimator = ErrorEstimator(layout, seed=0)
    seen = []
    for n in (20, 30, 60, 120):
        data = run.data.subset(np.arange(n))
        estimate = estimator.estimate(data.widths, data.latency_ms)
        # the fresh error against the noisy measurement the estimate also compares with
        measured = clean * np.exp(0.02 * np.random.default_rng(n).standard_normal(len(clean)))
        table = fit_table(data, holdout=0.0).table
        actual = float(np.mean(np.abs(table_predictions(table, fresh) - measured) / measured))
        seen.append((n, estimate, actual))
        assert 0.5 * actual < estimate < 2.0 * actual, seen
    assert estimator.chosen_at == 120  # strengths re-chosen when the count doubled (20, 60 -> 120)
    assert seen[-1][1] < 0.025  # at 120 samples, near the measurement noise (mean |noise| 1.6 %)
