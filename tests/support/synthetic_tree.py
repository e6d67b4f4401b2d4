"""Synthetic `widthwise-table/2` tables: small random trees for exhaustive checks, and one with
MobileNet-V2's variables and factors for realistic searches.

`random_tree_table` draws a forest of a named shape over a few variables with small integer
latencies (ties are frequent, the hard case for dominance pruning) and positive MACs and
parameters, so every objective works on it. `mobilenet_v2_like_table` builds the stem, the
seven inverted-residual stages, the head and the classifier with exact-looking counts and
noisy latencies; it depends on no space definition, only on the shape of the network.
"""

from __future__ import annotations

import numpy as np

from widthwise.device_agents.spaces import width_grid
from widthwise.search.table import Factor, Table, Variable

__all__ = ["TREE_SHAPES", "MOBILENET_V2_LIKE_STAGES", "tree_edges", "random_tree_table", "mobilenet_v2_like_table"]

#: The shapes `random_tree_table` draws.
TREE_SHAPES = ("chain", "star", "caterpillar", "random", "forest")

#: (expansion t, base width c, blocks n, stride s) of MobileNet-V2's seven stages.
MOBILENET_V2_LIKE_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)



def _meta() -> dict:
    """Fresh device and runtime objects (a table's metadata is its own, callers may edit it)."""
    return {
        "device": {"name": "synthetic", "cpu": "none", "cores": 1, "os": "none"},
        "runtime": {"name": "synthetic", "version": "0", "threads": 1, "dtype": "float32", "statistic": "median"},
    }


