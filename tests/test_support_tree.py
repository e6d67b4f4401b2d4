"""The tree-table generators of tests/support/synthetic_tree.py: shapes as named, MobileNet-V2 as the agent defines it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.support.synthetic import TREE_SHAPES, mobilenet_v2_like_table, random_costs, random_tree_table, tree_edges
from widthwise.device_agents.spaces import block_counts, mobilenet_v2
from widthwise.search.table import FORMAT_V2, Table
from widthwise.search.tree import tree_structure


def _degrees(edges: list[tuple[int, int]], n: int) -> list[int]:
    degree = [0] * n
    for a, b in edges:
        degree[a] += 1
        degree[b] += 1
    return degree


@pytest.mark.parametrize("seed", range(5))
def test_each_shape_is_the_forest_it_names(seed):
    n = 7
    rng = np.random.default_rng(seed)
    edges = {shape: tree_edges(shape, n, rng)[0] for shape in TREE_SHAPES}
    for shape, pairs in edges.items():
        parent, _ = tree_structure(n, pairs)  # a CycleError here would be a generator bug
        roots = sum(p < 0 for p in parent)
        assert roots == (2 if shape == "forest" else 1), shape
    assert edges["chain"] == [(k + 1, k) for k in range(n - 1)]
    assert sorted(_degrees(edges["star"], n)) == [1] * (n - 1) + [n - 1]
    # A caterpillar: removing its leaves leaves a path.
    degree = _degrees(edges["caterpillar"], n)
    spine = [(a, b) for a, b in edges["caterpillar"] if degree[a] > 1 and degree[b] > 1]
    assert max(_degrees(spine, n)) <= 2
    with pytest.raises(ValueError, match="shape must be one of"):
        tree_edges("ring", n, rng)


@pytest.mark.parametrize("shape", TREE_SHAPES)
def test_random_tree_tables_are_valid_small_and_carry_counts(shape):
    for seed in range(10):
        table = random_tree_table(shape, seed, levels=3, variables=5)
        assert Table.from_json(table.to_json()).format == FORMAT_V2
        assert all(1 <= len(c) <= 3 for c in table.choices)
        assert table.has_counts("macs") and table.has_counts("params")
        assert all(np.all(f.params >= 1) for f in table.factors)
        costs = random_costs(table, seed)
        assert [np.shape(c) for c in costs["pairwise"]] == [f.ms.shape for f in table.factors]
    exact = random_tree_table(shape, 0, levels=4, variables=6, exact_levels=True, integer=False)
    assert [len(c) for c in exact.choices] == [4] * 6


def test_the_mobilenet_v2_like_table_has_the_structure_of_the_space():
    table = mobilenet_v2_like_table(levels=14)
    names = table.variable_names
    assert names[:5] == ("stem", "stage1", "stage2.block1.expand", "stage2", "stage2.block2.expand")
    assert names[-3:] == ("stage7.block1.expand", "stage7", "head") and len(names) == 25
    assert {f.kind for f in table.factors} == {"conv", "ir_dwproject", "ir_expand", "ir_project", "pool_fc"}
    assert all(np.all(f.ms > 0) and np.all(f.params > 0) for f in table.factors)
    assert 96 in table.choices[names.index("stage2.block1.expand")], "the 1.0x expansion (6 x 16) is on the grid"


@pytest.mark.parametrize("levels", [3, 6])
def test_the_mobilenet_v2_like_table_agrees_with_the_agent_space(levels):
    """Variables, groups, factors and every MAC and parameter count equal the agent's own definition."""
    space, table = mobilenet_v2(224, levels), mobilenet_v2_like_table(levels=levels)
    assert [layer.name for layer in space.layers] == list(table.variable_names)
    assert [layer.choices for layer in space.layers] == table.choices
    assert [layer.group for layer in space.layers] == list(table.variable_groups)
    assert [(s.name, s.kind, tuple(s.variables)) for s in space.factors] == \
        [(f.name, f.kind, f.variables) for f in table.factors]
    for k, factor in enumerate(table.factors):
        grids = [table.choices[v] for v in factor.variables]
        for idx in itertools.product(*(range(len(g)) for g in grids)):
            counts = block_counts(space.factor_op(k, [g[i] for g, i in zip(grids, idx)]))
            assert counts == (factor.macs[idx], factor.params[idx]), (factor.name, idx)
