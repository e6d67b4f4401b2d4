"""The hand-written ONNX protobuf writer, checked against the onnx package's own parser."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from widthwise.device_agents import onnx_proto


@pytest.mark.parametrize(
    "value, expected",
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"), (-1, b"\xff" * 9 + b"\x01")],
)
def test_varint_encoding(value, expected):
    assert onnx_proto.varint(value) == expected


def test_tensor_round_trips_through_onnx():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 7.5
    parsed = onnx.TensorProto.FromString(onnx_proto.tensor("w", arr).to_bytes())
    assert parsed.name == "w" and list(parsed.dims) == [2, 3, 4]
    assert parsed.data_type == onnx.TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(parsed), arr)
    ints = np.array([[-3, 5]], dtype=np.int64)
    parsed_ints = onnx.TensorProto.FromString(onnx_proto.tensor("i", ints).to_bytes())
    np.testing.assert_array_equal(numpy_helper.to_array(parsed_ints), ints)
    scalar = onnx.TensorProto.FromString(onnx_proto.tensor("s", np.array(6.0, dtype=np.float32)).to_bytes())
    assert list(scalar.dims) == [] and numpy_helper.to_array(scalar) == 6.0


def test_non_contiguous_array_is_written_in_c_order():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4).T
    parsed = onnx.TensorProto.FromString(onnx_proto.tensor("t", arr).to_bytes())
    np.testing.assert_array_equal(numpy_helper.to_array(parsed), arr)


def test_attributes_of_every_supported_type():
    cases = {
        "i": (7, onnx.AttributeProto.INT, lambda a: a.i == 7),
        "neg": (-2, onnx.AttributeProto.INT, lambda a: a.i == -2),
        "f": (0.5, onnx.AttributeProto.FLOAT, lambda a: a.f == 0.5),
        "s": ("SAME", onnx.AttributeProto.STRING, lambda a: a.s == b"SAME"),
        "ints": ([1, -1, 3], onnx.AttributeProto.INTS, lambda a: list(a.ints) == [1, -1, 3]),
        "floats": ([0.25, 2.0], onnx.AttributeProto.FLOATS, lambda a: list(a.floats) == [0.25, 2.0]),
        "t": (np.ones((2,), np.float32), onnx.AttributeProto.TENSOR, lambda a: list(a.t.dims) == [2]),
    }
    for name, (value, kind, check) in cases.items():
        parsed = onnx.AttributeProto.FromString(onnx_proto.attribute(name, value).to_bytes())
        assert parsed.name == name and parsed.type == kind and check(parsed), name
    with pytest.raises(TypeError):
        onnx_proto.attribute("b", True)


def test_value_info_with_symbolic_dimension():
    parsed = onnx.ValueInfoProto.FromString(onnx_proto.value_info("x", "int64", ("N", 8)).to_bytes())
    dims = parsed.type.tensor_type.shape.dim
    assert parsed.name == "x" and parsed.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims[0].dim_param == "N" and dims[1].dim_value == 8


def _tiny_model() -> bytes:
    bias = onnx_proto.tensor("bias", np.array([1.0, -2.0, 3.0], dtype=np.float32))
    nodes = [
        onnx_proto.node("Add", ["x", "bias"], ["sum"], name="add"),
        onnx_proto.node("Transpose", ["sum"], ["y"], name="transpose", perm=[1, 0]),
    ]
    graph = onnx_proto.graph(
        "tiny",
        nodes,
        inputs=[onnx_proto.value_info("x", "float32", (2, 3))],
        outputs=[onnx_proto.value_info("y", "float32", (3, 2))],
        initializers=[bias],
    )
    return onnx_proto.model(graph, opset=13)


def test_model_passes_the_checker_and_shape_inference_and_runs():
    data = _tiny_model()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [3, 2]
    assert model.opset_import[0].version == 13 and model.producer_name == "widthwise"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(y, (x + np.array([1, -2, 3], np.float32)).T)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.lists(st.integers(-(2**40), 2**40), max_size=6))
def test_any_int64_attribute_round_trips(value, values):
    parsed = onnx.AttributeProto.FromString(onnx_proto.attribute("a", value).to_bytes())
    assert parsed.i == value
    parsed_list = onnx.AttributeProto.FromString(onnx_proto.attribute("b", values).to_bytes())
    assert list(parsed_list.ints) == values


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=0, max_size=4), st.sampled_from(["float32", "int64", "int8", "uint8"]))
def test_any_small_tensor_round_trips(shape, dtype):
    arr = (np.arange(int(np.prod(shape)), dtype=np.int64) * 37 % 101 - 50).astype(dtype).reshape(shape)
    parsed = onnx.TensorProto.FromString(onnx_proto.tensor("t", arr).to_bytes())
    back = numpy_helper.to_array(parsed)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
