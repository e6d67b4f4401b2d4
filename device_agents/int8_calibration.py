"""A numpy forward pass of a space's network, for int8 calibration of the TFLite builder.

int8 needs the range of every activation; a float pass on random inputs like the timed
ones gives them (a ReLU6 output never beyond [0, 6], however wide its calibrated range). It runs at the network's own
resolution: with SAME zero padding, a smaller image has smaller pooled features, and so
narrower logits, than the real one. A residual block's Add (its output plus an earlier
block's input) is recorded as its own role, `<block>.add`. One forward function per block kind, NHWC
layout and TensorFlow SAME padding, the same arithmetic as the TFLite float model. A block's
activation (ReLU6, ReLU or h-swish) is recorded under the role of the conv it follows; an
h-swish's input is recorded too, as `<role>.lin`. The MobileNet-V3 kinds (SE, h-swish) are in
int8_calibration_mbv3.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Mapping, Sequence

import numpy as np

from . import int8_calibration_mbv3  # noqa: F401  (registers the MobileNet-V3 kinds in FORWARDS)
from .errors import UnknownSpace
from .int8_calibration_ops import FORWARDS, Observed, activate, conv2d, depthwise, observe, pointwise, register_forward
from .network import Network
from .spaces import BlockSpec, Space
from .weights import BlockWeights

__all__ = ["FORWARDS", "Observed", "activation_ranges", "calibration_input", "forward", "network_input",
           "network_ranges", "register_forward"]

#: BLAS threads for the calibration pass (see _blas_threads); None leaves BLAS as it is.
CALIBRATION_BLAS_THREADS: int | None = 1
IMAGE_SAMPLES = 1  # pooled features of a random-input image hardly vary from one input to the next
TEXT_SAMPLES = 16


@register_forward("conv")
def _conv(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    return activate(conv2d(x, wts["w"], wts["b"], b.stride), b.activation, seen, b.name)


def _depthwise_pointwise(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    """Depthwise + activation (observed), then the pointwise with its bias, before any activation."""
    y = activate(depthwise(x, wts["dw_w"], wts["dw_b"], b.stride), b.activation, seen, f"{b.name}.dw")
    z = pointwise(y, wts["pw_w"][:, :, 0, 0])
    z += wts["pw_b"]
    return z


@register_forward("dwsep")
def _dwsep(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    return activate(_depthwise_pointwise(b, wts, x, seen), b.activation, seen, f"{b.name}.pw")


@register_forward("ir_dwproject")
def _ir_dwproject(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    z = _depthwise_pointwise(b, wts, x, seen)  # a linear projection: no activation
    observe(seen, f"{b.name}.pw", z)
    return z


@register_forward("ir_expand")
def _ir_expand(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    y = pointwise(x, wts["ex_w"][:, :, 0, 0])
    y += wts["ex_b"]
    y = activate(y, b.activation, seen, f"{b.name}.ex")
    return activate(depthwise(y, wts["dw_w"], wts["dw_b"], b.stride), b.activation, seen, f"{b.name}.dw")


@register_forward("ir_project")
def _ir_project(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    z = pointwise(x, wts["pw_w"][:, :, 0, 0])
    z += wts["pw_b"]
    observe(seen, f"{b.name}.pw", z)
    return z


@register_forward("pool_fc")
def _pool_fc(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    logits = x.mean(axis=(1, 2)) @ wts["w"].T + wts["b"]
    observe(seen, f"{b.name}.logits", logits)
    return logits


@register_forward("embedding")
def _embedding(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    return wts["table"][x]


@register_forward("proj_dense")
def _proj_dense(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    projected = x @ wts["proj"]
    mean = projected.mean(axis=1)
    hidden = np.maximum(mean @ wts["w"].T + wts["b"], 0.0)
    observe(seen, f"{b.name}.projected", projected)
    observe(seen, f"{b.name}.mean", mean)
    observe(seen, f"{b.name}.hidden", hidden)
    return hidden


@register_forward("dense")
def _dense(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    logits = x @ wts["w"].T + wts["b"]
    observe(seen, f"{b.name}.logits", logits)
    return logits


def forward(blocks: Sequence[BlockSpec], weights: Sequence[BlockWeights], x: np.ndarray,
            seen: Observed | None = None, skips: Mapping[int, np.ndarray] | None = None) -> np.ndarray:
    """Run the network (or a run of its blocks) on a batch (NHWC images or [n, tokens] ids);
    record roles in `seen`. `skips` holds the inputs of blocks outside the run that a residual Add reads."""
    seen = {} if seen is None else seen
    sources = {b.residual_from for b in blocks if b.residual}
    kept: dict[int, np.ndarray] = dict(skips or {})  # the block inputs a later residual Add reads
    for b, wts in zip(blocks, weights):
        fn = FORWARDS.get(b.kind)
        if fn is None:
            raise UnknownSpace(f"no numpy forward for block kind {b.kind!r}", kind=b.kind)
        if b.index in sources:
            kept[b.index] = x
        x = fn(b, wts, x, seen)
        if b.residual:
            x = x + kept.pop(b.residual_from)
            observe(seen, f"{b.name}.add", x)
    return x


def calibration_input(space: Space, seed: int) -> np.ndarray:
    """A few random inputs like the ones timed: uniform [-1, 1] images, uniform token ids."""
    return _random_batch(np.random.default_rng(seed + 7), space.input_shape, space.input_dtype, space.input_channels)


def _random_batch(rng: np.random.Generator, shape: Sequence[int], dtype: str, int_high: int) -> np.ndarray:
    """A calibration batch for an input of this (NCHW or token) shape: token ids, NHWC images, or floats."""
    if dtype == "int64":
        return rng.integers(0, max(1, int_high), size=(TEXT_SAMPLES, *shape[1:]), dtype=np.int64)
    if len(shape) == 4:
        _, channels, h, w = shape
        return rng.uniform(-1.0, 1.0, size=(IMAGE_SAMPLES, h, w, channels)).astype(np.float32)
    return rng.uniform(-1.0, 1.0, size=(TEXT_SAMPLES, *shape[1:])).astype(np.float32)


def network_input(net: Network, seed: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Calibration inputs of a `Network`: its main input and its residual skip inputs (by block index)."""
    rng = np.random.default_rng(seed + 7)
    x = _random_batch(rng, net.input_shape, net.input_dtype, net.int_high)
    skips = {index: _random_batch(rng, shape, "float32", 1) for index, shape in net.skips}
    return x, skips


