"""The onnxruntime runtime: session settings, input specs, typed failures."""

import numpy as np
import pytest

from widthwise.device_agents import onnx_proto
from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.errors import BadModel, BadRequest, RuntimeUnavailable
from widthwise.device_agents.runtimes import get_runtime
from widthwise.device_agents.runtimes.ort import RUNTIME
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.timing import TimingSettings, time_session


@pytest.fixture(scope="module")
def small_model() -> bytes:
    space = make_space("mobilenet_v1", {"resolution": 32})
    return build_onnx(space, space.smallest())


def test_registry_finds_onnxruntime():
    runtime = get_runtime("onnxruntime")
    assert runtime is RUNTIME and runtime.model_format == "onnx"
    import onnxruntime

    assert runtime.version() == onnxruntime.__version__


def test_session_options_are_the_timing_settings():
    so = RUNTIME.session_options(3, {})
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    import onnxruntime

    assert so.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_load_reports_inputs_and_runs(small_model):
    session = RUNTIME.load(small_model, threads=2)
    assert [(i.name, i.shape, i.dtype) for i in session.inputs] == [("input", (1, 3, 32, 32), "float32")]
    assert session.info["threads"] == 2 and session.info["delegate"] is None
    (logits,) = session.run({"input": np.zeros((1, 3, 32, 32), np.float32)})
    assert logits.shape == (1, 1000) and np.isfinite(logits).all()


def test_real_session_is_timed(small_model):
    m = time_session(RUNTIME.load(small_model), TimingSettings(warmup=1, repeat=3, min_repeat_ms=2))
    assert m.count == 3 and m.min > 0 and m.number >= 1 and m.peak_rss_kb > 0


def test_symbolic_batch_dimension_is_timed_at_one():
    graph = onnx_proto.graph(
        "relu",
        [onnx_proto.node("Relu", ["x"], ["y"])],
        inputs=[onnx_proto.value_info("x", "float32", ("N", 4))],
        outputs=[onnx_proto.value_info("y", "float32", ("N", 4))],
    )
    session = RUNTIME.load(onnx_proto.model(graph))
    assert session.inputs[0].shape == (1, 4)


@pytest.mark.parametrize("payload", [b"not an onnx model at all", b"", b"\x08\x07" * 3, b"\x00\x00\x00\x18TFL3"])
def test_non_onnx_bytes_are_a_bad_model(payload):
    with pytest.raises(BadModel, match="onnxruntime cannot load the model"):
        RUNTIME.load(payload)


def test_options_are_validated(small_model):
    with pytest.raises(BadRequest, match="'turbo'"):
        RUNTIME.load(small_model, options={"turbo": True})
    with pytest.raises(RuntimeUnavailable, match="xnnpack"):
        RUNTIME.load(small_model, options={"delegate": "xnnpack"})
    with pytest.raises(BadRequest, match="graph_optimization"):
        RUNTIME.load(small_model, options={"graph_optimization": "max"})
    session = RUNTIME.load(small_model, options={"delegate": "none", "graph_optimization": "basic"})
    assert session.info["graph_optimization"] == "basic"
