"""Search benchmarks on Once-for-All's MobileNet-V3 space (`ofa_mbv3`): the exact search's figures, and the
exact search against the evolutionary search OFA runs over its latency lookup table.

The last section of benchmarks/bench_search.py (`--ofa` runs only it); named apart from the bench_*.py
scripts so that `make bench` runs it once.

The table is the shipped `tables/example-xeon2-ofa_mbv3-224.json` (or `--ofa-table T.json`); without
one, a table synthesised in memory from the space's exact MAC and parameter counts (a latency that
follows the MACs, with a per-block overhead and seeded noise; saved to a temporary folder and read
back, as a table file is, never kept). The header says which. Figures (medians, in-process): the exact Pareto front built once (target <= 5 s), an exact query
on it (<= 10 us), a Lagrangian query from scratch (<= 500 us), marginals.

The comparison: for 10 budgets across the table's latency range, the objective each search reaches,
(a) MACs, maximised under the budget (the `flops` objective), and (b) a loss fitted by
`loss_samples_objective` from a synthetic loss log (500 seeded random configurations whose loss falls
with log-MACs, with kernel size, expansion and depth, plus noise), and the wall time of each: the
exact query on the cached front (median; the front's one-off build is printed above the table) and
the evolutionary search with OFA's published settings (population 100, 500 generations, mutation
probability 0.1, parent ratio 0.25, mutation ratio 0.5), run with `--evo-runs` seeds (best objective,
median time). The exact search is never worse: a row where it is stops the benchmark with an error.

    .venv/bin/python benchmarks/search_ofa.py [--seed 0] [--repeat 200] [--ofa-table T.json]
        [--evo-runs 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from widthwise.device_agents.ofa_mbv3 import ofa_mbv3
from widthwise.search.budget import within
from widthwise.search.engine import Searcher, make_objective
from widthwise.search.evolution import EvolutionSettings, EvolutionStuck, TermTables, evolve
from widthwise.search.pareto_front import build_front
from widthwise.search.table import Table, load_table
from tests.support.space_tables import space_table
from search_figures import median_us, print_tree_figures

SHIPPED_OFA = Path(__file__).resolve().parents[1] / "tables" / "example-xeon2-ofa_mbv3-224.json"
OFA_TARGETS_US = {"lagrangian_from_scratch": 500.0, "exact_front": 5_000_000.0, "exact_cached_query": 10.0}
#: configurations in the synthetic loss log
LOSS_LOG_SIZE = 500


def ofa_source(path: str | None, seed: int) -> tuple[str, Table]:
    """The ofa_mbv3 table to measure on and its name: a given file, the shipped one, else synthesised."""
    chosen = Path(path) if path else SHIPPED_OFA
    if chosen.exists() or path:
        table = load_table(chosen)
        fit = table.fit or {}
        return f"ofa_mbv3 table {chosen.name} ({fit.get('method')}, {fit.get('samples')} samples)", table
    with tempfile.TemporaryDirectory(prefix="ofa-table-") as folder:
        synthetic = Path(folder) / "synthetic-ofa_mbv3.json"
        space_table(ofa_mbv3(), seed).save(synthetic)  # written and read back as a table file is
        table = load_table(synthetic)
    return f"ofa_mbv3, synthetic table from the space's counts (seed {seed}; no {SHIPPED_OFA.name} yet)", table


def option_effect(label: str) -> float:
    """The synthetic loss's term for one option label: a skipped block costs depth; kernel and expansion help."""
    if label == "skip":
        return 0.02
    found = re.fullmatch(r"k(\d+)e(\d+)", label)
    if found is None:
        return 0.0  # a width: its effect is in the MACs
    kernel, expand = int(found.group(1)), int(found.group(2))
    return -0.002 * (kernel - 3) - 0.003 * (expand - 3)


def loss_log(table: Table, seed: int, size: int = LOSS_LOG_SIZE) -> list:
    """A deterministic loss log: random configurations, a loss falling with log-MACs, kernel, expansion and
    depth (read from the table's option labels), plus noise."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray([len(c) for c in table.choices])
    idx = (rng.random((size, sizes.size)) * sizes).astype(np.int64)
    macs = sum(np.asarray(f.macs)[tuple(idx[:, v] for v in f.variables)] for f in table.factors)
    loss = 2.2 - 0.25 * np.log(macs / 1e8) + 0.01 * rng.standard_normal(size)
    for v, variable in enumerate(table.variables or ()):
        effects = np.array([option_effect(label) for label in variable.labels] or [0.0] * sizes[v])
        loss = loss + effects[idx[:, v]]
    return [[[int(table.choices[v][j]) for v, j in enumerate(row)], float(value)]
            for row, value in zip(idx.tolist(), loss)]


def print_ofa_figures(name: str, table: Table, repeat: int) -> Searcher:
    """The exact search's figures on ofa_mbv3 beside their targets (medians, in-process)."""
    return print_tree_figures(name, table, repeat, OFA_TARGETS_US)[0]


