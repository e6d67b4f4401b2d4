"""CALR and the temperature schedule: hand-computed values, invariants, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.schedules import (
    CyclicallyAnnealedLR,
    GeometricTemperature,
    ScheduleError,
    make_schedule,
    schedule_to_json,
    schedule_values,
)


def test_calr_matches_hand_computed_sequence() -> None:
    calr = CyclicallyAnnealedLR(lr_min=0.1, lr_max=1.0, cycle_steps=4, decay=0.5)
    # peaks 1.0, 0.55, 0.325; each cycle: min, halfway up, peak, halfway down
    expected = [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55, 0.325, 0.1, 0.2125, 0.325, 0.2125, 0.1]
    assert schedule_values(calr, 13) == pytest.approx(expected, abs=1e-12)


def test_calr_odd_cycle_reaches_its_peak() -> None:
    calr = CyclicallyAnnealedLR(lr_min=0.0, lr_max=0.6, cycle_steps=5, decay=0.5)
    # rise over 2 steps, fall over 3: 0, 0.3, 0.6, 0.4, 0.2 then peak 0.3
    expected = [0.0, 0.3, 0.6, 0.4, 0.2, 0.0, 0.15, 0.3, 0.2, 0.1]
    assert schedule_values(calr, 10) == pytest.approx(expected, abs=1e-12)
    assert calr.rise_steps == 2 and calr.peak(1) == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(
    lr_min=st.floats(0.0, 0.5),
    span=st.floats(1e-3, 2.0),
    cycle_steps=st.integers(2, 40),
    decay=st.floats(0.05, 0.95),
)
def test_calr_maxima_strictly_decrease_and_values_stay_in_range(
    lr_min: float, span: float, cycle_steps: int, decay: float
) -> None:
    calr = CyclicallyAnnealedLR(lr_min, lr_min + span, cycle_steps, decay)
    cycles = 6
    values = np.array(schedule_values(calr, cycles * cycle_steps))
    assert values.min() >= lr_min - 1e-12 and values.max() <= lr_min + span + 1e-12
    maxima = values.reshape(cycles, cycle_steps).max(axis=1)
    assert np.all(np.diff(maxima) < 0), maxima
    # every cycle starts at the minimum and reaches its own peak exactly
    assert np.allclose(values[::cycle_steps], lr_min)
    assert maxima == pytest.approx([calr.peak(c) for c in range(cycles)], abs=1e-12)
    assert maxima[0] == pytest.approx(lr_min + span)


def test_calr_rises_then_falls_within_a_cycle() -> None:
    calr = CyclicallyAnnealedLR(1e-4, 1e-2, 10, 0.7)
    cycle = schedule_values(calr, 10)
    assert all(a < b for a, b in zip(cycle[:5], cycle[1:6]))
    assert all(a > b for a, b in zip(cycle[5:9], cycle[6:10]))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"lr_min": 0.5, "lr_max": 0.5, "cycle_steps": 4}, "lr_max"),
        ({"lr_min": -0.1, "lr_max": 0.5, "cycle_steps": 4}, "lr_min"),
        ({"lr_min": 0.0, "lr_max": math.inf, "cycle_steps": 4}, "lr_max"),
        ({"lr_min": 0.0, "lr_max": 1.0, "cycle_steps": 1}, "cycle_steps"),
        ({"lr_min": 0.0, "lr_max": 1.0, "cycle_steps": 4.0}, "cycle_steps"),
        ({"lr_min": 0.0, "lr_max": 1.0, "cycle_steps": 4, "decay": 1.0}, "decay"),
        ({"lr_min": 0.0, "lr_max": 1.0, "cycle_steps": 4, "decay": 0.0}, "decay"),
    ],
)
def test_calr_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ScheduleError, match=field) as err:
        CyclicallyAnnealedLR(**kwargs)
    assert err.value.field == field and err.value.code == "schedule_invalid"


@pytest.mark.parametrize("step", [-1, 2.5, True, "3"])
def test_bad_steps(step: object) -> None:
    for schedule in (CyclicallyAnnealedLR(0.0, 1.0, 4), GeometricTemperature(1.0, 0.1, 10)):
        with pytest.raises(ScheduleError, match="step") as err:
            schedule(step)  # type: ignore[arg-type]
        assert err.value.field == "step"


def test_numpy_integer_steps_are_accepted() -> None:
    assert CyclicallyAnnealedLR(0.0, 1.0, 4)(np.int64(2)) == 1.0


def test_temperature_geometric_decay() -> None:
    temp = GeometricTemperature(t_start=5.0, t_end=0.05, steps=4)
    expected = [5.0, 5.0 * 0.01**0.25, 0.5, 5.0 * 0.01**0.75, 0.05, 0.05, 0.05]
    assert schedule_values(temp, 7) == pytest.approx(expected, rel=1e-12)
    values = schedule_values(temp, 5)
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert ratios == pytest.approx([ratios[0]] * 4)  # a constant factor per step
    assert GeometricTemperature(2.0, 2.0, 3)(1) == 2.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"t_start": 1.0, "t_end": 0.0, "steps": 5}, "t_end"),
        ({"t_start": 0.1, "t_end": 1.0, "steps": 5}, "t_start"),
        ({"t_start": 1.0, "t_end": 0.1, "steps": 0}, "steps"),
        ({"t_start": float("nan"), "t_end": 0.1, "steps": 5}, "t_start"),
    ],
)
def test_temperature_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ScheduleError, match=field) as err:
        GeometricTemperature(**kwargs)
    assert err.value.field == field


def test_make_schedule_round_trip_and_key_checks() -> None:
    calr = make_schedule({"kind": "calr", "lr_min": 0.001, "lr_max": 0.1, "cycle_steps": 100})
    assert isinstance(calr, CyclicallyAnnealedLR) and calr.decay == 0.5
    assert make_schedule(schedule_to_json(calr)) == calr
    temp = GeometricTemperature(3.0, 0.3, 50)
    assert schedule_to_json(temp) == {"kind": "geometric_temperature", "t_start": 3.0, "t_end": 0.3, "steps": 50}
    with pytest.raises(ScheduleError, match="no parameter 'lr'"):
        make_schedule({"kind": "calr", "lr": 0.1, "lr_min": 0.0, "lr_max": 1.0, "cycle_steps": 4})
    with pytest.raises(ScheduleError, match="missing lr_max, cycle_steps"):
        make_schedule({"kind": "calr", "lr_min": 0.0})
    with pytest.raises(ScheduleError, match="unknown schedule kind 'cosine'"):
        make_schedule({"kind": "cosine"})
    with pytest.raises(ScheduleError, match="must be an object"):
        make_schedule([("kind", "calr")])  # type: ignore[arg-type]


def test_schedules_are_frozen() -> None:
    calr = CyclicallyAnnealedLR(0.0, 1.0, 4)
    with pytest.raises(AttributeError):
        calr.lr_max = 2.0  # type: ignore[misc]
