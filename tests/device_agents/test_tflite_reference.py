"""The numpy reference pass used for int8 calibration: its convolutions and the ranges it reports."""

import numpy as np
import pytest

from device_agents import tflite_reference as ref
from device_agents.spaces import make_space
from device_agents.weights import block_weights


def _naive_same_conv(x: np.ndarray, w_oihw: np.ndarray, bias: np.ndarray, stride: int, depthwise: bool) -> np.ndarray:
    """Output pixel by output pixel, TensorFlow SAME padding (the odd pixel at the end)."""
    n, h, w, c = x.shape
    k = w_oihw.shape[2]
    oh, ow = -(-h // stride), -(-w // stride)
    pad_h = max((oh - 1) * stride + k - h, 0) // 2
    pad_w = max((ow - 1) * stride + k - w, 0) // 2
    cout = c if depthwise else w_oihw.shape[0]
    out = np.zeros((n, oh, ow, cout), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            for dy in range(k):
                for dx in range(k):
                    y, xx = i * stride + dy - pad_h, j * stride + dx - pad_w
                    if 0 <= y < h and 0 <= xx < w:
                        pixel = x[:, y, xx, :].astype(np.float64)
                        if depthwise:
                            out[:, i, j, :] += pixel * w_oihw[:, 0, dy, dx]
                        else:
                            out[:, i, j, :] += pixel @ w_oihw[:, :, dy, dx].T.astype(np.float64)
    return out + bias


@pytest.mark.parametrize("size, stride", [(7, 1), (7, 2), (8, 2), (5, 2)])
def test_dense_convolution_matches_a_pixel_by_pixel_one(size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((2, size, size + 1, 3)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    got = ref.conv2d(x, w, b, stride)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _naive_same_conv(x, w, b, stride, depthwise=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size, stride", [(7, 1), (7, 2), (8, 2)])
def test_depthwise_convolution_matches_a_pixel_by_pixel_one(size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((1, size, size, 6)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    got = ref.depthwise(x, w, b, stride)
    np.testing.assert_allclose(got, _naive_same_conv(x, w, b, stride, depthwise=True), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def mobilenet():
    space = make_space("mobilenet_v1", {"resolution": 48, "levels": 4})
    blocks = space.blocks(space.largest())
    return space, blocks, [block_weights(b, 3) for b in blocks]


def test_ranges_cover_every_role_and_respect_relu6(mobilenet):
    space, blocks, weights = mobilenet
    ranges = ref.activation_ranges(space, blocks, weights, seed=3)
    expected = {blocks[0].name} | {f"{b.name}.{part}" for b in blocks if b.kind == "dwsep" for part in ("dw", "pw")}
    expected |= {f"{blocks[-1].name}.logits"}
    assert set(ranges) == expected
    for role, (lo, hi) in ranges.items():
        assert lo <= 0.0 <= hi and hi > lo, role
        if not role.endswith("logits"):
            assert lo == 0.0 and hi <= 6.0, role
    lo, hi = ranges[f"{blocks[-1].name}.logits"]
    assert lo < 0.0 < hi  # random logits take both signs


def test_ranges_are_the_float_pass_extremes_widened(mobilenet):
    space, blocks, weights = mobilenet
    seen: ref.Observed = {}
    ref.forward(blocks, weights, ref.calibration_input(space, 3), seen)
    ranges = ref.activation_ranges(space, blocks, weights, seed=3, margin=1.5)
    for role, (least, greatest, bound) in seen.items():
        hi = max(0.0, greatest * 1.5)
        assert ranges[role] == (min(0.0, least * 1.5), hi if bound is None else min(hi, bound))


def test_one_blas_thread_changes_no_range(mobilenet, monkeypatch):
    pytest.importorskip("threadpoolctl")
    space, blocks, weights = mobilenet
    limited = ref.activation_ranges(space, blocks, weights, seed=3)
    monkeypatch.setattr(ref, "CALIBRATION_BLAS_THREADS", None)
    free = ref.activation_ranges(space, blocks, weights, seed=3)
    assert limited.keys() == free.keys()
    for role in limited:
        np.testing.assert_allclose(limited[role], free[role], rtol=1e-5, atol=1e-6)


def test_blas_is_limited_inside_the_calibration_context():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy here has no BLAS that threadpoolctl can see")
    with ref._blas_threads(1):
        assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == \
        [p["num_threads"] for p in blas]
