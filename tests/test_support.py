"""The shared test helpers themselves: process lines, and synthetic tables built from the agent's spaces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.support.procs import read_line
from tests.support.synthetic import (
    BlockShape,
    grid_widths,
    mobilenet_v1_choices,
    mobilenet_v1_table,
    space_table,
    synthetic_table,
)
from widthwise.device_agents.spaces import MOBILENET_V1_LAYERS, mobilenet_v1, text_lowrank


def test_read_line_returns_a_line_that_comes():
    proc = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)"], stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(proc, 30).strip() == "ready"
    finally:
        proc.wait(30)


def test_read_line_kills_a_silent_process_within_its_bound():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    with pytest.raises(AssertionError, match="no line"):
        read_line(proc, 0.5)
    assert proc.wait(30) != 0


# --- synthetic tables are built from the agent's space definition -----------------------------


@pytest.mark.parametrize("levels", [1, 2, 5, 14])
def test_synthetic_mobilenet_widths_are_the_spaces(levels):
    space = mobilenet_v1(160, levels)
    table = mobilenet_v1_table(seed=levels, resolution=160, levels=levels)
    assert [list(c) for c in table.choices] == [list(layer.choices) for layer in space.layers]
    assert mobilenet_v1_choices(levels) == [list(layer.choices) for layer in space.layers]
    assert [grid_widths(base, levels) for _, _, base in MOBILENET_V1_LAYERS] == mobilenet_v1_choices(levels)
    assert [b.name for b in table.blocks] == [t.name for t in space.templates]


def test_one_level_is_the_widest_multiple_of_the_base():
    # the grid's single level is 1.5x the base (once a copy here gave 0.2x)
    table = mobilenet_v1_table(levels=1)
    assert [c[0] for c in table.choices] == [int(1.5 * base) for _, _, base in MOBILENET_V1_LAYERS]


@pytest.mark.parametrize("levels", [1, 3, 14])
def test_synthetic_mobilenet_counts_are_the_spaces(levels):
    space = mobilenet_v1(224, levels)
    table = mobilenet_v1_table(seed=0, levels=levels)
    rng = np.random.default_rng(levels)
    for _ in range(20):
        idx = [int(rng.integers(len(c))) for c in table.choices]
        widths = [c[i] for c, i in zip(table.choices, idx)]
        levels_of = [0, *idx, 0]
        macs = sum(b.macs[levels_of[k], levels_of[k + 1]] for k, b in enumerate(table.blocks))
        params = sum(b.params[levels_of[k], levels_of[k + 1]] for k, b in enumerate(table.blocks))
        assert (int(macs), int(params)) == space.counts(widths)


def test_synthetic_mobilenet_at_base_widths_is_mobilenet_v1():
    # 14 levels put 1.0x on the grid: the published network, 569 M multiply-adds and 4.2 M weights
    table = mobilenet_v1_table(levels=14)
    base = [base for _, _, base in MOBILENET_V1_LAYERS]
    idx = [0, *(list(c).index(w) for c, w in zip(table.choices, base)), 0]
    macs = sum(b.macs[idx[k], idx[k + 1]] for k, b in enumerate(table.blocks))
    params = sum(b.params[idx[k], idx[k + 1]] for k, b in enumerate(table.blocks))
    assert (int(macs), int(params)) == (568_740_352, 4_221_032)


def test_synthetic_table_counts_conv_dwsep_dense_by_hand():
    shapes = [BlockShape("conv", 10), BlockShape("dwsep", 5), BlockShape("dense", 1)]
    table = synthetic_table([[8, 16], [24]], shapes=shapes, input_channels=3, output_channels=7)
    assert table.blocks[0].macs[0, 1] == 100 * 9 * 3 * 16 and table.blocks[0].params[0, 1] == 9 * 3 * 16 + 16
    assert table.blocks[1].macs[1, 0] == 25 * (9 * 16 + 16 * 24)
    assert table.blocks[1].params[1, 0] == 9 * 16 + 16 + 16 * 24 + 24
    assert (table.blocks[2].macs[0, 0], table.blocks[2].params[0, 0]) == (24 * 7, 24 * 7 + 7)
    with pytest.raises(ValueError, match="unknown synthetic block kind 'lstm'"):
        synthetic_table([[8]], shapes=[BlockShape("lstm", 1), BlockShape("dense", 1)])


def test_space_table_serves_a_space_with_attributes():
    space = text_lowrank(vocab=1000, ranks=(10, 20), hidden=(64, 128))
    table = space_table(space, seed=1)
    assert [list(c) for c in table.choices] == [[10, 20], [64, 128]]
    assert int(table.blocks[0].params[0, 1]) == 1000 * 20  # the embedding: a vocab x rank lookup, no MACs
    assert (table.blocks[0].macs == 0).all()
