"""Exact MAC and parameter counts per block kind, by hand, and the kind registry."""

import pytest

from widthwise.device_agents.block_kinds import (
    BLOCK_COUNTERS,
    BlockSpec,
    BlockTemplate,
    block_counts,
    kind_registry,
    round_width,
    se_width,
)
from widthwise.device_agents.errors import UnknownSpace


def _block(kind, cin, cout, *, stride=1, kernel=3, in_hw=8, out_hw=8, hidden=0, residual_from=-1, attrs=(),
           activation="relu6", se=False):
    return BlockSpec(0, "b", kind, cin, cout, stride, kernel, in_hw, out_hw, attrs, hidden, residual_from,
                     activation, se)


def test_conv_and_dwsep_by_hand():
    assert block_counts(_block("conv", 3, 32, stride=2, in_hw=224, out_hw=112)) == (112 * 112 * 27 * 32, 27 * 32 + 32)
    assert block_counts(_block("conv", 320, 1280, kernel=1, in_hw=7, out_hw=7)) == (49 * 320 * 1280, 320 * 1280 + 1280)
    dw = _block("dwsep", 64, 128, stride=2, in_hw=112, out_hw=56)
    assert block_counts(dw) == (56 * 56 * (9 * 64 + 64 * 128), 9 * 64 + 64 + 64 * 128 + 128)


def test_inverted_residual_kinds_by_hand():
    # expansion 1: depthwise 3x3 on 32 channels at 112, linear project 32 -> 16
    assert block_counts(_block("ir_dwproject", 32, 16, hidden=32, in_hw=112, out_hw=112)) == (
        112 * 112 * (9 * 32 + 32 * 16), 9 * 32 + 32 + 32 * 16 + 16)
    # 1x1 expand 16 -> 96 at 112, then depthwise 3x3 stride 2 on 96 channels at 56
    expand = _block("ir_expand", 16, 96, hidden=96, stride=2, in_hw=112, out_hw=56)
    assert block_counts(expand) == (112 * 112 * 16 * 96 + 56 * 56 * 9 * 96, 16 * 96 + 96 + 9 * 96 + 96)
    # linear project 144 -> 24 at 56; the residual Add costs nothing
    project = _block("ir_project", 144, 24, hidden=144, kernel=1, in_hw=56, out_hw=56)
    assert block_counts(project) == (56 * 56 * 144 * 24, 144 * 24 + 24)
    with_add = _block("ir_project", 144, 24, hidden=144, kernel=1, in_hw=56, out_hw=56, residual_from=4)
    assert with_add.residual and not project.residual
    assert block_counts(with_add) == block_counts(project)


def test_head_and_text_kinds_by_hand():
    assert block_counts(_block("pool_fc", 1280, 1000, in_hw=7, out_hw=1)) == (1280 * 1000, 1280 * 1000 + 1000)
    attrs = (("vocab", 1000), ("dim", 300), ("tokens", 32))
    assert block_counts(_block("embedding", 1000, 30, attrs=attrs)) == (0, 1000 * 30)
    assert block_counts(_block("proj_dense", 30, 128, attrs=attrs)) == (32 * 30 * 300 + 300 * 128,
                                                                         30 * 300 + 300 * 128 + 128)
    assert block_counts(_block("dense", 128, 20)) == (128 * 20, 128 * 20 + 20)


def test_template_variables_are_input_hidden_output_each_once():
    assert BlockTemplate("e", "ir_expand", cin_from=3, hidden_from=4, cout_from=4).variables() == (3, 4)
    assert BlockTemplate("p", "ir_project", cin_from=4, hidden_from=4, cout_from=3).variables() == (4, 3)
    assert BlockTemplate("s", "conv", cin=3, cout_from=0).variables() == (0,)
    assert BlockTemplate("c", "pool_fc", cin_from=24, cout=1000).variables() == (24,)


def test_an_unknown_kind_is_named_and_registries_file_by_kind():
    with pytest.raises(UnknownSpace, match="'lstm'"):
        block_counts(_block("lstm", 8, 16))
    table: dict = {}
    register = kind_registry(table)

    @register("toy")
    def _toy(b):
        return 1, 2

    assert table == {"toy": _toy} and "toy" not in BLOCK_COUNTERS


def test_widths_round_to_the_nearest_multiple_of_8_and_se_is_a_quarter():
    assert [round_width(x) for x in (0, 3, 4, 11.9, 12, 20, 36)] == [8, 8, 8, 8, 16, 24, 40]
    assert [se_width(h) for h in (16, 72, 96, 120, 144, 960)] == [8, 16, 24, 32, 40, 240]


def test_mobilenet_v3_kinds_by_hand():
    # 1x1 expand 40 -> 240 at 28, depthwise 5x5 stride 2 to 14, SE 240 -> 64 -> 240 (two 1x1s with bias)
    plain = _block("mb_expand", 40, 240, hidden=240, kernel=5, stride=2, in_hw=28, out_hw=14)
    assert block_counts(plain) == (28 * 28 * 40 * 240 + 14 * 14 * 25 * 240, 40 * 240 + 240 + 25 * 240 + 240)
    se = _block("mb_expand", 40, 240, hidden=240, kernel=5, stride=2, in_hw=28, out_hw=14, se=True)
    assert block_counts(se) == (block_counts(plain)[0] + 2 * 240 * 64,
                                block_counts(plain)[1] + 240 * 64 + 64 + 64 * 240 + 240)
    # a whole stride-1 block 80 -> 240 (k3) -> 80 at 14, h-swish changes no count; the Add is free
    block = _block("mb_block", 80, 80, hidden=240, kernel=3, in_hw=14, out_hw=14, residual_from=0, activation="hswish")
    assert block_counts(block) == (14 * 14 * (80 * 240 + 9 * 240 + 240 * 80),
                                   80 * 240 + 240 + 9 * 240 + 240 + 240 * 80 + 80)
    assert block_counts(_block("identity", 80, 80, kernel=1, in_hw=14, out_hw=14)) == (0, 0)
    head = _block("pool_mix_fc", 960, 1000, hidden=1280, kernel=1, in_hw=7, out_hw=1)
    assert block_counts(head) == (960 * 1280 + 1280 * 1000, 960 * 1280 + 1280 + 1280 * 1000 + 1000)
    assert BlockTemplate("t", "mb_block", option_from=4, cin_from=2, cout_from=2).variables() == (2, 4)
