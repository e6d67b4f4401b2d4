"""Local repair within two budgets: stays feasible, only gets cheaper, and ends at a local optimum on trees."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from widthwise.search.budget import within
from widthwise.search.local_repair import improve
from widthwise.search.tree import build_tree
from tests.search.brute import make_objective
from tests.support.synthetic import TREE_SHAPES, random_costs, random_tree_table


@pytest.mark.parametrize("shape", TREE_SHAPES)
@pytest.mark.parametrize("seed", range(4))
def test_improve_keeps_both_budgets_and_no_neighbour_is_cheaper(shape: str, seed: int) -> None:
    table = random_tree_table(shape, seed, levels=3, variables=6, integer=False)
    tree = build_tree(table, make_objective(table, random_costs(table, seed, pairwise=True, integer=False)))
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    lat = tree.totals(tree.latency, configs, tree.constant_ms)
    par, cost = tree.totals(tree.params, configs), tree.totals(tree.cost, configs)
    budget, max_params = float(np.median(lat)), float(np.median(par))
    fits = (lat <= budget) & (par <= max_params)
    start = tuple(int(i) for i in configs[np.flatnonzero(fits)[np.argmax(cost[fits])]])  # the dearest feasible
    done = improve(tree, start, budget, max_params)
    assert within(tree.latency_of(done), budget) and within(tree.params_of(done), max_params)
    assert tree.cost_of(done) <= tree.cost_of(start)
    for v in range(tree.num_layers):
        p = tree.parent[v]
        moves = itertools.product(range(tree.sizes[p]) if p >= 0 else [None], range(tree.sizes[v]))
        for a, b in moves:
            other = list(done)
            other[v] = b
            if a is not None:
                other[p] = a
            if within(tree.latency_of(other), budget) and within(tree.params_of(other), max_params):
                assert tree.cost_of(other) >= tree.cost_of(done) - 1e-9 * max(1.0, abs(tree.cost_of(done)))
