"""Compiled (numba) Viterbi and bracket walk: the same answers as the numpy reference, and the fallback."""

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
from widthwise.search.chain import build_chain
from widthwise.search.errors import JitModeError
from widthwise.search.engine import make_objective
from widthwise.search.lagrangian import Evaluator, LagrangianInfeasible, solve
from tests.support.synthetic import mobilenet_v1_table, random_objective, random_table
from widthwise.search.viterbi import JIT_ENV, JitUnavailable, LagrangianViterbi, compiled_kernels, jit_mode

ROOT = Path(__file__).resolve().parents[2]

chains = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 6),
    st.integers(1, 6),
    st.sampled_from(["flops", "unary", "pairwise"]),
    st.booleans(),  # integer entries: ties everywhere
)


def make_chain(seed, layers, choices, kind, integer):
    table = random_table(seed, layers, choices, integer=integer)
    return build_chain(table, make_objective(table, random_objective(table, seed + 1, kind, integer=integer)))


def outcome(chain, budget, compiled):
    """The answer's fields (fresh evaluator: both ends counted as passes), or the infeasibility it raised."""
    try:
        a = solve(chain, budget, Evaluator(chain), compiled=compiled)
    except LagrangianInfeasible as exc:
        return ("infeasible", exc.min_latency_ms, str(exc))
    return (a.idx, a.latency_ms, a.cost, a.gamma, a.passes)


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("numba")
    return compiled_kernels(True)


@settings(max_examples=200, deadline=None)
@given(chains, st.floats(-0.3, 1.3))
def test_compiled_walk_equals_numpy_walk(kernels, case, where):
    chain = make_chain(*case)
    lo, hi = chain.min_latency(), chain.latency_of(Evaluator(chain).viterbi.solve(0.0))
    budget = lo + where * (hi - lo) - (1.0 if where < 0 else 0.0)  # below 0: infeasible budgets
    assert outcome(chain, budget, True) == outcome(chain, budget, False)


@settings(max_examples=60, deadline=None)
@given(chains)
def test_compiled_walk_equals_numpy_at_every_vertex_latency(kernels, case):
    """Budgets exactly at answer latencies (the ties of `within`) and just under them."""
    chain = make_chain(*case)
    ev = Evaluator(chain)
    for gamma in (0.0, 0.1, 0.5, 2.0, 10.0):
        lat = chain.latency_of(ev.viterbi.solve(gamma))
        for budget in (lat, np.nextafter(lat, -np.inf), lat - 1e-6):
            assert outcome(chain, float(budget), True) == outcome(chain, float(budget), False)


@settings(max_examples=150, deadline=None)
@given(chains, st.sampled_from([0.0, 1e-3, 0.25, 1.0, 3.0, 1e6]))
def test_compiled_pass_equals_numpy_pass(kernels, case, gamma):
    chain = make_chain(*case)
    solver = LagrangianViterbi(chain.latency, chain.cost)
    assert solver.solve(gamma, compiled=True) == solver.solve(gamma, compiled=False)
    assert solver.fastest(compiled=True) == solver.fastest(compiled=False)


@pytest.mark.parametrize("limit", [0.0, 1e-3, 1.0, 7.5, 1e6])
def test_the_compiled_tolerance_is_the_budget_tolerance(kernels, limit):
    """numba cannot call search.budget, so `_within` repeats it: it must agree at and around the margin."""
    for value in (limit, slack(limit), np.nextafter(slack(limit), np.inf), limit + 0.5 * margin(limit),
                  limit + 2 * margin(limit), limit - 1.0):
        assert kernels._within(float(value), limit, BUDGET_RTOL) == within(float(value), limit)


def test_all_equal_entries_tie_on_the_first_state(kernels):
    """Every configuration costs and takes the same: both paths pick state 0 everywhere."""
    chain = make_chain(3, 4, 5, "flops", True)
    flat = tuple(np.ones_like(m) for m in chain.latency)
    solver = LagrangianViterbi(flat, tuple(np.zeros_like(m) for m in chain.cost))
    for gamma in (0.0, 1.0):
        assert solver.solve(gamma, compiled=True) == solver.solve(gamma, compiled=False) == (0,) * 4


def test_mobilenet_budgets_equal(kernels):
    table = mobilenet_v1_table(seed=2)
    chain = build_chain(table, make_objective(table, "flops"))
    ev = Evaluator(chain)
    lo, hi = chain.min_latency(), chain.latency_of(ev.viterbi.solve(0.0))
    for budget in np.linspace(lo - 0.1, hi + 0.1, 25):
        assert outcome(chain, float(budget), True) == outcome(chain, float(budget), False)
    # A kept evaluator (ends cached on the numpy side) gives the same configuration and gamma.
    for budget in np.linspace(lo, hi, 7):
        a, b = solve(chain, float(budget), ev, compiled=True), solve(chain, float(budget), ev, compiled=False)
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
from widthwise.search.chain import build_chain
from widthwise.search.errors import JitModeError
from widthwise.search.engine import make_objective
from widthwise.search.lagrangian import solve
from tests.support.synthetic import mobilenet_v1_table
from widthwise.search.viterbi import JitUnavailable, compiled_kernels
table = mobilenet_v1_table(seed=2)
chain = build_chain(table, make_objective(table, "flops"))
answer = solve(chain, 9.0)
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
    expected = solve(build_chain(table, make_objective(table, "flops")), 9.0, compiled=False)
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
