"""ONNX emitters of the MobileNet-V3 block kinds: inverted residuals with SE and h-swish.

  mb_expand    1x1 cin -> hidden + activation, depthwise k x k (stride s) + activation, SE if `se`
  mb_block     the same at stride 1, then a linear 1x1 hidden -> cout; the residual Add follows
  identity     a skipped block: nothing (its output is its input)
  pool_mix_fc  global average pool, dense cin -> hidden + activation, dense hidden -> cout

The squeeze-excitation gates the hidden tensor: GlobalAveragePool, 1x1 + ReLU, 1x1,
HardSigmoid (alpha 1/6, beta 1/2: relu6(x + 3) / 6), Mul broadcast over H and W.
"""

from __future__ import annotations

from .build_onnx_graph import GraphBuilder, conv_node, register_emitter
from .spaces import BlockSpec

HARD_SIGMOID = {"alpha": 1.0 / 6.0, "beta": 0.5}  # relu6(x + 3) / 6


def squeeze_excite(g: GraphBuilder, b: BlockSpec, wts: dict, z: str) -> str:
    """z times its squeeze-excitation gate (module docstring)."""
    pooled = g.op("GlobalAveragePool", [z])  # [1, hidden, 1, 1]
    w1, b1 = g.const(f"{b.name}.se_w1", wts["se_w1"]), g.const(f"{b.name}.se_b1", wts["se_b1"])
    reduced = g.op("Relu", [conv_node(g, pooled, w1, b1, b, kernel=1, stride=1, group=1)])
    w2, b2 = g.const(f"{b.name}.se_w2", wts["se_w2"]), g.const(f"{b.name}.se_b2", wts["se_b2"])
    gate = g.op("HardSigmoid", [conv_node(g, reduced, w2, b2, b, kernel=1, stride=1, group=1)], **HARD_SIGMOID)
    return g.op("Mul", [z, gate])


def expand_depthwise_se(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    """The expansion 1x1 and the depthwise, each with the block's activation, then SE if the block has it."""
    ex_w, ex_b = g.const(f"{b.name}.ex_w", wts["ex_w"]), g.const(f"{b.name}.ex_b", wts["ex_b"])
    y = g.activation(conv_node(g, x, ex_w, ex_b, b, kernel=1, stride=1, group=1), b.activation)
    dw_w, dw_b = g.const(f"{b.name}.dw_w", wts["dw_w"]), g.const(f"{b.name}.dw_b", wts["dw_b"])
    z = g.activation(conv_node(g, y, dw_w, dw_b, b, kernel=b.kernel, stride=b.stride, group=b.hidden), b.activation)
    return squeeze_excite(g, b, wts, z) if b.se else z


@register_emitter("mb_expand")
def _emit_mb_expand(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    return expand_depthwise_se(g, b, wts, x)


@register_emitter("mb_block")
def _emit_mb_block(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    z = expand_depthwise_se(g, b, wts, x)
    pw_w, pw_b = g.const(f"{b.name}.pw_w", wts["pw_w"]), g.const(f"{b.name}.pw_b", wts["pw_b"])
    return conv_node(g, z, pw_w, pw_b, b, kernel=1, stride=1, group=1)  # linear; the residual Add follows


@register_emitter("identity")
def _emit_identity(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    return x


@register_emitter("pool_mix_fc")
def _emit_pool_mix_fc(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w1, b1 = g.const(f"{b.name}.w1", wts["w1"]), g.const(f"{b.name}.b1", wts["b1"])
    mixed = g.activation(g.op("Gemm", [pooled, w1, b1], transB=1), b.activation)
    w2, b2 = g.const(f"{b.name}.w2", wts["w2"]), g.const(f"{b.name}.b2", wts["b2"])
    return g.op("Gemm", [mixed, w2, b2], transB=1)
