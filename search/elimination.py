"""The elimination plan every front DP follows, and the least completion of a partial configuration.

`Plan` adds one virtual variable with a single state above the roots of a tree MRF (zero edge
terms to each root, the constant latency as its unary term), so a forest and a tree, and the
final merge over the root's states, are all one case: eliminate leaves towards the virtual root.

`Completion` holds, for one set of terms, the min-sum values of that elimination in both
directions: per variable and state, the least sum over its subtree (`inside`), over the rest
of the tree (`outside`), and each child's least message. From them, `rest` gives the least sum
of the terms a partial set does not cover yet: a lower bound on any completion (the budget
pruning of the front DPs and the bounds of the two-budget search).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .tree import Terms, TreeMRF

__all__ = ["Plan", "Completion"]


class Plan:
    """A tree MRF with a virtual root (index `num_layers`, one state) above its roots; children before parents."""

    def __init__(self, tree: TreeMRF) -> None:
        self.tree = tree
        n = tree.num_layers
        self.virtual = n
        self.parent = tuple(p if p >= 0 else n for p in tree.parent) + (-1,)
        self.sizes = tuple(tree.sizes) + (1,)
        self.order = tuple(tree.order) + (n,)
        kids: list[list[int]] = [[] for _ in range(n + 1)]
        for v in tree.order:
            kids[self.parent[v]].append(v)
        self.children = tuple(tuple(c) for c in kids)
        self.names = tuple(tree.names) if tree.names else tuple(f"variable {v}" for v in range(n))

    def name(self, v: int) -> str:
        return "the final merge" if v == self.virtual else self.names[v]

    def unary(self, terms: Terms, v: int, constant: float = 0.0) -> np.ndarray:
        """Variable v's unary term (the virtual root's is `constant`)."""
        return np.array([constant]) if v == self.virtual else np.asarray(terms.unary[v], dtype=np.float64)

    def edge(self, terms: Terms, v: int) -> np.ndarray:
        """The edge term from v to its parent, (K_parent, K_v); zeros of shape (1, K_v) under the virtual root."""
        e = terms.edge[v]
        return np.zeros((1, self.sizes[v])) if e is None else np.asarray(e, dtype=np.float64)

    def steps(self) -> int:
        """Steps of one elimination: a message per variable and a merge per child beyond a parent's first."""
        return self.tree.num_layers + sum(max(0, len(c) - 1) for c in self.children)


class Completion:
    """Min-sum values of one set of terms over the plan, up and down; `rest` bounds what a partial set lacks."""

    def __init__(self, plan: Plan, terms: Terms, constant: float = 0.0) -> None:
        self.plan = plan
        n = plan.virtual
        self.unary = [plan.unary(terms, v, constant) for v in range(n + 1)]
        self.message: list[np.ndarray] = [np.zeros(0)] * (n + 1)
        self.inside: list[np.ndarray] = [np.zeros(0)] * (n + 1)
        edges = [plan.edge(terms, v) for v in range(n)]
        for v in plan.order:
            inside = self.unary[v].copy()
            for c in plan.children[v]:
                inside += self.message[c]
            self.inside[v] = inside
            if v < n:
                self.message[v] = (edges[v] + inside[None, :]).min(axis=1)
        self.outside: list[np.ndarray] = [np.zeros(0)] * (n + 1)
        self.outside[n] = np.zeros(1)
        for p in reversed(plan.order):
            for c in plan.children[p]:
                around = self.outside[p] + self.unary[p] + self._others(p, (c,))
                self.outside[c] = (edges[c] + around[:, None]).min(axis=0)

    def _others(self, p: int, covered: Iterable[int]) -> np.ndarray:
        """The least messages of p's children not in `covered`, summed per state of p."""
        covered = set(covered)
        total = np.zeros(self.plan.sizes[p])
        for c in self.plan.children[p]:
            if c not in covered:
                total = total + self.message[c]
        return total

    @property
    def least(self) -> float:
        """The least total over all configurations."""
        return float(self.inside[self.plan.virtual][0])

    def inner(self, p: int, covered: Iterable[int], with_unary: bool) -> np.ndarray:
        """Per state of p, the least sum of p's own terms a set at p lacks: the subtrees of p's children
        not in `covered`, and p's unary term unless `with_unary`."""
        others = self._others(p, covered)
        return others if with_unary else others + self.unary[p]

    def rest(self, p: int, covered: Iterable[int], with_unary: bool) -> np.ndarray:
        """Per state of p, the least sum of every term a set at p (as for `inner`) lacks, outside included."""
        return self.outside[p] + self.inner(p, covered, with_unary)
