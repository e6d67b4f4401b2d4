"""Canonical weights: deterministic per seed, right shapes, sensible scale."""

import numpy as np

from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.weights import block_weights


def test_same_seed_same_weights_other_seed_other_weights():
    space = make_space("mobilenet_v1", {"resolution": 32})
    blocks = space.blocks(space.base_widths())
    a = [block_weights(b, seed=1) for b in blocks]
    b = [block_weights(b, seed=1) for b in blocks]
    c = [block_weights(b, seed=2) for b in blocks]
    for wa, wb, wc in zip(a, b, c):
        for key in wa:
            np.testing.assert_array_equal(wa[key], wb[key])
            assert not np.array_equal(wa[key], wc[key])


def test_shapes_follow_the_canonical_layouts():
    space = make_space("mobilenet_v1")
    stem, dw, *_, fc = space.blocks(space.base_widths())
    assert block_weights(stem)["w"].shape == (32, 3, 3, 3)
    w = block_weights(dw)
    assert w["dw_w"].shape == (32, 1, 3, 3) and w["pw_w"].shape == (64, 32, 1, 1)
    assert block_weights(fc)["w"].shape == (1000, 1024)
    text = make_space("text_lowrank", {"vocab": 500})
    emb, proj, dense = text.blocks((30, 64))
    assert block_weights(emb)["table"].shape == (500, 30)
    assert block_weights(proj)["proj"].shape == (30, 300) and block_weights(proj)["w"].shape == (64, 300)
    assert block_weights(dense)["w"].shape == (20, 64)


def test_weights_are_float32_finite_and_scaled_by_fan_in():
    space = make_space("mobilenet_v1")
    block = space.block_at(5, 512, 512)
    w = block_weights(block)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in w.values())
    assert abs(w["pw_w"].std() - np.sqrt(2 / 512)) < 0.01


def test_tensors_larger_than_the_pool_wrap_around():
    text = make_space("text_lowrank", {"vocab": 20_000})
    table = block_weights(text.block_at(0, 20_000, 100))["table"]
    assert table.shape == (20_000, 100) and np.isfinite(table).all()


def test_inverted_residual_layouts_and_scales():
    space = make_space("mobilenet_v2")
    blocks = {b.name: b for b in space.blocks(space.base_widths())}
    t1 = block_weights(blocks["stage1.block1"])
    assert t1["dw_w"].shape == (32, 1, 3, 3) and t1["pw_w"].shape == (16, 32, 1, 1) and t1["pw_b"].shape == (16,)
    expand = block_weights(blocks["stage4.block2.expand"])
    assert expand["ex_w"].shape == (384, 64, 1, 1) and expand["ex_b"].shape == (384,)
    assert expand["dw_w"].shape == (384, 1, 3, 3) and expand["dw_b"].shape == (384,)
    first, later = block_weights(blocks["stage4.block1.project"]), block_weights(blocks["stage4.block2.project"])
    assert first["pw_w"].shape == (64, 192, 1, 1) and later["pw_w"].shape == (64, 384, 1, 1)
    # linear projections: unit gain, halved in variance where a residual Add follows
    assert abs(first["pw_w"].std() - np.sqrt(1 / 192)) < 0.01
    assert abs(later["pw_w"].std() - np.sqrt(0.5 / 384)) < 0.01
    assert abs(expand["ex_w"].std() - np.sqrt(2 / 64)) < 0.02


def test_mobilenet_v3_kinds_layouts_and_their_sizes_equal_the_parameter_count():
    from tests.support.mbv3_reference import SINGLE_BLOCKS
    from widthwise.device_agents.block_kinds import block_counts, se_width

    se = block_weights(SINGLE_BLOCKS["mb_block k7 relu se"])  # hidden 72: squeeze 72 / 4 = 18 -> 16
    assert se_width(72) == 16
    assert se["ex_w"].shape == (72, 24, 1, 1) and se["dw_w"].shape == (72, 1, 7, 7)
    assert se["se_w1"].shape == (16, 72, 1, 1) and se["se_b1"].shape == (16,)
    assert se["se_w2"].shape == (72, 16, 1, 1) and se["se_b2"].shape == (72,)
    assert se["pw_w"].shape == (24, 72, 1, 1)
    assert "se_w1" not in block_weights(SINGLE_BLOCKS["mb_expand k3 s1 relu"])
    assert block_weights(SINGLE_BLOCKS["identity"]) == {}
    mix = block_weights(SINGLE_BLOCKS["pool_mix_fc hswish"])
    assert mix["w1"].shape == (40, 24) and mix["w2"].shape == (10, 40)
    for case, block in SINGLE_BLOCKS.items():
        weights = block_weights(block, seed=1)
        assert sum(w.size for w in weights.values()) == block_counts(block)[1], case
        assert all(np.isfinite(w).all() for w in weights.values())
