"""Brute force for the search's property tests: random small chains and trees, and every configuration of one."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import strategies as st

from widthwise.search.objectives import Objective, build_objective
from widthwise.search.table import Table
from widthwise.search.tree import TreeMRF
from tests.support.synthetic import TREE_SHAPES, random_objective, random_table, random_tree_table

#: (seed, layers, choices per layer, objective kind, integer entries) of a random small chain
CASES = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["flops", "unary", "pairwise"]),
    st.booleans(),
)

#: (shape, seed, variables, choices per variable, objective kind, integer entries) of a random small tree
TREE_CASES = st.tuples(
    st.sampled_from(TREE_SHAPES),
    st.integers(0, 10**6),
    st.integers(1, 6),
    st.integers(1, 3),
    st.sampled_from(["flops", "params", "unary", "pairwise"]),
    st.booleans(),
)


def make_objective(table: Table, spec: str | dict = "flops") -> Objective:
    """The objective `spec` over `table` (what `engine.make_objective` builds, without the engine)."""
    return build_objective(table, spec, None)


def instance(seed: int, layers: int, choices: int, kind: str, integer: bool = True) -> tuple[Table, Objective]:
    """A random chain table (`widthwise-table/1`) and a random objective of `kind` over it."""
    table = random_table(seed, layers, choices, integer=integer)
    return table, make_objective(table, random_objective(table, seed + 1, kind, integer=integer))


def tree_instance(shape: str, seed: int, variables: int, choices: int, kind: str,
                  integer: bool = True) -> tuple[Table, Objective]:
    """A random `widthwise-table/2` table of a forest `shape` and an objective of `kind` ("params" too)."""
    table = random_tree_table(shape, seed, levels=choices, variables=variables, integer=integer)
    objective = "params" if kind == "params" else random_objective(table, seed + 1, kind, integer=integer)
    return table, make_objective(table, objective)


def enumerate_tree(tree: TreeMRF) -> list[tuple[tuple[int, ...], float, float, float | None]]:
    """Every configuration (choice indices) with its latency, cost and params, summed as the tree sums them."""
    return [(idx, tree.latency_of(idx), tree.cost_of(idx), tree.params_of(idx))
            for idx in itertools.product(*(range(len(c)) for c in tree.choices))]


#: The chain is a tree: the same enumeration.
enumerate_chain = enumerate_tree


def brute_factor_sum(table: Table, idx: tuple[int, ...], key: str = "ms") -> float:
    """A configuration's total of one factor array straight from the table's factors (not the folded tree)."""
    return sum(float(np.asarray(getattr(f, key))[tuple(idx[v] for v in f.variables)]) for f in table.factors)


def brute_marginals(tree: TreeMRF, gamma: float, temperature: float) -> list[np.ndarray]:
    """Per-variable probabilities by enumerating every configuration's Gibbs weight exp(-(cost + gamma lat) / T)."""
    configs = list(itertools.product(*(range(len(c)) for c in tree.choices)))
    energy = np.array([tree.cost_of(c) + gamma * tree.latency_of(c) for c in configs])
    weights = np.exp(-(energy - energy.min()) / temperature)
    weights /= weights.sum()
    out = [np.zeros(len(c)) for c in tree.choices]
    for cfg, w in zip(configs, weights):
        for k, j in enumerate(cfg):
            out[k][j] += w
    return out
