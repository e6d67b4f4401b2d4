"""The numpy kernels of the int8 calibration pass: convolutions against a pixel-by-pixel one, the activations."""

import numpy as np
import pytest

from widthwise.device_agents import int8_calibration_ops as ops
from widthwise.device_agents.errors import UnknownSpace


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
    got = ops.conv2d(x, w, b, stride)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _naive_same_conv(x, w, b, stride, depthwise=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size, stride", [(7, 1), (7, 2), (8, 2)])
def test_depthwise_convolution_matches_a_pixel_by_pixel_one(size, stride):
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.standard_normal((1, size, size, 6)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    got = ops.depthwise(x, w, b, stride)
    np.testing.assert_allclose(got, _naive_same_conv(x, w, b, stride, depthwise=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("band_floats", [1, 100, 1 << 16])
@pytest.mark.parametrize("size, stride", [(9, 1), (9, 2), (10, 2)])
def test_depthwise_in_bands_of_rows_is_the_same_to_the_bit(size, stride, band_floats, monkeypatch):
    """Bands of one row, of a few rows with a shorter last band, and the whole output at once."""
    rng = np.random.default_rng(size + stride)
    x = rng.standard_normal((2, size, size, 6)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    whole = ops.depthwise(x, w, b, stride)
    monkeypatch.setattr(ops, "DEPTHWISE_BAND_FLOATS", band_floats)
    banded = ops.depthwise(x, w, b, stride)
    np.testing.assert_array_equal(banded, whole)
    np.testing.assert_allclose(banded, _naive_same_conv(x, w, b, stride, depthwise=True), rtol=1e-5, atol=1e-5)


def test_hswish_is_x_times_relu6_of_x_plus_3_over_6():
    x = np.array([-4.0, -3.0, -1.5, 0.0, 1.0, 3.0, 5.0], dtype=np.float32)
    np.testing.assert_allclose(ops.hswish(x), [0.0, 0.0, -0.375, 0.0, 2 / 3, 3.0, 5.0], rtol=1e-6, atol=1e-7)


def test_activate_applies_each_activation_and_records_its_roles():
    x = np.array([-4.0, -1.5, 0.5, 7.0], dtype=np.float32)
    seen: ops.Observed = {}
    np.testing.assert_array_equal(ops.activate(x.copy(), "relu6", seen, "a"), [0.0, 0.0, 0.5, 6.0])
    np.testing.assert_array_equal(ops.activate(x.copy(), "relu", seen, "b"), [0.0, 0.0, 0.5, 7.0])
    np.testing.assert_allclose(ops.activate(x.copy(), "hswish", seen, "c"), ops.hswish(x))
    assert seen["a"] == (0.0, 6.0, 6.0) and seen["b"] == (0.0, 7.0, None)
    assert seen["c.lin"] == (-4.0, 7.0, None) and seen["c"] == (-0.375, 7.0, None)


def test_an_unknown_activation_is_refused_naming_the_role():
    with pytest.raises(UnknownSpace, match="x.dw: unknown activation 'tanh'"):
        ops.activate(np.zeros(3, np.float32), "tanh", {}, "x.dw")
