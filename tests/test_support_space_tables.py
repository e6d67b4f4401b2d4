"""The space-derived tables of tests/support/space_tables.py: the agent's exact counts, skipped blocks free."""

from __future__ import annotations

import numpy as np

from tests.support.space_tables import configuration_totals, space_table
from widthwise.device_agents.ofa_mbv3 import ofa_mbv3
from widthwise.search.table import load_table


def test_an_ofa_mbv3_table_counts_what_the_space_counts(tmp_path) -> None:
    space = ofa_mbv3(resolution=64, levels=4)
    table = space_table(space, seed=1)
    table.save(tmp_path / "t.json")
    loaded = load_table(tmp_path / "t.json")  # a table file as a fitted one is: labels and depth runs included
    assert loaded.choices == [layer.choices for layer in space.layers]
    assert loaded.variables[1].labels == table.variables[1].labels
    rng = np.random.default_rng(0)
    sizes = np.array([len(c) for c in table.choices])
    configs = (rng.random((20, sizes.size)) * sizes).astype(np.int64)
    macs = configuration_totals(table, configs, "macs")
    params = configuration_totals(table, configs, "params")
    for row, m, p in zip(configs, macs, params):
        widths = [table.choices[v][j] for v, j in enumerate(row)]
        assert (m, p) == space.counts(widths)
    labels = table.variables[space.layers.index(next(l for l in space.layers if l.name == "stage1.block3"))].labels
    assert labels[0] == "skip" and labels[-1] == "k7e6"
    for f, factor in zip(space.factors, table.factors):
        ms = np.asarray(factor.ms)
        assert np.all(ms >= 0) and factor.name == f.name
        if factor.kind == "mb_block" and "skip" in table.variables[f.variables[1]].labels:
            assert np.all(ms[:, 0] == 0) and np.all(ms[:, 1:] > 0)  # a skipped block costs nothing
