"""The MobileNet-V2 space: variables and their order, choice grids, the factor tree, exact counts."""

import numpy as np
import pytest

from widthwise.device_agents.errors import BadRequest, BadWidths
from widthwise.device_agents.mobilenet_v2 import expansion_grid
from widthwise.device_agents.spaces import block_counts, make_space, width_grid

STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def test_variables_in_order_with_names_and_groups():
    space = make_space("mobilenet_v2")
    names = [l.name for l in space.layers]
    assert names[:6] == ["stem", "stage1", "stage2.block1.expand", "stage2", "stage2.block2.expand",
                         "stage3.block1.expand"]
    assert names[-3:] == ["stage7.block1.expand", "stage7", "head"]
    assert space.num_layers == 1 + 1 + 16 + 6 + 1  # stem, stage1, 16 expansions, stages 2..7, head
    assert [l.group for l in space.layers if l.name.startswith("stage4")] == ["stage4"] * 5
    assert space.layers[0].group == "stem" and space.layers[-1].group == "head"
    assert not space.is_chain
    assert [l.base for l in space.layers if "." not in l.name] == [32, 16, 24, 32, 64, 96, 160, 320, 1280]
    expand = {l.name: l.base for l in space.layers if l.name.endswith(".expand")}
    assert expand["stage2.block1.expand"] == 6 * 16 and expand["stage2.block2.expand"] == 6 * 24
    assert expand["stage6.block1.expand"] == 6 * 96 and expand["stage7.block1.expand"] == 6 * 160


@pytest.mark.parametrize("levels", [3, 5, 14, 20])
def test_grids_are_multiples_of_8_and_expansions_hold_the_1x_point(levels):
    space = make_space("mobilenet_v2", {"levels": levels})
    for layer in space.layers:
        assert all(w % 8 == 0 and w >= 8 for w in layer.choices)
        assert list(layer.choices) == sorted(set(layer.choices))
        if layer.name.endswith(".expand"):
            assert layer.base in layer.choices
            assert set(width_grid(layer.base, levels)) <= set(layer.choices)
        else:
            assert layer.choices == width_grid(layer.base, levels)
    assert space.base_widths() == tuple(l.base for l in space.layers)


def test_expansion_grid_adds_the_1x_point_only_when_missing():
    assert expansion_grid(96, 14) == width_grid(96, 14)  # linspace(0.2, 1.5, 14) holds 1.0
    assert width_grid(96, 5) == (16, 48, 80, 112, 144)  # 0.2, 0.525, 0.85, 1.175, 1.5 x 96
    assert expansion_grid(96, 5) == (16, 48, 80, 96, 112, 144)


def test_factors_are_the_blocks_over_their_variables():
    space = make_space("mobilenet_v2")
    index = {l.name: k for k, l in enumerate(space.layers)}
    by_name = {f.name: f for f in space.factors}
    assert len(space.factors) == 1 + 1 + 2 * 16 + 1 + 1
    assert by_name["stem"].kind == "conv" and by_name["stem"].variables == (index["stem"],)
    assert by_name["stage1.block1"].kind == "ir_dwproject"
    assert by_name["stage1.block1"].variables == (index["stem"], index["stage1"])
    assert by_name["stage3.block1.expand"].variables == (index["stage2"], index["stage3.block1.expand"])
    assert by_name["stage3.block1.project"].variables == (index["stage3.block1.expand"], index["stage3"])
    assert by_name["stage3.block2.expand"].variables == (index["stage3"], index["stage3.block2.expand"])
    assert by_name["stage3.block2.project"].variables == (index["stage3.block2.expand"], index["stage3"])
    assert by_name["head"].kind == "conv" and by_name["head"].variables == (index["stage7"], index["head"])
    assert by_name["classifier"].kind == "pool_fc" and by_name["classifier"].variables == (index["head"],)
    assert {f.kind for f in space.factors} == {"conv", "ir_dwproject", "ir_expand", "ir_project", "pool_fc"}
    assert [f.block for f in space.factors] == list(range(len(space.factors)))


def test_the_factor_graph_is_a_tree_over_all_variables():
    space = make_space("mobilenet_v2")
    edges = {frozenset(f.variables) for f in space.factors if len(f.variables) == 2}
    assert len(edges) == space.num_layers - 1
    parent = list(range(space.num_layers))

    def root(v):
        while parent[v] != v:
            v = parent[v]
        return v

    for a, b in map(tuple, edges):
        assert root(a) != root(b), "an edge closes a cycle"
        parent[root(a)] = root(b)
    assert len({root(v) for v in range(space.num_layers)}) == 1


