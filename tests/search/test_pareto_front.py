"""The exact Pareto front of a tree MRF (leaf-to-root DP of pareto_front.py) against brute force, on every shape."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import widthwise.search.front_merge as front_merge
import widthwise.search.pareto_front as pareto_front
from widthwise.device_agents.space_spec import load_spec_text, parse_space_spec
from widthwise.search.budget import within
from widthwise.search.elimination import Plan
from widthwise.search.engine import InfeasibleBudget, Searcher
from widthwise.search.front_limits import FrontLimits
from widthwise.search.objectives import build_objective
from widthwise.search.table import load_table
from widthwise.search.pareto_front import FrontTimedOut, FrontTooLarge, build_front
from widthwise.search.tree import build_tree
from tests.search.brute import CASES, TREE_CASES, enumerate_tree, instance, make_objective, tree_instance
from tests.support.space_tables import configuration_totals, space_table
from tests.support.synthetic import (mobilenet_v1_table, mobilenet_v2_like_table, random_costs, random_table,
                                     random_tree_table)


def staircase(pairs) -> np.ndarray:
    """The non-dominated (latency, cost) pairs, sorted; a cost within float rounding of a faster one's counts as equal
    (two summation orders of the same configuration differ in the last bits)."""
    front: list[tuple[float, float]] = []
    for lat, cost in sorted(set(pairs)):
        if not front or cost < front[-1][1] - 1e-9 * max(1.0, abs(cost)):
            front.append((lat, cost))
    return np.array(front).reshape(-1, 2)


def brute_front(points, max_params=None) -> np.ndarray:
    """(latency, cost) of the brute-force Pareto set, one entry per distinct non-dominated pair."""
    return staircase([(p[1], p[2]) for p in points if max_params is None or within(p[3], max_params)])


def check_front(tree, front, points, max_params=None) -> None:
    """`front` equals the brute-force front and every configuration on it has the stated sums."""
    got = staircase(zip(front.latency.tolist(), front.cost.tolist()))
    assert np.all(np.diff(front.latency) > 0) and np.all(np.diff(front.cost) < 0)
    np.testing.assert_allclose(got, brute_front(points, max_params), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tree.totals(tree.latency, front.configs, tree.constant_ms), front.latency, rtol=1e-12)
    np.testing.assert_allclose(tree.totals(tree.cost, front.configs), front.cost, rtol=1e-12, atol=1e-12)
    if tree.params is not None:
        np.testing.assert_allclose(tree.totals(tree.params, front.configs), front.params, rtol=1e-12)
    if max_params is not None:
        assert np.all(within(front.params, max_params))


@settings(max_examples=150, deadline=None)
@given(TREE_CASES, st.floats(0.0, 1.0))
def test_tree_front_equals_brute_force_with_and_without_a_params_budget(case, where) -> None:
    table, objective = tree_instance(*case)
    tree = build_tree(table, objective)
    points = enumerate_tree(tree)
    check_front(tree, build_front(tree), points)
    pars = sorted(p[3] for p in points)
    max_params = pars[int(where * (len(pars) - 1))]
    check_front(tree, build_front(tree, max_params), points, max_params)


@settings(max_examples=80, deadline=None)
@given(CASES)
def test_chain_front_equals_brute_force(case) -> None:
    table, objective = instance(*case)
    tree = build_tree(table, objective)
    check_front(tree, build_front(tree), enumerate_tree(tree))


@settings(max_examples=60, deadline=None)
@given(TREE_CASES)
def test_prefilters_change_nothing(case) -> None:
    table, objective = tree_instance(*case)
    tree = build_tree(table, objective)
    plain, plain3 = build_front(tree), build_front(tree, 1e9)
    saved = front_merge.PREFILTER_MIN
    front_merge.PREFILTER_MIN = 0  # the binned pre-filters on even for tiny candidate sets
    try:
        filtered, filtered3 = build_front(tree), build_front(tree, 1e9)
    finally:
        front_merge.PREFILTER_MIN = saved
    assert filtered.latency.tolist() == plain.latency.tolist() and filtered.cost.tolist() == plain.cost.tolist()
    assert filtered3.latency.tolist() == plain3.latency.tolist() and filtered3.cost.tolist() == plain3.cost.tolist()


@pytest.mark.parametrize("shape", ["star", "caterpillar", "random", "forest"])
@pytest.mark.parametrize("seed", [0, 1])
def test_medium_trees_equal_vectorised_brute_force(shape: str, seed: int) -> None:
    """Seven variables of four choices (16,384 configurations), float entries, the pre-filters on."""
    table = random_tree_table(shape, 50 + seed, levels=4, variables=7, integer=False, exact_levels=True)
    tree = build_tree(table, make_objective(table, random_costs(table, seed, pairwise=True, integer=False)))
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    lat = tree.totals(tree.latency, configs, tree.constant_ms)
    cost, par = tree.totals(tree.cost, configs), tree.totals(tree.params, configs)
    saved = front_merge.PREFILTER_MIN
    front_merge.PREFILTER_MIN = 0
    try:
        for max_params in (None, float(np.median(par))):
            front = build_front(tree, max_params)
            fits = np.ones(lat.size, bool) if max_params is None else par <= max_params + 1e-9
            for budget in np.quantile(lat[fits], [0.1, 0.5, 0.9]):
                pos = front.position(float(budget))
                assert front.cost[pos] == pytest.approx(cost[fits & (lat <= budget + 1e-9)].min())
    finally:
        front_merge.PREFILTER_MIN = saved


def test_mobilenet_front_spans_fastest_to_widest() -> None:
    table = mobilenet_v1_table(seed=3)
    searcher = Searcher(table, make_objective(table, "flops"))
    front = searcher.front()
    assert front.latency[0] == pytest.approx(searcher.tree.min_latency())
    widest = tuple(max(c) for c in table.choices)
    assert searcher.pareto()[-1].widths == widest
    assert np.all(np.diff(front.latency) > 0) and np.all(np.diff(front.cost) < 0)
    assert searcher.front() is front  # cached per (table, objective)


def test_mobilenet_v2_like_front_is_exact_at_its_ends_and_fast_enough() -> None:
    table = mobilenet_v2_like_table(levels=6, seed=1)
    tree = build_tree(table, make_objective(table, "flops"))
    start = time.perf_counter()
    front = build_front(tree)
    assert time.perf_counter() - start < 60  # a sanity bound only: the benchmark reports the figure
    assert front.latency[0] == pytest.approx(tree.min_latency())
    assert front.cost[-1] == pytest.approx(tree.cost_of(tree.argmin(tree.cost)))
    assert np.all(np.diff(front.latency) > 0) and np.all(np.diff(front.cost) < 0)
    np.testing.assert_allclose(tree.totals(tree.latency, front.configs, tree.constant_ms), front.latency, rtol=1e-12)
    # every front point is optimal for its budget: no configuration a min-sum finds beats it
    for lam in (0.0, 0.5, 2.0, 8.0):
        idx = tree.argmin(tree.cost.plus(tree.latency, lam))
        pos = front.position(tree.latency_of(idx))
        assert front.cost[pos] <= tree.cost_of(idx) + 1e-9


def test_exact_queries_on_a_chain_table_equal_brute_force() -> None:
    table = random_table(100, 6, 5, integer=False)
    searcher = Searcher(table, make_objective(table, random_costs(table, 0, pairwise=True, integer=False)))
    tree = searcher.tree
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    lat, cost = tree.totals(tree.latency, configs, tree.constant_ms), tree.totals(tree.cost, configs)
    for budget in np.quantile(lat, [0.0, 0.3, 0.7, 1.0]):
        assert searcher.query(float(budget)).cost == pytest.approx(cost[lat <= budget + 1e-9].min())
    with pytest.raises(InfeasibleBudget):
        searcher.query(float(lat.min()) * 0.99)


def test_a_params_front_past_its_deadline_or_candidate_cap_refuses() -> None:
    table = mobilenet_v1_table(seed=8)
    tree = build_tree(table, make_objective(table, "flops"))
    with pytest.raises(FrontTimedOut, match="time bound at step 1 of"):
        build_front(tree, 1.5e6, deadline=time.monotonic() - 1.0)
    saved = pareto_front.MAX_PARAMS_CANDIDATES
    pareto_front.MAX_PARAMS_CANDIDATES = 100
    try:
        with pytest.raises(FrontTooLarge, match="candidates at step"):
            build_front(tree, 1.5e6)
    finally:
        pareto_front.MAX_PARAMS_CANDIDATES = saved
    with pytest.raises(ValueError, match="no params"):
        build_front(tree.with_terms(keep_counts=False), 1.0)


#: A small family as a `widthwise-space/1` spec file holds it: option variables (kernel, expansion,
#: skip) beside tied stage widths, squeeze-excitation and h-swish; 8,640 configurations.
SMALL_OPTION_SPEC = {
    "format": "widthwise-space/1",
    "name": "small_options",
    "input": {"shape": [1, 3, 32, 32], "dtype": "float32"},
    "variables": [
        {"name": "stem", "group": "stem", "choices": [8, 16]},
        {"name": "s1.b1", "group": "s1", "options": {"kernel": [3, 5], "expand": [3, 6]}},
        {"name": "s1", "group": "s1", "grid": {"base": 24, "levels": 3}},
        {"name": "s1.b2", "group": "s1", "options": {"kernel": [3, 5], "expand": [3, 6], "skip": True}},
        {"name": "s1.b3", "group": "s1", "options": {"kernel": [3, 7], "expand": [4], "skip": True}},
        {"name": "s2.b1", "group": "s2", "options": {"kernel": [3, 5], "expand": [3, 6]}},
        {"name": "s2", "group": "s2", "choices": [32, 48]},
        {"name": "s2.b2", "group": "s2", "options": {"kernel": [3], "expand": [3, 6], "skip": True}},
    ],
    "stages": [
        {"name": "stem", "blocks": [{"kind": "conv", "name": "stem", "kernel": 3, "stride": 2, "out": "stem",
                                     "activation": "hswish"}]},
        {"name": "s1", "width": "s1", "blocks": [
            {"kind": "inverted_residual", "options": "s1.b1", "expand_base": 16, "stride": 2, "activation": "relu"},
            {"kind": "inverted_residual", "options": "s1.b2", "residual": True, "activation": "relu", "se": True},
            {"kind": "inverted_residual", "options": "s1.b3", "residual": True, "activation": "relu"}]},
        {"name": "s2", "width": "s2", "blocks": [
            {"kind": "inverted_residual", "options": "s2.b1", "expand_base": 24, "stride": 2, "activation": "hswish",
             "se": True},
            {"kind": "inverted_residual", "options": "s2.b2", "residual": True, "activation": "hswish"}]},
        {"name": "head", "blocks": [{"kind": "pool_fc", "name": "classifier", "out": 10}]},
    ],
}


@pytest.mark.parametrize("objective", ["flops", "params", "loss"])
def test_exact_equals_brute_force_on_a_small_spec_file_space(objective: str, tmp_path) -> None:
    """A spec file's space, tabled from its exact counts and read back as a table file: the exact front and
    queries equal brute force over every configuration (option variables are not ordered: nothing assumed)."""
    spec = tmp_path / "small.json"
    spec.write_text(json.dumps(SMALL_OPTION_SPEC, indent=1))
    space = parse_space_spec(load_spec_text(spec.read_bytes(), str(spec)))
    assert any(layer.options for layer in space.layers)
    space_table(space, seed=4).save(tmp_path / "table.json")
    table = load_table(tmp_path / "table.json")
    configs = np.array(list(itertools.product(*(range(len(c)) for c in table.choices))))
    assert len(configs) == 8640
    samples = None
    if objective == "loss":
        rng = np.random.default_rng(0)
        picks = configs[rng.choice(len(configs), 300, replace=False)]
        loss = 3.0 - np.log(configuration_totals(table, picks, "macs")) / 4 + 0.02 * rng.standard_normal(300)
        samples = [[[table.choices[v][j] for v, j in enumerate(row)], float(y)] for row, y in zip(picks.tolist(), loss)]
    searcher = Searcher(table, build_objective(table, "flops" if samples else objective, samples))
    tree = searcher.tree
    lat = table.constant_ms + configuration_totals(table, configs)
    cost = tree.totals(tree.cost, configs)
    front = searcher.front()
    got = staircase(zip(front.latency.tolist(), front.cost.tolist()))
    np.testing.assert_allclose(got, staircase(zip(lat.tolist(), cost.tolist())), rtol=1e-9, atol=1e-12)
    for budget in np.quantile(lat, [0.0, 0.05, 0.3, 0.6, 1.0]):
        answer = searcher.query(float(budget))
        assert answer.cost == pytest.approx(cost[lat <= budget + 1e-9].min(), rel=1e-9, abs=1e-12)
        assert within(answer.latency_ms, float(budget))


@pytest.mark.parametrize("shape", ["star", "caterpillar", "random", "forest"])
def test_the_front_is_the_same_whatever_the_plan_is_rooted_at(shape: str) -> None:
    """Rooting the elimination elsewhere (as `choose_roots` may) changes the work, never the front."""
    table, objective = tree_instance(shape, 11, 6, 3, "pairwise", integer=False)
    tree = build_tree(table, objective)
    points = enumerate_tree(tree)
    for root in range(tree.num_layers):
        plan = Plan(tree, [root])
        dp = pareto_front.TreeFrontDP(tree, pareto_front.Guard(plan, FrontLimits(), "exact front"))
        front = pareto_front.tidy_front(dp, *dp.run(), None)
        check_front(tree, front, points)
