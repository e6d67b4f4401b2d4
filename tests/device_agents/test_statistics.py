"""The one definition of the per-sample statistics, checked on timings worked out by hand."""

import pytest

from widthwise.device_agents.statistics import FIT_STATISTICS, STATISTICS

TIMES = [4.0, 1.0, 3.0, 2.0, 10.0]  # sorted: 1 2 3 4 10


@pytest.mark.parametrize(
    "name, expected",
    [("min", 1.0), ("median", 3.0), ("mean", 4.0), ("p90", 7.6), ("iqr", 2.0), ("std", 3.5355339059327378)],
)
def test_each_statistic_on_known_times(name, expected):
    # p90 interpolates linearly between 4 and 10 at 0.6; iqr is p75 (4) - p25 (2); std uses n-1
    assert STATISTICS[name](TIMES) == pytest.approx(expected)


def test_one_repeat_has_no_spread():
    assert STATISTICS["std"]([2.5]) == 0.0 and STATISTICS["iqr"]([2.5]) == 0.0


def test_a_table_is_fitted_on_a_statistic_the_agent_reports():
    assert FIT_STATISTICS == ("min", "median", "mean") and set(FIT_STATISTICS) <= set(STATISTICS)
