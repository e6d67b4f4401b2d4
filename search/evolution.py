"""An evolutionary search over a latency table, the way Once-for-All searches its lookup table.

A baseline to compare the exact search against, not a search we recommend: it needs a feasible
random start, it never proves anything, and it is orders of magnitude slower than a query on
the exact front. It follows OFA's `EvolutionFinder` with its published settings (population
100, 500 generations, mutation probability 0.1, parent ratio 0.25, mutation ratio 0.5):

- the initial population is `population` uniform random configurations within the budget;
- each generation the best `parent_ratio x population` (least cost) survive as parents, then
  `mutation_ratio x population` mutants of random parents (each variable redrawn uniformly
  with the mutation probability) and the rest of `population` crossovers of two random parents
  (each variable from either, with equal odds) join them, so a generation after the first
  holds the parents plus `population` children, as in OFA;
- every initial member and every child is kept only within the budget, redrawn otherwise.

OFA redraws without end; here every draw is bounded. The initial population takes at most
`max_draws` random configurations per member (EvolutionStuck when too few fit, InfeasibleBudget
when even the fastest configuration misses the budget), and a child still over the budget after
`max_tries` redraws is a copy of its (first) parent, which fits. Every step works on all
members at once: a configuration's latency and cost are one gather over per-variable tables
of the tree's terms. Seeded: the same seed gives the same answer.

It draws every variable uniformly over its choices, a table's variables being all it knows: on
`ofa_mbv3` a skippable block is skipped with odds 1/10 (so depth 4 is the likeliest), where
OFA draws a stage's depth uniformly from {2, 3, 4}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .budget import within
from widthwise.errors import WidthwiseError

from .errors import InfeasibleBudget, QueryError
from .tree import Terms, TreeMRF

__all__ = ["EvolutionSettings", "EvolutionResult", "EvolutionStuck", "TermTables", "evolve"]


class EvolutionStuck(WidthwiseError, RuntimeError):
    """Random sampling found too few configurations within the budget to start a population."""

    code = "evolution_stuck"


@dataclass(frozen=True)
class EvolutionSettings:
    """OFA's published settings, and the bounds on redrawing that OFA leaves open."""

    population: int = 100
    generations: int = 500
    mutate_prob: float = 0.1
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    #: random draws per initial member before the search gives up (EvolutionStuck)
    max_draws: int = 10_000
    #: redraws of a child over the budget before it falls back to a copy of its parent
    max_tries: int = 100

    def __post_init__(self) -> None:
        for name, least in (("population", 1), ("generations", 0), ("max_draws", 1), ("max_tries", 1)):
            if getattr(self, name) < least:
                raise QueryError(f"{name} must be >= {least}, got {getattr(self, name)}", field=name)
        for name in ("mutate_prob", "parent_ratio", "mutation_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise QueryError(f"{name} must be within [0, 1], got {getattr(self, name)}", field=name)

    @property
    def parents(self) -> int:
        """How many members survive a generation (at least one)."""
        return max(1, int(round(self.parent_ratio * self.population)))

    @property
    def mutants(self) -> int:
        """How many children of a generation are mutants (the others are crossovers)."""
        return min(self.population, int(round(self.mutation_ratio * self.population)))


@dataclass(frozen=True)
class EvolutionResult:
    """The best configuration found (choice indices) with its latency and cost, and what it took."""

    config: tuple[int, ...]
    latency_ms: float
    cost: float
    #: configurations whose latency the search evaluated (the initial draws included)
    evaluations: int
    #: the best cost at the start of each generation, then after the last one
    history: np.ndarray = field(repr=False)


class TermTables:
    """Latency and cost of many configurations at once: one gather over (variable, parent choice, choice) tables.

    Entry [v, a, b] holds v's unary term at choice b plus its edge term from parent choice a (a = 0 at a
    root); choices past a variable's own are padded, and never drawn.
    """

    def __init__(self, tree: TreeMRF) -> None:
        self.tree = tree
        self.sizes = np.asarray(tree.sizes, dtype=np.int64)
        self.parent = np.asarray([max(p, 0) for p in tree.parent], dtype=np.int64)
        self.is_root = np.asarray([p < 0 for p in tree.parent])
        self.latency = self._table(tree.latency)
        self.cost = self._table(tree.cost)
        self.rows = np.arange(tree.num_layers)

    def _table(self, terms: Terms) -> np.ndarray:
        n, k = self.tree.num_layers, int(self.sizes.max())
        out = np.zeros((n, k, k))
        for v, size in enumerate(self.tree.sizes):
            unary = np.asarray(terms.unary[v], dtype=np.float64)
            if terms.edge[v] is None:
                out[v, 0, :size] = unary
            else:
                edge = np.asarray(terms.edge[v], dtype=np.float64)
                out[v, : edge.shape[0], :size] = edge + unary[None, :]
        return out

    def evaluate(self, configs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latency ms, cost) of each row of choice indices."""
        parent_choice = np.where(self.is_root, 0, configs[:, self.parent])
        lat = self.latency[self.rows, parent_choice, configs].sum(axis=1) + self.tree.constant_ms
        cost = self.cost[self.rows, parent_choice, configs].sum(axis=1)
        return lat, cost

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` configurations, each variable uniform over its choices."""
        return (rng.random((count, self.sizes.size)) * self.sizes).astype(np.int64)


def _initial(tables: TermTables, budget_ms: float, settings: EvolutionSettings,
             rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """`population` random configurations within the budget, drawn in vectorised rounds; and the draws it took."""
    need, found = settings.population, []
    total, drawn = need * settings.max_draws, 0
    batch = max(need, 1024)
    while need > 0 and drawn < total:
        configs = tables.draw(rng, min(batch, total - drawn))
        drawn += len(configs)
        fits = configs[within(tables.evaluate(configs)[0], budget_ms)][:need]
        found.append(fits)
        need -= len(fits)
    if need > 0:
        got = settings.population - need
        raise EvolutionStuck(f"budget {budget_ms:g} ms: {got} of {settings.population} random configurations fit "
                             f"within it in {drawn:,} draws; the evolutionary search cannot start", field="budget_ms")
    return np.concatenate(found), drawn


def _children(tables: TermTables, parents: np.ndarray, budget_ms: float, settings: EvolutionSettings,
              rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A generation's mutants and crossovers of `parents`, every one within the budget; and the draws it took."""
    count, mutants, n = settings.population, settings.mutants, tables.sizes.size
    first = parents[rng.integers(len(parents), size=count)]
    second = parents[rng.integers(len(parents), size=count)]
    out = first.copy()
    pending = np.arange(count)
    draws = 0
    for _ in range(settings.max_tries):
        if pending.size == 0:
            break
        is_mutant = pending < mutants
        fresh = tables.draw(rng, pending.size)
        redraw = rng.random((pending.size, n)) < settings.mutate_prob
        from_second = rng.random((pending.size, n)) < 0.5
        take = np.where(is_mutant[:, None], redraw, from_second)
        other = np.where(is_mutant[:, None], fresh, second[pending])
        trial = np.where(take, other, first[pending])
        fits = within(tables.evaluate(trial)[0], budget_ms)
        out[pending[fits]] = trial[fits]
        draws += pending.size
        pending = pending[~fits]
    return out, draws  # the still pending keep their first parent, which fits


def evolve(tree: TreeMRF, budget_ms: float, settings: EvolutionSettings = EvolutionSettings(), seed: int = 0,
           tables: TermTables | None = None) -> EvolutionResult:
    """The least-cost configuration the evolutionary search finds within `budget_ms` over `tree`.

    `tables` (TermTables of `tree`) may be passed in to share them between searches.
    """
    tables = TermTables(tree) if tables is None else tables
    fastest = tree.min_latency()
    if not within(fastest, budget_ms):
        raise InfeasibleBudget(f"budget {budget_ms:g} ms is below the smallest achievable latency {fastest:.6g} ms",
                               fastest)
    rng = np.random.default_rng(seed)
    population, evaluations = _initial(tables, budget_ms, settings, rng)
    history = []
    for _ in range(settings.generations):
        parents = _best(tables, population, settings.parents)
        history.append(float(tables.evaluate(parents[:1])[1][0]))
        children, draws = _children(tables, parents, budget_ms, settings, rng)
        evaluations += draws
        population = np.concatenate([parents, children])
    best = _best(tables, population, 1)
    latency, cost = tables.evaluate(best)
    history.append(float(cost[0]))
    return EvolutionResult(tuple(int(i) for i in best[0]), float(latency[0]), float(cost[0]), evaluations,
                           np.asarray(history))


def _best(tables: TermTables, population: np.ndarray, count: int) -> np.ndarray:
    """The `count` members of least cost (ties in population order)."""
    cost = tables.evaluate(population)[1]
    return population[np.argsort(cost, kind="stable")[:count]]
