"""Search benchmarks on the 14-layer, 14-level MobileNet-V1 chain (synthetic table), in-process.

Prints medians of: one Lagrangian query from scratch (bisection over Viterbi passes, nothing
cached but the chain arrays) on both paths, the numpy passes and the compiled (numba) walk,
one Viterbi pass of each, a Lagrangian query on the cached hull path, the exact Pareto front
build, and an exact query once the front is cached; then the compiled path's one-off costs
in fresh processes (compiling with an empty on-disk cache, loading from the cache, and the
numpy path for comparison); then, for 10 budgets across the range, the cost each method
reaches. Targets from issue 4 are printed beside each figure as a ratio (figure / target;
below 1 meets it). Last, two budgets at once (latency and params) on the shipped table and on
the synthetic one: per budget pair the wall time of one query on a fresh Searcher, whether the
answer is exact (branch and bound within --max-search-seconds) or approximate (the
two-multiplier Lagrangian), and its gap to the dual bound (`--two-budget` runs only that).

The MobileNet-V2 section does the same on a tree of 25 variables and 36 factors at 14
levels: a table fitted on real timings (`--v2-table`, e.g. one benchmarks/bench_fit.py
--space mobilenet_v2 saved in its out dir) or else the synthetic
`tests.support.synthetic.mobilenet_v2_like_table(levels=14)`; the header says which. Its
targets: exact front built once <= 2 s, exact query on it <= 10 us, Lagrangian query from
scratch <= 200 us, marginals <= 1 ms. The two-budget rows then cover it too (`--v2` runs
only the MobileNet-V2 figures and its two-budget rows).

Last, Once-for-All's MobileNet-V3 space (`ofa_mbv3`, benchmarks/search_ofa.py): the
exact search's figures on the shipped table (or `--ofa-table`; else one synthesised from the
space's counts), targets: exact front built once <= 5 s, exact query <= 10 us, Lagrangian
from scratch <= 500 us; then the exact search against OFA's evolutionary search
(search/evolution.py, `--evo-runs` seeds) at 10 budgets, for MACs and for a loss fitted from
a synthetic loss log: the objective each reaches and the wall time of each (`--ofa` runs
only that section).

    .venv/bin/python benchmarks/bench_search.py [--seed 0] [--repeat 200] [--no-cold]
        [--two-budget] [--max-search-seconds 2] [--v2] [--v2-table T.json]
        [--ofa] [--ofa-table T.json] [--evo-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

# the repository root, for the test fixtures in tests.support (synthetic tables, the pty link)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective
from widthwise.search.front_limits import FrontLimits
from widthwise.search.table import Table, load_table
from widthwise.search.lagrangian import Evaluator, solve
from widthwise.search.pareto_front import build_front
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table
from widthwise.search.viterbi import JIT_ENV, compiled_kernels

import search_ofa  # the ofa_mbv3 section (a sibling script)
import search_figures
from search_figures import cycle, median_us

SHIPPED = Path(__file__).resolve().parents[1] / "tables" / "example-epyc2-mobilenet_v1-224.json"
#: (latency ms, params) pairs on the shipped table (its fastest is 1.63 ms, its leanest 348,936 params)
SHIPPED_PAIRS = [(10.0, 1_500_000.0), (10.0, 1_000_000.0), (8.0, 1_500_000.0), (12.0, 2_000_000.0),
                 (6.0, 500_000.0), (15.0, 3_000_000.0), (4.0, 1_000_000.0)]

TARGETS_US = {"lagrangian_from_scratch": 60.0, "exact_front": 100_000.0, "exact_cached_query": 10.0}
#: the tree's targets (MobileNet-V2 at 14 levels)
TREE_TARGETS_US = {"lagrangian_from_scratch": 200.0, "exact_front": 2_000_000.0, "exact_cached_query": 10.0,
                   "marginals": 1_000.0}


def first_query(seed: int, jit: str, cache_dir: str | None) -> dict:
    """The first and second from-scratch query of a fresh process (setup: imports and the chain)."""
    env = {**os.environ, JIT_ENV: jit, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    run = subprocess.run([sys.executable, "-c", FIRST_QUERY, str(seed)], capture_output=True, text=True,
                         env=env, check=True, timeout=600)
    return json.loads(run.stdout.strip().splitlines()[-1])


def print_first_queries(seed: int) -> None:
    """One-off costs of the compiled path: compile (empty cache), load from the on-disk cache, numpy only."""
    print(f"\n{'first from-scratch query in a fresh process':<46}{'setup ms':>10}{'1st ms':>10}{'2nd us':>10}")
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        runs = [
            ("numba, empty on-disk cache (compiles)", first_query(seed, "on", cache)),
            ("numba, on-disk cache filled", first_query(seed, "on", cache)),
            ("numpy (WIDTHWISE_JIT=off)", first_query(seed, "off", None)),
        ]
    for name, r in runs:
        print(f"{name:<46}{r['setup_s'] * 1e3:10.1f}{r['first_s'] * 1e3:10.1f}{r['second_s'] * 1e6:10.1f}")
    print("(setup: imports and the chain; 1st includes importing numba and compiling or loading the kernels)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process first-query figures")
    parser.add_argument("--two-budget", action="store_true", help="only the two-budget (latency, params) figures")
    parser.add_argument("--max-search-seconds", type=float, default=FrontLimits().max_search_seconds)
    parser.add_argument("--v2", action="store_true", help="only the MobileNet-V2 figures and its two-budget rows")
    parser.add_argument("--v2-table", default=None, help="a fitted mobilenet_v2 table (default: the synthetic one)")
    parser.add_argument("--ofa", action="store_true", help="only the ofa_mbv3 figures and exact against evolution")
    parser.add_argument("--ofa-table", default=None, help="an ofa_mbv3 table (default: the shipped one, if any)")
    parser.add_argument("--evo-runs", type=search_ofa.at_least_one, default=3,
                        help="seeds of the evolutionary search per budget")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.ofa:
        search_ofa.run(args.ofa_table, args.seed, args.repeat, args.evo_runs)
        return
    v2_name, v2_table = mobilenet_v2_source(args.v2_table, args.seed)
    if args.two_budget or args.v2:
        if args.v2:
            print_tree_figures(v2_name, v2_table, args.repeat)
        print_two_budget(args.seed, args.max_search_seconds, (v2_name, v2_table), v1=not args.v2)
        return
    searcher, lo, hi = print_chain_figures(args.seed, args.repeat, args.no_cold)
    print_objective_table(searcher, lo, hi)
    print_tree_figures(v2_name, v2_table, args.repeat)
    print_two_budget(args.seed, args.max_search_seconds, (v2_name, v2_table))
    search_ofa.run(args.ofa_table, args.seed, args.repeat, args.evo_runs)


def print_chain_figures(seed: int, repeat: int, no_cold: bool) -> tuple[Searcher, float, float]:
    """The MobileNet-V1 chain's figures beside their targets; the searcher and its front's latency range."""
    table = mobilenet_v1_table(seed=seed)
    searcher = Searcher(table, make_objective(table, "flops"))
    chain = searcher.tree
    print(f"chain: {len(table.choices)} layers, choices per layer {[len(c) for c in table.choices]}")
    front_us = median_us(lambda: build_front(chain), max(5, repeat // 40))
    front = searcher.front()
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    budgets = list(np.linspace(lo, hi, 101)[1:-1])
    nxt = cycle(budgets)
    passes = [solve(chain, b, Evaluator(chain), compiled=False).passes for b in budgets]
    rows, jit = chain_lagrangian_rows(chain, nxt, budgets[0], repeat)
    searcher.lagrangian_path()
    rows += [
        ("lagrangian hull path build (once per table, objective)",
         median_us(lambda: type(searcher.lagrangian_path())(chain), 5), None),
        ("lagrangian query on the cached hull path", median_us(lambda: searcher.query(nxt(), "lagrangian"), repeat * 5),
         None),
        ("exact Pareto front build", front_us, "exact_front"),
        ("exact query on the cached front (Answer included)", median_us(lambda: searcher.query(nxt(), "exact"),
                                                                        repeat * 5), "exact_cached_query"),
        ("  front binary search alone", median_us(lambda: front.position(nxt()), repeat * 5), None),
    ]
    print(f"\nfront: {len(front)} points from {lo:.4g} to {hi:.4g} ms; hull path: "
          f"{len(searcher.lagrangian_path().vertices)} vertices; Viterbi passes per query from nothing: "
          f"median {statistics.median(passes):g}, max {max(passes)}")
    print(f"\n{'figure (median, in-process)':<62}{'us':>12}{'target us':>12}{'ratio':>8}")
    for name, value, target in rows:
        goal = TARGETS_US.get(target) if target else None
        ratio = f"{value / goal:8.2f}" if goal else ""
        print(f"{name:<62}{value:12.1f}{(f'{goal:12.0f}' if goal else ''):>12}{ratio}")
    by_name = {name: value for name, value, _ in rows}
    if jit:
        print(f"numba / numpy from scratch (arrays kept): "
              f"{by_name[JIT_ROWS[0]] / by_name[NUMPY_ROWS[0]]:.3f}; "
              f"(arrays built too): {by_name[JIT_ROWS[1]] / by_name[NUMPY_ROWS[1]]:.3f}")
        if not no_cold:
            print_first_queries(seed)
    else:
        print("numba path not measured: numba does not import here, or WIDTHWISE_JIT=off")
    return searcher, lo, hi


NUMPY_ROWS = ("lagrangian from scratch, numpy (arrays, ends kept)",
              "lagrangian from scratch, numpy (arrays, ends built too)")
JIT_ROWS = ("lagrangian from scratch, numba (arrays kept; ends in the walk)",
            "lagrangian from scratch, numba (arrays built too)")


def chain_lagrangian_rows(chain, nxt: Callable[[], float], first_budget: float,
                          repeat: int) -> tuple[list[tuple[str, float, str | None]], bool]:
    """The chain's from-scratch Lagrangian figures, numpy and (when it imports) numba; and whether numba ran."""
    evaluator = Evaluator(chain)
    rows: list[tuple[str, float, str | None]] = [
        (NUMPY_ROWS[0], median_us(lambda: solve(chain, nxt(), evaluator, compiled=False), repeat),
         "lagrangian_from_scratch"),
        (NUMPY_ROWS[1], median_us(lambda: solve(chain, nxt(), compiled=False), repeat // 2), "lagrangian_from_scratch"),
        ("  one Viterbi pass, numpy", median_us(lambda: evaluator.viterbi.solve(0.05, compiled=False), repeat), None),
    ]
    jit = compiled_kernels(False if os.environ.get(JIT_ENV, "").lower() == "off" else None) is not None
    if jit:
        solve(chain, first_budget, compiled=True)  # compile or load from the on-disk cache, outside the timing
        rows += [
            (JIT_ROWS[0], median_us(lambda: solve(chain, nxt(), evaluator, compiled=True), repeat * 5),
             "lagrangian_from_scratch"),
            (JIT_ROWS[1], median_us(lambda: solve(chain, nxt(), compiled=True), repeat * 2), "lagrangian_from_scratch"),
            ("  one Viterbi pass, numba (one compiled call)",
             median_us(lambda: evaluator.viterbi.solve(0.05, compiled=True), repeat * 5), None),
        ]
    return rows, jit


def _two_budget_row(table: Table, budget_ms: float, max_params: float, limits: FrontLimits) -> str:
    """One query on a fresh Searcher (its caches cold, as the CLI's): wall time, exact or not, gap."""
    searcher = Searcher(table, make_objective(table, "flops"), limits)
    start = time.perf_counter()
    try:
        answer = searcher.query(budget_ms, max_params=max_params)
    except InfeasibleBudget:
        return f"{budget_ms:10.3f}{max_params:12.0f}{time.perf_counter() - start:9.2f}  infeasible"
    wall = time.perf_counter() - start
    body = answer.to_json()
    kind = "exact" if body["exact"] else "approx"
    rel = "-" if body["gap_relative"] is None else f"{100 * body['gap_relative']:.3f}"
    return (f"{budget_ms:10.3f}{max_params:12.0f}{wall:9.2f}  {kind:<7}{answer.method:<12}{answer.cost:10.4f}"
            f"{body['gap']:11.2e}{rel:>9}{answer.params:12.0f}")


def _front_pairs(table: Table, shares: tuple[float, ...] = (0.3, 0.5, 0.7)) -> list[tuple[float, float]]:
    """Budget pairs across a table's range: at each latency share, 0.5x and 0.8x the params the front reaches."""
    front = Searcher(table, make_objective(table, "flops")).front()
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    pairs = []
    for share in shares:
        budget = lo + share * (hi - lo)
        params = float(front.params[front.position(budget)])
        pairs += [(budget, round(0.5 * params)), (budget, round(0.8 * params))]
    return pairs


def print_two_budget(seed: int, bound: float, tree: tuple[str, Table] | None = None, *, v1: bool = True) -> None:
    """Both budgets at once, on the shipped table, the synthetic one and the MobileNet-V2 one,
    within a `bound` s exact search."""
    limits = FrontLimits(max_search_seconds=bound)
    synthetic = mobilenet_v1_table(seed=seed)
    header = (f"{'budget ms':>10}{'max params':>12}{'wall s':>9}  {'kind':<7}{'method':<12}{'cost':>10}"
              f"{'gap':>11}{'gap %':>9}{'params':>12}")
    tables = []
    if v1:
        tables += [("shipped " + SHIPPED.name, load_table(SHIPPED), SHIPPED_PAIRS),
                   (f"synthetic MobileNet-V1 (seed {seed})", synthetic, _front_pairs(synthetic))]
    if tree is not None:
        tables.append((tree[0], tree[1], _front_pairs(tree[1])))
    for name, table, pairs in tables:
        print(f"\ntwo budgets, {name}; exact search bound {bound:g} s (fresh Searcher per query)\n{header}")
        for budget, params in pairs:
            print(_two_budget_row(table, budget, params, limits), flush=True)


# --- the tree: MobileNet-V2 ---------------------------------------------------------------------


def mobilenet_v2_source(path: str | None, seed: int) -> tuple[str, Table]:
    """The MobileNet-V2 table to measure on, and how to name it: a fitted file, else the synthetic one."""
    if path:
        table = load_table(path)
        fit = table.fit or {}
        return f"fitted MobileNet-V2 table {Path(path).name} ({fit.get('method')}, {fit.get('samples')} samples)", table
    return f"synthetic MobileNet-V2 (mobilenet_v2_like_table, 14 levels, seed {seed})", mobilenet_v2_like_table(
        levels=14, seed=seed)


def print_tree_figures(name: str, table: Table, repeat: int) -> None:
    """The tree's search figures beside their targets, medians in-process, then the cost per method."""
    searcher, lo, hi = search_figures.print_tree_figures(name, table, repeat, TREE_TARGETS_US, greedy=True)
    print_objective_table(searcher, lo, hi)


def print_objective_table(searcher: Searcher, lo: float, hi: float) -> None:
    """The cost each method reaches at 10 budgets across (lo, hi): exact is never worse."""
    print(f"\n{'budget ms':>10}{'exact':>12}{'lagrangian':>12}{'greedy':>12}   (cost = -MACs / the power of two at or above the widest MACs; lower is better)")
    for budget in np.linspace(lo, hi, 12)[1:-1]:
        cells = []
        for method in ("exact", "lagrangian", "greedy"):
            try:
                cells.append(f"{searcher.query(float(budget), method).cost:12.4f}")
            except InfeasibleBudget:
                cells.append(f"{'stuck':>12}")
        print(f"{budget:10.3f}{''.join(cells)}")


if __name__ == "__main__":
    main()