def tree_edges(shape: str, n: int, rng: np.random.Generator) -> tuple[list[tuple[int, int]], list[str]]:
    """(parent, child) edges of a forest of `shape` over variables 0..n-1, and each variable's group.

    A chain links k and k+1; a star hangs every variable off one centre; a caterpillar is a
    spine with leaves (grouped by their spine variable); random is a random tree and forest a
    random tree with one edge cut. Except for the chain, variables are numbered at random.
    """
    if shape not in TREE_SHAPES:
        raise ValueError(f"shape must be one of {', '.join(TREE_SHAPES)}, got {shape!r}")
    groups = [""] * n
    if shape == "chain":
        return [(k + 1, k) for k in range(n - 1)], groups
    label = rng.permutation(n)
    if shape == "star":
        edges = [(0, k) for k in range(1, n)]
    elif shape == "caterpillar":
        spine = max(1, (n + 1) // 2)
        edges = [(k, k + 1) for k in range(spine - 1)]
        for k in range(spine):
            groups[int(label[k])] = f"spine{k}"
        for leaf in range(spine, n):
            at = int(rng.integers(spine))
            edges.append((at, leaf))
            groups[int(label[leaf])] = f"spine{at}"
    else:
        edges = [(int(rng.integers(k)), k) for k in range(1, n)]
        if shape == "forest" and edges:
            edges.pop(int(rng.integers(len(edges))))
    return [(int(label[a]), int(label[b])) for a, b in edges], groups


def random_tree_table(shape: str, seed: int = 0, *, levels: int = 3, variables: int = 5, integer: bool = True,
                      with_counts: bool = True, exact_levels: bool = False) -> Table:
    """A small random `/2` table whose pairwise factors form a `shape` forest (see `tree_edges`).

    Each variable has 1..`levels` choices (exactly `levels` with `exact_levels`). Every edge
    gets a pairwise factor in a random orientation, some edges a second one over the same
    pair, every variable a unary factor with probability 1/2 (roots always). Latencies are
    small integers (`integer`) or floats in [0, 5); params are integers 1..19 and MACs 1..49.
    """
    rng = np.random.default_rng(seed)
    edges, groups = tree_edges(shape, variables, rng)
    sizes = [levels if exact_levels else int(rng.integers(1, levels + 1)) for _ in range(variables)]
    choices = [tuple(sorted(rng.choice(np.arange(1, 13) * 8, size=k, replace=False).tolist())) for k in sizes]
    names = [f"v{k}" for k in range(variables)]
    children = {child for _, child in edges}
    scopes: list[tuple[int, ...]] = []
    for v in range(variables):
        if v not in children or rng.random() < 0.5:
            scopes.append((v,))
    for parent, child in edges:
        scopes.append((parent, child) if rng.random() < 0.5 else (child, parent))
        if rng.random() < 0.25:
            scopes.append((child, parent))
    factors = []
    for k in rng.permutation(len(scopes)):
        scope = scopes[int(k)]
        shape_ = tuple(sizes[v] for v in scope)
        ms = rng.integers(0, 6, size=shape_).astype(float) if integer else rng.random(shape_) * 5
        params = rng.integers(1, 20, size=shape_).astype(float) if with_counts else None
        macs = rng.integers(1, 50, size=shape_).astype(float) if with_counts else None
        label = "_".join(names[v] for v in scope)
        factors.append(Factor(f"f{len(factors)}.{label}", "pair" if len(scope) == 2 else "unary", scope, ms, macs,
                              params))
    return Table(
        space={"name": f"random-{shape}"},
        variables=[Variable(names[v], choices[v], groups[v]) for v in range(variables)],
        factors=factors,
        constant_ms=float(rng.integers(0, 3)),
        fit={"samples": 0, "method": "synthetic", "seed": seed},
        **_meta(),
    )


class _Builder:
    """Accumulates the variables and factors of a MobileNet-V2-like table with noisy latencies."""

    def __init__(self, levels: int, seed: int, ns_per_mac: float, overhead_ms: float, noise: float,
                 lane: int) -> None:
        self.levels, self.rng = levels, np.random.default_rng(seed)
        self.ns_per_mac, self.overhead_ms, self.noise, self.lane = ns_per_mac, overhead_ms, noise, lane
        self.variables: list[Variable] = []
        self.factors: list[Factor] = []

    def variable(self, name: str, base: int, group: str, *, with_base: bool = False) -> int:
        """A variable on `width_grid(base, levels)`; `with_base` adds the 1.0x width (an expansion's)."""
        grid = set(width_grid(base, self.levels))
        if with_base:
            grid.add(max(8, int(base / 8 + 0.5) * 8))
        self.variables.append(Variable(name, tuple(sorted(grid)), group))
        return len(self.variables) - 1

    def factor(self, name: str, kind: str, over: tuple[int, ...], counts) -> None:
        """A factor whose (macs, params, memory) at each choice pair come from `counts(*widths)`."""
        grids = [self.variables[v].choices for v in over]
        mesh = np.meshgrid(*[np.asarray(g, dtype=np.float64) for g in grids], indexing="ij")
        macs, params, memory = (np.asarray(a, dtype=np.float64) for a in counts(*mesh))
        ragged = sum((m % self.lane != 0).astype(np.float64) for m in mesh)
        ms = self.overhead_ms + 1e-6 * self.ns_per_mac * (macs * (1.0 + 0.15 * ragged) + 4.0 * memory)
        ms = ms * np.exp(self.noise * self.rng.standard_normal(ms.shape))
        self.factors.append(Factor(name, kind, over, np.round(ms, 6), np.round(macs), np.round(params)))


def mobilenet_v2_like_table(levels: int = 14, seed: int = 0, *, resolution: int = 224, ns_per_mac: float = 0.02,
                            overhead_ms: float = 0.01, noise: float = 0.08, lane: int = 16,
                            constant_ms: float = 0.3) -> Table:
    """A `/2` table with MobileNet-V2's variables and factors, in the order and names of the space.

    Variables: stem, per stage its first block's expansion (t > 1) then the stage width, then
    the later blocks' expansions, then head. Factors: stem `conv` (unary), per block
    `ir_dwproject` (t = 1) or `ir_expand` over (in, hidden) and `ir_project` over (hidden,
    out) with the residual Add on every block after a stage's first, head `conv`, `pool_fc`.
    Every grid is `width_grid(base, levels)`; an expansion's is around t x the block's input base,
    with that 1.0x width added when the grid misses it.
    MACs and parameters follow the agent's counters (an Add and the pooling count no MACs);
    the latency adds a memory-traffic term, so the Add and the pooling still cost time.
    """
    b = _Builder(levels, seed, ns_per_mac, overhead_ms, noise, lane)
    hw = -(-resolution // 2)
    stem = b.variable("stem", 32, "stem")
    b.factor("stem", "conv", (stem,), lambda c: (hw * hw * 27 * c, 27 * c + c, hw * hw * c))
    prev, prev_base = stem, 32
    for s, (t, c, n, stride) in enumerate(MOBILENET_V2_LIKE_STAGES, start=1):
        stage = f"stage{s}"
        hw_in, hw = hw, -(-hw // stride)
        first_hidden = b.variable(f"{stage}.block1.expand", t * prev_base, stage, with_base=True) if t > 1 else None
        width = b.variable(stage, c, stage)
        for j in range(1, n + 1):
            name = f"{stage}.block{j}"
            src, h_in = (prev, hw_in) if j == 1 else (width, hw)
            if t == 1:
                b.factor(name, "ir_dwproject", (src, width), lambda a, o, h=h_in, g=hw: (
                    g * g * (9 * a + a * o), 10 * a + a * o + o, h * h * a + g * g * o))
                continue
            hidden = first_hidden if j == 1 else b.variable(f"{name}.expand", t * c, stage, with_base=True)
            b.factor(f"{name}.expand", "ir_expand", (src, hidden), lambda a, e, h=h_in, g=hw: (
                h * h * a * e + g * g * 9 * e, a * e + e + 10 * e, h * h * (a + e) + g * g * e))
            add = j > 1
            b.factor(f"{name}.project", "ir_project", (hidden, width), lambda e, o, g=hw, r=add: (
                g * g * e * o, e * o + o, g * g * (e + o * (3 if r else 1))))
        prev, prev_base = width, c
    head = b.variable("head", 1280, "head")
    b.factor("head", "conv", (prev, head), lambda a, o, g=hw: (g * g * a * o, a * o + o, g * g * (a + o)))
    b.factor("classifier", "pool_fc", (head,), lambda c: (1000 * c, 1000 * c + 1000, hw * hw * c))
    return Table(
        space={"name": "mobilenet_v2", "resolution": resolution, "params": {"resolution": resolution, "levels": levels}},
        variables=b.variables,
        factors=b.factors,
        constant_ms=constant_ms,
        fit={"samples": 0, "method": "synthetic", "seed": seed},
        **_meta(),
    )
