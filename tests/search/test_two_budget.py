"""Two budgets at once: exact within the search bounds, else the two-multiplier Lagrangian with its gap."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.profiler.cli import main
from widthwise.search.budget import within
from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective
from widthwise.search.front_limits import FrontLimits
from widthwise.search.tree import build_tree
from widthwise.search.two_budget import gap_of, two_budget_lagrangian
from tests.search.brute import TREE_CASES, enumerate_tree, tree_instance
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table, random_objective, random_table

SHIPPED = Path(__file__).resolve().parents[2] / "tables" / "example-epyc2-mobilenet_v1-224.json"
#: bounds that stop the exact search at once: no time, or a candidate cap of one prefix
TINY = (FrontLimits(max_search_seconds=0.0), FrontLimits(max_search_candidates=1))
BUDGETS = st.tuples(st.integers(0, 10**6), st.integers(2, 4), st.integers(2, 4), st.floats(0.0, 1.0),
                    st.floats(0.0, 1.0))


def _case(seed: int, layers: int, choices: int, where_lat: float, where_par: float):
    """A random small table and objective, a budget pair inside its ranges, and every feasible configuration."""
    table = random_table(seed, layers, choices, integer=False)
    objective = make_objective(table, random_objective(table, seed + 1, "pairwise"))
    points = enumerate_tree(build_tree(table, objective))
    lats, pars = sorted(p[1] for p in points), sorted(p[3] for p in points)
    budget, max_params = lats[int(where_lat * (len(lats) - 1))], pars[int(where_par * (len(pars) - 1))]
    feasible = [p for p in points if within(p[1], budget) and within(p[3], max_params)]
    return table, objective, budget, max_params, feasible


def _fits(answer, budget: float, max_params: float) -> bool:
    return bool(within(answer.latency_ms, budget) and within(answer.params, max_params))


@settings(max_examples=60, deadline=None)
@given(BUDGETS)
def test_exact_within_the_bounds_equals_brute_force(case) -> None:
    table, objective, budget, max_params, feasible = _case(*case)
    searcher = Searcher(table, objective)
    if not feasible:
        with pytest.raises(InfeasibleBudget):
            searcher.query(budget, max_params=max_params)
        return
    answer = searcher.query(budget, max_params=max_params)
    assert answer.is_exact and answer.method == "exact" and answer.cost == pytest.approx(min(p[2] for p in feasible))
    assert _fits(answer, budget, max_params) and answer.to_json()["gap"] == 0.0


@settings(max_examples=60, deadline=None)
@given(BUDGETS, st.sampled_from(TINY))
def test_past_the_bounds_the_answer_is_feasible_and_its_gap_brackets_the_optimum(case, limits) -> None:
    table, objective, budget, max_params, feasible = _case(*case)
    searcher = Searcher(table, objective, limits)
    if not feasible:
        with pytest.raises(InfeasibleBudget) as err:
            searcher.query(budget, max_params=max_params)
        assert "params" in str(err.value) or "budget" in str(err.value)
        return
    answer = searcher.query(budget, max_params=max_params)
    optimum = min(p[2] for p in feasible)
    assert _fits(answer, budget, max_params)
    assert answer.cost >= optimum - 1e-9 * max(1.0, abs(optimum))
    if answer.method == "exact":   # a path that needs no branch and bound (a cached or params-only front)
        assert answer.cost == pytest.approx(optimum)
        return
    assert answer.dual_bound is not None and answer.gap is not None and answer.gap >= 0
    assert answer.dual_bound <= optimum + 1e-9 * max(1.0, abs(optimum))
    assert answer.cost >= answer.dual_bound and answer.gap == pytest.approx(answer.cost - answer.dual_bound, abs=1e-12)
    if answer.is_exact:            # only when its cost meets the bound
        assert answer.cost == pytest.approx(optimum)


@settings(max_examples=80, deadline=None)
@given(TREE_CASES, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_on_trees_the_lagrangian_alone_is_feasible_and_its_bound_is_below_the_optimum(case, where_lat,
                                                                                       where_par) -> None:
    table, objective = tree_instance(*case)
    tree = build_tree(table, objective)
    points = enumerate_tree(tree)
    lats, pars = sorted(p[1] for p in points), sorted(p[3] for p in points)
    budget, max_params = lats[int(where_lat * (len(lats) - 1))], pars[int(where_par * (len(pars) - 1))]
    feasible = [p for p in points if within(p[1], budget) and within(p[3], max_params)]
    found = two_budget_lagrangian(tree, budget, max_params, time.monotonic() - 1.0, front_limits=FrontLimits())
    if found.best is None:
        return  # the multipliers met nothing feasible (the engine then adds its repairs)
    optimum = min(p[2] for p in feasible)
    assert within(found.best.latency_ms, budget) and within(found.best.params, max_params)
    assert found.best.cost >= optimum - 1e-9 * max(1.0, abs(optimum))
    assert found.dual_bound <= optimum + 1e-9 * max(1.0, abs(optimum))
    marks = found.marks()
    assert marks["gap"] >= 0 and (not marks["exact"] or found.best.cost == pytest.approx(optimum))


@settings(max_examples=40, deadline=None)
@given(TREE_CASES, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from(TINY))
def test_on_trees_past_the_bounds_the_searcher_answers_whenever_something_fits(case, where_lat, where_par,
                                                                              limits) -> None:
    table, objective = tree_instance(*case)
    searcher = Searcher(table, objective, limits)
    points = enumerate_tree(searcher.tree)
    lats, pars = sorted(p[1] for p in points), sorted(p[3] for p in points)
    budget, max_params = lats[int(where_lat * (len(lats) - 1))], pars[int(where_par * (len(pars) - 1))]
    feasible = [p for p in points if within(p[1], budget) and within(p[3], max_params)]
    if not feasible:
        with pytest.raises(InfeasibleBudget):
            searcher.query(budget, max_params=max_params)
        return
    answer = searcher.query(budget, max_params=max_params)
    optimum = min(p[2] for p in feasible)
    assert _fits(answer, budget, max_params) and answer.cost >= optimum - 1e-9 * max(1.0, abs(optimum))
    if answer.method != "exact":
        assert answer.gap >= 0 and answer.dual_bound <= optimum + 1e-9 * max(1.0, abs(optimum))


def test_a_mobilenet_v2_like_table_answers_both_budgets_within_the_bound_plus_the_lagrangian() -> None:
    table = mobilenet_v2_like_table(levels=14, seed=0)
    searcher = Searcher(table, make_objective(table), FrontLimits(max_search_seconds=0.5))
    front = searcher.front()
    at = int(0.5 * len(front))
    budget, max_params = float(front.latency[at]), 0.6 * float(front.params[at])
    answer = searcher.query(budget, max_params=max_params)
    body = answer.to_json()
    assert _fits(answer, budget, max_params) and isinstance(body["exact"], bool)
    assert body["gap"] is not None and body["gap"] >= 0 and body["dual_bound"] <= body["cost"]


def test_a_zero_bound_on_a_mobilenet_table_answers_approximately_with_its_gap() -> None:
    table = mobilenet_v1_table(seed=8)
    searcher = Searcher(table, make_objective(table), FrontLimits(max_search_seconds=0.0))
    answer = searcher.query(9.5, max_params=1_500_000)
    body = answer.to_json()
    assert body["method"] in ("lagrangian2", "incumbent", "repair") and isinstance(body["exact"], bool)
    assert _fits(answer, 9.5, 1_500_000) and body["gap"] >= 0 and body["dual_bound"] <= body["cost"]
    assert body["gap_relative"] == pytest.approx(body["gap"] / abs(body["cost"]))


def test_the_lagrangian_alone_takes_its_minimum_steps_past_the_deadline() -> None:
    table = mobilenet_v1_table(seed=8)
    tree = build_tree(table, make_objective(table))
    found = two_budget_lagrangian(tree, 9.5, 1_500_000, time.monotonic() - 1.0)
    assert found.best is not None and found.steps > 0 and found.best.cost >= found.dual_bound
    assert within(tree.params_of(found.best.idx), 1_500_000) and within(tree.latency_of(found.best.idx), 9.5)
    assert found.marks()["gap"] == pytest.approx(found.best.cost - found.dual_bound)


def test_gap_of() -> None:
    assert gap_of(-2.0, -2.5) == (0.5, 0.25)
    assert gap_of(1.0, 2.0) == (0.0, 0.0)          # a rounding-level overshoot is no negative gap
    assert gap_of(0.0, -1.0) == (1.0, None)        # no relative gap of a zero cost


@pytest.mark.parametrize("limits", TINY)
def test_infeasible_budget_pairs_are_still_errors(limits: FrontLimits) -> None:
    table = mobilenet_v1_table(seed=8)
    searcher = Searcher(table, make_objective(table), limits)
    min_params = searcher.tree.min_params()
    with pytest.raises(InfeasibleBudget) as err:
        searcher.query(30.0, max_params=0.5 * min_params)
    assert err.value.field == "max_params"
    with pytest.raises(InfeasibleBudget) as err:
        searcher.query(0.5 * searcher.min_latency_ms, max_params=2 * min_params)
    assert err.value.field == "budget_ms" and "params" in str(err.value)


def test_the_shipped_table_answers_both_budgets() -> None:
    args = ["query", "--table", str(SHIPPED), "--budget-ms", "10", "--max-params", "1500000"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["latency_ms"] <= 10 and body["params"] <= 1_500_000 and isinstance(body["exact"], bool)
    assert body["gap"] is not None and body["gap"] >= 0 and body["dual_bound"] <= body["cost"]
    text = CliRunner().invoke(main, [*args, "--max-search-seconds", "0"])
    assert text.exit_code == 0 and "approximate (gap " in text.output


def test_a_two_budget_front_past_its_bound_is_a_one_line_error() -> None:
    result = CliRunner().invoke(main, ["pareto", "--table", str(SHIPPED), "--max-params", "1500000",
                                       "--max-search-seconds", "0"])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "time bound" in line and "query" in line


def test_the_daemon_sends_the_cli_json_of_an_approximate_answer(tmp_path: Path) -> None:
    from widthwise.search import daemon
    from widthwise.search.table_store import TableStore
    from tests.search.serving import running

    mobilenet_v1_table(seed=8).save(tmp_path / "mb.json")
    body = {"table": "mb", "budget_ms": 9.5, "max_params": 1_500_000.0}
    # a 0 s bound: both take the Lagrangian's minimum steps, so the answers are the same bytes
    result = CliRunner().invoke(main, ["query", "--table", str(tmp_path / "mb.json"), "--budget-ms", "9.5",
                                       "--max-params", "1500000", "--max-search-seconds", "0", "--json"])
    assert result.exit_code == 0, result.output
    app = daemon.create_app(TableStore(tmp_path), limits=FrontLimits(max_search_seconds=0.0))
    with running(app) as client:
        response = client.post("/v1/query", json=body)
        assert response.status_code == 200, response.text
        assert response.content == result.output.rstrip("\n").encode()
        assert response.json()["gap"] is not None and response.json()["method"] != "exact"
        refused = client.post("/v1/pareto", json={"table": "mb", "max_params": 1_500_000.0})
        assert refused.status_code == 422 and refused.json()["code"] == "invalid_query"
        assert "time bound" in refused.json()["detail"][0]["msg"]