def _blas_threads(threads: int | None) -> ContextManager[object]:
    """Limit BLAS threads while calibrating, where threadpoolctl is installed (else no change).

    One image's matrix products are small: on a busy or shared CPU, BLAS worker threads
    spin-waiting for each other made the 1.5x MobileNet pass about 3x slower here than one
    thread, and a profiler should not leave workers spinning just before it times a model.
    """
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a board with numpy alone: BLAS keeps its own default
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def activation_ranges(space: Space, blocks: Sequence[BlockSpec], weights: Sequence[BlockWeights],
                      seed: int, margin: float = 1.25) -> dict[str, tuple[float, float]]:
    """Role -> (min, max) of each activation on calibration inputs, widened by `margin`, within known bounds."""
    return _ranges(blocks, weights, calibration_input(space, seed), {}, margin)


def network_ranges(net: Network, weights: Sequence[BlockWeights], seed: int,
                   margin: float = 1.25) -> dict[str, tuple[float, float]]:
    """`activation_ranges` of a `Network` (a whole network or a run of its blocks alone)."""
    x, skips = network_input(net, seed)
    return _ranges(net.blocks, weights, x, skips, margin)


def _ranges(blocks: Sequence[BlockSpec], weights: Sequence[BlockWeights], x: np.ndarray,
            skips: Mapping[int, np.ndarray], margin: float) -> dict[str, tuple[float, float]]:
    seen: Observed = {}
    with _blas_threads(CALIBRATION_BLAS_THREADS):
        forward(blocks, weights, x, seen, skips)
    out = {}
    for role, (least, greatest, bound) in seen.items():
        lo, hi = min(0.0, least * margin), max(0.0, greatest * margin)
        out[role] = (lo, hi if bound is None else min(hi, bound))
    return out
