"""The elimination plan (virtual root) and the least completions, against brute force over every shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from widthwise.search.elimination import Completion, Plan
from widthwise.search.tree import build_tree
from tests.search.brute import make_objective
from tests.support.synthetic import TREE_SHAPES, random_tree_table


@pytest.mark.parametrize("shape", TREE_SHAPES)
@pytest.mark.parametrize("seed", range(4))
def test_rest_is_the_least_completion_of_a_partial_set(shape: str, seed: int) -> None:
    table = random_tree_table(shape, seed, levels=3, variables=5, integer=False)
    tree = build_tree(table, make_objective(table, "flops"))
    plan = Plan(tree)
    completion = Completion(plan, tree.latency, tree.constant_ms)
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    total = tree.totals(tree.latency, configs, tree.constant_ms)
    assert completion.least == pytest.approx(total.min())
    subtree = {v: {v} for v in range(tree.num_layers)}
    for v in tree.order:
        if tree.parent[v] >= 0:
            subtree[tree.parent[v]] |= subtree[v]
    for p in range(tree.num_layers):
        kids = plan.children[p]
        for covered in (frozenset(), frozenset(kids[:1])):
            inside = {p}.union(*(subtree[c] for c in covered))
            part = _partial(tree, configs, inside, covered, p)
            for with_unary in (True, False):
                rest = completion.rest(p, covered, with_unary)
                own = part + (tree.latency.unary[p][configs[:, p]] if with_unary else 0.0)
                for j in range(tree.sizes[p]):
                    at = configs[:, p] == j
                    assert rest[j] == pytest.approx((total[at] - own[at]).min(), abs=1e-9)
    assert plan.steps() == tree.num_layers + sum(max(0, len(c) - 1) for c in plan.children)


def _partial(tree, configs, inside, covered, p) -> np.ndarray:
    """The latency terms of the covered children's subtrees (their unary terms and edges, the edge to p included)."""
    out = np.zeros(len(configs))
    members = inside - {p}
    for v in members:
        out += tree.latency.unary[v][configs[:, v]]
        if tree.parent[v] >= 0:
            out += tree.latency.edge[v][configs[:, tree.parent[v]], configs[:, v]]
    return out
