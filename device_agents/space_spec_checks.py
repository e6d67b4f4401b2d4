"""Whole-space checks of a space read from a spec: names, the tree, the agent's kinds and caps.

Run on the host before anything is sent and on the agent before anything is built: block
names are unique (a builder names tensors after them), every variable is read by a block,
every block reads one or two variables and the variable graph is a forest, every block kind
has this agent's counter, shapes and memory estimate, and the network at its largest
configuration is within the agent's caps (device_agents.limits).
"""

from __future__ import annotations

from typing import Sequence

from . import limits
from .block_kinds import BLOCK_COUNTERS, block_counts
from .errors import LimitExceeded
from .network import BLOCK_SHAPES
from .space_model import Space
from .space_spec_read import spec_error


def _block_where(space: Space, k: int) -> str:
    return f"block {space.templates[k].name}"


def check_names(space: Space) -> None:
    """Every block has its own name and every variable is read by some block."""
    seen: dict[str, int] = {}
    for k, t in enumerate(space.templates):
        if t.name in seen:
            raise spec_error(_block_where(space, k), "name", "is the name of an earlier block too; give the blocks "
                                                             "distinct names", ".stages")
        seen[t.name] = k
    read = {v for t in space.templates for v in t.variables()}
    for v, layer in enumerate(space.layers):
        if v not in read:
            raise spec_error(f"variable {v + 1} ({layer.name})", "name", "no block reads it; remove it or use it",
                             f".variables[{v}]")


def check_tree(space: Space) -> None:
    """Each block reads a variable and the variable graph the blocks make is a forest (a spec's blocks
    read at most two variables by construction: a residual ties its input and output)."""
    parent = list(range(space.num_layers))
    adjacent: dict[int, set[int]] = {v: set() for v in range(space.num_layers)}

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for k, t in enumerate(space.templates):
        over = t.variables()
        if not over:
            raise spec_error(_block_where(space, k), "out", "the block reads no variable (its widths are all fixed); "
                                                            "every block is a latency term over one or two variables: "
                                                            "make one of its widths a variable (one choice will do)",
                             ".stages")
        if len(over) < 2 or over[1] in adjacent[over[0]]:
            continue
        a, b = over
        if root(a) == root(b):
            cycle = [space.layers[v].name for v in _path(adjacent, a, b)]
            raise spec_error(_block_where(space, k), "out", f"the variables {' - '.join(cycle)} - {cycle[0]} close a "
                                                            "cycle: the variable graph must be a tree", ".stages")
        parent[root(a)] = root(b)
        adjacent[a].add(b)
        adjacent[b].add(a)


def _path(adjacent: dict[int, set[int]], a: int, b: int) -> list[int]:
    """The path from a to b in a forest (they are connected)."""
    came: dict[int, int] = {a: a}
    queue = [a]
    while queue:
        v = queue.pop(0)
        if v == b:
            break
        for u in sorted(adjacent[v]):
            if u not in came:
                came[u] = v
                queue.append(u)
    path = [b]
    while path[-1] != a:
        path.append(came[path[-1]])
    return path[::-1]


def space_kinds(space: Space) -> set[str]:
    """Every block kind a configuration of the space can resolve to (a skip option makes `identity`)."""
    kinds = {t.kind for t in space.templates}
    if any(not dict(o).get("keep", 1) for layer in space.layers for o in layer.options):
        kinds.add("identity")
    return kinds


def check_kinds(space: Space) -> None:
    """Every block kind the space can resolve to has this agent's counter, shapes and memory estimate."""
    for kind in sorted(space_kinds(space)):
        for registry, what in ((BLOCK_COUNTERS, "counter"), (BLOCK_SHAPES, "shapes"),
                               (limits.ACTIVATIONS, "memory estimate")):
            if kind not in registry:
                raise spec_error("", "kind", f"this agent cannot build block kind {kind!r} (it has no {what} for it)",
                                 ".stages")


def largest_configuration(space: Space) -> tuple[int, ...]:
    """Every width at its largest choice, every option at its biggest kept option (expand, then kernel)."""
    out = []
    for layer in space.layers:
        if layer.options:
            def size(code: int, opts=layer.options) -> tuple[int, int, int]:
                opt = dict(opts[code])
                return opt.get("keep", 1), opt.get("expand", 0), opt.get("kernel", 0)

            out.append(max(layer.choices, key=size))
        else:
            out.append(layer.choices[-1])
    return tuple(out)


def check_caps(space: Space, widths: Sequence[int] | None = None) -> None:
    """The network at its largest configuration (or at `widths`) is within this agent's caps."""
    blocks = space.blocks(widths if widths is not None else largest_configuration(space))
    macs = params = 0
    for b in blocks:
        m, p = block_counts(b)
        macs, params = macs + m, params + p
    try:
        if params > limits.MAX_PARAMS:
            raise limits.refuse("params", "the network's parameter count", params, limits.MAX_PARAMS)
        limits.check_blocks(blocks, macs, params)
    except LimitExceeded as exc:
        raise type(exc)(f"space spec: at its largest configuration, {exc.message}",
                        **{**exc.details, "field": "space_spec"}) from None


def check_space(space: Space) -> None:
    """The structural checks above, cheapest first (what a spec alone decides)."""
    check_names(space)
    check_tree(space)
    check_kinds(space)


def check_limits(space: Space) -> None:
    """The checks that depend on the caps in force: resolution, then the largest network."""
    if space.resolution is not None and space.resolution > limits.current().max_resolution:
        raise limits.refuse("space_spec.input.shape", "the input resolution", space.resolution,
                            limits.current().max_resolution)
    check_caps(space)
