"""A labelled `widthwise-table/2` of the ofa_mbv3 space for the search tests: latency from MACs."""

from __future__ import annotations

import numpy as np

from widthwise.device_agents.spaces import block_counts, make_space
from widthwise.search.table import Factor, Table, Variable


def ofa_table(resolution: int = 32, levels: int = 3, seed: int = 0) -> Table:
    """ofa_mbv3's variables (option labels, depth runs) and factors, each entry's ms its MACs x a
    per-factor rate; a skipped block is 0 ms, as the fit makes it."""
    space = make_space("ofa_mbv3", {"resolution": resolution, "levels": levels})
    obj = space.to_json()
    rng = np.random.default_rng(seed)
    variables = [Variable(l["name"], tuple(l["choices"]), l.get("group", ""), tuple(l.get("labels", ())))
                 for l in obj["layers"]]
    factors = []
    for f, spec in enumerate(space.factors):
        choices = space.factor_choices(f)
        shape = tuple(len(c) for c in choices)
        counts = np.array([block_counts(space.factor_op(f, [c[i] for c, i in zip(choices, idx)]))
                           for idx in np.ndindex(*shape)], dtype=float).reshape(*shape, 2)
        rate = rng.uniform(0.5, 1.5) * 1e-6
        ms = counts[..., 0] * rate + (counts[..., 0] > 0) * 0.01
        factors.append(Factor(spec.name, spec.kind, spec.variables, ms, counts[..., 0], counts[..., 1]))
    identity = {k: v for k, v in obj.items() if k != "layers"}
    return Table(space=identity, variables=variables, factors=factors, constant_ms=0.1)
