"""The Searcher: queries, validation, errors and caching."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import within
from widthwise.search.engine import Answer, InfeasibleBudget, ObjectiveError, QueryError, Searcher, make_objective
from tests.search.brute import TREE_CASES, brute_marginals, enumerate_tree, tree_instance
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table, random_table


@pytest.fixture(scope="module")
def searcher():
    table = mobilenet_v1_table(seed=5)
    return Searcher(table, make_objective(table, "flops"))


def test_answer_fields_match_the_table(searcher):
    table = searcher.table
    for method in ("exact", "lagrangian", "greedy"):
        answer = searcher.query(12.0, method)
        assert isinstance(answer, Answer) and answer.method == method
        assert answer.latency_ms == pytest.approx(table.predict(answer.widths))
        assert answer.latency_ms <= 12.0
        assert answer.macs > 0 and answer.params > 0
        assert (answer.gamma is not None) == (method == "lagrangian")
        encoded = json.loads(json.dumps(answer.to_json()))
        assert encoded["widths"] == list(answer.widths) and encoded["method"] == method


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -1.0, "10", True, None])
def test_bad_budgets_are_refused(searcher, budget):
    with pytest.raises(QueryError, match="budget_ms"):
        searcher.query(budget)


def test_unknown_method_and_bad_params_budget(searcher):
    with pytest.raises(QueryError, match="method: unknown 'viterbi'"):
        searcher.query(10.0, "viterbi")
    with pytest.raises(QueryError, match="max_params"):
        searcher.query(10.0, "exact", max_params=float("nan"))


def test_infeasible_budget_states_the_smallest_latency(searcher):
    low = searcher.tree.min_latency()
    for method in ("exact", "lagrangian", "greedy"):
        with pytest.raises(InfeasibleBudget) as err:
            searcher.query(low / 2, method)
        assert err.value.min_latency_ms == pytest.approx(low)
        assert f"{low:.6g} ms" in str(err.value)
    # Exactly the smallest latency is feasible.
    assert searcher.query(low, "exact").latency_ms == pytest.approx(low)


def test_params_budget_infeasible_names_the_fewest_params():
    table = random_table(2, 3, 3)
    searcher = Searcher(table, make_objective(table))
    fewest = searcher.tree.min_params()
    with pytest.raises(InfeasibleBudget) as err:
        searcher.query(1e9, "exact", max_params=fewest - 1)
    assert err.value.min_params == pytest.approx(fewest)
    assert "params" in str(err.value)


def test_params_budget_needs_params_in_the_table():
    table = random_table(2, 3, 3, with_counts=False)
    searcher = Searcher(table, make_objective(table, {"format": "widthwise-costs/1", "unary": [[0.0] * len(c) for c in table.choices]}))
    with pytest.raises(QueryError, match="no params"):
        searcher.query(100.0, "exact", max_params=5)
    assert searcher.query(100.0).params is None


def test_front_is_cached_and_queries_are_lookups(searcher):
    front = searcher.front()
    assert searcher.front() is front
    answers = searcher.pareto()
    assert [a.latency_ms for a in answers] == sorted(a.latency_ms for a in answers)
    for a in answers[:: max(1, len(answers) // 20)]:
        assert searcher.query(a.latency_ms).cost == pytest.approx(a.cost)


def test_concurrent_queries_agree(searcher):
    budgets = [3.0 + 0.5 * i for i in range(24)]
    expected = {(b, m): searcher.query(b, m) for b in budgets for m in ("exact", "lagrangian")}
    fresh = Searcher(searcher.table, searcher.objective)
    got, errors = {}, []

    def worker(offset):
        try:
            for b in budgets[offset:] + budgets[:offset]:
                for m in ("exact", "lagrangian"):
                    got[(b, m)] = fresh.query(b, m)
        except Exception as exc:  # noqa: BLE001 - collected and reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(got[k] == expected[k] for k in expected)


def test_marginals_are_per_layer_width_maps(searcher):
    probs = searcher.marginals(10.0, 0.05)
    assert len(probs) == searcher.table.num_layers
    for row, choices in zip(probs, searcher.table.choices):
        assert sorted(row) == sorted(choices)
        assert math.isclose(sum(row.values()), 1.0, rel_tol=1e-9)
    with pytest.raises(InfeasibleBudget):
        searcher.marginals(0.01, 0.05)


def test_make_objective_errors_are_objective_errors():
    table = random_table(0)
    with pytest.raises(ObjectiveError):
        make_objective(table, 42)


def test_errors_name_the_request_field(searcher):
    table = searcher.table
    with pytest.raises(QueryError) as err:
        searcher.query(float("nan"))
    assert err.value.field == "budget_ms"
    with pytest.raises(QueryError) as err:
        searcher.marginals(10.0, -1.0)
    assert err.value.field == "temperature"
    with pytest.raises(ObjectiveError) as err:
        make_objective(table, {"format": "widthwise-costs/1", "unary": []})
    assert err.value.field == "objective"
    with pytest.raises(ObjectiveError) as err:
        make_objective(table, loss_samples=[[[1] * table.num_layers, 0.5]])
    assert err.value.field == "loss_samples"
    for kwargs, field in (({"method": "viterbi"}, "method"), ({"method": "lagrangian", "max_params": 1e6}, "max_params"),
                          ({"max_params": -1.0}, "max_params")):
        with pytest.raises(QueryError) as err:
            searcher.query(10.0, **kwargs)
        assert err.value.field == field and err.value.code == "invalid_query"
    with pytest.raises(InfeasibleBudget) as err:
        searcher.query(searcher.min_latency_ms / 2)
    assert err.value.field == "budget_ms" and err.value.code == "infeasible_budget"
    with pytest.raises(InfeasibleBudget) as err:
        searcher.query(1e9, max_params=searcher.tree.min_params() / 2)
    assert err.value.field == "max_params"


def test_lookup_answers_from_the_caches_alone_and_equals_query() -> None:
    table = mobilenet_v1_table(seed=2)
    searcher = Searcher(table, make_objective(table))
    assert searcher.lookup(9.0) is None and searcher.lookup(9.0, "lagrangian") is None, "nothing built yet"
    assert searcher.lookup(9.0, "greedy") is None, "greedy always computes"
    for method in ("exact", "lagrangian"):
        searcher.query(9.0, method)
        for budget in (6.5, 8.0, 9.5, 14.0):
            assert searcher.lookup(budget, method) == searcher.query(budget, method)
        with pytest.raises(InfeasibleBudget):
            searcher.lookup(searcher.min_latency_ms / 2, method)
    assert searcher.lookup(9.0, "exact", max_params=2e6) is None, "branch and bound is work"


def staircase(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(latency, cost) points sorted, each kept only when cheaper than the last kept by more than rounding
    (two sums of the same costs in another order may differ in the last bit)."""
    front: list[tuple[float, float]] = []
    for lat, cost in sorted(points):
        if not front or cost < front[-1][1] - 1e-9 * (1.0 + abs(cost)):
            front.append((lat, cost))
    return front


