"""What the search benchmarks share: a median timer, a budget cycle, and the figures of the
search on one tree table (front, exact query, Lagrangian, marginals) printed beside targets.

Imported by benchmarks/bench_search.py and benchmarks/search_ofa.py (sibling scripts).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Mapping

import numpy as np

from widthwise.search.engine import Searcher, make_objective
from widthwise.search.lagrangian import Evaluator, solve
from widthwise.search.pareto_front import build_front
from widthwise.search.table import Table
from widthwise.search.viterbi import JIT_ENV, compiled_kernels


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


def _lagrangian_rows(searcher: Searcher, nxt: Callable[[], float], repeat: int) -> list[tuple[str, float, str]]:
    """The Lagrangian from scratch on each available path (numpy; numba unless it is off or absent)."""
    tree, rows = searcher.tree, []
    for label, compiled in (("numpy", False), ("numba", True)):
        if compiled and compiled_kernels(False if os.environ.get(JIT_ENV, "").lower() == "off" else None) is None:
            continue
        evaluator = Evaluator(tree, compiled=compiled)
        solve(tree, nxt(), evaluator, compiled=compiled)  # compile or load the kernels outside the timing
        rows += [
            (f"lagrangian from scratch, {label} (evaluator kept)",
             median_us(lambda: solve(tree, nxt(), evaluator, compiled=compiled), repeat), "lagrangian_from_scratch"),
            (f"lagrangian from scratch, {label} (evaluator built too)",
             median_us(lambda: solve(tree, nxt(), Evaluator(tree, compiled=compiled), compiled=compiled), repeat // 2),
             "lagrangian_from_scratch"),
        ]
    return rows


def print_tree_figures(name: str, table: Table, repeat: int, targets: Mapping[str, float], *,
                       greedy: bool = False) -> tuple[Searcher, float, float]:
    """The search's figures on a tree table (objective flops) beside `targets`, medians in-process;
    returns the Searcher and the front's latency range."""
    searcher = Searcher(table, make_objective(table, "flops"))
    sizes = [len(c) for c in table.choices]
    print(f"\n{name}: {len(sizes)} variables, {len(table.factors)} factors, choices per variable "
          f"{min(sizes)}..{max(sizes)}")
    front_us = median_us(lambda: build_front(searcher.tree), 3)
    front = searcher.front()
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    nxt = cycle(list(np.linspace(lo, hi, 101)[1:-1]))
    rows = _lagrangian_rows(searcher, nxt, repeat)
    searcher.marginals(nxt(), 0.01)  # the hull path, built once per (table, objective)
    rows += [
        ("exact Pareto front build", front_us, "exact_front"),
        ("exact query on the cached front (Answer included)",
         median_us(lambda: searcher.query(nxt(), "exact"), repeat * 5), "exact_cached_query"),
        ("marginals (hull path cached), T = 0.01", median_us(lambda: searcher.marginals(nxt(), 0.01), repeat),
         "marginals"),
    ]
    if greedy:
        rows.append(("greedy query", median_us(lambda: searcher.query(nxt(), "greedy"), max(5, repeat // 20)), ""))
    print(f"front: {len(front)} points from {lo:.4g} to {hi:.4g} ms; hull path: "
          f"{len(searcher.lagrangian_path().vertices)} vertices")
    print(f"\n{'figure (median, in-process)':<62}{'us':>12}{'target us':>12}{'ratio':>8}")
    for label, value, target in rows:
        goal = targets.get(target)
        ratio = f"{value / goal:8.2f}" if goal else ""
        print(f"{label:<62}{value:12.1f}{(f'{goal:12.0f}' if goal else ''):>12}{ratio}")
    return searcher, lo, hi
