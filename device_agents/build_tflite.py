"""Build a space's network as a .tflite file (float32 or int8), in pure Python.

The agent writes TFLite models itself from the space definition, so a board needs no
TensorFlow: one writer per block kind (a registry) appends operators to a
`tflite_schema.ModelWriter`; weights come from the agent's weights module, so a seed gives
the same network as the ONNX builder (same arithmetic: SAME padding with the odd pixel
at the end, no final softmax, logits out). Images are NHWC here (TFLite's layout).

int8 follows TFLite's full-integer scheme: per-tensor activation scale and zero point,
symmetric per-channel int8 weights for convolutions, per-tensor for fully connected
layers, int32 biases at input scale x weight scale, QUANTIZE/DEQUANTIZE at the float
ends. Activation ranges come from a numpy float pass on random inputs like the timed
ones (device_agents.int8_calibration), ReLU6 outputs capped at [0, 6]; so an int8 text
model is calibrated for random token ids, not for degenerate inputs such as all zeros.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import tflite_schema as fb
from .errors import BadRequest, UnknownSpace
from .spaces import BlockSpec, Space, kind_registry
from .int8_calibration import activation_ranges
from .weights import BlockWeights, block_weights

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
RELU6_RANGE = (0.0, 6.0)
INPUT_RANGE = (-1.0, 1.0)  # images are timed on uniform [-1, 1] inputs


def activation_quant(lo: float, hi: float) -> fb.Quant:
    """Per-tensor int8 parameters covering [lo, hi] (which is widened to contain 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1e-6
    zero_point = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return fb.Quant((float(scale),), (zero_point,))


def symmetric_int8(w: np.ndarray, channel_dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights and their scales, per channel along `channel_dim` or per tensor.

    The peak |w| is max(max, -min), which spares a full-size |w| array; rounding and
    clipping happen in place on the one float quotient.
    """
    axes = None if channel_dim is None else tuple(d for d in range(w.ndim) if d != channel_dim)
    peak = np.maximum(w.max(axis=axes, initial=0.0), -w.min(axis=axes, initial=0.0))
    if channel_dim is None:
        scale = np.array([max(float(peak), 1e-12) / 127.0], dtype=np.float32)
        q = w / scale[0]
    else:
        scale = (np.maximum(peak, 1e-12) / 127.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[channel_dim] = -1
        q = w / scale.reshape(shape)
    np.rint(q, out=q)
    np.clip(q, -127, 127, out=q)
    return q.astype(np.int8), scale


class FloatNet:
    """Adds tensors to a ModelWriter as float32: weights as they are, no quantisation."""

    dtype = "float32"

    def __init__(self, writer: fb.ModelWriter, ranges: dict[str, tuple[float, float]]) -> None:
        self.w = writer
        self.ranges = ranges

    def act(self, name: str, shape: Sequence[int], role_range: tuple[float, float] | None = None,
            like: int | None = None) -> int:
        """An activation tensor; int8 nets quantise it by `role_range` or as tensor `like`."""
        return self.w.tensor(name, shape, "float32")

    def relu6_range(self, name: str) -> tuple[float, float]:
        """The range of a ReLU6 output: calibrated when known, else all of [0, 6]."""
        return self.ranges.get(name, RELU6_RANGE)

    def weights(self, name: str, w: np.ndarray, channel_dim: int | None) -> int:
        """A weight tensor (per-channel quantised along `channel_dim` in int8 nets)."""
        return self.w.constant(name, np.asarray(w, dtype=np.float32))

    def bias(self, name: str, b: np.ndarray, x: int, w: int) -> int:
        """A bias tensor for an op reading `x` with weights `w`."""
        return self.w.constant(name, np.asarray(b, dtype=np.float32))

    def model_input(self, shape: Sequence[int], dtype: str) -> tuple[int, int]:
        """(graph input tensor, tensor the first block reads)."""
        t = self.w.tensor(INPUT_NAME, shape, dtype)
        return t, t

    def model_output(self, x: int) -> int:
        """The graph output tensor, given the last block's output (named like the ONNX one)."""
        self.w.rename(x, OUTPUT_NAME)
        return x


class Int8Net(FloatNet):
    """Adds tensors as int8 with TFLite's full-integer quantisation scheme."""

    dtype = "int8"

    def act(self, name: str, shape: Sequence[int], role_range: tuple[float, float] | None = None,
            like: int | None = None) -> int:
        if like is not None:
            quant = self.w.quant_of(like)
        elif role_range is not None:
            quant = activation_quant(*role_range)
        else:
            raise UnknownSpace(f"the int8 TFLite builder has no calibrated range for tensor {name!r}", tensor=name)
        return self.w.tensor(name, shape, "int8", quant)

    def weights(self, name: str, w: np.ndarray, channel_dim: int | None) -> int:
        q, scale = symmetric_int8(np.asarray(w, dtype=np.float32), channel_dim)
        quant = fb.Quant(tuple(scale.tolist()), (0,) * len(scale), channel_dim or 0)
        return self.w.constant(name, q, quant)

    def bias(self, name: str, b: np.ndarray, x: int, w: int) -> int:
        in_scale = self.w.quant_of(x).scale[0]
        scale = np.asarray(self.w.quant_of(w).scale, dtype=np.float64) * in_scale
        q = np.clip(np.round(np.asarray(b, dtype=np.float64) / scale), -(2**31), 2**31 - 1).astype(np.int32)
        return self.w.constant(name, q, fb.Quant(tuple(scale.tolist()), (0,) * len(scale), 0))

    def model_input(self, shape: Sequence[int], dtype: str) -> tuple[int, int]:
        t = self.w.tensor(INPUT_NAME, shape, dtype)
        if dtype != "float32":  # token ids stay integers
            return t, t
        q = self.act("input_int8", shape, INPUT_RANGE)
        self.w.op(fb.OP_QUANTIZE, [t], [q], fb.quantize_options())
        return t, q

    def model_output(self, x: int) -> int:
        out = self.w.tensor(OUTPUT_NAME, self.w.shape_of(x), "float32")
        self.w.op(fb.OP_DEQUANTIZE, [x], [out], fb.dequantize_options())
        return out


NETS: dict[str, type[FloatNet]] = {"float32": FloatNet, "int8": Int8Net}

BlockWriter = Callable[[FloatNet, BlockSpec, BlockWeights, int], int]
BLOCK_WRITERS: dict[str, BlockWriter] = {}


register_block = kind_registry(BLOCK_WRITERS)  # @register_block("kind"): the TFLite writer of a kind


def _conv(net: FloatNet, name: str, x: int, w_oihw: np.ndarray, bias: np.ndarray, stride: int, out_hw: int) -> int:
    w = net.weights(f"{name}.w", w_oihw.transpose(0, 2, 3, 1), channel_dim=0)  # OHWI
    b = net.bias(f"{name}.b", bias, x, w)
    y = net.act(name, (1, out_hw, out_hw, w_oihw.shape[0]), net.relu6_range(name))
    net.w.op(fb.OP_CONV_2D, [x, w, b], [y], fb.conv2d_options(stride, fb.ACT_RELU6))
    return y


@register_block("conv")
def _write_conv(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return _conv(net, b.name, x, wts["w"], wts["b"], b.stride, b.out_hw)


@register_block("dwsep")
def _write_dwsep(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    dw_w = net.weights(f"{b.name}.dw_w", wts["dw_w"].transpose(1, 2, 3, 0), channel_dim=3)  # [1, k, k, C]
    dw_b = net.bias(f"{b.name}.dw_b", wts["dw_b"], x, dw_w)
    y = net.act(f"{b.name}.dw", (1, b.out_hw, b.out_hw, b.cin), net.relu6_range(f"{b.name}.dw"))
    net.w.op(fb.OP_DEPTHWISE_CONV_2D, [x, dw_w, dw_b], [y], fb.depthwise_options(b.stride, fb.ACT_RELU6))
    return _conv(net, f"{b.name}.pw", y, wts["pw_w"], wts["pw_b"], 1, b.out_hw)


def _fully_connected(net: FloatNet, name: str, x: int, w: np.ndarray, bias: np.ndarray | None,
                     out_shape: Sequence[int], activation: int, keep_num_dims: bool = False) -> int:
    wt = net.weights(f"{name}.w", w, channel_dim=None)
    bt = net.bias(f"{name}.b", bias, x, wt) if bias is not None else -1
    y = net.act(name, out_shape, net.ranges.get(name))
    net.w.op(fb.OP_FULLY_CONNECTED, [x, wt, bt], [y], fb.fully_connected_options(activation, keep_num_dims))
    return y


@register_block("pool_fc")
def _write_pool_fc(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    pooled = net.act(f"{b.name}.pool", (1, 1, 1, b.cin), like=x)
    net.w.op(fb.OP_AVERAGE_POOL_2D, [x], [pooled], fb.pool2d_options(b.in_hw))
    shape = net.w.constant(f"{b.name}.shape", np.array([1, b.cin], dtype=np.int32))
    flat = net.act(f"{b.name}.flat", (1, b.cin), like=pooled)
    net.w.op(fb.OP_RESHAPE, [pooled, shape], [flat], fb.reshape_options([1, b.cin]))
    return _fully_connected(net, f"{b.name}.logits", flat, wts["w"], wts["b"], (1, b.cout), fb.ACT_NONE)


@register_block("embedding")
def _write_embedding(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    table = net.weights(f"{b.name}.table", wts["table"], channel_dim=None)
    tokens = net.w.shape_of(x)[-1]
    y = net.act(b.name, (1, tokens, b.cout), like=table)
    net.w.op(fb.OP_GATHER, [table, x], [y], fb.gather_options(0))
    return y


@register_block("proj_dense")
def _write_proj_dense(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    dim, tokens = b.attr("dim"), b.attr("tokens")
    projected = _fully_connected(net, f"{b.name}.projected", x, wts["proj"].T, None, (1, tokens, dim),
                                 fb.ACT_NONE, keep_num_dims=True)
    axis = net.w.constant(f"{b.name}.axis", np.array([1], dtype=np.int32))
    mean = net.act(f"{b.name}.mean", (1, dim), net.ranges.get(f"{b.name}.mean"))
    net.w.op(fb.OP_MEAN, [projected, axis], [mean], fb.reducer_options(False))
    return _fully_connected(net, f"{b.name}.hidden", mean, wts["w"], wts["b"], (1, b.cout), fb.ACT_RELU)


@register_block("dense")
def _write_dense(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return _fully_connected(net, f"{b.name}.logits", x, wts["w"], wts["b"], (1, b.cout), fb.ACT_NONE)


def tflite_input_shape(space: Space) -> tuple[int, ...]:
    """The model input's shape in TFLite: NHWC for images, the space's own shape otherwise."""
    if len(space.input_shape) == 4:
        n, c, h, w = space.input_shape
        return (n, h, w, c)
    return tuple(space.input_shape)


def build_tflite(space: Space, widths: Sequence[int], *, dtype: str = "float32", seed: int = 0) -> bytes:
    """The network of `space` with these widths as .tflite bytes, float32 or int8 (float in/out)."""
    net_class = NETS.get(dtype)
    if net_class is None:
        raise BadRequest(f"unknown dtype {dtype!r} for a TFLite network; known: {', '.join(NETS)}", dtype=dtype)
    blocks = space.blocks(widths)
    for b in blocks:
        if b.kind not in BLOCK_WRITERS:
            raise UnknownSpace(f"the TFLite builder has no writer for block kind {b.kind!r}", kind=b.kind)
    weights = [block_weights(b, seed) for b in blocks]
    ranges = activation_ranges(space, blocks, weights, seed) if net_class is Int8Net else {}
    writer = fb.ModelWriter(f"widthwise {space.name} {dtype}")
    net = net_class(writer, ranges)
    graph_input, x = net.model_input(tflite_input_shape(space), space.input_dtype)
    for b, wts in zip(blocks, weights):
        x = BLOCK_WRITERS[b.kind](net, b, wts, x)
    return writer.finish([graph_input], [net.model_output(x)])
