"""The tree MRF: structure checks, folding, totals and min-sum against brute force over tree shapes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from widthwise.search.tree import CycleError, Terms, TreeMRF, fold_terms, min_sum, tree_structure

SHAPES = {
    "chain": [(0, 1), (1, 2), (2, 3), (3, 4)],
    "star": [(0, 4), (1, 4), (2, 4), (3, 4)],
    "caterpillar": [(0, 1), (1, 2), (2, 3), (4, 1), (5, 2)],
    "forest": [(0, 1), (2, 3)],
}


def random_tree(pairs: list[tuple[int, int]], num_vars: int, seed: int) -> tuple[TreeMRF, list]:
    """A TreeMRF with random nonnegative factors over `pairs` plus a unary factor per variable."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(1, 4)) for _ in range(num_vars)]
    parent, order = tree_structure(num_vars, pairs)
    factors = [((a, b), rng.uniform(0, 5, (sizes[a], sizes[b]))) for a, b in pairs]
    factors += [((v,), rng.uniform(0, 5, sizes[v])) for v in range(num_vars)]
    terms = fold_terms(sizes, parent, factors)
    choices = tuple(tuple(8 * (j + 1) for j in range(k)) for k in sizes)
    tree = TreeMRF(choices, parent, order, 1.5, terms, terms, None, None)
    return tree, factors


def brute(factors: list, sizes: list[int]) -> tuple[float, tuple[int, ...]]:
    best = None
    for idx in itertools.product(*(range(k) for k in sizes)):
        total = sum(float(arr[tuple(idx[v] for v in vs)]) for vs, arr in factors)
        if best is None or total < best[0] - 1e-12:
            best = (total, idx)
    return best


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("seed", range(5))
def test_min_sum_matches_brute_force(shape: str, seed: int) -> None:
    pairs = SHAPES[shape]
    n = 1 + max(max(p) for p in pairs)
    tree, factors = random_tree(pairs, n, seed)
    value, idx = min_sum(tree, tree.latency)
    want, _ = brute(factors, list(tree.sizes))
    assert value == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert tree.total(tree.latency, idx) == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_random_trees_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    for seed in range(10):
        n = int(rng.integers(2, 7))
        pairs = [(v, int(rng.integers(0, v))) for v in range(1, n)]
        tree, factors = random_tree(pairs, n, seed)
        value, _ = min_sum(tree, tree.latency)
        assert value == pytest.approx(brute(factors, list(tree.sizes))[0], rel=1e-9, abs=1e-9)


def test_totals_equal_total_and_constant_is_added() -> None:
    tree, factors = random_tree(SHAPES["caterpillar"], 6, 3)
    configs = np.array(list(itertools.product(*(range(k) for k in tree.sizes))))
    many = tree.totals(tree.latency, configs, tree.constant_ms)
    one = [tree.latency_of(c) for c in configs]
    np.testing.assert_allclose(many, one, rtol=1e-12)
    direct = [1.5 + sum(float(a[tuple(c[v] for v in vs)]) for vs, a in factors) for c in configs]
    np.testing.assert_allclose(many, direct, rtol=1e-12)


def test_chain_is_rooted_at_its_last_variable() -> None:
    parent, order = tree_structure(4, [(0, 1), (1, 2), (2, 3)])
    assert parent == (1, 2, 3, -1)
    assert order == (0, 1, 2, 3)


def test_cycle_names_the_closing_variables() -> None:
    with pytest.raises(CycleError, match="stage1 and stage3 close a cycle"):
        tree_structure(3, [(0, 1), (1, 2), (0, 2)], ["stage1", "stage2", "stage3"])
    with pytest.raises(CycleError) as info:
        tree_structure(3, [(0, 1), (1, 2), (2, 0)], ["a", "b", "c"])
    assert set(info.value.variables) == {"a", "c"}


def test_repeated_pairs_are_one_edge_and_sum() -> None:
    sizes = [2, 3]
    parent, order = tree_structure(2, [(0, 1), (1, 0)])
    a = np.arange(6.0).reshape(2, 3)
    terms = fold_terms(sizes, parent, [((0, 1), a), ((1, 0), a.T)])
    np.testing.assert_allclose(terms.edge[0], 2 * a.T)
    assert terms.edge[1] is None


def test_terms_arithmetic() -> None:
    t = Terms((np.ones(2),), (None,))
    assert t.plus(t, 2.0).unary[0].tolist() == [3.0, 3.0]
    assert t.negated().unary[0].tolist() == [-1.0, -1.0]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_stacked_terms_hold_every_edge_and_unary_with_inert_padding(shape: str) -> None:
    pairs = SHAPES[shape]
    tree, _ = random_tree(pairs, 1 + max(max(p) for p in pairs), 4)
    latency, cost = tree.stacked
    k = max(tree.sizes)
    assert latency.shape == cost.shape == (tree.num_layers, k + 1, k)
    assert tree.stacked is tree.stacked  # built once
    for v, size in enumerate(tree.sizes):
        np.testing.assert_array_equal(latency[v, k, :size], tree.latency.unary[v])
        np.testing.assert_array_equal(cost[v, k, :size], tree.cost.unary[v])
        real = np.zeros((k + 1, k), dtype=bool)
        real[k, :size] = True
        if tree.parent[v] >= 0:
            rows = tree.sizes[tree.parent[v]]
            np.testing.assert_array_equal(latency[v, :rows, :size], tree.latency.edge[v])
            real[:rows, :size] = True
        assert np.all(np.isposinf(cost[v][~real])) and np.all(latency[v][~real] == 0)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_levels_put_children_before_parents(shape: str) -> None:
    pairs = SHAPES[shape]
    tree, _ = random_tree(pairs, 1 + max(max(p) for p in pairs), 2)
    by_height, by_depth = tree.levels
    non_roots = sorted(v for v in range(tree.num_layers) if tree.parent[v] >= 0)
    for groups in (by_height, by_depth):
        assert sorted(int(v) for g in groups for v in g) == non_roots
    height = {int(v): i for i, g in enumerate(by_height) for v in g}
    depth = {int(v): i for i, g in enumerate(by_depth) for v in g}
    for v in non_roots:
        p = tree.parent[v]
        if tree.parent[p] >= 0:
            assert height[v] < height[p] and depth[p] < depth[v]
