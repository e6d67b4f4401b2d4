"""The numpy forward pass used for int8 calibration: the ranges it reports (its kernels: test_int8_calibration_ops)."""

import numpy as np
import pytest
import threadpoolctl  # a dependency of widthwise (setup.cfg): its absence must fail, not skip

from widthwise.device_agents import int8_calibration as calib
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.weights import block_weights


@pytest.fixture(scope="module")
def mobilenet():
    space = make_space("mobilenet_v1", {"resolution": 48, "levels": 4})
    blocks = space.blocks(space.largest())
    return space, blocks, [block_weights(b, 3) for b in blocks]


def test_ranges_cover_every_role_and_respect_relu6(mobilenet):
    space, blocks, weights = mobilenet
    ranges = calib.activation_ranges(space, blocks, weights, seed=3)
    expected = {blocks[0].name} | {f"{b.name}.{part}" for b in blocks if b.kind == "dwsep" for part in ("dw", "pw")}
    expected |= {f"{blocks[-1].name}.logits"}
    assert set(ranges) == expected
    for role, (lo, hi) in ranges.items():
        assert lo <= 0.0 <= hi and hi > lo, role
        if not role.endswith("logits"):
            assert lo == 0.0 and hi <= 6.0, role
    lo, hi = ranges[f"{blocks[-1].name}.logits"]
    assert lo < 0.0 < hi  # random logits take both signs


#: float32 machine epsilon (2^-23): a float32 sum of K products, added in any order, lies
#: within about K * eps32 / 2 of the exact sum, relative to the sum of the terms' magnitudes.
EPS32 = float(np.finfo(np.float32).eps)


def _path_lengths(blocks) -> dict[str, int]:
    """Role -> how many products are summed into it, counted over every layer from the input.

    Per layer K terms: a dense convolution cin * k * k (+ its bias), a depthwise one k * k
    (+ bias), a pointwise one cin (+ bias), the classifier the spatial mean (in_hw^2 terms)
    then cin (+ bias).
    """
    total, out = 0, {}
    for b in blocks:
        if b.kind == "conv":
            total += b.cin * b.kernel**2 + 1
            out[b.name] = total
        elif b.kind == "dwsep":
            total += b.kernel**2 + 1
            out[f"{b.name}.dw"] = total
            total += b.cin + 1
            out[f"{b.name}.pw"] = total
        elif b.kind == "pool_fc":
            total += b.in_hw**2 + b.cin + 1
            out[f"{b.name}.logits"] = total
    return out


def _range_tolerance(blocks, seen: calib.Observed) -> dict[str, float]:
    """Role -> how far two float32 passes may put its extremes apart: eps32 x K_path x |extreme|.

    Two machines run the same numpy code except for the order in which BLAS adds up each
    matrix product (kernels and blocking differ between CPUs, e.g. AVX2 against AVX-512;
    the element-wise numpy steps are correctly rounded and give the same bits everywhere).
    A float32 sum of K terms in any order is within (K eps32 / 2) x sum|terms| of the exact
    one, so two orders differ by at most K eps32 x sum|terms|. With weights scaled by fan-in,
    sum|terms| at a layer's extreme is of the order of that extreme, and a relative error of
    a layer's input reaches its output at about the same relative size: to first order the
    relative differences of the layers on the path to a role add up, to eps32 x (sum of the K
    of those layers) x the role's extreme. ReLU6, the clip and the max are 1-Lipschitz and add
    nothing. A first-order estimate, not a worst case; its margin was measured: against a
    float64 pass the extremes here are off by 0.1 to 2.5 eps32 relative, while the tolerance
    is 28 eps32 at the first layer and grows to about 9000 eps32 (1e-3) at the logits; a wrong
    margin (1.25 for 1.5) moves them by 20 %.
    """
    lengths = _path_lengths(blocks)
    return {role: EPS32 * lengths[role] * max(abs(least), abs(greatest)) for role, (least, greatest, _) in seen.items()}


