"""The ONNX graph under construction and the registry of per-kind emitters (build_onnx).

`GraphBuilder` names every value, keeps initialisers once per name, and raises the model's
opset only when an operator needs a later one (HardSwish: opset 14). An emitter appends one
block's nodes and returns its output value; `conv_node` is the SAME-padded Conv they share.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import onnx_proto
from .block_kinds import ACTIVATIONS, BlockSpec, kind_registry
from .errors import UnknownSpace

OPSET = 13
HARDSWISH_OPSET = 14  # HardSwish is an ONNX operator from opset 14


class GraphBuilder:
    """Accumulates the nodes and initialisers of one graph, naming every value uniquely."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str, list[str], str, dict]] = []  # (op_type, inputs, output, attrs)
        self.initializers: list[onnx_proto.Message] = []
        self._constants: set[str] = set()
        self._counter = 0
        self.opset = OPSET  # raised by operators that need a later one

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

    def activation(self, x: str, activation: str) -> str:
        """A block's non-linearity: ReLU6, ReLU or h-swish (HardSwish, raising the opset to 14)."""
        if activation == "relu6":
            return self.relu6(x)
        if activation == "relu":
            return self.op("Relu", [x])
        if activation == "hswish":
            self.opset = max(self.opset, HARDSWISH_OPSET)
            return self.op("HardSwish", [x])
        raise UnknownSpace(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}", activation=activation)


Emitter = Callable[[GraphBuilder, BlockSpec, dict, str], str]
EMITTERS: dict[str, Emitter] = {}


register_emitter = kind_registry(EMITTERS)  # @register_emitter("kind"): the ONNX emitter of a kind


def same_pads(in_hw: int, stride: int, kernel: int) -> list[int]:
    """ONNX `pads` [top, left, bottom, right] giving TensorFlow SAME output ceil(in/stride)."""
    out_hw = -(-in_hw // stride)
    total = max((out_hw - 1) * stride + kernel - in_hw, 0)
    begin = total // 2
    return [begin, begin, total - begin, total - begin]


def conv_node(g: GraphBuilder, x: str, w: str, b: str, b_spec: BlockSpec, *, kernel: int, stride: int,
              group: int) -> str:
    """A Conv node with SAME padding for block `b_spec`'s input size (grouped: depthwise)."""
    return g.op(
        "Conv",
        [x, w, b],
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=same_pads(b_spec.in_hw, stride, kernel) if kernel > 1 else [0, 0, 0, 0],
        group=group,
    )
