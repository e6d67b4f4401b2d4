"""The elimination plan (virtual root) and the least completions, against brute force over every shape."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from widthwise.search.elimination import SWITCH_BELOW, Completion, Plan, choose_roots, estimated_work, rerooted
from widthwise.search.tree import build_tree
from tests.search.brute import make_objective
from tests.support.synthetic import TREE_SHAPES, mobilenet_v1_table, mobilenet_v2_like_table, random_tree_table


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


def _plan_totals(plan: Plan, terms, configs: np.ndarray, constant: float = 0.0) -> np.ndarray:
    """Each configuration's sum of `terms` as the plan reads them: unary terms and edges to plan parents."""
    total = np.full(len(configs), constant)
    for v in range(plan.virtual):
        total += plan.unary(terms, v)[configs[:, v]]
        p = plan.parent[v]
        edge = plan.edge(terms, v)
        assert edge.shape == (plan.sizes[p], plan.sizes[v])
        total += edge[configs[:, p] if p != plan.virtual else 0, configs[:, v]]
    return total


@pytest.mark.parametrize("shape", TREE_SHAPES)
@pytest.mark.parametrize("seed", range(3))
def test_a_plan_rooted_anywhere_sums_the_same_terms(shape: str, seed: int) -> None:
    table = random_tree_table(shape, 20 + seed, levels=3, variables=6, integer=False)
    tree = build_tree(table, make_objective(table, "flops"))
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    latency = tree.totals(tree.latency, configs, tree.constant_ms)
    for root in range(tree.num_layers):
        plan = Plan(tree, [root])
        assert plan.parent[root] == plan.virtual and plan.order[-1] == plan.virtual
        assert sorted(plan.order[:-1]) == list(range(tree.num_layers))
        seen: set[int] = set()
        for v in plan.order[:-1]:  # children before parents
            assert all(c in seen for c in plan.children[v])
            seen.add(v)
        np.testing.assert_allclose(_plan_totals(plan, tree.latency, configs, tree.constant_ms), latency, rtol=1e-12)
        np.testing.assert_allclose(_plan_totals(plan, tree.cost, configs), tree.totals(tree.cost, configs),
                                   rtol=1e-12, atol=1e-12)
        assert Completion(plan, tree.latency, tree.constant_ms).least == pytest.approx(latency.min())
        assert Completion(plan, tree.cost).least == pytest.approx(tree.totals(tree.cost, configs).min())


def test_rerooted_roots_each_component_at_its_first_given_variable() -> None:
    parent = (1, 2, -1, -1)  # 0 - 1 - 2 and 3 alone
    assert rerooted(parent, [0]) == ((-1, 0, 1, -1), (3, 2, 1, 0))
    assert rerooted(parent, [3, 1])[0] == (1, -1, 1, -1)
    assert rerooted(parent, [0, 2])[0] == (-1, 0, 1, -1)  # 2 shares 0's component: not a root
    assert rerooted(parent, []) == ((1, 2, -1, -1), (3, 0, 1, 2))


def test_choose_roots_keeps_a_chain_and_roots_mobilenet_v2_at_its_stem() -> None:
    chain = build_tree(mobilenet_v1_table(seed=0), make_objective(mobilenet_v1_table(seed=0), "flops"))
    assert choose_roots(chain) is None
    table = mobilenet_v2_like_table(levels=14, seed=0)
    tree = build_tree(table, make_objective(table, "flops"))
    roots = choose_roots(tree)
    assert roots is not None and [tree.names[r] for r in roots] == ["stem"]
    default = estimated_work(tree.parent, tree.order, tree.sizes)
    assert estimated_work(*rerooted(tree.parent, roots), tree.sizes) < SWITCH_BELOW * default
