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
