"""Objectives: counts from the table's blocks or factors, validated costs files, loss samples fitted to costs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.support.synthetic import (TREE_SHAPES, mobilenet_v1_table, mobilenet_v2_like_table, random_costs,
                                     random_table, random_tree_table)
from widthwise.search.objectives import ObjectiveError, build_objective
from widthwise.search.table import Block
from widthwise.search.tree import build_tree


@pytest.fixture(scope="module")
def table():
    return mobilenet_v1_table(seed=0)


@pytest.fixture(scope="module")
def tree_table():
    return mobilenet_v2_like_table(levels=8, seed=0)


def _power_of_two_at_or_above(x: float) -> float:
    return 2.0 ** int(np.ceil(np.log2(x)))


def test_flops_cost_is_minus_the_macs_over_a_power_of_two(table):
    tree = build_tree(table, build_objective(table, "flops"))
    widest = tuple(len(c) - 1 for c in table.choices)  # grids rise, so the last is the widest
    smallest = tuple(0 for _ in table.choices)
    scale = _power_of_two_at_or_above(tree.macs_of(widest))
    assert -1.0 <= tree.cost_of(widest) < -0.5
    assert tree.cost_of(widest) == pytest.approx(-tree.macs_of(widest) / scale)
    assert tree.cost_of(smallest) == pytest.approx(-tree.macs_of(smallest) / scale)


@pytest.mark.parametrize("name, key", [("flops", "macs"), ("params", "params")])
def test_count_costs_sum_exactly_in_any_order(tree_table, name, key):
    # integer counts over a power of two are exact doubles: two configurations of equal count get
    # bitwise-equal costs whatever order their terms are added in, so the front keeps no twin
    objective = build_objective(tree_table, name)
    rng = np.random.default_rng(3)
    for _ in range(20):
        pick = tuple(int(rng.integers(len(c))) for c in tree_table.choices)
        terms = [float(c[tuple(pick[v] for v in f.variables)]) for c, f in zip(objective.pairwise, tree_table.factors)]
        count = sum(f.value(pick, key) for f in tree_table.factors)
        assert sum(terms) == sum(reversed(terms)) == -count / objective.info["scale"]


@pytest.mark.parametrize("name, key", [("flops", "macs"), ("params", "params")])
def test_a_chain_keeps_one_block_shaped_cost_per_block(table, name, key):
    objective = build_objective(table, name)
    widest = [0, *(len(c) - 1 for c in table.choices), 0]
    scale = _power_of_two_at_or_above(float(sum(getattr(b, key)[widest[k], widest[k + 1]]
                                                 for k, b in enumerate(table.blocks))))
    assert objective.info["scale"] == scale
    assert len(objective.pairwise) == len(table.blocks)
    for cost, block in zip(objective.pairwise, table.blocks):
        np.testing.assert_array_equal(cost, -getattr(block, key) / scale)


@pytest.mark.parametrize("name, key", [("flops", "macs"), ("params", "params")])
def test_a_tree_gets_one_cost_per_factor_of_its_shape(tree_table, name, key):
    objective = build_objective(tree_table, name)
    assert [c.shape for c in objective.pairwise] == [f.ms.shape for f in tree_table.factors]
    tree = build_tree(tree_table, objective)
    widest = tuple(len(c) - 1 for c in tree_table.choices)
    middle = tuple(len(c) // 2 for c in tree_table.choices)
    assert -1.0 <= tree.cost_of(widest) < -0.5
    counts = sum(f.value(middle, key) for f in tree_table.factors)
    assert tree.cost_of(middle) == pytest.approx(-counts / objective.info["scale"])


def test_count_objective_needs_counts_in_the_table():
    bare = random_table(0, 2, 2, with_counts=False)
    with pytest.raises(ObjectiveError, match=r"blocks\[0\].*no 'macs'"):
        build_objective(bare, "flops")
    bare_tree = random_tree_table("star", 0, with_counts=False)
    with pytest.raises(ObjectiveError, match=r"factors\[0\] \(f0\.\S+\): the table has no 'params'"):
        build_objective(bare_tree, "params")


def test_unknown_objective_name():
    with pytest.raises(ObjectiveError, match="unknown name 'accuracy'"):
        build_objective(random_table(0), "accuracy")


def test_costs_object_round_trip():
    table = random_table(3, 3, 3)
    costs = random_costs(table, 3, pairwise=True)
    tree = build_tree(table, build_objective(table, costs))
    cfg = tuple(0 for _ in table.choices)
    path = [0, *cfg, 0]
    expected = sum(costs["unary"][k][0] for k in range(3)) + sum(
        costs["pairwise"][k][path[k]][path[k + 1]] for k in range(4)
    )
    assert tree.cost_of(cfg) == pytest.approx(expected)


@pytest.mark.parametrize("shape", TREE_SHAPES)
def test_tree_costs_add_up_per_factor_at_every_configuration(shape):
    table = random_tree_table(shape, 8, levels=3, variables=5)
    costs = random_costs(table, 8, pairwise=True)
    tree = build_tree(table, build_objective(table, costs))
    for idx in itertools.product(*(range(len(c)) for c in table.choices)):
        expected = sum(costs["unary"][v][j] for v, j in enumerate(idx))
        for cost, factor in zip(costs["pairwise"], table.factors):
            entry = cost
            for v in factor.variables:
                entry = entry[idx[v]]
            expected += entry
        assert tree.cost_of(idx) == pytest.approx(expected)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["unary"].pop(), r"costs.unary: expected 3 layers"),
        (lambda c: c["unary"][1].append(0.0), r"costs.unary\[1\] \(layer layer1\): expected"),
        (lambda c: c["unary"][2].__setitem__(0, float("nan")), r"costs.unary\[2\] \(layer layer2\)\[0\]: must be a finite"),
        (lambda c: c["pairwise"][1].pop(), r"costs.pairwise\[1\] \(block layer1\): expected \d rows \(one per input width\)"),
        (lambda c: c["pairwise"][3][0].append(1.0), r"costs.pairwise\[3\] \(block classifier\)\[0\]: expected 1 values \(one per width choice\)"),
        (lambda c: c["pairwise"].pop(), r"costs.pairwise: expected 4 blocks, got 3"),
        (lambda c: c.__setitem__("format", "widthwise-costs/9"), r"costs.format: unknown format"),
        (lambda c: c.__setitem__("space", "other"), r"costs.space: costs are for space 'other'"),
        (lambda c: c.__setitem__("weights", []), r"costs.weights: unknown field"),
    ],
)
def test_costs_errors_name_the_layer_or_field(mutate, message):
    table = random_table(11, 3, 3)
    costs = random_costs(table, 1, pairwise=True)
    mutate(costs)
    with pytest.raises(ObjectiveError, match=message):
        build_objective(table, costs)


def test_tree_costs_errors_name_the_variable_or_factor(tree_table):
    names = tree_table.variable_names
    f = next(k for k, f in enumerate(tree_table.factors) if len(f.variables) == 2)
    factor = tree_table.factors[f]
    cases = [
        (lambda c: c["unary"].pop(), rf"costs.unary: expected {len(names)} variables \(one list per variable\)"),
        (lambda c: c["unary"][3].append(0.0), rf"costs.unary\[3\] \(variable {names[3]}\): expected"),
        (lambda c: c["pairwise"].pop(), rf"costs.pairwise: expected {len(tree_table.factors)} factors"),
        (lambda c: c["pairwise"][f].pop(), rf"costs.pairwise\[{f}\] \(factor {factor.name}\): expected \d+ rows "
                                           rf"\(one per choice of {names[factor.variables[0]]}\)"),
        (lambda c: c["pairwise"][f][0].pop(), rf"costs.pairwise\[{f}\] \(factor {factor.name}\)\[0\]: expected \d+ "
                                              rf"values \(one per choice of {names[factor.variables[1]]}\)"),
        (lambda c: c["pairwise"][0].__setitem__(0, "x"), r"costs.pairwise\[0\] \(factor stem\)\[0\]: must be a finite"),
    ]
    for mutate, message in cases:
        costs = random_costs(tree_table, 2, pairwise=True, integer=False)
        mutate(costs)
        with pytest.raises(ObjectiveError, match=message):
            build_objective(tree_table, costs)


@pytest.mark.parametrize("make", [lambda: mobilenet_v1_table(seed=0), lambda: mobilenet_v2_like_table(levels=6)])
def test_loss_samples_recover_planted_costs(make):
    table = make()
    rng = np.random.default_rng(7)
    planted = [rng.normal(size=len(c)) for c in table.choices]
    samples = []
    for _ in range(3000):
        idx = [int(rng.integers(len(c))) for c in table.choices]
        loss = 2.0 + sum(planted[k][j] for k, j in enumerate(idx)) + 0.01 * rng.normal()
        samples.append([[table.choices[k][j] for k, j in enumerate(idx)], loss])
    objective = build_objective(table, loss_samples=samples)
    assert objective.name == "loss-samples" and objective.info["rmse"] < 0.05
    assert objective.pairwise is None and len(objective.unary) == table.num_layers
    for fitted, truth in zip(objective.unary, planted):
        # Per-variable costs are defined up to a constant: compare the differences.
        np.testing.assert_allclose(fitted - fitted.mean(), truth - truth.mean(), atol=0.05)


@pytest.mark.parametrize(
    "sample, message",
    [
        ([[8, 8], 1.0], r"loss sample 0: expected 3 widths, got 2"),
        ([[8, 8, 7], 1.0], r"width 7 of layer 2 \(layer2\) is not one of its choices"),
        ([[8, 8, 8], "x"], r"loss sample 0: loss: must be a finite number"),
        ([[8, 8, 8]], r"loss sample 0: must be \[\[w_0"),
    ],
)
def test_loss_sample_errors(sample, message):
    table = random_table(0, 3, 1)
    for layer in table.space["layers"]:
        layer["choices"] = [8]
    for k in range(3):
        table.blocks[k] = Block(table.blocks[k].name, table.blocks[k].in_widths[:1] if k == 0 else (8,), (8,), np.zeros((1, 1)))
    with pytest.raises(ObjectiveError, match=message):
        build_objective(table, loss_samples=[sample])


def test_a_loss_sample_off_a_tree_variables_grid_names_the_variable():
    table = random_tree_table("caterpillar", 4, levels=2, variables=4, exact_levels=True)
    widths = [c[0] for c in table.choices]
    widths[2] = 5
    with pytest.raises(ObjectiveError, match=r"width 5 of variable 2 \(v2\) is not one of its choices"):
        build_objective(table, loss_samples=[[widths, 1.0]])


def test_loss_samples_exclude_another_objective():
    table = random_table(0, 2, 2)
    with pytest.raises(ObjectiveError, match="not both"):
        build_objective(table, "params", loss_samples=[[list(c[:1] for c in table.choices), 1.0]])