def test_residual_adds_are_on_every_later_block_of_a_stage():
    space = make_space("mobilenet_v2")
    blocks = space.blocks(space.base_widths())
    residual = [b for b in blocks if b.residual]
    assert len(residual) == sum(n - 1 for _, _, n, _ in STAGES)
    for b in residual:
        assert b.kind == "ir_project" and ".block1." not in b.name
        source = blocks[b.residual_from]
        assert source.kind == "ir_expand" and source.name == b.name.replace(".project", ".expand")
        assert source.stride == 1 and source.in_hw == b.out_hw
    assert all(b.residual == (b.kind == "ir_project" and ".block1." not in b.name) for b in blocks)


def test_base_network_counts_are_the_published_300_million_macs():
    space = make_space("mobilenet_v2")
    macs, params = space.counts(space.base_widths())
    assert macs == 300_774_272  # MobileNet-V2 1.0 at 224: the 300 M multiply-adds of the paper
    assert 3_400_000 < params < 3_550_000  # 3.4 M in the paper (batch norm folded into biases here)


def _counts_by_hand(resolution, stem, stages, head):
    """The network's MACs and parameters summed layer by layer from the architecture table."""
    hw = -(-resolution // 2)
    macs, params = hw * hw * 27 * stem, 27 * stem + stem
    cin = stem
    for (t, _c, n, s), (width, expansions) in zip(STAGES, stages):
        for m in range(n):
            out = -(-hw // (s if m == 0 else 1))
            hidden = cin if t == 1 else expansions[m]
            if t > 1:
                macs += hw * hw * cin * hidden
                params += cin * hidden + hidden
            macs += out * out * (9 * hidden + hidden * width)
            params += 9 * hidden + hidden + hidden * width + width
            cin, hw = width, out
    macs += hw * hw * cin * head + head * 1000
    params += cin * head + head + head * 1000 + 1000
    return macs, params


def test_counts_of_a_small_configuration_by_hand():
    space = make_space("mobilenet_v2", {"resolution": 32, "levels": 3})
    rng = np.random.default_rng(7)
    widths = [int(rng.choice(l.choices)) for l in space.layers]
    value = {l.name: w for l, w in zip(space.layers, widths)}
    stages = []
    for k, (t, _c, n, _s) in enumerate(STAGES, start=1):
        expansions = [value.get(f"stage{k}.block{m}.expand") for m in range(1, n + 1)]
        stages.append((value[f"stage{k}"], expansions))
    assert space.counts(widths) == _counts_by_hand(32, value["stem"], stages, value["head"])


@pytest.mark.parametrize("seed", range(4))
def test_counts_are_the_sum_over_blocks_and_over_factors(seed):
    space = make_space("mobilenet_v2", {"resolution": 64 + seed})
    rng = np.random.default_rng(seed)
    widths = tuple(int(rng.choice(l.choices)) for l in space.layers)
    by_blocks = np.sum([block_counts(b) for b in space.blocks(widths)], axis=0)
    by_factors = np.sum(
        [block_counts(space.factor_op(f, space.factor_values(f, widths))) for f in range(len(space.factors))], axis=0
    )
    assert tuple(by_blocks) == tuple(by_factors) == space.counts(widths)


def test_spatial_sizes_follow_the_strides_with_same_padding():
    space = make_space("mobilenet_v2", {"resolution": 200})
    blocks = {b.name: b for b in space.blocks(space.smallest())}
    assert (blocks["stem"].in_hw, blocks["stem"].out_hw) == (200, 100)
    assert (blocks["stage2.block1.expand"].in_hw, blocks["stage2.block1.expand"].out_hw) == (100, 50)
    assert blocks["stage4.block1.project"].out_hw == 13  # 200 -> 100 -> 50 -> 25 -> 13
    assert blocks["head"].in_hw == 7 and blocks["classifier"].in_hw == 7


def test_a_wrong_value_names_the_variable_and_a_wrong_count_the_number_and_order():
    space = make_space("mobilenet_v2")
    widths = list(space.base_widths())
    widths[4] = 100
    with pytest.raises(BadWidths, match=r"width 100 of variable 4 \(stage2.block2.expand\) is not one of its choices"):
        space.validate_widths(widths, on_grid=True)
    widths[4] = 0
    with pytest.raises(BadWidths, match=r"variable 4 \(stage2.block2.expand\) must be positive") as err:
        space.validate_widths(widths)
    assert err.value.details["variable"] == "stage2.block2.expand"
    with pytest.raises(BadWidths, match=r"has 25 variables, got 3 widths, in the order stem, stage1, "):
        space.validate_widths([32, 16, 96])


def test_resolution_below_8_is_refused():
    with pytest.raises(BadRequest, match="resolution must be at least 8"):
        make_space("mobilenet_v2", {"resolution": 4})
