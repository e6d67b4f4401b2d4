"""TFLite layer helpers: a block's activation fused or as HARD_SWISH, output tensors named by role."""

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter

from widthwise.device_agents import tflite_schema as fb
from widthwise.device_agents.build_tflite_ops import FloatNet, Int8Net, conv_act, depthwise_conv

OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _layer(net_class, activation: str, ranges=None) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    dw = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    writer = fb.ModelWriter("t")
    net = net_class(writer, ranges or {})
    graph_input, x = net.model_input((1, 6, 6, 3), "float32")
    y = conv_act(net, "c", x, w, np.full(4, 0.5, np.float32), 1, 6, activation)
    z = depthwise_conv(net, "d", y, dw, np.zeros(4, np.float32), 2, 3, activation)
    return writer.finish([graph_input], [net.model_output(z)]), w, dw


def _reference(x, w, dw, act):
    """NHWC SAME convolution (stride 1, pad 1), the activation, depthwise 3x3 stride 2 (pad 0 before, 1 after)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = np.zeros((1, 6, 6, 4))
    for i in range(6):
        for j in range(6):
            y[0, i, j] = np.einsum("hwc,ochw->o", xp[0, i:i + 3, j:j + 3], w) + 0.5
    y = act(y)
    yp = np.pad(y, ((0, 0), (0, 1), (0, 1), (0, 0)))
    z = np.zeros((1, 3, 3, 4))
    for i in range(3):
        for j in range(3):
            z[0, i, j] = np.einsum("hwc,chw->c", yp[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3], dw[:, 0])
    return act(z)


ACTS = {
    "relu6": lambda v: np.clip(v, 0, 6),
    "relu": lambda v: np.maximum(v, 0),
    "hswish": lambda v: v * np.clip(v + 3, 0, 6) / 6,
}


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=model, num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("activation", list(ACTS))
def test_activations_fused_or_as_hard_swish_match_a_reference(activation):
    model, w, dw = _layer(FloatNet, activation)
    m = tflite.Model.GetRootAsModel(model, 0)
    g = m.Subgraphs(0)
    ops = [OP_NAMES[m.OperatorCodes(g.Operators(i).OpcodeIndex()).BuiltinCode()] for i in range(g.OperatorsLength())]
    names = {g.Tensors(i).Name().decode() for i in range(g.TensorsLength())}
    if activation == "hswish":
        assert ops == ["CONV_2D", "HARD_SWISH", "DEPTHWISE_CONV_2D", "HARD_SWISH"]
        assert {"c.lin", "c", "d.lin"} <= names
    else:
        assert ops == ["CONV_2D", "DEPTHWISE_CONV_2D"] and "c.lin" not in names
        fused = g.Operators(0).BuiltinOptions()
        options = tflite.Conv2DOptions()
        options.Init(fused.Bytes, fused.Pos)
        assert options.FusedActivationFunction() == {"relu6": fb.ACT_RELU6, "relu": fb.ACT_RELU}[activation]
    x = np.random.default_rng(1).uniform(-1, 1, (1, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _reference(x, w, dw, ACTS[activation]), rtol=1e-4, atol=1e-4)


def test_int8_hard_swish_takes_the_ranges_of_its_input_and_output_roles():
    ranges = {"c.lin": (-12.0, 12.0), "c": (-0.375, 12.0), "d.lin": (-20.0, 20.0), "d": (-0.375, 20.0)}
    model, w, dw = _layer(Int8Net, "hswish", ranges)
    g = tflite.Model.GetRootAsModel(model, 0).Subgraphs(0)
    tensors = {g.Tensors(i).Name().decode(): g.Tensors(i) for i in range(g.TensorsLength())}
    for role, (lo, hi) in ranges.items():
        q = tensors[role].Quantization()
        assert tensors[role].Type() == tflite.TensorType.INT8
        assert q.ScaleAsNumpy()[0] == pytest.approx((hi - lo) / 255, rel=1e-6)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 6, 6, 3)).astype(np.float32)
    ref = _reference(x, w, dw, ACTS["hswish"])
    assert np.abs(_run(model, x) - ref).max() <= 0.05 * np.abs(ref).max()