def test_ranges_are_the_float_pass_extremes_widened(mobilenet):
    space, blocks, weights = mobilenet
    seen: calib.Observed = {}
    calib.forward(blocks, weights, calib.calibration_input(space, 3), seen)  # BLAS threads as they are, not limited
    ranges = calib.activation_ranges(space, blocks, weights, seed=3, margin=1.5)
    assert set(ranges) == set(seen)
    tolerance = _range_tolerance(blocks, seen)
    for role, (least, greatest, bound) in seen.items():
        hi = max(0.0, greatest * 1.5)
        want = (min(0.0, least * 1.5), hi if bound is None else min(hi, bound))
        assert ranges[role] == pytest.approx(want, rel=0.0, abs=1.5 * tolerance[role]), role  # widened 1.5x, error too


def test_one_blas_thread_changes_no_range(mobilenet, monkeypatch):
    space, blocks, weights = mobilenet
    limited = calib.activation_ranges(space, blocks, weights, seed=3)
    monkeypatch.setattr(calib, "CALIBRATION_BLAS_THREADS", None)
    free = calib.activation_ranges(space, blocks, weights, seed=3)
    assert limited.keys() == free.keys()
    seen: calib.Observed = {}
    calib.forward(blocks, weights, calib.calibration_input(space, 3), seen)
    tolerance = _range_tolerance(blocks, seen)  # another thread count only reorders the BLAS sums
    for role in limited:
        assert limited[role] == pytest.approx(free[role], rel=0.0, abs=1.25 * tolerance[role]), role  # default margin


def test_blas_is_limited_inside_the_calibration_context():
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy here has no BLAS that threadpoolctl can see")
    with calib._blas_threads(1):
        assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == \
        [p["num_threads"] for p in blas]


def test_mobilenet_v2_ranges_cover_every_role_and_each_residual_add():
    space = make_space("mobilenet_v2", {"resolution": 40, "levels": 3})
    blocks = space.blocks(space.base_widths())
    weights = [block_weights(b, 1) for b in blocks]
    ranges = calib.activation_ranges(space, blocks, weights, seed=1)
    relu6 = {"stem", "head"} | {f"{b.name}.{part}" for b in blocks if b.kind == "ir_expand" for part in ("ex", "dw")}
    relu6 |= {f"{b.name}.dw" for b in blocks if b.kind == "ir_dwproject"}
    linear = {f"{b.name}.pw" for b in blocks if b.kind in ("ir_project", "ir_dwproject")}
    adds = {f"{b.name}.add" for b in blocks if b.residual}
    assert len(adds) == 10
    assert set(ranges) == relu6 | linear | adds | {"classifier.logits"}
    for role in relu6:
        assert ranges[role][0] == 0.0 and 0.0 < ranges[role][1] <= 6.0, role
    for role in linear | adds:
        lo, hi = ranges[role]
        assert lo < 0.0 < hi, role  # linear projections and their sums take both signs


def test_a_residual_add_is_the_sum_of_the_projection_and_the_block_input():
    space = make_space("mobilenet_v2", {"resolution": 16, "levels": 3})
    blocks = space.blocks(space.smallest())
    weights = [block_weights(b, 0) for b in blocks]
    x = calib.calibration_input(space, 0)
    k = next(b.index for b in blocks if b.residual)  # stage2.block2.project
    start = blocks[k].residual_from
    block_input = calib.forward(blocks[:start], weights[:start], x)
    projected = block_input
    for b in blocks[start:k + 1]:  # the block's own ops, without the loop that adds the residual
        projected = calib.FORWARDS[b.kind](b, weights[b.index], projected, {})
    with_add = calib.forward(blocks[:k + 1], weights[:k + 1], x)
    np.testing.assert_allclose(with_add, projected + block_input, rtol=1e-6, atol=1e-6)
