"""Exact MAC and parameter counts per block kind, by hand, and the kind registry."""

import pytest

from widthwise.device_agents.block_kinds import BLOCK_COUNTERS, BlockSpec, BlockTemplate, block_counts, kind_registry
from widthwise.device_agents.errors import UnknownSpace


def _block(kind, cin, cout, *, stride=1, kernel=3, in_hw=8, out_hw=8, hidden=0, residual_from=-1, attrs=()):
    return BlockSpec(0, "b", kind, cin, cout, stride, kernel, in_hw, out_hw, attrs, hidden, residual_from)


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
