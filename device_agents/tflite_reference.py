"""A numpy forward pass of a space's network, for int8 calibration of the TFLite builder.

int8 needs the range of every activation; a float pass on random inputs like the timed
ones gives them (a ReLU6 output never beyond [0, 6], however wide its calibrated range). It runs at the network's own
resolution: with SAME zero padding, a smaller image has smaller pooled features, and so
narrower logits, than the real one. One forward function per block kind, NHWC
layout and TensorFlow SAME padding, the same arithmetic as the TFLite float model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .errors import UnknownSpace
from .spaces import BlockSpec, Space
from .weights import BlockWeights

#: role (tensor) name -> (activation values seen in a pass, known upper bound or None).
Observed = dict[str, tuple[np.ndarray, float | None]]
Forward = Callable[[BlockSpec, BlockWeights, np.ndarray, Observed], np.ndarray]
FORWARDS: dict[str, Forward] = {}

IMAGE_SAMPLES = 1  # pooled features of a random-input image hardly vary from one input to the next
TEXT_SAMPLES = 16


def register_forward(kind: str) -> Callable[[Forward], Forward]:
    """Register the numpy forward of a block kind."""

    def deco(fn: Forward) -> Forward:
        FORWARDS[kind] = fn
        return fn

    return deco


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Pad an NHWC batch the TensorFlow SAME way (the odd pixel at the end)."""
    pads = []
    for size in x.shape[1:3]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def conv2d(x: np.ndarray, w_oihw: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Dense k x k convolution, NHWC in and out, weights in the canonical [cout, cin, k, k]."""
    k = w_oihw.shape[2]
    n, h, w, _ = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    xp = _same_pad(x, k, stride)
    out = np.broadcast_to(bias, (n, oh, ow, bias.shape[0])).astype(np.float32)
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy : dy + stride * oh : stride, dx : dx + stride * ow : stride, :]
            out += pointwise(patch, w_oihw[:, :, dy, dx])
    return out


def pointwise(x: np.ndarray, w_oi: np.ndarray) -> np.ndarray:
    """x [..., cin] times w [cout, cin] transposed, as one 2-D matrix product (one BLAS call)."""
    flat = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    return (flat @ w_oi.T).reshape(*x.shape[:-1], w_oi.shape[0])


def depthwise(x: np.ndarray, w_c1kk: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Depthwise k x k convolution, NHWC, weights in the canonical [c, 1, k, k]."""
    k = w_c1kk.shape[2]
    n, h, w, c = x.shape
    oh, ow = -(-h // stride), -(-w // stride)
    xp = _same_pad(x, k, stride)
    out = np.broadcast_to(bias, (n, oh, ow, c)).astype(np.float32)
    for dy in range(k):
        for dx in range(k):
            out = out + xp[:, dy : dy + stride * oh : stride, dx : dx + stride * ow : stride, :] * w_c1kk[:, 0, dy, dx]
    return out


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


@register_forward("conv")
def _conv(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    y = relu6(conv2d(x, wts["w"], wts["b"], b.stride))
    seen[b.name] = (y, 6.0)
    return y


@register_forward("dwsep")
def _dwsep(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    y = relu6(depthwise(x, wts["dw_w"], wts["dw_b"], b.stride))
    z = relu6(pointwise(y, wts["pw_w"][:, :, 0, 0]) + wts["pw_b"])
    seen[f"{b.name}.dw"] = (y, 6.0)
    seen[f"{b.name}.pw"] = (z, 6.0)
    return z


@register_forward("pool_fc")
def _pool_fc(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    logits = x.mean(axis=(1, 2)) @ wts["w"].T + wts["b"]
    seen[f"{b.name}.logits"] = (logits, None)
    return logits


@register_forward("embedding")
def _embedding(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    return wts["table"][x]


@register_forward("proj_dense")
def _proj_dense(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    projected = x @ wts["proj"]
    mean = projected.mean(axis=1)
    hidden = np.maximum(mean @ wts["w"].T + wts["b"], 0.0)
    seen[f"{b.name}.projected"] = (projected, None)
    seen[f"{b.name}.mean"] = (mean, None)
    seen[f"{b.name}.hidden"] = (hidden, None)
    return hidden


@register_forward("dense")
def _dense(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    logits = x @ wts["w"].T + wts["b"]
    seen[f"{b.name}.logits"] = (logits, None)
    return logits


def forward(blocks: Sequence[BlockSpec], weights: Sequence[BlockWeights], x: np.ndarray,
            seen: Observed | None = None) -> np.ndarray:
    """Run the network on a batch (NHWC images or [n, tokens] ids); record roles in `seen`."""
    seen = {} if seen is None else seen
    for b, wts in zip(blocks, weights):
        fn = FORWARDS.get(b.kind)
        if fn is None:
            raise UnknownSpace(f"no numpy forward for block kind {b.kind!r}", kind=b.kind)
        x = fn(b, wts, x, seen)
    return x


def calibration_input(space: Space, seed: int) -> np.ndarray:
    """A few random inputs like the ones timed: uniform [-1, 1] images, uniform token ids."""
    rng = np.random.default_rng(seed + 7)
    if space.input_dtype == "int64":
        tokens = space.input_shape[-1]
        return rng.integers(0, space.input_channels, size=(TEXT_SAMPLES, tokens), dtype=np.int64)
    _, channels, h, w = space.input_shape
    shape = (IMAGE_SAMPLES, h, w, channels)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def activation_ranges(space: Space, blocks: Sequence[BlockSpec], weights: Sequence[BlockWeights],
                      seed: int, margin: float = 1.25) -> dict[str, tuple[float, float]]:
    """Role -> (min, max) of each activation on calibration inputs, widened by `margin`, within known bounds."""
    seen: Observed = {}
    forward(blocks, weights, calibration_input(space, seed), seen)
    out = {}
    for role, (values, bound) in seen.items():
        lo, hi = min(0.0, float(values.min()) * margin), max(0.0, float(values.max()) * margin)
        out[role] = (lo, hi if bound is None else min(hi, bound))
    return out
