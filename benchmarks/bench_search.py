"""Search benchmarks on the 14-layer, 14-level MobileNet-V1 chain (synthetic table), in-process.

Prints medians of: one Lagrangian query from scratch (bisection over Viterbi passes, nothing
cached but the chain arrays), one Viterbi pass, a Lagrangian query on the cached hull path,
the exact Pareto front build, and an exact query once the front is cached; then, for 10
budgets across the range, the cost each method reaches. Targets from issue 4 are printed
beside each figure as a ratio (figure / target; below 1 meets it).

    .venv/bin/python benchmarks/bench_search.py [--seed 0] [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

from search.engine import InfeasibleBudget, Searcher, make_objective
from search.lagrangian import Evaluator, solve
from search.pareto import build_front
from search.synthetic import mobilenet_v1_table

TARGETS_US = {"lagrangian_from_scratch": 60.0, "exact_front": 100_000.0, "exact_cached_query": 10.0}


def median_us(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of one call, in microseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def cycle(values: list[float]) -> Callable[[], float]:
    """A function returning the next of `values` at each call (so every call queries a new budget)."""
    state = {"i": 0}

    def nxt() -> float:
        state["i"] = (state["i"] + 1) % len(values)
        return values[state["i"]]

    return nxt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    table = mobilenet_v1_table(seed=args.seed)
    objective = make_objective(table, "flops")
    searcher = Searcher(table, objective)
    chain = searcher.chain
    sizes = [len(c) for c in table.choices]
    print(f"chain: {len(sizes)} layers, choices per layer {sizes}")

    front_us = median_us(lambda: build_front(chain), max(5, args.repeat // 40))
    front = searcher.front()
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    budgets = list(np.linspace(lo, hi, 101)[1:-1])
    evaluator = Evaluator(chain)
    nxt = cycle(budgets)
    passes = [solve(chain, b, Evaluator(chain)).passes for b in budgets]
    scratch_us = median_us(lambda: solve(chain, nxt(), evaluator), args.repeat)
    scratch_cold_us = median_us(lambda: solve(chain, nxt()), args.repeat // 2)
    pass_us = median_us(lambda: evaluator.viterbi.solve(0.05), args.repeat)
    path_build_us = median_us(lambda: type(searcher.lagrangian_path())(chain), 5)
    searcher.lagrangian_path()
    path_us = median_us(lambda: searcher.query(nxt(), "lagrangian"), args.repeat * 5)
    cached_us = median_us(lambda: searcher.query(nxt(), "exact"), args.repeat * 5)
    position_us = median_us(lambda: front.position(nxt()), args.repeat * 5)

    rows = [
        ("lagrangian query from scratch (bracket walk; arrays, ends kept)", scratch_us, "lagrangian_from_scratch"),
        ("lagrangian query from scratch (arrays and ends built too)", scratch_cold_us, None),
        ("  one Viterbi pass", pass_us, None),
        ("lagrangian hull path build (once per table, objective)", path_build_us, None),
        ("lagrangian query on the cached hull path", path_us, None),
        ("exact Pareto front build", front_us, "exact_front"),
        ("exact query on the cached front (Answer included)", cached_us, "exact_cached_query"),
        ("  front binary search alone", position_us, None),
    ]
    print(f"\nfront: {len(front)} points from {lo:.4g} to {hi:.4g} ms; hull path: "
          f"{len(searcher.lagrangian_path().vertices)} vertices; Viterbi passes per query from nothing: "
          f"median {statistics.median(passes):g}, max {max(passes)}")
    print(f"\n{'figure (median, in-process)':<62}{'us':>12}{'target us':>12}{'ratio':>8}")
    for name, value, target in rows:
        goal = TARGETS_US.get(target) if target else None
        ratio = f"{value / goal:8.2f}" if goal else ""
        print(f"{name:<62}{value:12.1f}{(f'{goal:12.0f}' if goal else ''):>12}{ratio}")

    print(f"\n{'budget ms':>10}{'exact':>12}{'lagrangian':>12}{'greedy':>12}   (cost = -MACs / widest MACs; lower is better)")
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
