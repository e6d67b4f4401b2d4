"""A `widthwise-table/2` table synthesised from any space's exact counts, for searches on real space shapes.

Every factor entry takes the MACs and parameters the agent's counters give for that block, and a
latency that follows the MACs (a per-block overhead, seeded multiplicative noise); a skipped
block (`identity`) costs nothing. Option variables carry their labels and the table the space's
own object (depth runs included), as a fitted table does.
"""

from __future__ import annotations

import math

import numpy as np

from widthwise.device_agents.space_model import Space
from widthwise.device_agents.spaces import block_counts
from widthwise.search.table import Factor, Table, Variable

__all__ = ["space_table", "configuration_totals"]


def space_table(space: Space, seed: int = 0, *, ns_per_mac: float = 0.02, overhead_ms: float = 0.01,
                noise: float = 0.05, constant_ms: float = 0.3) -> Table:
    """A `/2` table over `space`: ms = overhead + MACs x ns_per_mac x noise, 0 for an identity block."""
    rng = np.random.default_rng(seed)
    variables = [Variable(layer.name, tuple(layer.choices), layer.group,
                          tuple(layer.label(c) for c in layer.choices) if layer.options else ())
                 for layer in space.layers]
    factors = []
    for f, spec in enumerate(space.factors):
        choices = space.factor_choices(f)
        shape = tuple(len(c) for c in choices)
        macs, params, ms = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for entry in np.ndindex(*shape):
            op = space.factor_op(f, [choices[a][i] for a, i in enumerate(entry)])
            macs[entry], params[entry] = block_counts(op)
            if op.kind != "identity":
                ms[entry] = overhead_ms + 1e-6 * ns_per_mac * macs[entry] * math.exp(noise * rng.standard_normal())
        factors.append(Factor(spec.name, spec.kind, spec.variables, np.round(ms, 6), macs, params))
    return Table(space=space.to_json(), variables=variables, factors=factors, constant_ms=constant_ms,
                 device={"name": "synthetic", "cpu": "none", "cores": 1, "os": "none"},
                 runtime={"name": "synthetic", "version": "0", "threads": 1, "dtype": "float32",
                          "statistic": "median"},
                 fit={"samples": 0, "method": "synthetic", "seed": seed})


def configuration_totals(table: Table, configs: np.ndarray, key: str = "ms") -> np.ndarray:
    """Each row's (choice indices) sum of one factor array, straight from the table's factors."""
    configs = np.asarray(configs, dtype=np.int64)
    total = np.zeros(len(configs))
    for f in table.factors:
        total += np.asarray(getattr(f, key), dtype=np.float64)[tuple(configs[:, v] for v in f.variables)]
    return total
