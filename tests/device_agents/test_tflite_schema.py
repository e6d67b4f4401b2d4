"""The TFLite writer's two layouts: constants inside the Builder, or appended after the tables."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from widthwise.device_agents import tflite_schema as fb
from widthwise.device_agents.build_tflite import build_tflite, tflite_input_shape
from widthwise.device_agents.runtimes.tflite_check import check_tflite
from widthwise.device_agents.spaces import make_space

REPO = Path(__file__).resolve().parents[2]


def _parse(model: bytes) -> tflite.Model:
    return tflite.Model.GetRootAsModel(model, 0)


def _contents(model: bytes) -> dict:
    """Everything a reader sees in a model, independent of where it sits in the file."""
    m = _parse(model)
    g = m.Subgraphs(0)
    tensors = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        q = t.Quantization()
        quant = None
        if q is not None and q.ScaleLength():
            quant = (q.ScaleAsNumpy().tolist(), q.ZeroPointAsNumpy().tolist(), q.QuantizedDimension())
        tensors.append((t.Name(), t.ShapeAsNumpy().tolist(), t.Type(), t.Buffer(), quant))
    operators = [
        (g.Operators(i).OpcodeIndex(), g.Operators(i).InputsAsNumpy().tolist(), g.Operators(i).OutputsAsNumpy().tolist(),
         g.Operators(i).BuiltinOptionsType())
        for i in range(g.OperatorsLength())
    ]
    buffers = [m.Buffers(i).DataAsNumpy().tobytes() if m.Buffers(i).DataLength() else b""
               for i in range(m.BuffersLength())]
    codes = [(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(m.OperatorCodesLength())]
    return {"version": m.Version(), "tensors": tensors, "operators": operators, "buffers": buffers, "codes": codes,
            "inputs": g.InputsAsNumpy().tolist(), "outputs": g.OutputsAsNumpy().tolist()}


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=model, num_threads=1,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenet_v1", {"resolution": 24, "levels": 3})


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_appended_and_inline_layouts_hold_the_same_model(space, dtype, monkeypatch):
    widths = space.smallest()
    appended = build_tflite(space, widths, dtype=dtype, seed=4)
    monkeypatch.setattr(fb, "INLINE_DATA_LIMIT", 1 << 30)
    inline = build_tflite(space, widths, dtype=dtype, seed=4)
    assert appended != inline  # really two layouts
    assert _contents(appended) == _contents(inline)
    check_tflite(appended)
    x = np.random.default_rng(1).uniform(-1, 1, tflite_input_shape(space)).astype(np.float32)
    np.testing.assert_array_equal(_run(appended, x), _run(inline, x))


def test_appended_constants_follow_the_tables_aligned_and_in_order(space):
    model = build_tflite(space, space.largest())
    m = _parse(model)
    starts = []
    for i in range(1, m.BuffersLength()):
        buffer = m.Buffers(i)
        # where the data vector's elements start: the Buffer table's data field, followed
        field = buffer._tab.Offset(4)
        vector = buffer._tab.Vector(field)
        assert vector % 16 == 0, f"buffer {i} data at {vector} is not 16-byte aligned"
        assert struct.unpack_from("<I", model, vector - 4)[0] == buffer.DataLength()
        starts.append(vector)
    assert starts == sorted(starts)  # appended in buffer order, after every table
    tables_end = starts[0]
    last = m.Buffers(m.BuffersLength() - 1)
    assert starts[-1] + last.DataLength() == len(model)  # nothing after the last constant
    assert model.find(b"TFL3") == 4 and tables_end < len(model) // 10  # the tables come first and are small


def test_tiny_models_keep_the_compact_layout():
    w = fb.ModelWriter("tiny", inline_limit=64)
    x = w.tensor("x", (1, 4), "float32")
    y = w.tensor("y", (1, 4), "float32")
    shape = w.constant("shape", np.array([1, 4], dtype=np.int32))
    w.op(fb.OP_RESHAPE, [x, shape], [y], fb.reshape_options([1, 4]))
    model = w.finish([x], [y])
    data = _parse(model).Buffers(1).DataAsNumpy().view(np.int32)
    assert data.tolist() == [1, 4]
    assert not model.endswith(data.tobytes())  # inside the Builder: Buffer 0's table comes last
    # the same writer with a zero limit appends the 8 bytes after the tables instead
    w.inline_limit = 0
    appended = w.finish([x], [y])
    assert _contents(appended) == _contents(model)
    assert appended.endswith(np.array([1, 4], dtype=np.int32).tobytes())


def test_transposed_views_are_written_transposed():
    w = fb.ModelWriter(inline_limit=0)
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = w.constant("t", base.transpose(2, 0, 1))  # a strided view, copied once when written
    out = w.tensor("out", (4, 2, 3), "float32")
    w.op(fb.OP_RESHAPE, [t, w.constant("shape", np.array([4, 2, 3], dtype=np.int32))], [out],
         fb.reshape_options([4, 2, 3]))
    model = w.finish([], [out])
    m = _parse(model)
    data = m.Buffers(1).DataAsNumpy().view(np.float32).reshape(4, 2, 3)
    np.testing.assert_array_equal(data, base.transpose(2, 0, 1))


def test_mul_with_a_fused_activation_and_hard_swish_run_as_written():
    """MUL broadcasting a [1] constant (its MulOptions carry the fused ReLU6), then HARD_SWISH."""
    w = fb.ModelWriter("mul")
    x = w.tensor("x", (1, 2, 2, 3), "float32")
    scaled = w.tensor("scaled", (1, 2, 2, 3), "float32")
    y = w.tensor("y", (1, 2, 2, 3), "float32")
    w.op(fb.OP_MUL, [x, w.constant("four", np.array([4.0], dtype=np.float32))], [scaled], fb.mul_options(fb.ACT_RELU6))
    w.op(fb.OP_HARD_SWISH, [scaled], [y], fb.hard_swish_options())
    model = w.finish([x], [y])
    m = _parse(model)
    op = m.Subgraphs(0).Operators(0)
    assert op.BuiltinOptionsType() == tflite.BuiltinOptions.MulOptions
    options = tflite.MulOptions()
    options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
    assert options.FusedActivationFunction() == fb.ACT_RELU6
    assert m.Subgraphs(0).Operators(1).BuiltinOptionsType() == tflite.BuiltinOptions.HardSwishOptions
    it = Interpreter(model_content=model,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    values = np.linspace(-1.5, 1.5, 12, dtype=np.float32).reshape(1, 2, 2, 3)
    it.set_tensor(it.get_input_details()[0]["index"], values)
    it.invoke()
    relu6 = np.clip(4 * values, 0, 6)
    np.testing.assert_allclose(it.get_tensor(it.get_output_details()[0]["index"]), relu6 * np.clip(relu6 + 3, 0, 6) / 6,
                               rtol=1e-6, atol=1e-6)


TABLE_CORRUPTION_SCRIPT = """
import json, sys
import numpy as np
import tflite
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.errors import BadModel, BenchFailed
from widthwise.device_agents.runtimes import get_runtime
from widthwise.device_agents.spaces import make_space
space = make_space("mobilenet_v1", {"resolution": 16, "levels": 3})
model = build_tflite(space, space.smallest(), dtype=sys.argv[1])
m = tflite.Model.GetRootAsModel(model, 0)
tables_end = min(m.Buffers(i)._tab.Vector(m.Buffers(i)._tab.Offset(4)) for i in range(1, m.BuffersLength()))
runtime = get_runtime("litert")
rng = np.random.default_rng(0)
outcomes = {}
for trial in range(60):
    corrupt = bytearray(model)
    for _ in range(int(rng.integers(1, 6))):
        corrupt[int(rng.integers(0, tables_end))] = int(rng.integers(0, 256))
    try:
        session = runtime.load(bytes(corrupt), options={"delegate": ["none", "xnnpack"][trial % 2]})
        session.run({i.name: np.zeros(i.shape, i.dtype) for i in session.inputs})
        outcome = "ok"
    except (BadModel, BenchFailed):
        outcome = "bad"
    except Exception as exc:  # reported by the parent, not a crash
        outcome = type(exc).__name__
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
print(json.dumps(outcomes))
"""


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_corrupted_tables_of_the_appended_layout_never_crash_the_process(dtype):
    # The tables now open the file (the constants follow them): corrupt bytes there, in a
    # child process so that a segfault fails this test rather than the test run.
    done = subprocess.run([sys.executable, "-c", TABLE_CORRUPTION_SCRIPT, dtype], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{dtype}: {outcomes}")
    assert outcomes.get("bad", 0) >= 30  # most corruptions are refused as BadModel
