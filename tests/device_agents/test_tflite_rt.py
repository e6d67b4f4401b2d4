"""The tflite_runtime runtime, exercised where its wheel works.

tflite_runtime 2.14 is built for numpy 1. Where it works in this interpreter the tests run
in-process; otherwise a Python that has it (with numpy < 2) can be named in the
environment variable WIDTHWISE_TFLITE_PYTHON, e.g. a venv made with
`python -m venv v && v/bin/pip install tflite-runtime==2.14.0 "numpy<2"`, and the same
checks run in a child process there (the agent's runtimes need only numpy). Without
either, the tests are skipped with the reason.
"""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from widthwise.device_agents import tflite_schema
from widthwise.device_agents.build_tflite import build_tflite, tflite_input_shape
from widthwise.device_agents.errors import BadModel, RuntimeUnavailable
from widthwise.device_agents.runtimes import get_runtime, unavailable_runtimes
from widthwise.device_agents.runtimes.tflite_common import SMOKE_MODEL
from widthwise.device_agents.spaces import make_space

REPO = Path(__file__).resolve().parents[2]
ENV_PYTHON = "WIDTHWISE_TFLITE_PYTHON"

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    # as on a board: the agent is the top-level device_agents (the repository root on the path)
    from device_agents.errors import BadModel
    from device_agents.runtimes import get_runtime
    runtime = get_runtime("tflite")
    folder = sys.argv[1]
    report = {"version": runtime.version(), "numpy": np.__version__, "runs": {}}
    x = np.load(f"{folder}/x.npy")
    for dtype in ("float32", "int8"):
        model = open(f"{folder}/{dtype}.tflite", "rb").read()
        for delegate in ("xnnpack", "none"):
            session = runtime.load(model, threads=1, options={"delegate": delegate})
            y = session.run({session.inputs[0].name: x})[0]
            np.save(f"{folder}/{dtype}-{delegate}.npy", y)
            report["runs"][f"{dtype}-{delegate}"] = session.info
    try:
        runtime.load(b"\\0\\0\\0\\0TFL3" + b"\\1" * 40)
    except BadModel as exc:
        report["bad_model"] = exc.message
    print(json.dumps(report))
    """
)


def _in_process_reason() -> str | None:
    try:
        get_runtime("tflite")
    except RuntimeUnavailable as exc:
        return exc.message
    return None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    space = make_space("mobilenet_v1", {"resolution": 48, "levels": 3})
    widths = space.smallest()
    folder = tmp_path_factory.mktemp("tflite_rt")
    x = np.random.default_rng(5).uniform(-1, 1, tflite_input_shape(space)).astype(np.float32)
    np.save(folder / "x.npy", x)
    out = {"folder": folder, "x": x}
    for dtype in ("float32", "int8"):
        out[dtype] = build_tflite(space, widths, dtype=dtype)
        (folder / f"{dtype}.tflite").write_bytes(out[dtype])
    return out


@pytest.fixture(scope="module")
def tflite_rt_results(models):
    """{run name: (output, info)} from tflite_runtime, in-process or in WIDTHWISE_TFLITE_PYTHON."""
    reason = _in_process_reason()
    if reason is None:
        runtime = get_runtime("tflite")
        results = {}
        for dtype in ("float32", "int8"):
            for delegate in ("xnnpack", "none"):
                session = runtime.load(models[dtype], options={"delegate": delegate})
                results[f"{dtype}-{delegate}"] = (session.run({"input": models["x"]})[0], session.info)
        with pytest.raises(BadModel):
            runtime.load(b"\0\0\0\0TFL3" + b"\1" * 40)
        return results
    python = os.environ.get(ENV_PYTHON)
    if not python:
        pytest.skip(f"tflite_runtime is not usable here ({reason}); set {ENV_PYTHON} to a Python with it to run these")
    folder = models["folder"]
    done = subprocess.run(
        [python, "-c", CHILD, str(folder)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"tflite_runtime {report['version']} under numpy {report['numpy']} via {python}")
    assert "not a valid TFLite model" in report["bad_model"]
    return {name: (np.load(folder / f"{name}.npy"), info) for name, info in report["runs"].items()}


def _litert(model: bytes, x: np.ndarray) -> np.ndarray:
    session = get_runtime("litert").load(model, options={"delegate": "none"})
    return session.run({"input": x})[0]


def test_unavailable_tflite_runtime_says_why():
    reason = _in_process_reason()
    if reason is None:
        pytest.skip("tflite_runtime works in this interpreter")
    assert "tflite_runtime" in reason
    assert unavailable_runtimes()["tflite"] in reason


def test_smoke_model_is_the_writers():
    assert SMOKE_MODEL == tflite_schema.smoke_model()


def test_float_outputs_match_litert(models, tflite_rt_results):
    expected = _litert(models["float32"], models["x"])
    for delegate in ("xnnpack", "none"):
        got, info = tflite_rt_results[f"float32-{delegate}"]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
        assert info["dtype"] == "float32"
    assert tflite_rt_results["float32-xnnpack"][1]["delegate"] == "xnnpack"
    assert tflite_rt_results["float32-none"][1]["delegate"] is None


def test_int8_outputs_match_litert_within_a_step(models, tflite_rt_results):
    expected = _litert(models["int8"], models["x"])
    step = float(np.abs(expected).max()) / 64  # a few int8 output steps at most
    for delegate in ("xnnpack", "none"):
        got, info = tflite_rt_results[f"int8-{delegate}"]
        assert info["dtype"] == "int8"
        np.testing.assert_allclose(got, expected, atol=step)
