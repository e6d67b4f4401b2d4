"""Small ONNX models built by hand, for the tests of what the agent refuses to load; and the
checks every builder test runs on a built model."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper


def run_onnx(model: bytes, x: np.ndarray) -> np.ndarray:
    """The first output of `model` fed `x` as its first input, on ONNX Runtime's CPU provider."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def checked_onnx(model: bytes) -> onnx.ModelProto:
    """The model after onnx's full checker and strict shape inference (each raises on a bad model)."""
    proto = onnx.load_from_string(model)
    onnx.checker.check_model(proto, full_check=True)
    return onnx.shape_inference.infer_shapes(proto, strict_mode=True)


def external_tensor(name: str, location: str, count: int = 6) -> TensorProto:
    """An int64 tensor whose data is `count` x 8 bytes of the file at `location`."""
    tensor = TensorProto(name=name, data_type=TensorProto.INT64, dims=[count], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(8 * count))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def onnx_model(
    nodes: Sequence, initializers: Sequence = (), sparse: Sequence = (), inputs: Sequence | None = None
) -> bytes:
    """A model of `nodes` over input x [1, 4] and output y, with these initializers (opset 17)."""
    graph = helper.make_graph(
        list(nodes), "hostile", list(inputs or []) or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(initializers),
        sparse_initializer=list(sparse),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
