"""The elimination plan every front DP follows, and the least completion of a partial configuration.

`Plan` adds one virtual variable with a single state above the roots of a tree MRF (zero edge
terms to each root, the constant latency as its unary term), so a forest and a tree, and the
final merge over the root's states, are all one case: eliminate leaves towards the virtual root.
A plan may root a component elsewhere than the tree does (its edges then read transposed): any
root gives the same front, but not the same work. A set near the root holds, per state, nearly
the whole front, and a merge of two large messages multiplies their sizes, so `choose_roots`
picks, per component, among the tree's root and the two ends of a longest path, the one whose
estimated work (`estimated_work`) is least: on a spine of stage widths, the end whose widths
have fewer choices near it (on MobileNet-V2 and ofa_mbv3, the stem rather than the head).

`Completion` holds, for one set of terms, the min-sum values of that elimination in both
directions: per variable and state, the least sum over its subtree (`inside`), over the rest
of the tree (`outside`), and each child's least message. From them, `rest` gives the least sum
of the terms a partial set does not cover yet: a lower bound on any completion (the budget
pruning of the front DPs and the bounds of the two-budget search).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .tree import Terms, TreeMRF

__all__ = ["Plan", "Completion", "choose_roots", "estimated_work", "rerooted"]

#: Growth of a partial front with the choices below it, in the work estimate (sets grow faster than additively).
SIZE_EXPONENT = 1.5
#: A root other than the tree's is taken only when its estimated work is below this share of the tree's.
SWITCH_BELOW = 0.9


class Plan:
    """A tree MRF with a virtual root (index `num_layers`, one state) above its roots; children before parents.

    `roots` (one variable per component, in any order) roots the components there instead of at the tree's
    roots; `edge` then reads a reversed edge transposed.
    """

    def __init__(self, tree: TreeMRF, roots: Iterable[int] | None = None) -> None:
        self.tree = tree
        n = tree.num_layers
        self.virtual = n
        parent, order = (tuple(tree.parent), tuple(tree.order)) if roots is None else rerooted(tree.parent, roots)
        #: variables whose plan parent is their child in the tree
        self.flipped = frozenset(v for v in range(n) if parent[v] >= 0 and parent[v] != tree.parent[v])
        self.parent = tuple(p if p >= 0 else n for p in parent) + (-1,)
        self.sizes = tuple(tree.sizes) + (1,)
        self.order = order + (n,)
        kids: list[list[int]] = [[] for _ in range(n + 1)]
        for v in order:
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
        if v in self.flipped:  # the tree holds it at the plan parent, as (K_v, K_parent)
            return np.asarray(terms.edge[self.parent[v]], dtype=np.float64).T
        e = terms.edge[v] if self.parent[v] != self.virtual else None
        return np.zeros((1, self.sizes[v])) if e is None else np.asarray(e, dtype=np.float64)

    def steps(self) -> int:
        """Steps of one elimination: a message per variable and a merge per child beyond a parent's first."""
        return self.tree.num_layers + sum(max(0, len(c) - 1) for c in self.children)


def _adjacency(parent: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in parent]
    for v, p in enumerate(parent):
        if p >= 0:
            out[v].append(p)
            out[p].append(v)
    return out


def _breadth_first(adjacency: list[list[int]], root: int) -> tuple[list[int], list[int]]:
    """(visit order, parent) of a breadth-first walk of root's component (parent -1 at the root, -2 off it)."""
    parent = [-2] * len(adjacency)
    parent[root] = -1
    visit, head = [root], 0
    while head < len(visit):
        v = visit[head]
        head += 1
        for u in sorted(adjacency[v]):
            if parent[u] == -2:
                parent[u] = v
                visit.append(u)
    return visit, parent


def rerooted(parent: Sequence[int], roots: Iterable[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(parent, order children first) of the same forest with each component rooted at its first variable in
    `roots` (a later one of the same component is not a root; components without one keep their root)."""
    adjacency = _adjacency(parent)
    out = [-2] * len(parent)
    visits: list[int] = []
    for root in list(roots) + [v for v, p in enumerate(parent) if p < 0]:
        if out[root] != -2:  # its component is rooted already
            continue
        visit, up = _breadth_first(adjacency, root)
        for v in visit:
            out[v] = up[v]
        visits.extend(visit)
    return tuple(out), tuple(reversed(visits))


def estimated_work(parent: Sequence[int], order: Sequence[int], sizes: Sequence[int]) -> float:
    """A relative estimate of a front DP's work under this rooting: a set's size per state taken as
    (1 + its subtree's choices beyond the first) ** SIZE_EXPONENT; a message costs its size times the
    parent's states, a merge the product of the two sizes times the states."""
    kids: list[list[int]] = [[] for _ in sizes]
    for v in order:
        if parent[v] >= 0:
            kids[parent[v]].append(v)
    reach = [0.0] * len(sizes)
    work = 0.0
    for v in order:
        below = sorted((reach[c] for c in kids[v]), reverse=True)
        run = 1.0 + (below[0] if below else 0.0)
        for size in below[1:]:
            work += sizes[v] * (run * size) ** SIZE_EXPONENT
            run += size
        reach[v] = run + sizes[v] - 1
        if parent[v] >= 0:
            work += sizes[parent[v]] * reach[v] ** SIZE_EXPONENT
    return work


def choose_roots(tree: TreeMRF) -> tuple[int, ...] | None:
    """Per component, the root of least estimated work among the tree's root and the two ends of a longest
    path; None when the tree's roots are as good (another root must estimate below SWITCH_BELOW of it)."""
    adjacency = _adjacency(tree.parent)
    roots = [v for v in tree.order if tree.parent[v] < 0]
    chosen = list(roots)
    for k, root in enumerate(roots):
        visit, parent = _breadth_first(adjacency, root)
        if len(visit) < 3:
            continue
        best = SWITCH_BELOW * estimated_work(parent, visit[::-1], tree.sizes)
        far = visit[-1]  # a longest path's ends: the farthest from anywhere, and the farthest from that one
        for candidate in (far, _breadth_first(adjacency, far)[0][-1]):
            visit, parent = _breadth_first(adjacency, candidate)
            work = estimated_work(parent, visit[::-1], tree.sizes)
            if work < best:
                chosen[k], best = candidate, work
    return None if chosen == roots else tuple(chosen)


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