def _evolution_runs(tables: TermTables, budget: float, runs: int, seed: int) -> tuple[list, list[float]]:
    """The evolutionary results of `runs` seeds at one budget (empty when it cannot start) and their wall times."""
    found, times = [], []
    for r in range(runs):
        start = time.perf_counter()
        try:
            found.append(evolve(tables.tree, budget, EvolutionSettings(), seed + r, tables))
        except EvolutionStuck:
            pass
        times.append(time.perf_counter() - start)
    return found, times


def print_comparison(title: str, searcher: Searcher, value: Callable[[float, float], float], unit: str,
                     higher_better: bool, runs: int, seed: int, repeat: int) -> None:
    """Exact against evolutionary at 10 budgets: objective (`value(cost, macs)`), gap, wall times."""
    tree = searcher.tree
    start = time.perf_counter()
    build_front(tree)
    build_s = time.perf_counter() - start
    front = searcher.front()
    tables = TermTables(tree)
    lo, hi = float(front.latency[0]), float(front.latency[-1])
    print(f"\n{title}: exact front {len(front)} points, built in {build_s:.2f} s (once per table and objective); "
          f"evolutionary: OFA's settings, {runs} seed(s), best objective, median time")
    print(f"{'budget ms':>10}{'exact ' + unit:>16}{'evolution ' + unit:>18}{'gap':>10}{'gap %':>8}{'exact us':>10}"
          f"{'evolution s':>13}{'draws':>10}")
    for budget in (float(b) for b in np.linspace(lo, hi, 12)[1:-1]):
        exact = searcher.query(budget, "exact")
        exact_us = median_us(lambda: searcher.query(budget, "exact"), repeat)
        found, times = _evolution_runs(tables, budget, runs, seed)
        best_exact = value(exact.cost, exact.macs)
        if not found:
            print(f"{budget:10.3f}{best_exact:16.4f}{'no start':>18}{'':>18}{exact_us:10.1f}"
                  f"{statistics.median(times):13.2f}   (no {EvolutionSettings().population} random configurations "
                  "fit the budget)")
            continue
        best = min(found, key=lambda r: r.cost)
        if not within(best.latency_ms, budget) or exact.cost > best.cost + 1e-9 * max(1.0, abs(best.cost)):
            raise RuntimeError(f"budget {budget:g} ms: the exact search ({exact.cost!r}) is worse than the "
                               f"evolutionary one ({best.cost!r}, {best.latency_ms!r} ms): a bug")
        reached = value(best.cost, tree.macs_of(best.config))
        gap = max(0.0, (best_exact - reached) if higher_better else (reached - best_exact))  # ties: float rounding
        share = 100 * gap / abs(best_exact)
        print(f"{budget:10.3f}{best_exact:16.4f}{reached:18.4f}{gap:10.4f}{share:8.2f}{exact_us:10.1f}"
              f"{statistics.median(times):13.2f}{int(np.median([r.evaluations for r in found])):10d}")
    print("(gap: how much worse the evolutionary answer is, in the objective's unit and as a share of the exact "
          "one; exact us: a query on the cached front; draws: configurations the evolution evaluated)")


def print_exact_against_evolution(table: Table, flops: Searcher, runs: int, seed: int, repeat: int) -> None:
    """Both comparisons: MACs (the flops objective) and a loss fitted from a synthetic loss log."""
    print_comparison("(a) MACs, maximised", flops, lambda cost, macs: macs / 1e6, "MMACs", True,
                     runs, seed, repeat)
    objective = make_objective(table, loss_samples=loss_log(table, seed))
    intercept = float(objective.info["intercept"])
    loss = Searcher(table, objective)
    print(f"\nloss objective: {objective.description}")
    print_comparison("(b) fitted loss, minimised", loss, lambda cost, macs: intercept + cost, "loss", False,
                     runs, seed, repeat)


def run(ofa_table: str | None, seed: int, repeat: int, evo_runs: int) -> None:
    """The whole ofa_mbv3 section."""
    name, table = ofa_source(ofa_table, seed)
    flops = print_ofa_figures(name, table, repeat)
    print_exact_against_evolution(table, flops, evo_runs, seed, max(5, repeat // 20))


def at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--ofa-table", default=None, help="an ofa_mbv3 table (default: the shipped one, if any)")
    parser.add_argument("--evo-runs", type=at_least_one, default=3, help="seeds of the evolutionary search per budget")
    args = parser.parse_args()
    run(args.ofa_table, args.seed, args.repeat, args.evo_runs)


if __name__ == "__main__":
    main()
