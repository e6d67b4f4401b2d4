"""Build a space's network as ONNX bytes from its widths, without the `onnx` package.

Each block kind has an emitter (a registry, like fvcore's per-operator handlers) that
appends its nodes and initialisers to the graph; weights come from the agent's weights module,
so the same seed gives the same network as the TFLite builder. A block with a residual
adds the input of an earlier block to its output (`BlockSpec.residual_from`), whatever its
kind. `build_onnx_network` makes a model of any `Network` (device_agents.network): the
whole network, or a run of its blocks alone for isolated-block timing. Padding is SAME everywhere
(TensorFlow's convention: the extra pixel, if any, goes at the end), no final softmax.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import __version__, onnx_proto
from .errors import RuntimeUnavailable, UnknownSpace
from .network import INPUT_NAME, Network, isolated_network, skip_input_name, whole_network
from .spaces import BlockSpec, Space, kind_registry
from .weights import block_weights

OPSET = 13
OUTPUT_NAME = "logits"


class GraphBuilder:
    """Accumulates the nodes and initialisers of one graph, naming every value uniquely."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str, list[str], str, dict]] = []  # (op_type, inputs, output, attrs)
        self.initializers: list[onnx_proto.Message] = []
        self._constants: set[str] = set()
        self._counter = 0

    def const(self, name: str, array: np.ndarray) -> str:
        """Add an initialiser (once per name) and return its name."""
        if name not in self._constants:
            self._constants.add(name)
            self.initializers.append(onnx_proto.tensor(name, array))
        return name

    def op(self, op_type: str, inputs: Sequence[str], *, out: str | None = None, **attrs: object) -> str:
        """Append a node and return the name of its (single) output."""
        self._counter += 1
        output = out or f"{op_type.lower()}_{self._counter}"
        self.nodes.append((op_type, list(inputs), output, attrs))
        return output

    def rename_last_output(self, name: str) -> str:
        """Give the last node's output a fixed name (the graph output); nothing reads it yet."""
        op_type, inputs, _, attrs = self.nodes[-1]
        self.nodes[-1] = (op_type, inputs, name, attrs)
        return name

    def node_messages(self) -> list[onnx_proto.Message]:
        """The nodes as NodeProto messages, in the order they were added."""
        return [
            onnx_proto.node(op_type, inputs, [output], name=f"{op_type}_{k}", **attrs)
            for k, (op_type, inputs, output, attrs) in enumerate(self.nodes)
        ]

    def relu6(self, x: str) -> str:
        """Clip to [0, 6] (opset 13 takes the bounds as inputs)."""
        lo = self.const("relu6_min", np.array(0.0, dtype=np.float32))
        hi = self.const("relu6_max", np.array(6.0, dtype=np.float32))
        return self.op("Clip", [x, lo, hi])


Emitter = Callable[[GraphBuilder, BlockSpec, dict, str], str]
EMITTERS: dict[str, Emitter] = {}


register_emitter = kind_registry(EMITTERS)  # @register_emitter("kind"): the ONNX emitter of a kind


def same_pads(in_hw: int, stride: int, kernel: int) -> list[int]:
    """ONNX `pads` [top, left, bottom, right] giving TensorFlow SAME output ceil(in/stride)."""
    out_hw = -(-in_hw // stride)
    total = max((out_hw - 1) * stride + kernel - in_hw, 0)
    begin = total // 2
    return [begin, begin, total - begin, total - begin]


def _conv(g: GraphBuilder, x: str, w: str, b: str, b_spec: BlockSpec, *, kernel: int, stride: int, group: int) -> str:
    return g.op(
        "Conv",
        [x, w, b],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=same_pads(b_spec.in_hw, stride, kernel) if kernel > 1 else [0, 0, 0, 0],
        group=group,
    )


@register_emitter("conv")
def _emit_conv(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    w = g.const(f"{b.name}.w", wts["w"])
    bias = g.const(f"{b.name}.b", wts["b"])
    return g.relu6(_conv(g, x, w, bias, b, kernel=b.kernel, stride=b.stride, group=1))


def _depthwise_pointwise(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    """Depthwise k x k on cin channels + ReLU6, then the 1x1 pointwise, before any activation."""
    dw_w = g.const(f"{b.name}.dw_w", wts["dw_w"])
    dw_b = g.const(f"{b.name}.dw_b", wts["dw_b"])
    y = g.relu6(_conv(g, x, dw_w, dw_b, b, kernel=b.kernel, stride=b.stride, group=b.cin))
    pw_w = g.const(f"{b.name}.pw_w", wts["pw_w"])
    pw_b = g.const(f"{b.name}.pw_b", wts["pw_b"])
    return _conv(g, y, pw_w, pw_b, b, kernel=1, stride=1, group=1)


@register_emitter("dwsep")
def _emit_dwsep(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    return g.relu6(_depthwise_pointwise(g, b, wts, x))


@register_emitter("ir_dwproject")
def _emit_ir_dwproject(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    return _depthwise_pointwise(g, b, wts, x)  # a linear projection: no activation


@register_emitter("ir_expand")
def _emit_ir_expand(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    ex_w = g.const(f"{b.name}.ex_w", wts["ex_w"])
    ex_b = g.const(f"{b.name}.ex_b", wts["ex_b"])
    y = g.relu6(_conv(g, x, ex_w, ex_b, b, kernel=1, stride=1, group=1))
    dw_w = g.const(f"{b.name}.dw_w", wts["dw_w"])
    dw_b = g.const(f"{b.name}.dw_b", wts["dw_b"])
    return g.relu6(_conv(g, y, dw_w, dw_b, b, kernel=b.kernel, stride=b.stride, group=b.hidden))


@register_emitter("ir_project")
def _emit_ir_project(g: GraphBuilder, b: BlockSpec, wts: dict, x: str) -> str:
    pw_w = g.const(f"{b.name}.pw_w", wts["pw_w"])
    pw_b = g.const(f"{b.name}.pw_b", wts["pw_b"])
    return _conv(g, x, pw_w, pw_b, b, kernel=1, stride=1, group=1)  # linear; the residual Add follows


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
        block_inputs[b.index] = x
        x = emitter(g, b, block_weights(b, seed), x)
        if b.residual:  # the structural Add: this block's output plus an earlier block's input
            x = g.op("Add", [x, block_inputs[b.residual_from]])
    g.rename_last_output(OUTPUT_NAME)
    graph = onnx_proto.graph(
        net.name,
        g.node_messages(),
        inputs=inputs,
        outputs=[onnx_proto.value_info(OUTPUT_NAME, "float32", net.output_shape)],
        initializers=g.initializers,
    )
    return onnx_proto.model(graph, opset=OPSET, producer_version=__version__)
