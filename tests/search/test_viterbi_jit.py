"""Compiled (numba) min-sum passes and bracket walk on trees: the same answers as the numpy reference, and the fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.search.budget import BUDGET_RTOL, margin, slack, within
from widthwise.search.errors import JitModeError
from widthwise.search.lagrangian import Evaluator, LagrangianInfeasible, solve
from widthwise.search.tree import Terms, build_tree
from widthwise.search.viterbi import JIT_ENV, JitUnavailable, LagrangianViterbi, compiled_kernels, jit_mode
from tests.search.brute import TREE_CASES, instance, make_objective, tree_instance
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table

ROOT = Path(__file__).resolve().parents[2]

chains = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 6),
    st.integers(1, 6),
    st.sampled_from(["flops", "unary", "pairwise"]),
    st.booleans(),  # integer entries: ties everywhere
)
#: A chain table (`widthwise-table/1`) or a tree table of any shape, bigger than brute force allows.
trees = st.one_of(
    chains.map(lambda c: ("chain-table", c)),
    TREE_CASES.map(lambda c: ("tree", c)),
    st.tuples(st.sampled_from(["star", "caterpillar", "random", "forest"]), st.integers(0, 10**6),
              st.integers(5, 12), st.integers(2, 6), st.sampled_from(["flops", "pairwise"]),
              st.booleans()).map(lambda c: ("tree", c)),
)


def make_tree(kind, case):
    table, objective = (instance if kind == "chain-table" else tree_instance)(*case)
    return build_tree(table, objective)


def make_chain(seed, layers, choices, kind, integer):
    return make_tree("chain-table", (seed, layers, choices, kind, integer))


def outcome(tree, budget, compiled):
    """The answer's fields (fresh evaluator: both ends counted as passes), or the infeasibility it raised."""
    try:
        a = solve(tree, budget, Evaluator(tree), compiled=compiled)
    except LagrangianInfeasible as exc:
        return ("infeasible", exc.min_latency_ms, str(exc))
    return (a.idx, a.latency_ms, a.cost, a.gamma, a.passes)


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("numba")
    return compiled_kernels(True)


@settings(max_examples=250, deadline=None)
@given(trees, st.floats(-0.3, 1.3))
def test_compiled_walk_equals_numpy_walk(kernels, case, where):
    tree = make_tree(*case)
    lo, hi = tree.min_latency(), tree.latency_of(Evaluator(tree).viterbi.solve(0.0))
    budget = lo + where * (hi - lo) - (1.0 if where < 0 else 0.0)  # below 0: infeasible budgets
    assert outcome(tree, budget, True) == outcome(tree, budget, False)


@settings(max_examples=80, deadline=None)
@given(trees)
def test_compiled_walk_equals_numpy_at_every_vertex_latency(kernels, case):
    """Budgets exactly at answer latencies (the ties of `within`) and just under them."""
    tree = make_tree(*case)
    ev = Evaluator(tree)
    for gamma in (0.0, 0.1, 0.5, 2.0, 10.0):
        lat = tree.latency_of(ev.viterbi.solve(gamma))
        for budget in (lat, np.nextafter(lat, -np.inf), lat - 1e-6):
            assert outcome(tree, float(budget), True) == outcome(tree, float(budget), False)


@settings(max_examples=200, deadline=None)
@given(trees, st.sampled_from([0.0, 1e-3, 0.25, 1.0, 3.0, 1e6]))
def test_compiled_pass_equals_numpy_pass(kernels, case, gamma):
    solver = LagrangianViterbi(make_tree(*case))
    assert solver.solve(gamma, compiled=True) == solver.solve(gamma, compiled=False)
    assert solver.fastest(compiled=True) == solver.fastest(compiled=False)


@pytest.mark.parametrize("limit", [0.0, 1e-3, 1.0, 7.5, 1e6])
def test_the_compiled_tolerance_is_the_budget_tolerance(kernels, limit):
    """numba cannot call search.budget, so `_within` repeats it: it must agree at and around the margin."""
    for value in (limit, slack(limit), np.nextafter(slack(limit), np.inf), limit + 0.5 * margin(limit),
                  limit + 2 * margin(limit), limit - 1.0):
        assert kernels._within(float(value), limit, BUDGET_RTOL) == within(float(value), limit)


@pytest.mark.parametrize("kind, case", [("chain-table", (3, 4, 5, "flops", True)),
                                        ("tree", ("star", 3, 6, 3, "flops", True)),
                                        ("tree", ("random", 4, 6, 3, "pairwise", True))])
