"""Brute force for the search's property tests: random small chains and every configuration of one."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from widthwise.search.chain import Chain
from widthwise.search.engine import make_objective
from widthwise.search.objectives import Objective
from widthwise.search.table import Table
from tests.support.synthetic import random_objective, random_table

#: (seed, layers, choices per layer, objective kind, integer entries) of a random small chain
CASES = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["flops", "unary", "pairwise"]),
    st.booleans(),
)


def instance(seed: int, layers: int, choices: int, kind: str, integer: bool = True) -> tuple[Table, Objective]:
    """A random table and a random objective of `kind` over it."""
    table = random_table(seed, layers, choices, integer=integer)
    return table, make_objective(table, random_objective(table, seed + 1, kind, integer=integer))


def enumerate_chain(chain: Chain) -> list[tuple[tuple[int, ...], float, float, float | None]]:
    """Every configuration (choice indices) with its latency, cost and params, summed in chain order."""
    return [(idx, chain.latency_of(idx), chain.cost_of(idx), chain.params_of(idx))
            for idx in itertools.product(*(range(len(c)) for c in chain.choices))]
