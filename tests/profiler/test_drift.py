"""The robust reference trend: follows slow drift, ignores bursts, keeps milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.profiler.drift import fit_trend, theil_sen


def test_no_references_means_no_correction():
    trend = fit_trend(np.array([]), np.array([]))
    assert trend.empty
    np.testing.assert_array_equal(trend.factor(np.array([1.0, 2.0])), [1.0, 1.0])


def test_slow_linear_drift_is_removed_and_units_kept():
    t = np.linspace(0, 120, 25)
    ref = 10.0 * (1 + 0.2 * t / 60)  # +20 % per minute
    trend = fit_trend(t, ref)
    # a configuration twice as slow as the reference, timed between references
    ts = np.linspace(3, 117, 40)
    sample = 20.0 * (1 + 0.2 * ts / 60)
    corrected = sample * trend.factor(ts)
    assert np.ptp(corrected) / corrected.mean() < 0.02
    assert np.ptp(sample) / sample.mean() > 0.3
    # scaled to the reference's typical level: still about twice the reference, in ms
    assert corrected.mean() == pytest.approx(2 * np.median(ref), rel=0.02)


def test_a_burst_on_one_reference_does_not_move_the_trend():
    t = np.arange(12, dtype=float) * 10
    ref = np.full(12, 5.0)
    ref[6] = 8.0  # one reference caught in a burst
    trend = fit_trend(t, ref)
    np.testing.assert_allclose(trend.factor(t), 1.0, rtol=1e-9)  # the trend stays at its level throughout
    assert np.exp(trend.log_scale) == pytest.approx(5.0)


def test_order_and_bad_values_are_handled():
    t = np.array([30.0, 0.0, 10.0, 20.0, 40.0])
    ref = np.array([4.0, 1.0, 2.0, 3.0, np.nan])
    trend = fit_trend(t, ref)
    assert list(trend.times) == [0.0, 10.0, 20.0, 30.0]
    assert trend.factor(-5.0) == pytest.approx(trend.factor(0.0))  # flat before the first reference
    with pytest.raises(ValueError, match="reference times"):
        fit_trend(np.array([1.0]), np.array([1.0, 2.0]))


def test_theil_sen_ignores_one_outlier():
    t = np.arange(7, dtype=float)
    y = 2.0 + 0.5 * t
    y[3] += 10
    slope, intercept = theil_sen(t, y)
    assert slope == pytest.approx(0.5) and intercept == pytest.approx(2.0)