def brute_front(points) -> list[tuple[float, float]]:
    """(latency, cost) of the Pareto front by enumeration: fastest first, each strictly cheaper."""
    return staircase([(lat, cost) for _, lat, cost, _ in points])


@settings(max_examples=120, deadline=None)
@given(TREE_CASES, st.floats(0.0, 1.0))
def test_tree_tables_answer_as_brute_force(case, where):
    """query (every method), pareto and marginals on trees of every shape, against enumeration."""
    table, objective = tree_instance(*case)
    searcher = Searcher(table, objective)
    points = enumerate_tree(searcher.tree)
    front = brute_front(points)
    answers = [(a.latency_ms, a.cost) for a in searcher.pareto()]
    assert answers == sorted(answers), "fastest first"
    assert all(c2 < c1 + 1e-9 * (1.0 + abs(c1)) for (_, c1), (_, c2) in zip(answers, answers[1:])), "none dominated"
    got = staircase(answers)
    assert len(got) == len(front)
    np.testing.assert_allclose(np.array(got), np.array(front), rtol=1e-9, atol=1e-9)
    budget = front[0][0] + where * (front[-1][0] - front[0][0])
    optimum = min(c for _, lat, c, _ in points if within(lat, budget))
    for method in ("exact", "lagrangian", "greedy"):
        try:
            answer = searcher.query(budget, method)
        except InfeasibleBudget:
            assert method == "greedy", "only greedy may stall where a configuration fits"
            continue
        assert len(answer.widths) == table.num_layers and within(answer.latency_ms, budget)
        assert answer.latency_ms == pytest.approx(table.predict(answer.widths), rel=1e-9, abs=1e-9)
        assert answer.cost >= optimum - 1e-9
        if method == "exact":
            assert answer.cost == pytest.approx(optimum, rel=1e-9, abs=1e-9)
        assert searcher.lookup(budget, method) in (None, answer)
    probs = searcher.marginals(budget, 0.5)
    found = searcher.lagrangian_path().query(budget)
    gamma = found.gamma_inside if found.gamma_inside is not None else found.gamma
    for row, expected, choices in zip(probs, brute_marginals(searcher.tree, gamma, 0.5), table.choices):
        np.testing.assert_allclose([row[w] for w in choices], expected, atol=1e-9)


def test_mobilenet_v2_like_table_end_to_end():
    """25 variables: every method answers with 25 widths on the grids, the table predicts the latency, and the
    cached look-ups equal the queries."""
    table = mobilenet_v2_like_table(14, seed=5)
    searcher = Searcher(table, make_objective(table))
    assert searcher.tree.num_layers == 25
    front = searcher.pareto()
    budget = front[len(front) // 2].latency_ms
    costs = {}
    for method in ("exact", "lagrangian", "greedy"):
        answer = searcher.query(budget, method)
        assert len(answer.widths) == 25 and all(w in c for w, c in zip(answer.widths, table.choices))
        assert answer.latency_ms == pytest.approx(table.predict(answer.widths)) and answer.latency_ms <= budget
        assert answer.macs > 0 and answer.params > 0
        costs[method] = answer.cost
    assert costs["exact"] <= min(costs.values())
    for method in ("exact", "lagrangian"):
        assert searcher.lookup(budget, method) == searcher.query(budget, method)
    probs = searcher.marginals(budget, 0.05)
    assert [sorted(p) for p in probs] == [sorted(c) for c in table.choices]
    assert all(math.isclose(sum(p.values()), 1.0, rel_tol=1e-9) for p in probs)