def test_all_equal_entries_tie_on_the_first_state(kernels, kind, case):
    """Every configuration costs and takes the same: both paths pick state 0 everywhere."""
    tree = make_tree(kind, case)
    lat = tree.latency
    ones = Terms(tuple(np.ones_like(u) for u in lat.unary), tuple(None if e is None else np.ones_like(e) for e in lat.edge))
    solver = LagrangianViterbi(tree.with_terms(latency=ones, cost=tree.cost.scaled(0.0)))
    for gamma in (0.0, 1.0):
        assert solver.solve(gamma, compiled=True) == solver.solve(gamma, compiled=False) == (0,) * tree.num_layers
    assert solver.fastest(compiled=True) == solver.fastest(compiled=False) == (0,) * tree.num_layers


@pytest.mark.parametrize("table", [mobilenet_v1_table(seed=2), mobilenet_v2_like_table(14, seed=2)],
                         ids=["mobilenet_v1", "mobilenet_v2_like"])
def test_mobilenet_budgets_equal(kernels, table):
    tree = build_tree(table, make_objective(table, "flops"))
    ev = Evaluator(tree)
    lo, hi = tree.min_latency(), tree.latency_of(ev.viterbi.solve(0.0))
    for budget in np.linspace(lo - 0.1, hi + 0.1, 25):
        assert outcome(tree, float(budget), True) == outcome(tree, float(budget), False)
    # A kept evaluator (ends cached on the numpy side) gives the same configuration and gamma.
    for budget in np.linspace(lo, hi, 7):
        a, b = solve(tree, float(budget), ev, compiled=True), solve(tree, float(budget), ev, compiled=False)
        assert (a.idx, a.latency_ms, a.cost, a.gamma) == (b.idx, b.latency_ms, b.cost, b.gamma)


def test_policy_from_the_environment(monkeypatch):
    monkeypatch.setenv(JIT_ENV, "off")
    assert jit_mode() == "off" and compiled_kernels() is None
    monkeypatch.setenv(JIT_ENV, "sometimes")
    with pytest.raises(JitModeError, match=JIT_ENV) as err:
        compiled_kernels()
    assert err.value.field == JIT_ENV and isinstance(err.value, ValueError)
    monkeypatch.setenv(JIT_ENV, "auto")
    assert compiled_kernels(False) is None


FALLBACK = """
import json, sys
sys.modules["numba"] = None  # numba cannot be imported, as on a board without it
from widthwise.search.budget import BUDGET_RTOL, margin, slack, within
from widthwise.search.errors import JitModeError
from widthwise.search.objectives import build_objective
from widthwise.search.lagrangian import solve
from widthwise.search.tree import build_tree
from tests.support.synthetic import mobilenet_v1_table
from widthwise.search.viterbi import JitUnavailable, compiled_kernels
table = mobilenet_v1_table(seed=2)
tree = build_tree(table, build_objective(table, "flops", None))
answer = solve(tree, 9.0)
try:
    compiled_kernels(True)
    refused = None
except JitUnavailable as exc:
    refused = str(exc)
print(json.dumps({"kernels": compiled_kernels() is None, "idx": answer.idx, "gamma": answer.gamma,
                  "refused": refused, "numba_loaded": sys.modules.get("numba") is not None}))
"""


def test_fallback_without_numba_gives_the_numpy_answer():
    env = {**os.environ, JIT_ENV: "auto", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["kernels"] is True and got["numba_loaded"] is False
    assert "numba" in got["refused"]
    table = mobilenet_v1_table(seed=2)
    expected = solve(build_tree(table, make_objective(table, "flops")), 9.0, compiled=False)
    assert tuple(got["idx"]) == expected.idx and got["gamma"] == expected.gamma


def test_required_kernels_raise_when_unavailable(monkeypatch):
    """With the lookup recorded as failed, `compiled=True` is refused by name, the default falls back."""
    from widthwise.search import viterbi

    monkeypatch.setattr(viterbi, "_kernels", {"module": None, "error": ImportError("no module named numba")})
    monkeypatch.setenv(JIT_ENV, "auto")
    chain = make_chain(7, 3, 3, "pairwise", True)
    with pytest.raises(JitUnavailable, match="numba"):
        solve(chain, 100.0, compiled=True)
    assert solve(chain, 100.0).idx == solve(chain, 100.0, compiled=False).idx
    monkeypatch.setenv(JIT_ENV, "on")
    with pytest.raises(JitUnavailable):
        solve(chain, 100.0)


def test_a_kernel_that_fails_to_compile_leaves_numpy_in_use(kernels, monkeypatch):
    from widthwise.search import viterbi, viterbi_jit

    def broken(*args):
        raise RuntimeError("LLVM could not lower the kernel")

    monkeypatch.setattr(viterbi_jit, "bracket_walk", broken)
    monkeypatch.setattr(viterbi, "_kernels", {})
    monkeypatch.setenv(JIT_ENV, "auto")
    assert compiled_kernels() is None
    with pytest.raises(JitUnavailable, match="LLVM could not lower"):
        compiled_kernels(True)
    chain = make_chain(9, 3, 3, "flops", True)
    assert solve(chain, 100.0).idx == solve(chain, 100.0, compiled=False).idx
