"""Build a space's network as a .tflite file (float32 or int8), in pure Python.

The agent writes TFLite models itself from the space definition, so a board needs no
TensorFlow: one writer per block kind (a registry) appends operators to a
`tflite_schema.ModelWriter`; weights come from the agent's weights module, so a seed gives
the same network as the ONNX builder (same arithmetic: SAME padding with the odd pixel
at the end, no final softmax, logits out). Images are NHWC here (TFLite's layout).
`build_tflite_network` makes a model of any `Network` (device_agents.network): the whole
network, or a run of its blocks alone for isolated-block timing.

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
from .int8_calibration import network_ranges
from .network import INPUT_NAME, Network, isolated_network, skip_input_name, whole_network
from .weights import BlockWeights, block_weights

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


def _conv(net: FloatNet, name: str, x: int, w_oihw: np.ndarray, bias: np.ndarray, stride: int, out_hw: int,
          activation: int = fb.ACT_RELU6) -> int:
    """A dense convolution (OHWI weights) with ReLU6 fused, or linear when `activation` is ACT_NONE."""
    w = net.weights(f"{name}.w", w_oihw.transpose(0, 2, 3, 1), channel_dim=0)  # OHWI
    b = net.bias(f"{name}.b", bias, x, w)
    role = net.relu6_range(name) if activation == fb.ACT_RELU6 else net.ranges.get(name)
    y = net.act(name, (1, out_hw, out_hw, w_oihw.shape[0]), role)
    net.w.op(fb.OP_CONV_2D, [x, w, b], [y], fb.conv2d_options(stride, activation))
    return y


def _depthwise(net: FloatNet, name: str, x: int, w_c1kk: np.ndarray, bias: np.ndarray, stride: int,
               out_hw: int) -> int:
    """A depthwise convolution ([1, k, k, C] weights) with ReLU6 fused."""
    w = net.weights(f"{name}_w", w_c1kk.transpose(1, 2, 3, 0), channel_dim=3)  # [1, k, k, C]
    b = net.bias(f"{name}_b", bias, x, w)
    y = net.act(name, (1, out_hw, out_hw, w_c1kk.shape[0]), net.relu6_range(name))
    net.w.op(fb.OP_DEPTHWISE_CONV_2D, [x, w, b], [y], fb.depthwise_options(stride, fb.ACT_RELU6))
    return y


@register_block("conv")
def _write_conv(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return _conv(net, b.name, x, wts["w"], wts["b"], b.stride, b.out_hw)


@register_block("dwsep")
def _write_dwsep(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    y = _depthwise(net, f"{b.name}.dw", x, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw)
    return _conv(net, f"{b.name}.pw", y, wts["pw_w"], wts["pw_b"], 1, b.out_hw)


@register_block("ir_dwproject")
def _write_ir_dwproject(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    y = _depthwise(net, f"{b.name}.dw", x, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw)
    return _conv(net, f"{b.name}.pw", y, wts["pw_w"], wts["pw_b"], 1, b.out_hw, fb.ACT_NONE)


@register_block("ir_expand")
def _write_ir_expand(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    y = _conv(net, f"{b.name}.ex", x, wts["ex_w"], wts["ex_b"], 1, b.in_hw)
    return _depthwise(net, f"{b.name}.dw", y, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw)


@register_block("ir_project")
def _write_ir_project(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return _conv(net, f"{b.name}.pw", x, wts["pw_w"], wts["pw_b"], 1, b.out_hw, fb.ACT_NONE)


def _residual_add(net: FloatNet, b: BlockSpec, x: int, skip: int) -> int:
    """The structural Add closing a residual block; int8 gives it its own calibrated range."""
    name = f"{b.name}.add"
    y = net.act(name, net.w.shape_of(x), net.ranges.get(name))
    net.w.op(fb.OP_ADD, [x, skip], [y], fb.add_options())
    return y


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


def nhwc(shape: Sequence[int]) -> tuple[int, ...]:
    """A 4-D NCHW shape as TFLite's NHWC; other shapes as they are."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n, h, w, c)
    return tuple(shape)


def tflite_input_shape(space: Space) -> tuple[int, ...]:
    """The model input's shape in TFLite: NHWC for images, the space's own shape otherwise."""
    return nhwc(space.input_shape)


def build_tflite(space: Space, widths: Sequence[int], *, dtype: str = "float32", seed: int = 0,
                 blocks: tuple[int, int] | None = None) -> bytes:
    """The network of `space` with these widths as .tflite bytes, float32 or int8 (float in/out);
    with `blocks` = (first, count), that run of blocks alone (device_agents.network)."""
    net = whole_network(space, widths) if blocks is None else isolated_network(space, widths, *blocks)
    return build_tflite_network(net, dtype=dtype, seed=seed)


def build_tflite_network(net: Network, *, dtype: str = "float32", seed: int = 0) -> bytes:
    """A `Network` (blocks and the tensors fed to them) as .tflite bytes, float32 or int8."""
    net_class = NETS.get(dtype)
    if net_class is None:
        raise BadRequest(f"unknown dtype {dtype!r} for a TFLite network; known: {', '.join(NETS)}", dtype=dtype)
    for b in net.blocks:
        if b.kind not in BLOCK_WRITERS:
            raise UnknownSpace(f"the TFLite builder has no writer for block kind {b.kind!r}", kind=b.kind)
    weights = [block_weights(b, seed) for b in net.blocks]
    ranges = network_ranges(net, weights, seed) if net_class is Int8Net else {}
    writer = fb.ModelWriter(f"widthwise {net.name} {dtype}")
    tf = net_class(writer, ranges)
    graph_input, x = tf.model_input(nhwc(net.input_shape), net.input_dtype)
    graph_inputs = [graph_input]
    block_inputs: dict[int, int] = {}  # block index -> the tensor its input is (read by residual Adds)
    for index, shape in net.skips:
        skip_input, block_inputs[index] = tf.model_input(nhwc(shape), "float32", skip_input_name(index))
        graph_inputs.append(skip_input)
    for b, wts in zip(net.blocks, weights):
        block_inputs[b.index] = x
        x = BLOCK_WRITERS[b.kind](tf, b, wts, x)
        if b.residual:  # the structural Add: this block's output plus an earlier block's input
            x = _residual_add(tf, b, x, block_inputs[b.residual_from])
    return writer.finish(graph_inputs, [tf.model_output(x)])
