"""TFLite writers of the MobileNet-V3 kinds: float32 equal to the numpy reference, int8 calibrated and close."""

import dataclasses

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tests.support.mbv3_reference import SINGLE_BLOCKS, mixed_chain, network_of, reference_forward
from widthwise.device_agents.build_tflite import activation_quant, build_tflite, build_tflite_network, nhwc
from widthwise.device_agents.errors import UnknownSpace
from widthwise.device_agents.int8_calibration import network_ranges
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.weights import block_weights

OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
RESOLVERS = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, OpResolverType.AUTO)  # reference kernels, XNNPACK


def _run(model: bytes, feeds: list[np.ndarray], resolver=RESOLVERS[0]) -> np.ndarray:
    it = Interpreter(model_content=model, num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    for detail, x in zip(it.get_input_details(), feeds):
        it.set_tensor(detail["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def _nchw_input(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _to_tflite(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _parsed(model: bytes) -> tuple[tflite.Model, tflite.SubGraph]:
    m = tflite.Model.GetRootAsModel(model, 0)
    return m, m.Subgraphs(0)


def _ops(model: bytes) -> list[str]:
    m, g = _parsed(model)
    return [OP_NAMES[m.OperatorCodes(g.Operators(i).OpcodeIndex()).BuiltinCode()] for i in range(g.OperatorsLength())]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("case", list(SINGLE_BLOCKS))
def test_each_kind_alone_float32_equals_the_reference_int8_runs_close(case):
    net = network_of(SINGLE_BLOCKS[case])
    x = _nchw_input(net.input_shape)
    ref = _to_tflite(reference_forward(net.blocks, x, seed=4))
    f32, i8 = build_tflite_network(net, seed=4), build_tflite_network(net, dtype="int8", seed=4)
    for resolver in RESOLVERS:
        got = _run(f32, [_to_tflite(x)], resolver)
        assert got.shape == nhwc(net.output_shape)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        q = _run(i8, [_to_tflite(x)], resolver)
        assert q.dtype == np.float32 and q.shape == got.shape and np.isfinite(q).all()
        assert _cosine(q, ref) >= 0.98, case


def test_the_squeeze_excitation_ops_and_its_gate_constant():
    model = build_tflite_network(network_of(SINGLE_BLOCKS["mb_block k7 relu se"]))
    assert _ops(model) == ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "CONV_2D", "CONV_2D", "MUL", "MUL", "CONV_2D", "ADD"]
    m, g = _parsed(model)
    for i in range(g.OperatorsLength()):
        if _ops(model)[i] == "MUL":
            assert g.Operators(i).BuiltinOptionsType() == tflite.BuiltinOptions.MulOptions
    tensors = {g.Tensors(i).Name().decode(): g.Tensors(i) for i in range(g.TensorsLength())}
    sixth = tensors["m.se.sixth"]
    assert m.Buffers(sixth.Buffer()).DataAsNumpy().view(np.float32).tolist() == pytest.approx([1 / 6])
    hs = build_tflite_network(network_of(SINGLE_BLOCKS["mb_block k3 hswish"]))
    assert _ops(hs) == ["CONV_2D", "HARD_SWISH", "DEPTHWISE_CONV_2D", "HARD_SWISH", "CONV_2D", "ADD"]


def test_int8_gate_and_hswish_tensors_carry_their_calibrated_ranges():
    net = network_of(*mixed_chain())
    ranges = network_ranges(net, [block_weights(b, 0) for b in net.blocks], 0)
    assert 0 < ranges["s.e.se.gate"][1] <= 1.0 and ranges["s.e.se.gate"][0] == 0.0
    assert 0 < ranges["s.e.se.relu6"][1] <= 6.0
    assert ranges["stem.lin"][0] < 0 and ranges["stem"][0] >= -0.375 * 1.25  # h-swish's least value is -3/8
    m, g = _parsed(build_tflite_network(net, dtype="int8"))
    tensors = {g.Tensors(i).Name().decode(): g.Tensors(i) for i in range(g.TensorsLength())}
    for role in ("s.e.se.gate", "s.e.se", "s.e.se.relu6", "s.e.ex", "s.e.ex.lin", "s.e.dw", "stem", "stem.lin",
                 "s.b2.se.reduce", "s.b2.pw", "s.b2.add", "c.mix", "c.mix.lin", "c.logits"):
        t = tensors[role]
        want = activation_quant(*ranges[role])
        assert t.Type() == tflite.TensorType.INT8, role
        assert t.Quantization().ScaleAsNumpy()[0] == pytest.approx(want.scale[0], rel=1e-6), role
        assert t.Quantization().ZeroPointAsNumpy()[0] == want.zero_point[0], role
    # every activation tensor is int8 except the float ends: the graph in and the logits out
    weights = {g.Tensors(i).Name().decode() for i in range(g.TensorsLength()) if g.Tensors(i).Buffer()}
    floats = {n for n, t in tensors.items() if n not in weights and t.Type() == tflite.TensorType.FLOAT32}
    assert floats == {"input", "logits"}


def test_a_network_through_every_kind_float32_equals_the_reference_int8_close():
    net = network_of(*mixed_chain())
    x = _nchw_input(net.input_shape, seed=6)
    ref = reference_forward(net.blocks, x, seed=2)
    np.testing.assert_allclose(_run(build_tflite_network(net, seed=2), [_to_tflite(x)]), ref, rtol=1e-4, atol=1e-5)
    assert _cosine(_run(build_tflite_network(net, dtype="int8", seed=2), [_to_tflite(x)]), ref) >= 0.98


def test_a_skipped_block_alone_copies_its_input_in_both_dtypes():
    net = network_of(SINGLE_BLOCKS["identity"])
    x = _to_tflite(_nchw_input(net.input_shape))
    assert _ops(build_tflite_network(net)) == ["RESHAPE"]
    np.testing.assert_array_equal(_run(build_tflite_network(net), [x]), x)
    assert _ops(build_tflite_network(net, dtype="int8")) == ["QUANTIZE", "DEQUANTIZE"]
    np.testing.assert_allclose(_run(build_tflite_network(net, dtype="int8"), [x]), x, atol=1 / 127)


def test_an_unknown_activation_is_refused_naming_the_block():
    block = dataclasses.replace(SINGLE_BLOCKS["pool_mix_fc relu"], activation="swish")
    with pytest.raises(UnknownSpace, match=r"block 0 \(c\): unknown activation 'swish'"):
        build_tflite_network(network_of(block), dtype="int8")


# --- the ofa_mbv3 space -----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_ofa_mbv3_at_224_float_and_int8_run_and_agree(which):
    space = make_space("ofa_mbv3")
    widths = getattr(space, which)()
    x = _to_tflite(_nchw_input(space.input_shape, seed=3))
    f32 = _run(build_tflite(space, widths), [x])
    assert f32.shape == (1, 1000) and np.isfinite(f32).all()
    i8 = build_tflite(space, widths, dtype="int8")
    for resolver in RESOLVERS:
        got = _run(i8, [x], resolver)
        assert np.isfinite(got).all() and _cosine(got, f32) >= 0.98


def test_ofa_mbv3_float_equals_the_reference():
    space = make_space("ofa_mbv3", {"resolution": 40, "levels": 4})
    rng = np.random.default_rng(8)
    widths = [int(rng.choice(layer.choices)) for layer in space.layers]
    x = _nchw_input(space.input_shape, seed=1)
    np.testing.assert_allclose(_run(build_tflite(space, widths, seed=1), [_to_tflite(x)]),
                               reference_forward(space.blocks(widths), x, seed=1), rtol=1e-4, atol=1e-5)


def test_ofa_mbv3_isolated_blocks_build_and_run_in_int8():
    space = make_space("ofa_mbv3", {"resolution": 32, "levels": 3})
    widths = list(space.largest())
    widths[[layer.name for layer in space.layers].index("stage3.block3")] = 0
    assert "identity" in {b.kind for b in space.blocks(widths)}
    for k in range(len(space.templates)):
        model = build_tflite(space, widths, dtype="int8", blocks=(k, 1))
        it = Interpreter(model_content=model, num_threads=1)
        it.allocate_tensors()
        feeds = [np.full(d["shape"], 0.5, np.float32) for d in it.get_input_details()]
        assert np.isfinite(_run(model, feeds)).all(), space.templates[k].name
