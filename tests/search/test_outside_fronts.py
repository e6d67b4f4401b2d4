"""The binned outside staircases: never above the least outside cost within a room, and close to it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from widthwise.search.elimination import Completion, Plan
from widthwise.search.outside_fronts import OutsideFronts
from widthwise.search.tree import Terms, build_tree
from tests.search.brute import make_objective
from tests.support.synthetic import TREE_SHAPES, random_costs, random_tree_table


def _outside(tree, configs: np.ndarray, terms, v: int, constant: float) -> np.ndarray:
    """Per configuration, the sum of `terms` outside v's subtree (its edge to its parent included)."""
    inside = {v}  # v's subtree: every variable whose parent is in it joins
    changed = True
    while changed:
        changed = False
        for u in range(tree.num_layers):
            if u not in inside and tree.parent[u] in inside:
                inside.add(u)
                changed = True
    total = np.full(len(configs), constant)
    for u in range(tree.num_layers):
        if u in inside and u != v:
            continue
        if u != v:
            total += terms.unary[u][configs[:, u]]
        if tree.parent[u] >= 0:
            total += terms.edge[u][configs[:, tree.parent[u]], configs[:, u]]
    return total


@pytest.mark.parametrize("shape", TREE_SHAPES)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("bins", [16, 8192])
def test_least_cost_never_exceeds_the_least_outside_cost_within_the_room(shape: str, seed: int, bins: int) -> None:
    table = random_tree_table(shape, seed, levels=3, variables=5, integer=False)
    tree = build_tree(table, make_objective(table, random_costs(table, seed, pairwise=True, integer=False)))
    plan = Plan(tree)
    stairs = OutsideFronts(plan, tree.latency, tree.cost, Completion(plan, tree.latency, tree.constant_ms),
                           Completion(plan, tree.cost), tree.constant_ms, bins)
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    for v in range(tree.num_layers):
        x = _outside(tree, configs, tree.latency, v, tree.constant_ms)
        cost = _outside(tree, configs, tree.cost, v, 0.0)
        rooms = np.unique(np.concatenate([x, x + 0.01, x - 0.01]))
        bound = stairs.least_cost(v, np.tile(rooms, (tree.sizes[v], 1)))
        for j in range(tree.sizes[v]):
            at = configs[:, v] == j
            for room, b in zip(rooms, bound[j]):
                fits = at & (x <= room)
                best = cost[fits].min() if fits.any() else np.inf
                assert b <= best + 1e-9
                if bins == 8192 and shape == "chain" and fits.any():
                    # a chain has no siblings: only the rounding of x to bins loosens the bound
                    looser = at & (x <= room + 5 * stairs.width)
                    assert b >= cost[looser].min() - 1e-9


def test_negative_terms_turn_the_bound_off() -> None:
    table = random_tree_table("chain", 1, levels=2, variables=3)
    tree = build_tree(table, make_objective(table, "flops"))
    negative = Terms(tuple(-u for u in tree.latency.unary), tree.latency.edge)
    plan = Plan(tree)
    stairs = OutsideFronts(plan, negative, tree.cost, Completion(plan, negative), Completion(plan, tree.cost))
    assert not stairs.enabled and np.all(stairs.least_cost(0, np.zeros((tree.sizes[0], 2))) == -np.inf)
