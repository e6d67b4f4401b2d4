"""The tree MRF of a table and an objective: one structure every solver shares; a chain is one case.

A configuration picks one choice per variable. Its latency is `constant_ms` plus a sum of
unary terms (one variable) and pairwise terms (two variables); the pairs must form a
forest. Each component is rooted at its highest-numbered variable; every other variable
has a `parent`, and `order` lists the variables children first, so a solver eliminates
leaves towards the roots in one pass and backtracks in the reverse order.

All terms are folded per variable: `unary[v]` (shape (K_v,)) and `edge[v]` (shape
(K_parent, K_v), None at a root), for latency, the objective's cost, and the optional
parameter and MAC counts. A MobileNet-V1 chain is the tree whose variable k has parent
k+1: its elimination is the classic left-to-right Viterbi pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Sequence

import numpy as np

from .errors import ObjectiveError, TableError

__all__ = ["Terms", "TreeMRF", "CycleError", "tree_structure", "fold_terms", "build_tree", "min_sum"]


class CycleError(TableError):
    """The pairwise factors do not form a forest; the message names the variables closing a cycle."""

    def __init__(self, message: str, variables: tuple[str, str], source: str | None = None) -> None:
        super().__init__("factors", message, source)
        self.variables = variables


@dataclass(frozen=True, eq=False)
class Terms:
    """Per variable: a unary vector and the matrix to its parent ((K_parent, K_v); None at a root)."""

    unary: tuple[np.ndarray, ...]
    edge: tuple[np.ndarray | None, ...]

    def scaled(self, factor: float) -> "Terms":
        return Terms(tuple(u * factor for u in self.unary),
                     tuple(None if e is None else e * factor for e in self.edge))

    def plus(self, other: "Terms", weight: float = 1.0) -> "Terms":
        """`self + weight * other`, term by term (the Lagrangian's combined weights)."""
        return Terms(
            tuple(a + weight * b for a, b in zip(self.unary, other.unary)),
            tuple(None if a is None else a + weight * b for a, b in zip(self.edge, other.edge)),
        )

    def negated(self) -> "Terms":
        return self.scaled(-1.0)


def tree_structure(num_vars: int, pairs: Sequence[tuple[int, int]],
                   names: Sequence[str] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(parent, order) of the forest the pairs make; CycleError naming the two variables that close a cycle.

    Repeated pairs (two factors over the same two variables) are one edge. Each component is
    rooted at its highest-numbered variable; `order` lists children before parents.
    """
    names = list(names) if names is not None else [f"variable {v}" for v in range(num_vars)]
    root_of = list(range(num_vars))

    def find(v: int) -> int:
        while root_of[v] != v:
            root_of[v] = root_of[root_of[v]]
            v = root_of[v]
        return v

    adjacency: list[list[int]] = [[] for _ in range(num_vars)]
    seen: set[tuple[int, int]] = set()
    for a, b in pairs:
        if a == b:
            raise CycleError(f"a pairwise factor over {names[a]} twice", (names[a], names[b]))
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        ra, rb = find(a), find(b)
        if ra == rb:
            raise CycleError(
                f"the factors are not a tree: {names[key[0]]} and {names[key[1]]} close a cycle", (names[key[0]], names[key[1]])
            )
        root_of[ra] = rb
        adjacency[a].append(b)
        adjacency[b].append(a)
    parent = [-2] * num_vars
    visit: list[int] = []
    for root in range(num_vars - 1, -1, -1):
        if parent[root] != -2:
            continue
        parent[root] = -1
        frontier = [root]
        while frontier:  # breadth first from the root; reversed, it lists children before parents
            v = frontier.pop(0)
            visit.append(v)
            for u in sorted(adjacency[v]):
                if parent[u] == -2:
                    parent[u] = v
                    frontier.append(u)
    return tuple(parent), tuple(reversed(visit))


def fold_terms(sizes: Sequence[int], parent: Sequence[int],
               factors: Sequence[tuple[tuple[int, ...], np.ndarray]]) -> Terms:
    """Sum factors (variables, array with one axis per variable) into per-variable unary and edge terms."""
    unary = [np.zeros(k) for k in sizes]
    edge: list[np.ndarray | None] = [None if parent[v] < 0 else np.zeros((sizes[parent[v]], k))
                                     for v, k in enumerate(sizes)]
    for variables, array in factors:
        array = np.asarray(array, dtype=np.float64)
        if len(variables) == 1:
            unary[variables[0]] = unary[variables[0]] + array.reshape(sizes[variables[0]])
            continue
        a, b = variables
        if parent[a] == b:  # a is the child: edge[a][x_b, x_a]
            edge[a] = edge[a] + array.T
        elif parent[b] == a:
            edge[b] = edge[b] + array
        else:
            raise ValueError(f"factor over variables {a} and {b}, which are not parent and child")
    return Terms(tuple(unary), tuple(edge))


@dataclass(frozen=True, eq=False)
class TreeMRF:
    """The arrays of one (table, objective): choices, the rooted forest and per-variable terms."""

    choices: tuple[tuple[int, ...], ...]
    parent: tuple[int, ...]
    order: tuple[int, ...]
    constant_ms: float
    latency: Terms
    cost: Terms
    params: Terms | None
    macs: Terms | None
    names: tuple[str, ...] = ()

    @property
    def num_layers(self) -> int:
        """The number of variables (named as for the chain, where every variable is a layer width)."""
        return len(self.choices)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.choices)

    @property
    def roots(self) -> tuple[int, ...]:
        return tuple(v for v in self.order if self.parent[v] < 0)

    def children(self) -> tuple[tuple[int, ...], ...]:
        """Each variable's children, in elimination order."""
        out: list[list[int]] = [[] for _ in self.choices]
        for v in self.order:
            if self.parent[v] >= 0:
                out[self.parent[v]].append(v)
        return tuple(tuple(c) for c in out)

    @cached_property
    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """Latency and cost stacked (variables, K + 1, K), K the most choices: rows 0..K-1 a variable's edge
        (x_parent, x_v), row K its unary; padded with 0 latency and +inf cost, a root's edge all padding.

        Built once per tree, for the solvers that work on every variable at once.
        """
        n, k = self.num_layers, max(self.sizes)
        latency, cost = np.zeros((n, k + 1, k)), np.full((n, k + 1, k), np.inf)
        for v, size in enumerate(self.sizes):
            latency[v, k, :size], cost[v, k, :size] = self.latency.unary[v], self.cost.unary[v]
            if self.parent[v] >= 0:
                rows = len(self.choices[self.parent[v]])
                latency[v, :rows, :size], cost[v, :rows, :size] = self.latency.edge[v], self.cost.edge[v]
        return latency, cost

    @cached_property
    def levels(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """The non-root variables grouped for batched passes: by height (every child of a group in an earlier
        group, leaves first) and by depth (every parent in an earlier group, the roots' children first)."""
        height, depth = [0] * self.num_layers, [0] * self.num_layers
        for v in self.order:
            if self.parent[v] >= 0:
                height[self.parent[v]] = max(height[self.parent[v]], height[v] + 1)
        for v in reversed(self.order):
            if self.parent[v] >= 0:
                depth[v] = depth[self.parent[v]] + 1
        edges = [v for v in self.order if self.parent[v] >= 0]

        def group(key: list[int]) -> tuple[np.ndarray, ...]:
            return tuple(np.array([v for v in edges if key[v] == h], dtype=np.int64)
                         for h in sorted({key[v] for v in edges}))

        return group(height), group(depth)

    def with_terms(self, latency: Terms | None = None, cost: Terms | None = None, constant_ms: float | None = None,
                   params: Terms | None = None, keep_counts: bool = True) -> "TreeMRF":
        """The same tree with other latency or cost terms (e.g. params as the cost of a second front)."""
        return replace(
            self,
            latency=self.latency if latency is None else latency,
            cost=self.cost if cost is None else cost,
            constant_ms=self.constant_ms if constant_ms is None else constant_ms,
            params=params if params is not None else (self.params if keep_counts else None),
            macs=self.macs if keep_counts else None,
        )

    def widths(self, idx: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(self.choices[k][int(j)]) for k, j in enumerate(idx))

    def total(self, terms: Terms, idx: Sequence[int], start: float = 0.0) -> float:
        """Sum of `terms` at one configuration (choice indices), added in elimination order."""
        total = start
        for v in self.order:
            total += float(terms.unary[v][idx[v]])
            p = self.parent[v]
            if p >= 0:
                total += float(terms.edge[v][idx[p], idx[v]])
        return total

    def totals(self, terms: Terms, configs: np.ndarray, start: float = 0.0) -> np.ndarray:
        """Sums of `terms` for many configurations at once (rows of choice indices), same order as `total`."""
        configs = np.asarray(configs, dtype=np.int64).reshape(-1, self.num_layers)
        total = np.full(configs.shape[0], start, dtype=np.float64)
        for v in self.order:
            total += terms.unary[v][configs[:, v]]
            p = self.parent[v]
            if p >= 0:
                total += terms.edge[v][configs[:, p], configs[:, v]]
        return total

    def latency_of(self, idx: Sequence[int]) -> float:
        return self.total(self.latency, idx, self.constant_ms)

    def cost_of(self, idx: Sequence[int]) -> float:
        return self.total(self.cost, idx)

    def params_of(self, idx: Sequence[int]) -> float | None:
        return None if self.params is None else self.total(self.params, idx)

    def macs_of(self, idx: Sequence[int]) -> float | None:
        return None if self.macs is None else self.total(self.macs, idx)

    def argmin(self, terms: Terms) -> tuple[int, ...]:
        """The configuration of least total of `terms`."""
        return min_sum(self, terms)[1]

    def min_latency(self) -> float:
        """The smallest achievable predicted latency."""
        return self.latency_of(self.argmin(self.latency))

    def max_latency(self) -> float:
        """The largest predicted latency of any configuration."""
        return self.latency_of(self.argmin(self.latency.negated()))

    def min_params(self) -> float | None:
        """The smallest achievable parameter count, or None when the table has no params."""
        return None if self.params is None else self.params_of(self.argmin(self.params))


def min_sum(tree: TreeMRF, terms: Terms) -> tuple[float, tuple[int, ...]]:
    """Least total of `terms` over all configurations and its arg-min: leaves eliminated towards the roots."""
    belief = [np.array(u, dtype=np.float64) for u in terms.unary]
    back: list[np.ndarray | None] = [None] * tree.num_layers
    for v in tree.order:
        p = tree.parent[v]
        if p < 0:
            continue
        total = terms.edge[v] + belief[v][None, :]
        arg = total.argmin(axis=1)
        back[v] = arg
        belief[p] += total[np.arange(total.shape[0]), arg]
    idx = [0] * tree.num_layers
    value = 0.0
    for v in reversed(tree.order):
        p = tree.parent[v]
        if p < 0:
            idx[v] = int(belief[v].argmin())
            value += float(belief[v][idx[v]])
        else:
            idx[v] = int(back[v][idx[p]])
    return value, tuple(idx)


def build_tree(table, objective) -> TreeMRF:
    """Fold the table's factors and the objective's costs into a TreeMRF (ObjectiveError on a shape mismatch).

    The objective gives a unary cost per variable and, optionally, a pairwise cost per factor
    of the factor's own shape.
    """
    factors = table.factors
    sizes = [len(c) for c in table.choices]
    names = tuple(table.variable_names)
    parent, order = tree_structure(len(sizes), [f.variables for f in factors if len(f.variables) == 2], names)
    if len(objective.unary) != len(sizes):
        raise ObjectiveError(f"objective has {len(objective.unary)} variables, the table {len(sizes)}", field="objective")
    cost_factors: list[tuple[tuple[int, ...], np.ndarray]] = []
    for v, u in enumerate(objective.unary):
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (sizes[v],):
            raise ObjectiveError(f"unary cost of variable {v} ({names[v]}) has {u.size} values, expected {sizes[v]}",
                                 field="objective")
        cost_factors.append(((v,), u))
    if objective.pairwise is not None:
        if len(objective.pairwise) != len(factors):
            raise ObjectiveError(f"objective has {len(objective.pairwise)} pairwise costs, the table "
                                 f"{len(factors)} factors", field="objective")
        for f, c in zip(factors, objective.pairwise):
            c = np.asarray(c, dtype=np.float64)
            if c.shape != f.ms.shape and c.size == f.ms.size and f.ms.ndim == 1:
                c = c.reshape(f.ms.shape)  # a chain's end block, (1, K) or (K, 1), is a unary factor
            if c.shape != f.ms.shape:
                raise ObjectiveError(f"pairwise cost of factor {f.name} has shape {c.shape}, expected {f.ms.shape}",
                                     field="objective")
            cost_factors.append((f.variables, c))

    def terms(key: str) -> Terms | None:
        arrays = [getattr(f, key) for f in factors]
        if any(a is None for a in arrays):
            return None
        return fold_terms(sizes, parent, [(f.variables, a) for f, a in zip(factors, arrays)])

    return TreeMRF(
        choices=tuple(tuple(c) for c in table.choices),
        parent=parent,
        order=order,
        constant_ms=float(table.constant_ms),
        latency=terms("ms"),
        cost=fold_terms(sizes, parent, cost_factors),
        params=terms("params"),
        macs=terms("macs"),
        names=names,
    )
