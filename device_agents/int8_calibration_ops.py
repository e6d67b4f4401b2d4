"""The numpy kernels of the int8 calibration pass and the registry of per-kind forwards.

NHWC layout, TensorFlow SAME padding (the odd pixel at the end), float32: the arithmetic of
the TFLite float model. A forward records the range of each activation it computes under its
role (the name the TFLite builder gives that tensor) in an `Observed` dict.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .block_kinds import ACTIVATIONS
from .errors import UnknownSpace
from .spaces import BlockSpec, kind_registry
from .weights import BlockWeights

#: role (tensor) name -> (least and greatest activation seen in a pass, known upper bound or None).
Observed = dict[str, tuple[float, float, float | None]]
Forward = Callable[[BlockSpec, BlockWeights, np.ndarray, Observed], np.ndarray]
FORWARDS: dict[str, Forward] = {}

DEPTHWISE_BAND_FLOATS = 1 << 16  # values per band of a depthwise output (see depthwise)


register_forward = kind_registry(FORWARDS)  # @register_forward("kind"): the numpy forward of a kind


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Pad an NHWC batch the TensorFlow SAME way (the odd pixel at the end)."""
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def conv2d(x: np.ndarray, w_oihw: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Dense k x k convolution, NHWC in and out, weights in the canonical [cout, cin, k, k].

    The k*k shifted windows are gathered once (im2col) so the whole layer is one matrix
    product: the stem's few input channels would make k*k separate products slow.
    """
    cout, cin, k, _ = w_oihw.shape
    n, h, w, _ = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    xp = _same_pad(x, k, stride)
    columns = np.empty((n, oh, ow, k, k, cin), dtype=np.float32)
    for dy in range(k):
        for dx in range(k):
            columns[:, :, :, dy, dx, :] = xp[:, dy : dy + stride * oh : stride, dx : dx + stride * ow : stride, :]
    w_flat = w_oihw.transpose(0, 2, 3, 1).reshape(cout, k * k * cin)  # the columns' (dy, dx, c) order
    out = columns.reshape(-1, k * k * cin) @ w_flat.T
    out += bias
    return out.reshape(n, oh, ow, cout)


def pointwise(x: np.ndarray, w_oi: np.ndarray) -> np.ndarray:
    """x [..., cin] times w [cout, cin] transposed, as one 2-D matrix product (one BLAS call)."""
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    return (flat @ w_oi.T).reshape(*x.shape[:-1], w_oi.shape[0])


def depthwise(x: np.ndarray, w_c1kk: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise k x k convolution, NHWC, weights in the canonical [c, 1, k, k] (accumulated in place).

    Output rows are done in bands of about DEPTHWISE_BAND_FLOATS values, so that the k*k
    multiply-adds of a band stay in cache: a 7 x 7 depthwise on a large tensor ran 2.4x
    faster here than over the whole tensor at once. Each value sums its taps in the same
    order either way, so the result is the same to the bit."""
    k = w_c1kk.shape[2]
    n, h, w, c = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    xp = _same_pad(x, k, stride)
    taps = np.ascontiguousarray(w_c1kk[:, 0].transpose(1, 2, 0))  # [k, k, c]
    out = np.empty((n, oh, ow, c), dtype=np.float32)
    rows = max(1, DEPTHWISE_BAND_FLOATS // max(1, n * ow * c))
    product = np.empty((n, min(rows, oh), ow, c), dtype=np.float32)
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        band, prod = out[:, r0:r1], product[:, : r1 - r0]
        band[...] = bias
        for dy in range(k):
            src = xp[:, r0 * stride + dy : (r1 - 1) * stride + dy + 1 : stride]
            for dx in range(k):
                np.multiply(src[:, :, dx : dx + stride * ow : stride, :], taps[dy, dx], out=prod)
                band += prod
    return out


def relu6(x: np.ndarray) -> np.ndarray:
    """ReLU6 in place (the argument is a fresh intermediate), returned for chaining."""
    return np.clip(x, 0.0, 6.0, out=x)


def hswish(x: np.ndarray) -> np.ndarray:
    """h-swish, x * relu6(x + 3) / 6, as a fresh array."""
    gate = x + np.float32(3.0)
    np.clip(gate, 0.0, 6.0, out=gate)
    gate *= x
    gate /= np.float32(6.0)
    return gate


def activate(y: np.ndarray, activation: str, seen: Observed, role: str) -> np.ndarray:
    """A block's non-linearity on a fresh intermediate, its output recorded as `role`
    (an h-swish's input as `role.lin` as well: the int8 model quantises both)."""
    if activation == "relu6":
        relu6(y)
        observe_relu6(seen, role, y)
    elif activation == "relu":
        np.maximum(y, 0.0, out=y)
        observe(seen, role, y)
    elif activation == "hswish":
        observe(seen, f"{role}.lin", y)
        y = hswish(y)
        observe(seen, role, y)
    else:
        raise UnknownSpace(f"{role}: unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}",
                           activation=activation)
    return y


def observe_relu6(seen: Observed, role: str, y: np.ndarray) -> None:
    """Record a ReLU6 output: its minimum is 0 (or more), so only its maximum is needed."""
    seen[role] = (0.0, float(y.max(initial=0.0)), 6.0)


def observe(seen: Observed, role: str, y: np.ndarray) -> None:
    """Record an unbounded activation's extremes."""
    seen[role] = (float(y.min(initial=0.0)), float(y.max(initial=0.0)), None)
