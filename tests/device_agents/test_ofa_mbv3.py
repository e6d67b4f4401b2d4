"""The ofa_mbv3 space: variables, option codes and labels, the factor tree, exact counts, depth canonical form."""

import numpy as np
import pytest

from widthwise.device_agents.errors import BadRequest, BadWidths
from widthwise.device_agents.network import isolated_network, whole_network
from widthwise.device_agents.spaces import SPACES, block_counts, make_space, width_grid
from widthwise.search.tree import tree_structure

STAGES = ((24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hswish", False), (112, 1, "hswish", True),
          (160, 2, "hswish", True))
KEPT = [f"k{k}e{e}" for k in (3, 5, 7) for e in (3, 4, 6)]


@pytest.fixture(scope="module")
def space():
    return make_space("ofa_mbv3")


def _index(space):
    return {l.name: k for k, l in enumerate(space.layers)}


def test_variables_in_order_with_codes_labels_and_grids(space):
    names = [l.name for l in space.layers]
    assert names[:7] == ["stem", "stage1.block1", "stage1", "stage1.block2", "stage1.block3", "stage1.block4",
                         "stage2.block1"]
    assert names[-1] == "head" and space.num_layers == 1 + 5 * 5 + 1
    assert space.layers[0].choices == (16,) and space.layers[-1].choices == (960,)
    for n, (base, *_rest) in enumerate(STAGES, start=1):
        width = space.layers[names.index(f"stage{n}")]
        assert width.choices == width_grid(base, 14) and width.base == base and not width.is_option
        for m in range(1, 5):
            opt = space.layers[names.index(f"stage{n}.block{m}")]
            labels = [opt.label(c) for c in opt.choices]
            assert opt.is_option and opt.group == f"stage{n}"
            assert labels == (KEPT if m <= 2 else ["skip", *KEPT])
            assert opt.choices == tuple(range(len(labels))) and opt.label(opt.base) == "k7e6"
    assert make_space("ofa_mbv3", {"levels": 5}).layers[2].choices == width_grid(24, 5)


def test_factors_are_a_tree_over_the_blocks(space):
    index = _index(space)
    by_name = {f.name: f for f in space.factors}
    assert [f.kind for f in space.factors[:4]] == ["conv", "ir_dwproject", "mb_expand", "ir_project"]
    assert by_name["stage3.block1.expand"].variables == (index["stage2"], index["stage3.block1"])
    assert by_name["stage3.block1.project"].variables == (index["stage3.block1"], index["stage3"])
    assert by_name["stage3.block4"].kind == "mb_block"
    assert by_name["stage3.block4"].variables == (index["stage3"], index["stage3.block4"])
    assert by_name["head"].variables == (index["stage5"], index["head"])
    assert by_name["classifier"].kind == "pool_mix_fc" and by_name["classifier"].variables == (index["head"],)
    assert all(1 <= len(f.variables) <= 2 for f in space.factors)
    parent, order = tree_structure(space.num_layers, [f.variables for f in space.factors if len(f.variables) == 2],
                                   [l.name for l in space.layers])
    assert sorted(order) == list(range(space.num_layers))
    assert "ofa_mbv3" in SPACES and SPACES["ofa_mbv3"].param_types == {"resolution": int, "levels": int}


def test_block_geometry_follows_mobilenet_v3(space):
    blocks = space.blocks(space.base_widths())
    by_name = {b.name: b for b in blocks}
    assert (by_name["stem"].out_hw, by_name["stem"].activation, by_name["first"].activation) == (112, "hswish", "relu")
    assert by_name["first"].residual_from == by_name["first"].index and by_name["first"].cout == 16
    hw = 112
    for n, (base, stride, act, se) in enumerate(STAGES, start=1):
        first, later = by_name[f"stage{n}.block1.expand"], by_name[f"stage{n}.block2"]
        hw = -(-hw // stride)
        assert (first.stride, first.out_hw, first.activation, first.se, first.kernel) == (stride, hw, act, se, 7)
        assert later.in_hw == later.out_hw == hw and later.hidden == 6 * base and later.cin == later.cout == base
        assert later.residual_from == later.index and (later.activation, later.se) == (act, se)
        assert by_name[f"stage{n}.block1.project"].kernel == 1
    assert by_name["head"].activation == "hswish" and by_name["classifier"].hidden == 1280


def test_a_first_block_hidden_width_reads_the_previous_base_width(space):
    index = _index(space)
    f = next(i for i, spec in enumerate(space.factors) if spec.name == "stage2.block1.expand")
    k5e4 = KEPT.index("k5e4")
    for prev in space.layers[index["stage1"]].choices[::4]:
        op = space.factor_op(f, (prev, k5e4))
        assert (op.cin, op.hidden, op.cout, op.kernel) == (prev, 4 * 24, 4 * 24, 5)


def test_single_blocks_count_by_hand(space):
    index = _index(space)
    widths = list(space.base_widths())
    widths[index["stage2"]] = 40
    widths[index["stage2.block2"]] = KEPT.index("k5e4")
    widths[index["stage2.block1"]] = KEPT.index("k3e6")
    blocks = {b.name: b for b in space.blocks(widths)}
    # stage2.block2: mb_block 40 -> 160 (k5, SE 40) -> 40 at 28x28, ReLU
    hidden, se, hw = 160, 40, 28
    macs = hw * hw * (40 * hidden + 25 * hidden + hidden * 40) + 2 * hidden * se
    params = (40 * hidden + hidden) + (25 * hidden + hidden) + (2 * hidden * se + se + hidden) + (hidden * 40 + 40)
    assert block_counts(blocks["stage2.block2"]) == (macs, params)
    # stage2.block1.expand: 24 -> 6 x 24 = 144 at 56x56, depthwise 3x3 stride 2 to 28x28, SE 40 (144 / 4 = 36 -> 40)
    hidden, se = 144, 40
    macs = 56 * 56 * 24 * hidden + 28 * 28 * 9 * hidden + 2 * hidden * se
    params = 24 * hidden + hidden + 9 * hidden + hidden + 2 * hidden * se + se + hidden
    assert block_counts(blocks["stage2.block1.expand"]) == (macs, params)
    assert block_counts(blocks["stage2.block1.project"]) == (28 * 28 * hidden * 40, hidden * 40 + 40)
    assert block_counts(blocks["classifier"]) == (960 * 1280 + 1280 * 1000, 960 * 1280 + 1280 + 1280 * 1000 + 1000)


def _counts_by_hand(widths_by_stage, options_by_stage, resolution=224):
    """The whole network's (MACs, params) from the MobileNet-V3 arithmetic alone."""
    def r8(x):
        return max(8, int(np.floor(x / 8 + 0.5)) * 8)

    hw = resolution // 2
    macs = hw * hw * 27 * 16 + hw * hw * (9 * 16 + 16 * 16)
    params = 27 * 16 + 16 + 9 * 16 + 16 + 16 * 16 + 16
    cin, base_in = 16, 16
    for (base, stride, _act, se), width, options in zip(STAGES, widths_by_stage, options_by_stage):
        out = hw // stride
        for m, (k, e) in enumerate(options):
            if k is None:
                continue
            hidden = e * (base_in if m == 0 else width)
            src, in_hw = (cin, hw) if m == 0 else (width, out)
            macs += in_hw * in_hw * src * hidden + out * out * (k * k * hidden + hidden * width)
            params += src * hidden + hidden + k * k * hidden + hidden + hidden * width + width
            if se:
                s = r8(hidden / 4)
                macs += 2 * hidden * s
                params += 2 * hidden * s + s + hidden
        cin, base_in, hw = width, base, out
    macs += hw * hw * cin * 960 + 960 * 1280 + 1280 * 1000
    params += cin * 960 + 960 + 960 * 1280 + 1280 + 1280 * 1000 + 1000
    return macs, params


def test_the_standard_and_the_smallest_network_count_as_mobilenet_v3(space):
    largest = _counts_by_hand([24, 40, 80, 112, 160], [[(7, 6)] * 4] * 5)
    assert space.counts(space.base_widths()) == largest == (566170656, 7645128)
    base, largest = space.base_widths(), space.largest()
    assert all(base[v] == largest[v] for v, l in enumerate(space.layers) if l.is_option)  # every block k7e6
    smallest_widths = [space.layers[_index(space)[f"stage{n}"]].choices[0] for n in range(1, 6)]
    smallest = _counts_by_hand(smallest_widths, [[(3, 3), (3, 3), (None, 0), (None, 0)]] * 5)
    assert space.counts(space.smallest()) == smallest


def test_counts_are_monotone_in_widths_expansion_kernel_and_depth(space):
    rng = np.random.default_rng(3)
    index = _index(space)
    for _ in range(6):
        widths = [int(rng.choice(l.choices)) for l in space.layers]
        here = space.counts(widths)
        for n in range(1, 6):
            grown = list(widths)
            w = space.layers[index[f"stage{n}"]].choices
            grown[index[f"stage{n}"]] = w[min(w.index(widths[index[f"stage{n}"]]) + 1, len(w) - 1)]
            assert all(a <= b for a, b in zip(here, space.counts(grown)))
            for m in (1, 3):
                v = index[f"stage{n}.block{m}"]
                label = space.layers[v].label(widths[v])
                for larger in KEPT:
                    if label == "skip" or (int(larger[1]) >= int(label[1]) and int(larger[3]) >= int(label[3])):
                        grown = list(widths)
                        grown[v] = [space.layers[v].label(c) for c in space.layers[v].choices].index(larger)
                        assert all(a <= b for a, b in zip(here, space.counts(grown)))


def test_skipped_blocks_are_identities_and_canonical_keeps_a_prefix(space):
    index = _index(space)
    widths = list(space.base_widths())
    b3, b4 = index["stage3.block3"], index["stage3.block4"]
    widths[b3], widths[b4] = 0, KEPT.index("k5e3") + 1
    blocks = space.blocks(widths)
    skipped = next(b for b in blocks if b.name == "stage3.block3")
    assert skipped.kind == "identity" and skipped.cin == skipped.cout == 80 and block_counts(skipped) == (0, 0)
    canon = space.canonical(widths)
    assert (canon[b3], canon[b4]) == (KEPT.index("k5e3") + 1, 0)
    assert space.canonical(canon) == canon and space.canonical(space.base_widths()) == space.base_widths()
    assert space.counts(canon) == space.counts(widths)
    ops = [(b.kind, b.cin, b.hidden, b.cout, b.kernel, b.stride, b.in_hw) for b in space.blocks(widths)
           if b.kind != "identity"]
    assert ops == [(b.kind, b.cin, b.hidden, b.cout, b.kernel, b.stride, b.in_hw) for b in space.blocks(canon)
                   if b.kind != "identity"]
    assert space.depth_runs == tuple((index[f"stage{n}.block3"], index[f"stage{n}.block4"]) for n in range(1, 6))
    obj = space.to_json()
    assert obj["depth_runs"][0] == {"variables": ["stage1.block3", "stage1.block4"], "skip": [0]}
    assert obj["layers"][index["stage1.block3"]]["labels"][:2] == ["skip", "k3e3"]


def test_option_codes_are_checked_by_name(space):
    widths = list(space.base_widths())
    widths[1] = 9  # stage1.block1 has codes 0..8
    with pytest.raises(BadWidths, match=r"option 9 of variable 1 \(stage1.block1\) is not one of its codes 0=k3e3"):
        space.blocks(widths)
    widths[1] = 0
    assert space.validate_widths(widths, on_grid=True)[1] == 0
    widths[2] = 0
    with pytest.raises(BadWidths, match=r"stage1\) must be positive"):
        space.validate_widths(widths)
    with pytest.raises(BadRequest, match="resolution must be at least 8"):
        make_space("ofa_mbv3", {"resolution": 4})


def test_networks_have_the_shapes_of_their_blocks():
    space = make_space("ofa_mbv3", {"resolution": 64, "levels": 3})
    widths = space.smallest()
    net = whole_network(space, widths)
    assert net.input_shape == (1, 3, 64, 64) and net.output_shape == (1, 1000)
    k = next(b.index for b in net.blocks if b.kind == "mb_block")
    alone = isolated_network(space, widths, k)
    b = net.blocks[k]
    assert alone.input_shape == alone.output_shape == (1, b.cin, b.in_hw, b.in_hw) and alone.skips == ()
    first = next(b for b in net.blocks if b.kind == "mb_expand")
    pair = isolated_network(space, widths, first.index, 2)
    assert pair.input_shape == (1, 16, 32, 32) and pair.output_shape == (1, widths[2], 16, 16)
    assert net.blocks[-1].kind == "pool_mix_fc"
