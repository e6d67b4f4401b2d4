"""Synthetic latency tables: realistic-looking `widthwise-table/1` chains for tests and benchmarks
(the `/2` trees are in tests/support/synthetic_tree.py, re-exported here).

The latency of a block follows its multiply-accumulate count with a per-block overhead, a
penalty for widths that do not fill a SIMD lane, and seeded noise, so the search sees the
irregular, non-convex trade-offs a measured table has. Layer kinds, strides, base widths,
the width grid and the exact MAC and parameter counts all come from the agent's space
definitions (widthwise.device_agents.spaces): a fixture cannot disagree with the space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from widthwise.device_agents.spaces import (
    BLOCK_COUNTERS,
    MOBILENET_V1_LAYERS,
    BlockSpec,
    Space,
    block_counts,
    mobilenet_v1,
    width_grid,
)
from widthwise.search.table import Block, Table

from .synthetic_tree import (  # noqa: F401  (re-exported: one import site for every synthetic table)
    MOBILENET_V2_LIKE_STAGES,
    TREE_SHAPES,
    mobilenet_v2_like_table,
    random_tree_table,
    tree_edges,
)

#: (kind, stride, base width) of MobileNet-V1's 14 searchable layers: the space's own rows.
MOBILENET_V1_SHAPE: tuple[tuple[str, int, int], ...] = MOBILENET_V1_LAYERS

BlockAt = Callable[[int, int, int], BlockSpec]  # (block index, in-width, out-width) -> the block


@dataclass(frozen=True)
class BlockShape:
    """What a synthetic block computes: its kind (a kind of the spaces' counters) and its output side."""

    kind: str
    out_hw: int
    kernel: int = 3


def grid_widths(base: int, levels: int, lo: float = 0.2, hi: float = 1.5, multiple: int = 8) -> list[int]:
    """The space's width grid of one layer (`spaces.width_grid`), as a list."""
    return list(width_grid(base, levels, lo, hi, multiple))


def _shape_block(k: int, shape: BlockShape, cin: int, cout: int) -> BlockSpec:
    """Block k of a shape-described chain; the counters of conv, dwsep and dense read only its output side."""
    if shape.kind not in BLOCK_COUNTERS:
        raise ValueError(f"unknown synthetic block kind {shape.kind!r}; known: {', '.join(sorted(BLOCK_COUNTERS))}")
    return BlockSpec(k, f"block{k}", shape.kind, cin, cout, 1, shape.kernel, shape.out_hw, shape.out_hw)


def _latency_blocks(
    chain: Sequence[Sequence[int]],
    block_at: BlockAt,
    names: Sequence[str],
    seed: int,
    *,
    ns_per_mac: float,
    overhead_ms: float,
    noise: float,
    lane: int,
) -> list[Block]:
    """One table block per link of `chain` (widths per position), with exact counts and noisy latencies."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k, name in enumerate(names):
        ins, outs = chain[k], chain[k + 1]
        counts = np.array([[block_counts(block_at(k, cin, cout)) for cout in outs] for cin in ins], dtype=np.float64)
        macs, params = counts[..., 0], counts[..., 1]
        # Widths off the SIMD lane pay for a partly filled vector; the noise is multiplicative.
        ragged = np.add.outer([cin % lane != 0 for cin in ins], [cout % lane != 0 for cout in outs])
        ms = overhead_ms + ns_per_mac * 1e-6 * macs * (1.0 + 0.15 * ragged)
        ms = ms * np.exp(noise * rng.standard_normal(ms.shape))
        blocks.append(Block(name, tuple(ins), tuple(outs), np.round(ms, 6), macs, params))
    return blocks


def _table(space: dict, blocks: list[Block], constant_ms: float, seed: int) -> Table:
    return Table(
        space=space,
        blocks=blocks,
        constant_ms=constant_ms,
        device={"name": "synthetic", "cpu": "none", "cores": 1, "os": "none"},
        runtime={"name": "synthetic", "version": "0", "threads": 1, "dtype": "float32", "statistic": "median"},
        fit={"samples": 0, "method": "synthetic", "seed": seed},
    )


def synthetic_table(
    choices: list[list[int]],
    seed: int = 0,
    *,
    input_channels: int = 3,
    output_channels: int = 1000,
    shapes: list[BlockShape] | None = None,
    ns_per_mac: float = 0.05,
    overhead_ms: float = 0.02,
    noise: float = 0.08,
    lane: int = 16,
    constant_ms: float = 0.3,
    space_name: str = "synthetic",
) -> Table:
    """A valid table over `choices` (one width list per layer) with MACs, params and noisy latencies.

    `shapes` gives each of the L+1 blocks' kind and spatial size; by default a stem conv at
    56x56, dw-separable blocks halving the resolution every third layer, and a dense classifier.
    """
    n_layers = len(choices)
    if n_layers < 1 or any(len(c) < 1 for c in choices):
        raise ValueError("choices must hold at least one non-empty width list")
    if shapes is None:
        shapes = [BlockShape("conv", 56)]
        hw = 56
        for k in range(1, n_layers):
            if k % 3 == 0:
                hw = max(1, -(-hw // 2))
            shapes.append(BlockShape("dwsep", hw))
        shapes.append(BlockShape("dense", 1))
    if len(shapes) != n_layers + 1:
        raise ValueError(f"shapes must describe {n_layers + 1} blocks, got {len(shapes)}")
    chain = [[input_channels], *[list(c) for c in choices], [output_channels]]
    names = [*(f"layer{k}" for k in range(n_layers)), "classifier"]
    blocks = _latency_blocks(
        chain, lambda k, cin, cout: _shape_block(k, shapes[k], cin, cout), names, seed,
        ns_per_mac=ns_per_mac, overhead_ms=overhead_ms, noise=noise, lane=lane,
    )
    space = {
        "name": space_name,
        "input_channels": int(input_channels),
        "output_channels": int(output_channels),
        "layers": [{"name": blocks[k].name, "choices": [int(w) for w in choices[k]]} for k in range(n_layers)],
    }
    return _table(space, blocks, constant_ms, seed)


def space_table(
    space: Space,
    seed: int = 0,
    *,
    ns_per_mac: float = 0.05,
    overhead_ms: float = 0.02,
    noise: float = 0.08,
    lane: int = 16,
    constant_ms: float = 0.3,
) -> Table:
    """A synthetic table of an agent space: its widths, block names and exact counts, noisy latencies."""
    chain = [space.block_in_choices(k) for k in range(space.num_layers + 1)] + [(space.output_channels,)]
    names = [t.name for t in space.templates]
    blocks = _latency_blocks(
        chain, space.block_at, names, seed, ns_per_mac=ns_per_mac, overhead_ms=overhead_ms, noise=noise, lane=lane
    )
    obj: dict = {
        "name": space.name,
        "input_channels": space.input_channels,
        "output_channels": space.output_channels,
        "layers": [{"name": layer.name, "choices": list(layer.choices)} for layer in space.layers],
    }
    if space.resolution is not None:
        obj["resolution"] = space.resolution
    return _table(obj, blocks, constant_ms, seed)


def mobilenet_v1_choices(levels: int = 14) -> list[list[int]]:
    """Per-layer width grids of the 14-layer MobileNet-V1 space (0.2x to 1.5x the base widths)."""
    return [list(layer.choices) for layer in mobilenet_v1(levels=levels).layers]


def mobilenet_v1_table(seed: int = 0, resolution: int = 224, levels: int = 14) -> Table:
    """A synthetic table of the 14-layer, `levels`-level MobileNet-V1 space (3 in, 1000 out)."""
    return space_table(mobilenet_v1(resolution, levels), seed, ns_per_mac=0.02)


def random_table(
    seed: int,
    layers: int = 3,
    max_choices: int = 4,
    *,
    integer: bool = True,
    with_counts: bool = True,
) -> Table:
    """A small random table (for exhaustive checks): 1..max_choices widths per layer.

    With `integer`, latencies are small integers so that ties, the hard case for dominance
    pruning, are frequent; params are positive integers and MACs follow them.
    """
    rng = np.random.default_rng(seed)
    choices = [sorted(rng.choice(np.arange(1, 9) * 8, size=rng.integers(1, max_choices + 1), replace=False).tolist())
               for _ in range(layers)]
    chain = [[3], *choices, [10]]
    blocks = []
    for k in range(layers + 1):
        shape = (len(chain[k]), len(chain[k + 1]))
        ms = rng.integers(0, 6, size=shape).astype(float) if integer else rng.random(shape) * 5
        params = rng.integers(1, 20, size=shape).astype(float) if with_counts else None
        macs = params * 10 if params is not None else None
        name = "classifier" if k == layers else f"layer{k}"
        blocks.append(Block(name, tuple(chain[k]), tuple(chain[k + 1]), ms, macs, params))
    space = {
        "name": "random",
        "input_channels": 3,
        "output_channels": 10,
        "layers": [{"name": f"layer{k}", "choices": [int(w) for w in choices[k]]} for k in range(layers)],
    }
    return Table(space=space, blocks=blocks, constant_ms=float(rng.integers(0, 3)))


def _cost_shapes(table: Table) -> list[tuple[int, ...]]:
    """The shape of each pairwise cost: a chain's blocks (`/1`), else the factors."""
    terms = table.blocks if table.blocks is not None else table.factors
    return [tuple(t.ms.shape) for t in terms]


def random_costs(table: Table, seed: int, *, pairwise: bool = True, integer: bool = True) -> dict:
    """A random `widthwise-costs/1` object for `table` (optionally with pairwise terms, one per block or factor)."""
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> list:
        values = rng.integers(-5, 6, size=shape).astype(float) if integer else rng.normal(size=shape)
        return values.tolist()

    return {
        "format": "widthwise-costs/1",
        "space": table.space_name,
        "unary": [draw((len(c),)) for c in table.choices],
        "pairwise": [draw(shape) for shape in _cost_shapes(table)] if pairwise else None,
    }


def random_objective(table: Table, seed: int, kind: str, *, integer: bool = True) -> str | dict:
    """What `make_objective` takes for a random test instance: "flops", or random costs with
    unary terms only (`kind` "unary") or unary and pairwise terms (`kind` "pairwise")."""
    if kind == "flops":
        return "flops"
    if kind not in ("unary", "pairwise"):
        raise ValueError(f"kind must be flops, unary or pairwise, got {kind!r}")
    return random_costs(table, seed, pairwise=kind == "pairwise", integer=integer)


def anti_latency_costs(table: Table) -> dict:
    """A `widthwise-costs/1` object whose pairwise costs are minus each block's (factor's) latency.

    Every step that costs time saves as much cost, so (nearly) every configuration is
    Pareto-optimal: the stress case the front caps (search/front_limits.py) exist for.
    """
    return {
        "format": "widthwise-costs/1",
        "space": table.space_name,
        "unary": [[0.0] * len(c) for c in table.choices],
        "pairwise": [(-np.asarray(t.ms, dtype=np.float64)).tolist()
                     for t in (table.blocks if table.blocks is not None else table.factors)],
    }
