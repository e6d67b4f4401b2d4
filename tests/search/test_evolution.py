"""The evolutionary baseline (search/evolution.py) against brute force and the exact search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import within
from widthwise.search.engine import InfeasibleBudget, QueryError, Searcher
from widthwise.search.evolution import EvolutionSettings, EvolutionStuck, TermTables, evolve
from widthwise.search.tree import build_tree
from tests.search.brute import TREE_CASES, enumerate_tree, make_objective, tree_instance
from tests.support.synthetic import mobilenet_v2_like_table, random_tree_table

#: a short run, for the property tests over many random tables
SHORT = EvolutionSettings(population=20, generations=30)


def brute_best(points, budget: float) -> float:
    """The least cost within the budget, by enumeration."""
    return min(cost for _, lat, cost, _ in points if within(lat, budget))


def test_term_tables_sum_as_the_tree_does() -> None:
    table = mobilenet_v2_like_table(levels=6, seed=3)
    tree = build_tree(table, make_objective(table, "flops"))
    tables = TermTables(tree)
    configs = tables.draw(np.random.default_rng(0), 200)
    assert np.all(configs >= 0) and np.all(configs < np.asarray(tree.sizes))
    lat, cost = tables.evaluate(configs)
    np.testing.assert_allclose(lat, tree.totals(tree.latency, configs, tree.constant_ms), rtol=1e-12)
    np.testing.assert_allclose(cost, tree.totals(tree.cost, configs), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(TREE_CASES, st.floats(0.0, 1.0), st.integers(0, 1000))
def test_answer_is_feasible_and_never_beats_brute_force(case, where, seed) -> None:
    table, objective = tree_instance(*case)
    tree = build_tree(table, objective)
    points = enumerate_tree(tree)
    lats = sorted(p[1] for p in points)
    budget = lats[int(where * (len(lats) - 1))]
    try:
        found = evolve(tree, budget, SHORT, seed)
    except EvolutionStuck:
        return  # too few random configurations fit: a clear refusal, never a wrong answer
    assert within(found.latency_ms, budget)
    assert found.latency_ms == pytest.approx(tree.latency_of(found.config), rel=1e-12)
    assert found.cost == pytest.approx(tree.cost_of(found.config), rel=1e-12, abs=1e-12)
    assert found.cost >= brute_best(points, budget) - 1e-9 * max(1.0, abs(found.cost))
    assert np.all(np.diff(found.history) <= 1e-12)  # the parents survive: the best never gets worse


@pytest.mark.parametrize("shape", ["chain", "star", "random"])
def test_reaches_the_optimum_on_a_tiny_space(shape) -> None:
    table = random_tree_table(shape, seed=7, levels=3, variables=4, exact_levels=True, integer=False)
    tree = build_tree(table, make_objective(table, "flops"))
    points = enumerate_tree(tree)
    lats = sorted(p[1] for p in points)
    for budget in (lats[len(lats) // 3], lats[len(lats) // 2], lats[-1]):
        found = evolve(tree, budget, EvolutionSettings(generations=50), seed=1)
        assert found.cost == pytest.approx(brute_best(points, budget), rel=1e-9, abs=1e-12)


def test_never_better_than_the_exact_front_on_a_mobilenet_v2_like_table() -> None:
    table = mobilenet_v2_like_table(levels=8, seed=1)
    searcher = Searcher(table, make_objective(table, "flops"))
    front = searcher.front()
    tables = TermTables(searcher.tree)
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    for budget in np.linspace(lo, hi, 6)[2:]:
        found = evolve(searcher.tree, float(budget), EvolutionSettings(generations=60), seed=0, tables=tables)
        exact = searcher.query(float(budget), "exact")
        assert within(found.latency_ms, float(budget))
        assert exact.cost <= found.cost + 1e-9


def test_same_seed_same_answer_other_seed_other_run() -> None:
    table = mobilenet_v2_like_table(levels=8, seed=2)
    tree = build_tree(table, make_objective(table, "flops"))
    budget = 0.5 * (tree.min_latency() + tree.max_latency())
    a, b = (evolve(tree, budget, EvolutionSettings(generations=40), seed=5) for _ in range(2))
    assert a.config == b.config and a.cost == b.cost and a.evaluations == b.evaluations
    assert a.evaluations >= 100 + 40 * 100  # the initial draws and one child per member and generation at least
    assert len(a.history) == 41
    np.testing.assert_array_equal(a.history, b.history)
    c = evolve(tree, budget, EvolutionSettings(generations=40), seed=6)
    assert (c.evaluations, c.history.tolist()) != (a.evaluations, a.history.tolist())


def test_a_budget_below_the_fastest_configuration_is_infeasible() -> None:
    table = random_tree_table("random", seed=4, levels=3, variables=5)
    tree = build_tree(table, make_objective(table, "flops"))
    fastest = tree.min_latency()
    with pytest.raises(InfeasibleBudget, match="below the smallest achievable latency") as info:
        evolve(tree, fastest - 0.5)
    assert info.value.min_latency_ms == pytest.approx(fastest)


def test_a_budget_random_draws_cannot_meet_is_a_clear_refusal() -> None:
    table = mobilenet_v2_like_table(levels=14, seed=0)
    tree = build_tree(table, make_objective(table, "flops"))
    budget = tree.min_latency() * 1.01  # feasible, but no uniform draw of 25 variables lands there
    with pytest.raises(EvolutionStuck, match=r"0 of 100 random configurations fit .* in 2,000 draws") as info:
        evolve(tree, budget, EvolutionSettings(max_draws=20))
    assert (info.value.code, info.value.field) == ("evolution_stuck", "budget_ms")


def test_children_stay_within_a_tight_budget_with_one_try() -> None:
    table = random_tree_table("chain", seed=9, levels=3, variables=6, exact_levels=True, integer=False)
    tree = build_tree(table, make_objective(table, "flops"))
    points = enumerate_tree(tree)
    budget = sorted(p[1] for p in points)[len(points) // 10]
    found = evolve(tree, budget, EvolutionSettings(generations=40, max_tries=1), seed=3)
    assert within(found.latency_ms, budget)
    assert found.cost >= brute_best(points, budget) - 1e-9


@pytest.mark.parametrize("bad", [dict(population=0), dict(mutate_prob=1.5), dict(parent_ratio=-0.1),
                                 dict(generations=-1), dict(max_tries=0)])
def test_settings_out_of_range_are_refused(bad) -> None:
    name = next(iter(bad))
    with pytest.raises(QueryError, match=f"^{name} must be") as info:
        EvolutionSettings(**bad)
    assert info.value.field == name


def test_ofa_settings_are_the_defaults() -> None:
    s = EvolutionSettings()
    assert (s.population, s.generations, s.mutate_prob, s.parent_ratio, s.mutation_ratio) == (100, 500, 0.1, 0.25, 0.5)
    assert (s.parents, s.mutants) == (25, 50)
