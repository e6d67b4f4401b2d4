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

A block's activation is fused into its convolution (ReLU6, ReLU) or, for h-swish, a
HARD_SWISH operator after the linear convolution (whose output is `<name>.lin`). The
MobileNet-V3 kinds (squeeze-excitation, h-swish) are in build_tflite_mbv3.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import tflite_schema as fb
from . import build_tflite_mbv3  # noqa: F401  (registers the MobileNet-V3 kinds in BLOCK_WRITERS)
from .build_checks import check_activation
from .build_tflite_ops import (
    BLOCK_WRITERS,
    NETS,
    OUTPUT_NAME,
    FloatNet,
    Int8Net,
    activation_quant,
    conv2d,
    conv_act,
    depthwise_conv,
    fully_connected,
    register_block,
)
from .errors import BadRequest, UnknownSpace
from .int8_calibration import network_ranges
from .network import Network, isolated_network, skip_input_name, whole_network
from .spaces import BlockSpec, Space
from .weights import BlockWeights, block_weights

__all__ = ["BLOCK_WRITERS", "NETS", "OUTPUT_NAME", "FloatNet", "Int8Net", "activation_quant", "build_tflite",
           "build_tflite_network", "nhwc", "register_block", "tflite_input_shape"]


@register_block("conv")
def _write_conv(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return conv_act(net, b.name, x, wts["w"], wts["b"], b.stride, b.out_hw, b.activation)


@register_block("dwsep")
def _write_dwsep(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    y = depthwise_conv(net, f"{b.name}.dw", x, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw, b.activation)
    return conv_act(net, f"{b.name}.pw", y, wts["pw_w"], wts["pw_b"], 1, b.out_hw, b.activation)


@register_block("ir_dwproject")
def _write_ir_dwproject(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    y = depthwise_conv(net, f"{b.name}.dw", x, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw, b.activation)
    return conv2d(net, f"{b.name}.pw", y, wts["pw_w"], wts["pw_b"], 1, b.out_hw, fb.ACT_NONE)


@register_block("ir_expand")
def _write_ir_expand(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    y = conv_act(net, f"{b.name}.ex", x, wts["ex_w"], wts["ex_b"], 1, b.in_hw, b.activation)
    return depthwise_conv(net, f"{b.name}.dw", y, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw, b.activation)


@register_block("ir_project")
def _write_ir_project(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return conv2d(net, f"{b.name}.pw", x, wts["pw_w"], wts["pw_b"], 1, b.out_hw, fb.ACT_NONE)


def _residual_add(net: FloatNet, b: BlockSpec, x: int, skip: int) -> int:
    """The structural Add closing a residual block; int8 gives it its own calibrated range."""
    name = f"{b.name}.add"
    y = net.act(name, net.w.shape_of(x), net.ranges.get(name))
    net.w.op(fb.OP_ADD, [x, skip], [y], fb.add_options())
    return y


@register_block("pool_fc")
def _write_pool_fc(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    pooled = net.act(f"{b.name}.pool", (1, 1, 1, b.cin), like=x)
    net.w.op(fb.OP_AVERAGE_POOL_2D, [x], [pooled], fb.pool2d_options(b.in_hw))
    shape = net.w.constant(f"{b.name}.shape", np.array([1, b.cin], dtype=np.int32))
    flat = net.act(f"{b.name}.flat", (1, b.cin), like=pooled)
    net.w.op(fb.OP_RESHAPE, [pooled, shape], [flat], fb.reshape_options([1, b.cin]))
    return fully_connected(net, f"{b.name}.logits", flat, wts["w"], wts["b"], (1, b.cout), fb.ACT_NONE)


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
    projected = fully_connected(net, f"{b.name}.projected", x, wts["proj"].T, None, (1, tokens, dim),
                                fb.ACT_NONE, keep_num_dims=True)
    axis = net.w.constant(f"{b.name}.axis", np.array([1], dtype=np.int32))
    mean = net.act(f"{b.name}.mean", (1, dim), net.ranges.get(f"{b.name}.mean"))
    net.w.op(fb.OP_MEAN, [projected, axis], [mean], fb.reducer_options(False))
    return fully_connected(net, f"{b.name}.hidden", mean, wts["w"], wts["b"], (1, b.cout), fb.ACT_RELU)


@register_block("dense")
def _write_dense(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return fully_connected(net, f"{b.name}.logits", x, wts["w"], wts["b"], (1, b.cout), fb.ACT_NONE)


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
        check_activation(b)
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
    if x in graph_inputs:  # the output is an input (a run of skipped blocks): a copy, as a RESHAPE
        x = copy_tensor(tf, x)
    return writer.finish(graph_inputs, [tf.model_output(x)])


def copy_tensor(net: FloatNet, x: int) -> int:
    """A new tensor equal to x (a RESHAPE to its own shape), quantised like it."""
    shape = net.w.shape_of(x)
    target = net.w.constant("copy.shape", np.array(shape, dtype=np.int32))
    y = net.act("copy", shape, like=x)
    net.w.op(fb.OP_RESHAPE, [x, target], [y], fb.reshape_options(shape))
    return y
