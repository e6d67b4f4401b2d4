"""The ONNX graph builder: activations as operators, and the opset a model declares."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from widthwise.device_agents import onnx_proto
from widthwise.device_agents.build_onnx_graph import HARDSWISH_OPSET, OPSET, GraphBuilder
from widthwise.device_agents.errors import UnknownSpace


def _model(activation: str) -> tuple[GraphBuilder, bytes]:
    g = GraphBuilder()
    g.activation("x", activation)
    g.rename_last_output("y")
    graph = onnx_proto.graph("t", g.node_messages(), inputs=[onnx_proto.value_info("x", "float32", (1, 5))],
                             outputs=[onnx_proto.value_info("y", "float32", (1, 5))], initializers=g.initializers)
    return g, onnx_proto.model(graph, opset=g.opset)


@pytest.mark.parametrize("activation, op, opset, expected", [
    ("relu6", "Clip", OPSET, [0.0, 0.0, 0.5, 6.0, 6.0]),
    ("relu", "Relu", OPSET, [0.0, 0.0, 0.5, 6.0, 8.0]),
    ("hswish", "HardSwish", HARDSWISH_OPSET, [0.0, -0.375, 0.5 * 3.5 / 6, 6.0, 8.0]),
])
def test_each_activation_is_one_operator_and_raises_the_opset_only_when_needed(activation, op, opset, expected):
    g, model = _model(activation)
    proto = onnx.load_from_string(model)
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == [op] and proto.opset_import[0].version == opset == g.opset
    x = np.array([[-4.0, -1.5, 0.5, 6.0, 8.0]], dtype=np.float32)
    (y,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y[0], expected, rtol=1e-6, atol=1e-6)


def test_an_unknown_activation_is_refused():
    with pytest.raises(UnknownSpace, match="unknown activation 'elu'; known: relu6, relu, hswish"):
        GraphBuilder().activation("x", "elu")
