"""Front caps: a front that grows past its points or memory cap stops early and says how far it got."""

from __future__ import annotations

from pathlib import Path

import pytest

from widthwise.search.engine import FrontLimitError, Searcher, make_objective
from widthwise.search.front_limits import DEFAULT_LIMITS, FrontLimitExceeded, FrontLimits
from widthwise.search.pareto_front import build_front
from widthwise.search.table import load_table
from widthwise.search.tree import build_tree
from tests.support.synthetic import anti_latency_costs, mobilenet_v1_table, mobilenet_v2_like_table

EXAMPLE = Path(__file__).resolve().parents[2] / "tables" / "example-epyc2-mobilenet_v1-224.json"


@pytest.fixture(scope="module")
def anti() -> Searcher:
    table = mobilenet_v1_table(seed=0)
    return Searcher(table, make_objective(table, anti_latency_costs(table)))


def test_anti_latency_costs_pass_the_points_cap_early(anti: Searcher) -> None:
    with pytest.raises(FrontLimitError) as refused:
        anti.query(10.0)
    limit = refused.value.limit
    assert limit["kind"] == "points" and limit["limit"] == DEFAULT_LIMITS.max_points
    assert limit["reached"] > limit["limit"] and limit["block"] < limit["blocks"] - 1, "stopped part-way"
    assert refused.value.field == "objective" and "lagrangian" in str(refused.value)
    assert anti.query(10.0, method="lagrangian").latency_ms <= 10.0, "the suggested method answers"


def test_the_memory_cap_stops_a_step_before_its_candidates_exist(anti: Searcher) -> None:
    with pytest.raises(FrontLimitExceeded) as refused:
        build_front(anti.tree, limits=FrontLimits(max_points=None, max_memory_mb=8))
    assert refused.value.kind == "memory" and refused.value.reached > 8 and "MiB" in str(refused.value)
    assert refused.value.block < refused.value.blocks and "at step" in str(refused.value)


def test_two_budget_searches_are_capped_too() -> None:
    # the exact search stops at the memory cap; the query then answers approximately, with its gap
    table = mobilenet_v1_table(seed=0)
    searcher = Searcher(table, make_objective(table, "params"), FrontLimits(max_memory_mb=64))
    answer = searcher.query(8.0, max_params=2e6)
    assert answer.method != "exact" and answer.latency_ms <= 8.0 and answer.params <= 2e6
    assert answer.gap is not None and answer.gap >= 0 and answer.dual_bound <= answer.cost
    with pytest.raises(FrontLimitError) as refused:   # the front within max_params has no approximation
        searcher.pareto(2e6)
    assert refused.value.limit["kind"] == "memory"


@pytest.mark.parametrize("objective", ["flops", "params"])
def test_the_shipped_table_is_far_inside_the_defaults(objective: str) -> None:
    table = load_table(EXAMPLE)
    tight = FrontLimits(max_points=DEFAULT_LIMITS.max_points // 4, max_memory_mb=DEFAULT_LIMITS.max_memory_mb / 8)
    front = build_front(build_tree(table, make_objective(table, objective)), limits=tight)
    assert 1000 < len(front) < tight.max_points


def test_a_tree_front_past_its_points_cap_names_the_step_and_the_variable() -> None:
    table = mobilenet_v2_like_table(levels=6, seed=0)
    tree = build_tree(table, make_objective(table, anti_latency_costs(table)))
    with pytest.raises(FrontLimitExceeded) as refused:
        build_front(tree, limits=FrontLimits(max_points=2000))
    err = refused.value
    assert err.kind == "points" and err.reached > 2000 and err.block < err.blocks
    assert f"at step {err.block} of {err.blocks} (" in str(err)
    assert any(f"({name})" in str(err) for name in table.variable_names)


def test_limits_refuse_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        FrontLimits(max_points=0)
    with pytest.raises(ValueError):
        FrontLimits(max_memory_mb=0)
