"""The ONNX check in-process: where else in a model a tensor can hide, and bytes that are no model.

The attacks through a real agent process are in test_hostile_requests.py.
"""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from widthwise.device_agents.errors import BadModel, ExternalDataRefused
from widthwise.device_agents.model_check import MAX_GRAPH_DEPTH, check_onnx
from tests.support.onnx_models import external_tensor, onnx_model


def test_tensors_in_functions_and_training_graphs_are_found():
    function = helper.make_function(
        "local", "F", ["a"], ["b"], [helper.make_node("Constant", [], ["b"], value=external_tensor("in_function", "t"))],
        [helper.make_opsetid("", 17)],
    )
    model = helper.make_model(
        helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]),
        functions=[function], opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )
    with pytest.raises(ExternalDataRefused, match="'in_function' at functions\\[0\\].node\\[0\\].attribute\\[0\\].t"):
        check_onnx(model.SerializeToString())
    training = onnx.TrainingInfoProto()
    training.algorithm.CopyFrom(helper.make_graph([], "a", [], [], initializer=[external_tensor("in_training", "t")]))
    plain = onnx.load_from_string(reshape_tflite_free_model())
    plain.training_info.append(training)
    with pytest.raises(ExternalDataRefused, match="'in_training' at training_info\\[0\\].algorithm.initializer\\[0\\]"):
        check_onnx(plain.SerializeToString())


def reshape_tflite_free_model() -> bytes:
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2])
    return onnx_model([helper.make_node("Reshape", ["x", "shape"], ["y"])], [shape])


def test_a_data_location_alone_or_an_entry_alone_is_external():
    model = onnx.load_from_string(reshape_tflite_free_model())
    check_onnx(model.SerializeToString())  # self-contained: accepted
    model.graph.initializer[0].data_location = TensorProto.EXTERNAL
    with pytest.raises(ExternalDataRefused, match="'shape'"):
        check_onnx(model.SerializeToString())
    model.graph.initializer[0].data_location = TensorProto.DEFAULT
    model.graph.initializer[0].external_data.add(key="location", value="elsewhere")
    with pytest.raises(ExternalDataRefused, match="'shape'"):
        check_onnx(model.SerializeToString())


def test_subgraphs_nested_too_deep_are_refused():
    graph = helper.make_graph([], "leaf", [], [])
    for _ in range(MAX_GRAPH_DEPTH + 1):
        leaf = helper.make_graph([], "leaf", [], [])
        graph = helper.make_graph([helper.make_node("If", ["c"], ["o"], then_branch=graph, else_branch=leaf)], "g", [], [])
    model = helper.make_model(graph).SerializeToString()
    with pytest.raises(BadModel, match=f"more than {MAX_GRAPH_DEPTH} deep"):
        check_onnx(model)


@pytest.mark.parametrize("junk", [b"this is not a model", b"\x00" * 64, b"\x3a\xff\xff\xff\xff\x0f", b"\x08\xff"])
def test_bytes_that_are_not_protobuf_are_a_bad_model(junk):
    with pytest.raises(BadModel, match="not a valid ONNX protobuf") as exc:
        check_onnx(junk)
    assert not isinstance(exc.value, ExternalDataRefused)
