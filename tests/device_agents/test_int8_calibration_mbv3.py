"""The calibration pass of the MobileNet-V3 kinds: equal to the reference, and the roles it records."""

import numpy as np
import pytest

from tests.support.mbv3_reference import SINGLE_BLOCKS, mixed_chain, reference_forward
from widthwise.device_agents import int8_calibration as calib
from widthwise.device_agents.network import block_shapes
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.weights import block_weights


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


@pytest.mark.parametrize("case", list(SINGLE_BLOCKS))
def test_each_kind_equals_the_reference(case):
    block = SINGLE_BLOCKS[case]
    x = np.random.default_rng(1).uniform(-1, 1, block_shapes(block)[0]).astype(np.float32)
    got = calib.forward([block], [block_weights(block, 3)], _nhwc(x))
    np.testing.assert_allclose(got, _nhwc(reference_forward([block], x, seed=3)), rtol=1e-4, atol=1e-5)


def test_roles_of_se_hswish_and_their_bounds():
    blocks = mixed_chain()
    seen: calib.Observed = {}
    x = np.random.default_rng(2).uniform(-1, 1, (1, 30, 30, 3)).astype(np.float32)
    calib.forward(blocks, [block_weights(b, 0) for b in blocks], x, seen)
    assert seen["s.e.se.gate"][2] == 1.0 and 0.0 < seen["s.e.se.gate"][1] <= 1.0
    assert seen["s.e.se.relu6"][2] == 6.0 and seen["s.e.se.relu6"][0] == 0.0
    assert seen["stem.lin"][0] < 0 and -0.375 <= seen["stem"][0] < 0  # h-swish dips below 0, never under -3/8
    assert seen["s.b2.se.reduce"][0] == 0.0  # a ReLU output
    assert {"s.e.ex", "s.e.ex.lin", "s.e.dw", "s.e.dw.lin", "s.e.se", "s.b2.pw", "s.b2.add", "c.mix", "c.mix.lin",
            "c.logits"} <= set(seen)
    assert not any(role.startswith("s.b3") for role in seen)  # a skipped block records nothing


def test_ofa_mbv3_ranges_cover_every_block_and_respect_the_bounds():
    space = make_space("ofa_mbv3", {"resolution": 64, "levels": 4})
    blocks = space.blocks(space.largest())
    ranges = calib.activation_ranges(space, blocks, [block_weights(b, 0) for b in blocks], 0)
    for b in blocks:
        assert any(role.startswith(b.name) for role in ranges), b.name
        if b.se:
            assert ranges[f"{b.name}.se.gate"][1] <= 1.0
    assert all(lo <= 0.0 <= hi and np.isfinite([lo, hi]).all() for lo, hi in ranges.values())
