"""TFLite tensors and layers shared by the block writers (build_tflite, build_tflite_mbv3).

`FloatNet` and `Int8Net` add tensors to a `tflite_schema.ModelWriter` as float32 or with
TFLite's full-integer quantisation (see build_tflite); the layer helpers (convolutions with a
block's activation, HARD_SWISH, fully connected) name their output tensor by its calibration
role; `BLOCK_WRITERS` is the registry of per-kind writers.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import tflite_schema as fb
from .errors import UnknownSpace
from .network import INPUT_NAME
from .spaces import BlockSpec, kind_registry
from .weights import BlockWeights

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

    def model_input(self, shape: Sequence[int], dtype: str, name: str = INPUT_NAME) -> tuple[int, int]:
        """(graph input tensor, tensor the blocks read)."""
        t = self.w.tensor(name, shape, dtype)
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

    def model_input(self, shape: Sequence[int], dtype: str, name: str = INPUT_NAME) -> tuple[int, int]:
        t = self.w.tensor(name, shape, dtype)
        if dtype != "float32":  # token ids stay integers
            return t, t
        q = self.act(f"{name}_int8", shape, INPUT_RANGE)
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


#: block activations TFLite fuses into a convolution or a fully connected layer; h-swish is an operator
FUSED_ACTIVATIONS = {"relu6": fb.ACT_RELU6, "relu": fb.ACT_RELU}


def conv2d(net: FloatNet, name: str, x: int, w_oihw: np.ndarray, bias: np.ndarray, stride: int, out_hw: int,
           activation: int = fb.ACT_RELU6) -> int:
    """A dense convolution (OHWI weights) with ReLU6 (or ReLU) fused, or linear when `activation` is ACT_NONE."""
    w = net.weights(f"{name}.w", w_oihw.transpose(0, 2, 3, 1), channel_dim=0)  # OHWI
    b = net.bias(f"{name}.b", bias, x, w)
    role = net.relu6_range(name) if activation == fb.ACT_RELU6 else net.ranges.get(name)
    y = net.act(name, (1, out_hw, out_hw, w_oihw.shape[0]), role)
    net.w.op(fb.OP_CONV_2D, [x, w, b], [y], fb.conv2d_options(stride, activation))
    return y


def hard_swish(net: FloatNet, name: str, x: int) -> int:
    """HARD_SWISH of tensor x, its output named `name`."""
    y = net.act(name, net.w.shape_of(x), net.ranges.get(name))
    net.w.op(fb.OP_HARD_SWISH, [x], [y], fb.hard_swish_options())
    return y


def conv_act(net: FloatNet, name: str, x: int, w_oihw: np.ndarray, bias: np.ndarray, stride: int, out_hw: int,
             activation: str) -> int:
    """A dense convolution and a block's activation: fused, or HARD_SWISH on the linear `<name>.lin`."""
    if activation == "hswish":
        return hard_swish(net, name, conv2d(net, f"{name}.lin", x, w_oihw, bias, stride, out_hw, fb.ACT_NONE))
    return conv2d(net, name, x, w_oihw, bias, stride, out_hw, FUSED_ACTIVATIONS[activation])


def depthwise_conv(net: FloatNet, name: str, x: int, w_c1kk: np.ndarray, bias: np.ndarray, stride: int,
                   out_hw: int, activation: str = "relu6") -> int:
    """A depthwise convolution ([1, k, k, C] weights) and a block's activation: fused, or HARD_SWISH on `<name>.lin`."""
    if activation == "hswish":
        linear = _depthwise_op(net, f"{name}.lin", x, w_c1kk, bias, stride, out_hw, fb.ACT_NONE, f"{name}_")
        return hard_swish(net, name, linear)
    return _depthwise_op(net, name, x, w_c1kk, bias, stride, out_hw, FUSED_ACTIVATIONS[activation], f"{name}_")


def _depthwise_op(net: FloatNet, name: str, x: int, w_c1kk: np.ndarray, bias: np.ndarray, stride: int,
                  out_hw: int, activation: int, weights_prefix: str) -> int:
    """One DEPTHWISE_CONV_2D with `activation` fused; its weights are `<prefix>w` and `<prefix>b`."""
    w = net.weights(f"{weights_prefix}w", w_c1kk.transpose(1, 2, 3, 0), channel_dim=3)  # [1, k, k, C]
    b = net.bias(f"{weights_prefix}b", bias, x, w)
    role = net.relu6_range(name) if activation == fb.ACT_RELU6 else net.ranges.get(name)
    y = net.act(name, (1, out_hw, out_hw, w_c1kk.shape[0]), role)
    net.w.op(fb.OP_DEPTHWISE_CONV_2D, [x, w, b], [y], fb.depthwise_options(stride, activation))
    return y


def fully_connected(net: FloatNet, name: str, x: int, w: np.ndarray, bias: np.ndarray | None,
                    out_shape: Sequence[int], activation: int, keep_num_dims: bool = False) -> int:
    """A FULLY_CONNECTED (per-tensor weights [out, in]) with `activation` fused; its output is `name`."""
    wt = net.weights(f"{name}.w", w, channel_dim=None)
    bt = net.bias(f"{name}.b", bias, x, wt) if bias is not None else -1
    y = net.act(name, out_shape, net.ranges.get(name))
    net.w.op(fb.OP_FULLY_CONNECTED, [x, wt, bt], [y], fb.fully_connected_options(activation, keep_num_dims))
    return y
