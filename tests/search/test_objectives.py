"""Objectives: counts from the table, validated costs files, and loss samples fitted to costs."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.search.chain import build_chain
from widthwise.search.engine import ObjectiveError, make_objective
from tests.support.synthetic import mobilenet_v1_table, random_costs, random_table
from widthwise.search.table import Block


@pytest.fixture(scope="module")
def table():
    return mobilenet_v1_table(seed=0)


def test_flops_cost_is_minus_the_macs_fraction(table):
    chain = build_chain(table, make_objective(table, "flops"))
    widest = tuple(len(c) - 1 for c in table.choices)  # grids rise, so the last is the widest
    smallest = tuple(0 for _ in table.choices)
    assert chain.cost_of(widest) == pytest.approx(-1.0)
    assert chain.cost_of(smallest) == pytest.approx(-chain.macs_of(smallest) / chain.macs_of(widest))


def test_params_objective_uses_the_params(table):
    chain = build_chain(table, make_objective(table, "params"))
    cfg = tuple(j // 2 for j in (len(c) - 1 for c in table.choices))
    widest = tuple(len(c) - 1 for c in table.choices)
    assert chain.cost_of(cfg) == pytest.approx(-chain.params_of(cfg) / chain.params_of(widest))


def test_count_objective_needs_counts_in_the_table():
    bare = random_table(0, 2, 2, with_counts=False)
    with pytest.raises(ObjectiveError, match=r"blocks\[0\].*no 'macs'"):
        make_objective(bare, "flops")


def test_unknown_objective_name():
    with pytest.raises(ObjectiveError, match="unknown name 'accuracy'"):
        make_objective(random_table(0), "accuracy")


def test_costs_object_round_trip():
    table = random_table(3, 3, 3)
    costs = random_costs(table, 3, pairwise=True)
    chain = build_chain(table, make_objective(table, costs))
    cfg = tuple(0 for _ in table.choices)
    path = [0, *cfg, 0]
    expected = sum(costs["unary"][k][0] for k in range(3)) + sum(
        costs["pairwise"][k][path[k]][path[k + 1]] for k in range(4)
    )
    assert chain.cost_of(cfg) == pytest.approx(expected)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["unary"].pop(), r"costs.unary: expected 3 layers"),
        (lambda c: c["unary"][1].append(0.0), r"costs.unary\[1\] \(layer layer1\): expected"),
        (lambda c: c["unary"][2].__setitem__(0, float("nan")), r"costs.unary\[2\] \(layer layer2\)\[0\]: must be a finite"),
        (lambda c: c["pairwise"][1].pop(), r"costs.pairwise\[1\] \(block layer1\): expected"),
        (lambda c: c["pairwise"][3][0].append(1.0), r"costs.pairwise\[3\] \(block classifier\)\[0\]: expected"),
        (lambda c: c.__setitem__("format", "widthwise-costs/9"), r"costs.format: unknown format"),
        (lambda c: c.__setitem__("space", "other"), r"costs.space: costs are for space 'other'"),
        (lambda c: c.__setitem__("weights", []), r"costs.weights: unknown field"),
    ],
)
def test_costs_errors_name_the_layer_or_field(mutate, message):
    table = random_table(11, 3, 3)
    table.space["layers"][1]["choices"] = list(table.choices[1])  # keep names layer0..2
    costs = random_costs(table, 1, pairwise=True)
    mutate(costs)
    with pytest.raises(ObjectiveError, match=message):
        make_objective(table, costs)


def test_loss_samples_recover_planted_costs():
    table = mobilenet_v1_table(seed=0)
    rng = np.random.default_rng(7)
    planted = [rng.normal(size=len(c)) for c in table.choices]
    samples = []
    for _ in range(3000):
        idx = [int(rng.integers(len(c))) for c in table.choices]
        loss = 2.0 + sum(planted[k][j] for k, j in enumerate(idx)) + 0.01 * rng.normal()
        samples.append([[table.choices[k][j] for k, j in enumerate(idx)], loss])
    objective = make_objective(table, loss_samples=samples)
    assert objective.name == "loss-samples" and objective.info["rmse"] < 0.05
    for fitted, truth in zip(objective.unary, planted):
        # Per-layer costs are defined up to a constant: compare the differences.
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
        make_objective(table, loss_samples=[sample])


def test_loss_samples_exclude_another_objective():
    table = random_table(0, 2, 2)
    with pytest.raises(ObjectiveError, match="not both"):
        make_objective(table, "params", loss_samples=[[list(c[:1] for c in table.choices), 1.0]])
