"""Min-sum Viterbi against enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.chain import build_chain
from widthwise.search.engine import make_objective
from tests.support.synthetic import random_costs, random_table
from widthwise.search.viterbi import LagrangianViterbi, min_sum


def random_blocks(rng, sizes):
    chain = [1, *sizes, 1]
    return [rng.normal(size=(chain[k], chain[k + 1])) for k in range(len(sizes) + 1)]


def chain_total(blocks, idx):
    path = [0, *idx, 0]
    return sum(float(b[path[k], path[k + 1]]) for k, b in enumerate(blocks))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.integers(1, 5), min_size=1, max_size=5))
def test_min_sum_equals_enumeration(seed, sizes):
    blocks = random_blocks(np.random.default_rng(seed), sizes)
    value, idx = min_sum(blocks)
    best = min(chain_total(blocks, c) for c in itertools.product(*(range(s) for s in sizes)))
    assert value == pytest.approx(best)
    assert chain_total(blocks, idx) == pytest.approx(best)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4), st.integers(1, 4), st.floats(0.0, 5.0))
def test_lagrangian_viterbi_minimises_cost_plus_gamma_latency(seed, layers, choices, gamma):
    table = random_table(seed, layers, choices, integer=False)
    chain = build_chain(table, make_objective(table, random_costs(table, seed, integer=False)))
    solver = LagrangianViterbi(chain.latency, chain.cost)
    configs = list(itertools.product(*(range(len(c)) for c in chain.choices)))
    value = lambda c: chain.cost_of(c) + gamma * chain.latency_of(c)  # noqa: E731
    assert value(solver.solve(gamma)) == pytest.approx(min(value(c) for c in configs))
    fastest = solver.fastest()
    assert chain.latency_of(fastest) == pytest.approx(min(chain.latency_of(c) for c in configs))
    assert chain.min_latency() == pytest.approx(chain.latency_of(fastest))


def test_flat_layout_of_the_compiled_kernels():
    """`flat` and `index`: every block row-major, one after another, with its rows, columns and offset."""
    table = random_table(11, 3, 4, integer=True)
    chain = build_chain(table, make_objective(table, random_costs(table, 11)))
    solver = LagrangianViterbi(chain.latency, chain.cost)
    flat, index = solver.flat, solver.index
    assert index.shape == (3, len(chain.latency)) and flat.shape == (2, sum(m.size for m in chain.latency))
    for b, (t, c) in enumerate(zip(chain.latency, chain.cost)):
        rows, cols, off = index[:, b]
        assert (rows, cols) == t.shape
        assert np.array_equal(flat[0, off : off + t.size].reshape(t.shape), t)
        assert np.array_equal(flat[1, off : off + c.size].reshape(c.shape), c)
