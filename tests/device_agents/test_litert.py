"""The LiteRT runtime: sessions, threads and delegate reporting, and refusal of bad files."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from widthwise.device_agents import tflite_schema
from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.errors import BadModel, BadRequest
from widthwise.device_agents.handlers import HANDLERS
from widthwise.device_agents.runtimes import InputSpec, get_runtime
from widthwise.device_agents.spaces import make_space

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def litert():
    return get_runtime("litert")


@pytest.fixture(scope="module")
def small_space():
    return make_space("mobilenet_v1", {"resolution": 32, "levels": 3})


@pytest.fixture(scope="module")
def float_model(small_space):
    return build_tflite(small_space, small_space.smallest())


def test_version_and_format(litert):
    assert litert.model_format == "tflite"
    assert litert.version()[0].isdigit()


def test_session_inputs_threads_and_delegates(litert, small_space, float_model):
    with_xnnpack = litert.load(float_model, threads=2)
    assert with_xnnpack.inputs == [InputSpec("input", (1, 32, 32, 3), "float32")]
    assert with_xnnpack.info["threads"] == 2
    assert with_xnnpack.info["delegate"] == "xnnpack"
    without = litert.load(float_model, threads=1, options={"delegate": "none"})
    assert without.info["delegate"] is None and without.info["dtype"] == "float32"
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    a, b = with_xnnpack.run({"input": x})[0], without.run({"input": x})[0]
    assert a.shape == (1, 1000)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_int8_session_reports_int8(litert, small_space):
    session = litert.load(build_tflite(small_space, small_space.smallest(), dtype="int8"))
    assert session.info["dtype"] == "int8"
    assert session.inputs[0].dtype == "float32"  # QUANTIZE inside the model


def test_bad_options_are_refused_by_name(litert, float_model):
    with pytest.raises(BadRequest, match="unknown TFLite option 'gpu'"):
        litert.load(float_model, options={"gpu": True})
    with pytest.raises(BadRequest, match="delegate must be one of"):
        litert.load(float_model, options={"delegate": "nnapi"})
    with pytest.raises(BadRequest, match="threads"):
        litert.load(float_model, threads=0)


def _with_root_offset(model: bytes, offset: int) -> bytes:
    return offset.to_bytes(4, "little") + model[4:]


def _version_2_model(monkeypatch, space) -> bytes:
    monkeypatch.setattr(tflite_schema, "SCHEMA_VERSION", 2)
    return build_tflite(space, space.smallest())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m, s: b"", "too short"),
        (lambda m, s: b"definitely not a model", "file identifier"),
        (lambda m, s: build_onnx(s, s.smallest()), "file identifier"),
        (lambda m, s: m[:4] + b"TFL2" + m[8:], "file identifier"),
        (lambda m, s: m[: len(m) // 2], "outside the file"),
        (lambda m, s: _with_root_offset(m, len(m) + 100), "outside the file"),
        (lambda m, s: b"\x08\x00\x00\x00TFL3" + b"\xff" * 64, "not a valid TFLite model"),
    ],
    ids=["empty", "text", "onnx", "wrong-identifier", "truncated", "root-past-end", "garbage-with-identifier"],
)
def test_invalid_files_are_bad_models(litert, float_model, small_space, make, message):
    with pytest.raises(BadModel, match=message):
        litert.load(make(float_model, small_space))


def test_wrong_schema_version_is_named(litert, small_space, monkeypatch):
    with pytest.raises(BadModel, match="schema version 2; expected 3"):
        litert.load(_version_2_model(monkeypatch, small_space))


def test_dangling_buffer_index_is_refused(litert, monkeypatch, small_space):
    real_tensor = tflite_schema._Tensor

    def dangling(name, shape, ttype, buffer, quant):
        return real_tensor(name, shape, ttype, 999 if buffer else 0, quant)

    monkeypatch.setattr(tflite_schema, "_Tensor", dangling)
    with pytest.raises(BadModel, match="refers to buffer 999"):
        litert.load(build_tflite(small_space, small_space.smallest()))


CORRUPTION_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from widthwise.device_agents.build_tflite import build_tflite
    from widthwise.device_agents.errors import BadModel, BenchFailed
    from widthwise.device_agents.runtimes import get_runtime
    from widthwise.device_agents.spaces import make_space
    space = make_space("mobilenet_v1", {"resolution": 16, "levels": 3})
    model = build_tflite(space, space.smallest())
    runtime = get_runtime("litert")
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "bad": 0}
    for trial in range(60):
        corrupt = bytearray(model)
        if trial % 3 == 0:
            corrupt = corrupt[: int(rng.integers(0, len(corrupt)))]
        else:  # the tables sit at the end of the file, after the weights
            for _ in range(int(rng.integers(1, 6))):
                corrupt[len(corrupt) - 1 - int(rng.integers(0, 4000))] = int(rng.integers(0, 256))
        try:
            session = runtime.load(bytes(corrupt), options={"delegate": ["none", "xnnpack"][trial % 2]})
            session.run({i.name: np.zeros(i.shape, i.dtype) for i in session.inputs})
            outcomes["ok"] += 1
        except (BadModel, BenchFailed):
            outcomes["bad"] += 1
    print(outcomes)
    """
)


def test_corrupted_files_never_crash_the_process():
    # In a child process: a crash (segfault) there fails this test instead of the test run.
    done = subprocess.run(
        [sys.executable, "-c", CORRUPTION_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'bad': 0" not in done.stdout


def test_agent_handlers_refuse_a_bad_tflite_and_keep_serving(small_space):
    timing = {"warmup": 0, "repeat": 2, "number": 1}
    with pytest.raises(BadModel):
        HANDLERS["bench_model"]({"type": "bench_model", "id": 1, "timing": timing}, b"\0\0\0\0TFL3" + b"\1" * 40)
    body, _ = HANDLERS["bench_spec"](
        {
            "type": "bench_spec",
            "id": 2,
            "spec": {"space": "mobilenet_v1", "params": {"resolution": 32, "levels": 3},
                     "widths": list(small_space.smallest()), "dtype": "int8"},
            "runtime": "litert",
            "timing": timing,
            "options": {"delegate": "none"},
        },
        b"",
    )
    assert body["runtime"]["name"] == "litert" and body["runtime"]["dtype"] == "int8"
    assert body["runtime"]["delegate"] is None
    assert len(body["times_ms"]) == 2 and all(t > 0 for t in body["times_ms"])
    body, _ = HANDLERS["bench_model"](
        {"type": "bench_model", "id": 3, "runtime": "litert", "timing": timing},
        build_tflite(small_space, small_space.smallest()),
    )
    assert body["runtime"]["delegate"] == "xnnpack" and body["runtime"]["dtype"] == "float32"


def test_a_tensor_name_that_is_not_utf8_is_a_bad_model(litert, float_model):
    assert b"logits" in float_model
    broken = float_model.replace(b"logits", b"l\xffg\xfets")  # same length: the layout stays valid
    with pytest.raises(BadModel, match="cannot load the model"):
        litert.load(broken)
    # the runtime is still usable afterwards
    assert litert.load(float_model).run
