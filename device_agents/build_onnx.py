"""Build a space's network as ONNX bytes from its widths, without the `onnx` package.

Each block kind has an emitter (a registry, like fvcore's per-operator handlers) that
appends its nodes and initialisers to the graph; weights come from the agent's weights module,
so the same seed gives the same network as the TFLite builder. A block with a residual
adds the input of an earlier block to its output (`BlockSpec.residual_from`), whatever its
kind. `build_onnx_network` makes a model of any `Network` (device_agents.network): the
whole network, or a run of its blocks alone for isolated-block timing. Padding is SAME everywhere
(TensorFlow's convention: the extra pixel, if any, goes at the end), no final softmax.
A block's activation is ReLU6 (Clip), ReLU or h-swish (HardSwish, which ONNX has from opset
14 on: a model declares opset 14 only when it uses it, so every other model keeps opset 13).
The MobileNet-V3 kinds (squeeze-excitation, h-swish) are in build_onnx_mbv3.
"""

from __future__ import annotations

from typing import Sequence

from . import __version__, onnx_proto
from . import build_onnx_mbv3  # noqa: F401  (registers the MobileNet-V3 kinds in EMITTERS)
from .build_checks import check_activation
from .build_onnx_graph import EMITTERS, OPSET, GraphBuilder, conv_node, register_emitter, same_pads
from .errors import RuntimeUnavailable, UnknownSpace
from .network import INPUT_NAME, Network, isolated_network, skip_input_name, whole_network
from .spaces import BlockSpec, Space
from .weights import block_weights

__all__ = ["EMITTERS", "OPSET", "OUTPUT_NAME", "GraphBuilder", "build_onnx", "build_onnx_network", "conv_node",
           "register_emitter", "same_pads"]

OUTPUT_NAME = "logits"


@register_emitter("conv")
def _emit_conv(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    w = g.const(f"{b.name}.w", wts["w"])
    bias = g.const(f"{b.name}.b", wts["b"])
    return g.activation(conv_node(g, x, w, bias, b, kernel=b.kernel, stride=b.stride, group=1), b.activation)


def _depthwise_pointwise(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    """Depthwise k x k on cin channels + activation, then the 1x1 pointwise, before any activation."""
    dw_w = g.const(f"{b.name}.dw_w", wts["dw_w"])
    dw_b = g.const(f"{b.name}.dw_b", wts["dw_b"])
    y = g.activation(conv_node(g, x, dw_w, dw_b, b, kernel=b.kernel, stride=b.stride, group=b.cin), b.activation)
    pw_w = g.const(f"{b.name}.pw_w", wts["pw_w"])
    pw_b = g.const(f"{b.name}.pw_b", wts["pw_b"])
    return conv_node(g, y, pw_w, pw_b, b, kernel=1, stride=1, group=1)


@register_emitter("dwsep")
def _emit_dwsep(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    return g.activation(_depthwise_pointwise(g, b, wts, x), b.activation)


@register_emitter("ir_dwproject")
def _emit_ir_dwproject(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    return _depthwise_pointwise(g, b, wts, x)  # a linear projection: no activation


@register_emitter("ir_expand")
def _emit_ir_expand(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    ex_w = g.const(f"{b.name}.ex_w", wts["ex_w"])
    ex_b = g.const(f"{b.name}.ex_b", wts["ex_b"])
    y = g.activation(conv_node(g, x, ex_w, ex_b, b, kernel=1, stride=1, group=1), b.activation)
    dw_w = g.const(f"{b.name}.dw_w", wts["dw_w"])
    dw_b = g.const(f"{b.name}.dw_b", wts["dw_b"])
    return g.activation(conv_node(g, y, dw_w, dw_b, b, kernel=b.kernel, stride=b.stride, group=b.hidden), b.activation)


@register_emitter("ir_project")
def _emit_ir_project(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    pw_w = g.const(f"{b.name}.pw_w", wts["pw_w"])
    pw_b = g.const(f"{b.name}.pw_b", wts["pw_b"])
    return conv_node(g, x, pw_w, pw_b, b, kernel=1, stride=1, group=1)  # linear; the residual Add follows


@register_emitter("pool_fc")
def _emit_pool_fc(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.const(f"{b.name}.w", wts["w"])
    bias = g.const(f"{b.name}.b", wts["b"])
    return g.op("Gemm", [pooled, w, bias], transB=1)


@register_emitter("embedding")
def _emit_embedding(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    table = g.const(f"{b.name}.table", wts["table"])
    return g.op("Gather", [table, x], axis=0)  # [1, tokens, r]


@register_emitter("proj_dense")
def _emit_proj_dense(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    proj = g.const(f"{b.name}.proj", wts["proj"])
    projected = g.op("MatMul", [x, proj])  # [1, tokens, dim]
    mean = g.op("ReduceMean", [projected], axes=[1], keepdims=0)  # [1, dim]
    w = g.const(f"{b.name}.w", wts["w"])
    bias = g.const(f"{b.name}.b", wts["b"])
    return g.op("Relu", [g.op("Gemm", [mean, w, bias], transB=1)])


@register_emitter("dense")
def _emit_dense(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    w = g.const(f"{b.name}.w", wts["w"])
    bias = g.const(f"{b.name}.b", wts["b"])
    return g.op("Gemm", [x, w, bias], transB=1)


def build_onnx(space: Space, widths: Sequence[int], *, dtype: str = "float32", seed: int = 0,
               blocks: tuple[int, int] | None = None) -> bytes:
    """The network of `space` with these widths as a serialised ONNX model (float32 only);
    with `blocks` = (first, count), that run of blocks alone (device_agents.network)."""
    net = whole_network(space, widths) if blocks is None else isolated_network(space, widths, *blocks)
    return build_onnx_network(net, dtype=dtype, seed=seed)


def build_onnx_network(net: Network, *, dtype: str = "float32", seed: int = 0) -> bytes:
    """A `Network` (blocks and the tensors fed to them) as a serialised ONNX model."""
    if dtype != "float32":
        raise RuntimeUnavailable(
            f"the ONNX builder makes float32 networks only, not {dtype!r}; "
            "int8 networks are built for the TFLite runtimes (runtime 'litert' or 'tflite')",
            dtype=dtype,
        )
    g = GraphBuilder()
    x = INPUT_NAME
    inputs = [onnx_proto.value_info(INPUT_NAME, net.input_dtype, net.input_shape)]
    block_inputs: dict[int, str] = {}  # block index -> the value its input is (read by residual Adds)
    for index, shape in net.skips:
        block_inputs[index] = skip_input_name(index)
        inputs.append(onnx_proto.value_info(skip_input_name(index), "float32", shape))
    for b in net.blocks:
        emitter = EMITTERS.get(b.kind)
        if emitter is None:
            raise UnknownSpace(f"the ONNX builder has no emitter for block kind {b.kind!r}", kind=b.kind)
        check_activation(b)
        block_inputs[b.index] = x
        x = emitter(g, b, block_weights(b, seed), x)
        if b.residual:  # the structural Add: this block's output plus an earlier block's input
            x = g.op("Add", [x, block_inputs[b.residual_from]])
    if not g.nodes or g.nodes[-1][2] != x:  # the network's output is an input (a run of skipped blocks)
        g.op("Identity", [x])
    g.rename_last_output(OUTPUT_NAME)
    graph = onnx_proto.graph(
        net.name,
        g.node_messages(),
        inputs=inputs,
        outputs=[onnx_proto.value_info(OUTPUT_NAME, "float32", net.output_shape)],
        initializers=g.initializers,
    )
    return onnx_proto.model(graph, opset=g.opset, producer_version=__version__)
