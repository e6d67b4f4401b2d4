"""The pure-Python TFLite writer: file structure, layouts, and outputs against ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from widthwise.device_agents import tflite_schema as fb
from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.build_tflite import build_tflite, tflite_input_shape
from widthwise.device_agents.errors import BadRequest, BadWidths
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.int8_calibration import forward
from widthwise.device_agents.weights import block_weights

OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def mobilenet():
    # 40 -> 20 -> 10 -> 5 -> 3 -> 2: stride-2 layers on even and odd sizes (SAME padding's odd pixel)
    space = make_space("mobilenet_v1", {"resolution": 40, "levels": 4})
    rng = np.random.default_rng(3)
    widths = [int(rng.choice(layer.choices)) for layer in space.layers]
    return space, widths


@pytest.fixture(scope="module")
def text():
    space = make_space("text_lowrank", {"vocab": 3000, "tokens": 16})
    return space, (40, 192)


def _parse(model: bytes) -> tflite.Model:
    return tflite.Model.GetRootAsModel(model, 0)


def _ops(m: tflite.Model) -> list[str]:
    g = m.Subgraphs(0)
    return [OP_NAMES[m.OperatorCodes(g.Operators(i).OpcodeIndex()).BuiltinCode()] for i in range(g.OperatorsLength())]


def _tensors(m: tflite.Model) -> dict[str, tflite.Tensor]:
    g = m.Subgraphs(0)
    return {g.Tensors(i).Name().decode(): g.Tensors(i) for i in range(g.TensorsLength())}


def _run_tflite(model: bytes, x: np.ndarray, resolver=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES) -> np.ndarray:
    it = Interpreter(model_content=model, num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def _images(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, tflite_input_shape(space)).astype(np.float32) for _ in range(n)]


def _token_ids(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, space.input_channels, space.input_shape).astype(np.int64) for _ in range(n)]


def test_file_header_version_buffer0_and_operator_codes(mobilenet):
    space, widths = mobilenet
    model = build_tflite(space, widths)
    assert model[4:8] == b"TFL3"
    m = _parse(model)
    assert m.Version() == 3
    assert m.Buffers(0).DataLength() == 0
    for i in range(m.OperatorCodesLength()):
        code = m.OperatorCodes(i)
        assert code.DeprecatedBuiltinCode() == min(code.BuiltinCode(), 127)
    g = m.Subgraphs(0)
    assert g.Tensors(g.Inputs(0)).Name() == b"input" and g.Tensors(g.Outputs(0)).Name() == b"logits"
    assert list(g.Tensors(g.Inputs(0)).ShapeAsNumpy()) == [1, 40, 40, 3]  # NHWC
    ops = _ops(m)
    assert ops.count("CONV_2D") == 14 and ops.count("DEPTHWISE_CONV_2D") == 13
    assert ops[-3:] == ["AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"]


def test_operator_codes_above_127_keep_the_placeholder_in_the_old_field():
    w = fb.ModelWriter()
    x = w.tensor("x", (1, 4), "float32")
    y = w.tensor("y", (1, 4), "float32")
    w.op(150, [x], [y])
    w.op(fb.OP_MEAN, [y], [x], fb.reducer_options(False))
    m = _parse(w.finish([x], [y]))
    codes = {m.OperatorCodes(i).BuiltinCode(): m.OperatorCodes(i).DeprecatedBuiltinCode() for i in range(2)}
    assert codes == {150: 127, fb.OP_MEAN: fb.OP_MEAN}


def _data(m: tflite.Model, name: str, dtype) -> np.ndarray:
    tensor = _tensors(m)[name]
    return m.Buffers(tensor.Buffer()).DataAsNumpy().view(dtype).reshape(tensor.ShapeAsNumpy())


def test_weights_are_written_in_tflite_layouts(mobilenet):
    space, widths = mobilenet
    blocks = space.blocks(widths)
    m = _parse(build_tflite(space, widths, seed=5))
    conv = block_weights(blocks[0], 5)["w"]
    np.testing.assert_array_equal(_data(m, "conv0.w", np.float32), conv.transpose(0, 2, 3, 1))  # OHWI
    dw = block_weights(blocks[1], 5)["dw_w"]
    np.testing.assert_array_equal(_data(m, "dwsep1.dw_w", np.float32), dw.transpose(1, 2, 3, 0))  # [1, k, k, C]
    pw = block_weights(blocks[1], 5)["pw_w"]
    np.testing.assert_array_equal(_data(m, "dwsep1.pw.w", np.float32), pw.transpose(0, 2, 3, 1))
    fc = block_weights(blocks[-1], 5)["w"]
    np.testing.assert_array_equal(_data(m, "classifier.logits.w", np.float32), fc)  # [out, in]


def test_float_mobilenet_matches_onnxruntime(mobilenet):
    space, widths = mobilenet
    model = build_tflite(space, widths)
    session = ort.InferenceSession(build_onnx(space, widths), providers=["CPUExecutionProvider"])
    blocks = space.blocks(widths)
    weights = [block_weights(b, 0) for b in blocks]
    for x in _images(space, 2):
        expected = session.run(None, {"input": x.transpose(0, 3, 1, 2).copy()})[0]
        np.testing.assert_allclose(_run_tflite(model, x), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(_run_tflite(model, x, OpResolverType.AUTO), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(forward(blocks, weights, x), expected, atol=1e-5, rtol=1e-5)


def test_float_text_model_matches_onnxruntime(text):
    space, widths = text
    model = build_tflite(space, widths, seed=2)
    session = ort.InferenceSession(build_onnx(space, widths, seed=2), providers=["CPUExecutionProvider"])
    assert _ops(_parse(model)) == ["GATHER", "FULLY_CONNECTED", "MEAN", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    for ids in _token_ids(space, 3):
        expected = session.run(None, {"input": ids})[0]
        np.testing.assert_allclose(_run_tflite(model, ids), expected, atol=1e-5, rtol=1e-5)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_int8_mobilenet_agrees_with_float():
    # A random-weight MobileNet's 1000 logits are nearly tied at the top (gaps of 0.01 where
    # int8 logits have steps of about 0.02), so argmax may only move among classes that float
    # itself ranks within a few int8 steps of its top; elsewhere it must agree exactly.
    space = make_space("mobilenet_v1", {"resolution": 96, "levels": 4})
    widths = space.base_widths()
    f32, i8 = build_tflite(space, widths), build_tflite(space, widths, dtype="int8")
    assert len(i8) < len(f32) / 3
    step = float(_tensors(_parse(i8))["classifier.logits"].Quantization().ScaleAsNumpy()[0])
    exact = 0
    for x in _images(space, 6, seed=11):
        ref, got = _run_tflite(f32, x).ravel(), _run_tflite(i8, x).ravel()
        assert got.dtype == np.float32
        assert _cosine(got, ref) >= 0.99
        top2 = np.sort(ref)[-2:]
        if top2[1] - top2[0] > 4 * step:
            assert int(got.argmax()) == int(ref.argmax())
        assert ref[got.argmax()] >= ref.max() - 4 * step
        exact += int(got.argmax()) == int(ref.argmax())
    assert exact >= 4


def test_int8_text_model_agrees_with_float(text):
    space, widths = text
    f32, i8 = build_tflite(space, widths), build_tflite(space, widths, dtype="int8")
    for ids in _token_ids(space, 4, seed=4):
        ref, got = _run_tflite(f32, ids), _run_tflite(i8, ids)
        assert int(got.argmax()) == int(ref.argmax())
        assert _cosine(got, ref) >= 0.99


def test_int8_quantisation_parameters(mobilenet):
    space, widths = mobilenet
    m = _parse(build_tflite(space, widths, dtype="int8"))
    t = _tensors(m)
    ops = _ops(m)
    assert ops[0] == "QUANTIZE" and ops[-1] == "DEQUANTIZE"
    g = m.Subgraphs(0)
    assert g.Tensors(g.Inputs(0)).Type() == tflite.TensorType.FLOAT32
    assert g.Tensors(g.Outputs(0)).Type() == tflite.TensorType.FLOAT32

    conv_q = t["conv0.w"].Quantization()
    assert t["conv0.w"].Type() == tflite.TensorType.INT8
    assert conv_q.QuantizedDimension() == 0 and conv_q.ScaleLength() == widths[0]
    assert not conv_q.ZeroPointAsNumpy().any()
    dw_q = t["dwsep1.dw_w"].Quantization()
    assert dw_q.QuantizedDimension() == 3 and dw_q.ScaleLength() == widths[0]
    fc_q = t["classifier.logits.w"].Quantization()
    assert fc_q.ScaleLength() == 1

    in_scale = t["input_int8"].Quantization().ScaleAsNumpy()[0]
    bias = t["conv0.b"]
    assert bias.Type() == tflite.TensorType.INT32
    np.testing.assert_allclose(bias.Quantization().ScaleAsNumpy(), in_scale * conv_q.ScaleAsNumpy(), rtol=1e-6)
    relu6 = t["conv0"].Quantization()
    assert 0 < relu6.ScaleAsNumpy()[0] <= 6 / 255 + 1e-9 and relu6.ZeroPointAsNumpy()[0] == -128  # within [0, 6]


def test_bad_dtype_and_widths_are_refused(mobilenet):
    space, widths = mobilenet
    with pytest.raises(BadRequest, match="unknown dtype 'int4'"):
        build_tflite(space, widths, dtype="int4")
    with pytest.raises(BadWidths):
        build_tflite(space, widths[:-1])


# --- MobileNet-V2: inverted residuals and their Adds ------------------------------------------


@pytest.fixture(scope="module")
def mobilenet_v2():
    # 40 -> 20 (stem) -> 20 -> 10 -> 5 -> 3 -> 3 -> 2 -> 2: strided blocks on even and odd sizes
    space = make_space("mobilenet_v2", {"resolution": 40, "levels": 4})
    rng = np.random.default_rng(6)
    return space, [int(rng.choice(layer.choices)) for layer in space.layers]


def test_mobilenet_v2_ops_have_an_add_closing_each_later_block(mobilenet_v2):
    space, widths = mobilenet_v2
    m = _parse(build_tflite(space, widths))
    ops = _ops(m)
    # stem + 16 expansions + 17 projections + head; a depthwise per block; 10 later blocks
    assert ops.count("CONV_2D") == 1 + 16 + 17 + 1 and ops.count("DEPTHWISE_CONV_2D") == 17
    assert ops.count("ADD") == 10
    later = [f"stage{s}.block{k}.project.add" for s, n in ((2, 2), (3, 3), (4, 4), (5, 3), (6, 3))
             for k in range(2, n + 1)]
    assert sorted(n for n in _tensors(m) if n.endswith(".add")) == sorted(later)


def test_float_mobilenet_v2_matches_onnxruntime_and_the_numpy_pass(mobilenet_v2):
    space, widths = mobilenet_v2
    model = build_tflite(space, widths, seed=4)
    session = ort.InferenceSession(build_onnx(space, widths, seed=4), providers=["CPUExecutionProvider"])
    blocks = space.blocks(widths)
    weights = [block_weights(b, 4) for b in blocks]
    for x in _images(space, 2, seed=3):
        expected = session.run(None, {"input": x.transpose(0, 3, 1, 2).copy()})[0]
        assert expected.shape == (1, 1000)
        np.testing.assert_allclose(_run_tflite(model, x), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(_run_tflite(model, x, OpResolverType.AUTO), expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(forward(blocks, weights, x), expected, atol=1e-5, rtol=1e-5)


def test_int8_mobilenet_v2_runs_and_agrees_with_float():
    space = make_space("mobilenet_v2", {"resolution": 96, "levels": 4})
    widths = space.base_widths()
    f32, i8 = build_tflite(space, widths), build_tflite(space, widths, dtype="int8")
    assert len(i8) < len(f32) / 3
    for x in _images(space, 3, seed=12):
        ref = _run_tflite(f32, x)
        for resolver in (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, OpResolverType.AUTO):
            got = _run_tflite(i8, x, resolver)
            assert got.dtype == np.float32 and got.shape == (1, 1000)
            assert _cosine(got, ref) >= 0.98


def test_int8_adds_have_their_own_calibrated_quantisation(mobilenet_v2):
    from widthwise.device_agents.build_tflite import activation_quant
    from widthwise.device_agents.int8_calibration import activation_ranges

    space, widths = mobilenet_v2
    blocks = space.blocks(widths)
    ranges = activation_ranges(space, blocks, [block_weights(b, 0) for b in blocks], 0)
    m = _parse(build_tflite(space, widths, dtype="int8"))
    g = m.Subgraphs(0)
    ops = _ops(m)
    adds = [g.Operators(i) for i in range(g.OperatorsLength()) if ops[i] == "ADD"]
    assert len(adds) == 10
    for op in adds:
        out = g.Tensors(op.Outputs(0))
        name = out.Name().decode()
        assert out.Type() == tflite.TensorType.INT8
        want = activation_quant(*ranges[name])
        assert out.Quantization().ScaleAsNumpy()[0] == pytest.approx(want.scale[0], rel=1e-6)
        assert out.Quantization().ZeroPointAsNumpy()[0] == want.zero_point[0]
        # its inputs: the block's linear projection and the block's input
        assert g.Tensors(op.Inputs(0)).Name().decode() == name.removesuffix(".add") + ".pw"
        assert g.Tensors(op.Inputs(1)).Type() == tflite.TensorType.INT8


CHAIN_BYTES = {
    ("mobilenet_v1", (8, 16, 24, 24, 48, 48, 104, 104, 104, 104, 104, 104, 208, 208)):
        "ff54781fd7da21e3120749b2ec620363fa9bebeed371694c729ab3a82acbcce0",
    ("text_lowrank", (10, 64)): "ea59bce544cb87e60d033ea1f547e53ba3ec7c1f6322bfc42c3069b3fa3a0f4f",
}


@pytest.mark.parametrize("name, widths", list(CHAIN_BYTES))
def test_chain_spaces_build_the_same_float_bytes_as_before(name, widths):
    """sha256 of what the builder wrote before the spaces became trees of factors."""
    import hashlib

    params = {"resolution": 96} if name == "mobilenet_v1" else {"vocab": 2000, "dim": 64, "tokens": 16}
    model = build_tflite(make_space(name, params), widths, seed=3)
    assert hashlib.sha256(model).hexdigest() == CHAIN_BYTES[(name, widths)]


# sha256 of networks as built before blocks carried an activation and the MobileNet-V3 kinds
# existed. int8 ranges come from a float pass whose last bits depend on the BLAS, so the int8
# digests are taken with ranges fixed per role name (which keeps the set of roles in the check).
V2_RANDOM = (40, 24, 16, 40, 112, 128, 32, 112, 288, 40, 40, 272, 344, 272, 112, 16, 112, 112, 232, 240, 384, 1056,
             1152, 160, 640)
V1_WIDTHS = (8, 16, 24, 24, 48, 48, 104, 104, 104, 104, 104, 104, 208, 208)
EARLIER_BYTES = {
    ("mobilenet_v2", "base", "float32", None): "fe8ea493b1a59649e4cc2ff294eb1bd635dfb9376164d3e4f4d558dd9ba7e1b9",
    ("mobilenet_v2", "random", "float32", None): "0f0335e28933554091d4fb59beaee9d501b456df5550d914bbec2c56e77ea097",
    ("mobilenet_v2", "base", "int8", None): "d067d2385fbb8c80010d361ba5f0609739b30a39d534fcb071978408df3dc308",
    ("mobilenet_v2", "random", "int8", None): "f002f2bacca9bb225d7b1a24930171dcae7e77361013057e7b4cbc6f830629ad",
    ("mobilenet_v2", "random", "int8", (3, 2)): "b9ff8eabfe55dd7b20284108cd5a89fc1e1737bfa6a9bdf3558abc780098ec7a",
    ("mobilenet_v1", "v1", "int8", None): "d4ead214e59a01dc137d6c99152953b084da93acd0d939dfa0431d36fc9a946a",
    ("text_lowrank", "text", "int8", None): "96a31a0bccadaeb18419257b0b0040376be8c4a729204e4db27f16883ed6be1f",
}


@pytest.mark.parametrize("name, which, dtype, blocks", list(EARLIER_BYTES))
def test_existing_spaces_build_the_same_bytes_as_before(name, which, dtype, blocks, monkeypatch):
    import hashlib

    from widthwise.device_agents import build_tflite as module

    real = module.network_ranges

    def ranges_by_role_name(net, weights, seed, margin=1.25):
        return {role: (-(len(role) % 7) / 2.0, 1.0 + len(role) % 5) for role in real(net, weights, seed, margin)}

    monkeypatch.setattr(module, "network_ranges", ranges_by_role_name)
    params = {"vocab": 2000, "dim": 64, "tokens": 16} if name == "text_lowrank" else {"resolution": 96}
    space = make_space(name, params)
    widths = {"base": space.base_widths(), "random": V2_RANDOM, "v1": V1_WIDTHS, "text": (10, 64)}[which]
    model = build_tflite(space, widths, dtype=dtype, seed=3, blocks=blocks)
    assert hashlib.sha256(model).hexdigest() == EARLIER_BYTES[(name, which, dtype, blocks)]
