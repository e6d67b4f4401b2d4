"""TFLite writers of the MobileNet-V3 block kinds: inverted residuals with SE and h-swish.

The kinds are those of build_onnx_mbv3, with the same weights and arithmetic. The
squeeze-excitation is MEAN over H and W (kept as [1, 1, 1, hidden]), a 1x1 CONV_2D with ReLU
fused, a 1x1 CONV_2D whose bias carries the hard-sigmoid's +3 with ReLU6 fused, a MUL by 1/6
(the gate, in [0, 1]), and a MUL of the hidden tensor by the gate broadcast over H and W.
h-swish is the HARD_SWISH builtin. In int8 every tensor has its own calibrated range
(int8_calibration_mbv3 names the roles); the pooled means share their input's.
"""

from __future__ import annotations

import numpy as np

from . import tflite_schema as fb
from .build_tflite_ops import (
    FUSED_ACTIVATIONS,
    FloatNet,
    conv2d,
    conv_act,
    depthwise_conv,
    fully_connected,
    hard_swish,
    register_block,
)
from .spaces import BlockSpec
from .weights import BlockWeights

HARD_SIGMOID_OFFSET = 3.0  # relu6(x + 3) / 6


def _mean_hw(net: FloatNet, name: str, x: int, keep_dims: bool) -> int:
    """MEAN of an NHWC tensor over H and W, quantised like its input."""
    channels = net.w.shape_of(x)[-1]
    axes = net.w.constant(f"{name}.axes", np.array([1, 2], dtype=np.int32))
    y = net.act(name, (1, 1, 1, channels) if keep_dims else (1, channels), like=x)
    net.w.op(fb.OP_MEAN, [x, axes], [y], fb.reducer_options(keep_dims))
    return y


def squeeze_excite(net: FloatNet, b: BlockSpec, wts: BlockWeights, z: int) -> int:
    """z times its squeeze-excitation gate (module docstring)."""
    pooled = _mean_hw(net, f"{b.name}.se.pool", z, keep_dims=True)
    reduced = conv2d(net, f"{b.name}.se.reduce", pooled, wts["se_w1"], wts["se_b1"], 1, 1, fb.ACT_RELU)
    shifted = conv2d(net, f"{b.name}.se.relu6", reduced, wts["se_w2"], wts["se_b2"] + np.float32(HARD_SIGMOID_OFFSET),
                     1, 1, fb.ACT_RELU6)
    sixth = net.weights(f"{b.name}.se.sixth", np.array([1.0 / 6.0], dtype=np.float32), channel_dim=None)
    gate = net.act(f"{b.name}.se.gate", net.w.shape_of(shifted), net.ranges.get(f"{b.name}.se.gate"))
    net.w.op(fb.OP_MUL, [shifted, sixth], [gate], fb.mul_options())
    out = net.act(f"{b.name}.se", net.w.shape_of(z), net.ranges.get(f"{b.name}.se"))
    net.w.op(fb.OP_MUL, [z, gate], [out], fb.mul_options())
    return out


def expand_depthwise_se(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    """The expansion 1x1 and the depthwise, each with the block's activation, then SE if the block has it."""
    y = conv_act(net, f"{b.name}.ex", x, wts["ex_w"], wts["ex_b"], 1, b.in_hw, b.activation)
    z = depthwise_conv(net, f"{b.name}.dw", y, wts["dw_w"], wts["dw_b"], b.stride, b.out_hw, b.activation)
    return squeeze_excite(net, b, wts, z) if b.se else z


@register_block("mb_expand")
def _write_mb_expand(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return expand_depthwise_se(net, b, wts, x)


@register_block("mb_block")
def _write_mb_block(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    z = expand_depthwise_se(net, b, wts, x)
    return conv2d(net, f"{b.name}.pw", z, wts["pw_w"], wts["pw_b"], 1, b.out_hw, fb.ACT_NONE)  # the Add follows


@register_block("identity")
def _write_identity(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    return x


@register_block("pool_mix_fc")
def _write_pool_mix_fc(net: FloatNet, b: BlockSpec, wts: BlockWeights, x: int) -> int:
    pooled = _mean_hw(net, f"{b.name}.pool", x, keep_dims=False)
    name, shape = f"{b.name}.mix", (1, b.hidden)
    if b.activation == "hswish":
        linear = fully_connected(net, f"{name}.lin", pooled, wts["w1"], wts["b1"], shape, fb.ACT_NONE)
        mixed = hard_swish(net, name, linear)
    else:
        mixed = fully_connected(net, name, pooled, wts["w1"], wts["b1"], shape, FUSED_ACTIVATIONS[b.activation])
    return fully_connected(net, f"{b.name}.logits", mixed, wts["w2"], wts["b2"], (1, b.cout), fb.ACT_NONE)
