"""The chain MRF of a table and an objective, as arrays the solvers share.

Block k of the chain couples layer k-1's width (or the fixed input) with layer k's width
(or the fixed output). Unary costs are folded into the block that produces the layer, so
every term is pairwise: a configuration's cost is the sum over blocks of `cost[k][i, j]`,
its latency `constant + sum of latency[k][i, j]`, added left to right in chain order (the
solvers add in the same order, so equal configurations get bit-equal latencies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import ObjectiveError
from .objectives import Objective
from .table import Table
from .viterbi import min_sum

@dataclass(frozen=True, eq=False)
class Chain:
    """Per-block matrices (latency, cost, optional params and MACs) of one (table, objective)."""

    choices: tuple[tuple[int, ...], ...]
    constant_ms: float
    latency: tuple[np.ndarray, ...]
    cost: tuple[np.ndarray, ...]
    params: tuple[np.ndarray, ...] | None
    macs: tuple[np.ndarray, ...] | None

    @property
    def num_layers(self) -> int:
        return len(self.choices)

    def widths(self, idx: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(self.choices[k][int(j)]) for k, j in enumerate(idx))

    def _sum(self, mats: tuple[np.ndarray, ...], idx: Sequence[int], start: float = 0.0) -> float:
        path = [0, *idx, 0]
        total = start
        for k, m in enumerate(mats):
            total += float(m[path[k], path[k + 1]])
        return total

    def totals(self, mats: tuple[np.ndarray, ...], configs: np.ndarray, start: float = 0.0) -> np.ndarray:
        """Chain sums of `mats` for many configurations at once (rows of choice indices)."""
        n = configs.shape[0]
        zero = np.zeros(n, dtype=np.int64)
        path = [zero, *(configs[:, k] for k in range(configs.shape[1])), zero]
        total = np.full(n, start, dtype=np.float64)
        for k, m in enumerate(mats):
            total += m[path[k], path[k + 1]]
        return total

    def latency_of(self, idx: Sequence[int]) -> float:
        return self._sum(self.latency, idx, self.constant_ms)

    def cost_of(self, idx: Sequence[int]) -> float:
        return self._sum(self.cost, idx)

    def params_of(self, idx: Sequence[int]) -> float | None:
        return None if self.params is None else self._sum(self.params, idx)

    def macs_of(self, idx: Sequence[int]) -> float | None:
        return None if self.macs is None else self._sum(self.macs, idx)

    def min_latency(self) -> float:
        """The smallest achievable predicted latency (a min-sum pass over latency alone)."""
        return self.latency_of(min_sum(self.latency)[1])

    def min_params(self) -> float | None:
        """The smallest achievable parameter count, or None when the table has no params."""
        return None if self.params is None else self.params_of(min_sum(self.params)[1])


def build_chain(table: Table, objective: Objective) -> Chain:
    """Fold the objective's unary costs into the blocks and collect every block's matrices."""
    if len(objective.unary) != table.num_layers:
        raise ObjectiveError(f"objective has {len(objective.unary)} layers, the table {table.num_layers}",
                             field="objective")
    cost = []
    for k, block in enumerate(table.blocks):
        shape = block.ms.shape
        c = np.zeros(shape) if objective.pairwise is None else np.array(objective.pairwise[k], dtype=np.float64)
        if c.shape != shape:
            raise ObjectiveError(f"pairwise cost of block {k} ({block.name}) has shape {c.shape}, expected {shape}",
                                 field="objective")
        if k < table.num_layers:
            u = np.asarray(objective.unary[k], dtype=np.float64)
            if u.shape != (shape[1],):
                raise ObjectiveError(
                    f"unary cost of layer {k} ({table.layer_names[k]}) has {u.size} values, expected {shape[1]}",
                    field="objective",
                )
            c = c + u[None, :]
        cost.append(c)
    has_params = all(b.params is not None for b in table.blocks)
    has_macs = all(b.macs is not None for b in table.blocks)
    return Chain(
        choices=tuple(table.choices),
        constant_ms=float(table.constant_ms),
        latency=tuple(np.asarray(b.ms, dtype=np.float64) for b in table.blocks),
        cost=tuple(cost),
        params=tuple(np.asarray(b.params, dtype=np.float64) for b in table.blocks) if has_params else None,
        macs=tuple(np.asarray(b.macs, dtype=np.float64) for b in table.blocks) if has_macs else None,
    )
