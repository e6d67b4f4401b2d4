"""The one budget tolerance: what counts as within a limit, and that no solver spells it out again."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from widthwise.search.budget import BUDGET_RTOL, margin, slack, within

SEARCH = Path(__file__).resolve().parents[2] / "search"


def test_within_allows_a_relative_rounding_margin() -> None:
    assert within(10.0, 10.0) and within(10.0 * (1 + 0.5 * BUDGET_RTOL), 10.0)
    assert not within(10.0 * (1 + 2 * BUDGET_RTOL), 10.0)
    assert slack(1e6) == 1e6 + 1e6 * BUDGET_RTOL


def test_small_and_negative_limits_get_the_absolute_floor() -> None:
    assert margin(0.0) == margin(1e-3) == margin(-0.5) == BUDGET_RTOL
    assert within(0.5 * BUDGET_RTOL, 0.0) and not within(2 * BUDGET_RTOL, 0.0)
    assert margin(-4.0) == 4.0 * BUDGET_RTOL


def test_within_takes_arrays() -> None:
    values = np.array([9.0, 10.0, 10.0 + 5e-9, 10.0 + 2e-8])
    assert within(values, 10.0).tolist() == [True, True, True, False]


def test_no_search_module_spells_the_tolerance_out_again() -> None:
    spelled = re.compile(r"\b1e-9\b")
    copies = [p.name for p in SEARCH.glob("*.py") if p.name != "budget.py" and spelled.search(p.read_text())]
    assert copies == [], f"use search.budget (within, slack, margin) instead: {copies}"
