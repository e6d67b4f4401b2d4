"""The isolated-block LUT baseline, filled on demand from a real local agent (onnxruntime)."""

from __future__ import annotations

import itertools
import json

import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.agent_client import connect
from widthwise.profiler.block_lut import BlockLUT, lut_units
from widthwise.profiler.errors import IdentityMismatch

FAST = {"warmup": 1, "repeat": 3, "min_repeat_ms": 1.0, "threads": 1}
V2 = make_space("mobilenet_v2", {"resolution": 32, "levels": 3})
TEXT = make_space("text_lowrank", {"vocab": 300, "dim": 16, "tokens": 8, "classes": 4, "ranks": [4, 8],
                                   "hidden": [8, 16]})


@pytest.fixture(scope="module")
def client():
    with connect("local", timeout=60) as c:
        yield c


def test_units_are_network_blocks_or_single_factors():
    blocks = lut_units(V2, "block")
    factors = lut_units(V2, "factor")
    assert factors == tuple((k, 1) for k in range(36))
    # stem, the t=1 block, 16 inverted residuals (expansion + projection), head, classifier
    assert len(blocks) == 20 and sum(count for _, count in blocks) == 36
    assert all(V2.templates[first].kind == "ir_expand" for first, count in blocks if count == 2)
    chain = make_space("mobilenet_v1", {"resolution": 32, "levels": 3})
    assert lut_units(chain, "block") == lut_units(chain, "factor") == tuple((k, 1) for k in range(15))
    with pytest.raises(ValueError, match="grouping must be one of block, factor"):
        lut_units(V2, "layer")


OFA = make_space("ofa_mbv3", {"resolution": 32, "levels": 3})


def test_an_ofa_unit_is_a_stage_s_first_block_or_one_later_block_keyed_by_its_kernel():
    units = lut_units(OFA, "block")
    # stem, first block, per stage (expand + project) and three mb_blocks, head, classifier
    assert len(units) == 2 + 5 * 4 + 2 and sum(count for _, count in units) == len(OFA.templates)
    assert all(OFA.templates[first].kind == "mb_expand" for first, count in units if count == 2)
    lut = BlockLUT(OFA)
    widths = list(OFA.base_widths())
    k = OFA.factors[4].variables[1]  # stage1.block2's option variable
    keys = set()
    for code in OFA.layers[k].choices:
        widths[k] = code
        keys.add(lut.entry_key((4, 1), widths))
    assert len(keys) == 9  # every kernel x expansion its own entry


def test_a_skipped_unit_is_zero_without_timing():
    lut = BlockLUT(OFA, timing=FAST)
    widths = list(OFA.smallest())  # blocks 3 and 4 of every stage skipped
    skipped = [unit for unit in lut.units if OFA.blocks(widths)[unit[0]].kind == "identity"]
    assert len(skipped) == 10
    for unit in skipped:
        assert lut.entry_ms(None, unit, widths) == 0.0  # no client: nothing is timed
    assert lut.stats.timed == 0 and lut.entries == {}


def test_a_prediction_is_the_sum_of_isolated_times_each_entry_timed_once(client):
    lut = BlockLUT(V2, timing=FAST)
    base, small = V2.base_widths(), V2.smallest()
    parts = lut.breakdown(client, base)
    assert len(parts) == len(lut.units) and all(ms > 0 for ms in parts)
    assert lut.predict(client, base) == pytest.approx(sum(parts))
    assert lut.stats.timed == len(lut.units) and lut.stats.reused == len(lut.units)
    mixed = list(base)
    mixed[0] = small[0]  # only the stem and the first block's input change
    lut.predict(client, mixed)
    assert lut.stats.timed == len(lut.units) + 2  # the stem, and the t=1 block that reads the stem's width


def test_on_demand_entries_are_those_of_the_full_table_for_the_configurations_asked(client):
    lut = BlockLUT(TEXT, timing=FAST, grouping="factor")
    configurations = list(itertools.product(*(layer.choices for layer in TEXT.layers)))
    predicted = lut.predict_many(client, configurations)
    # the full table of this space: embedding x 2 ranks, projection x 2 ranks x 2 widths, classifier x 2 widths
    assert len(lut.entries) == 2 + 4 + 2 == lut.stats.timed
    for widths, value in zip(configurations, predicted):
        keys = [lut.entry_key(unit, widths) for unit in lut.units]
        assert value == pytest.approx(sum(lut.entries[k] for k in keys))


def test_entries_persist_and_a_file_of_another_setting_is_refused(client, tmp_path):
    path = str(tmp_path / "lut.json")
    lut = BlockLUT(TEXT, timing=FAST, path=path)
    first = lut.predict_many(client, [(4, 8), (8, 16)])
    again = BlockLUT(TEXT, timing=FAST, path=path)
    assert list(again.predict_many(client, [(4, 8), (8, 16)])) == list(first) and again.stats.timed == 0
    assert json.loads((tmp_path / "lut.json").read_text())["format"] == "widthwise-block-lut/1"
    with pytest.raises(IdentityMismatch, match="was collected with grouping=") as exc:
        BlockLUT(TEXT, timing=FAST, path=path, grouping="factor")
    assert exc.value.field == "grouping"
