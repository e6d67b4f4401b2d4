"""The ONNX builder: valid models (checker, shape inference) equal to a numpy forward pass."""

import hashlib

import sys

import numpy as np
import onnx
import pytest

from tests.support.onnx_models import checked_onnx, run_onnx
from widthwise.device_agents.build_onnx import EMITTERS, build_onnx, same_pads
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.errors import BadWidths, RuntimeUnavailable
from widthwise.device_agents.runtimes import get_runtime
from widthwise.device_agents.spaces import BLOCK_COUNTERS, make_space
from widthwise.device_agents.weights import block_weights

TEXT_PARAMS = {"vocab": 500, "dim": 16, "tokens": 8, "classes": 5, "ranks": [4, 8], "hidden": [8, 16]}


# --- numpy reference of every block kind -------------------------------------------------


def _conv2d(x, w, b, stride, group):
    """NCHW convolution with TensorFlow SAME padding, as the canonical layout stores it."""
    k, size = w.shape[-1], x.shape[2]
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)  # TensorFlow SAME: the odd pixel goes at the end
    xp = np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))
    patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    if group == 1:
        y = np.einsum("nchwij,ocij->nohw", patches, w)
    else:  # depthwise: one filter per channel
        y = np.einsum("nchwij,cij->nchw", patches, w[:, 0])
    return y + b[None, :, None, None]


def _relu6(x):
    return np.clip(x, 0.0, 6.0)


REFERENCE = {
    "conv": lambda b, w, x: _relu6(_conv2d(x, w["w"], w["b"], b.stride, 1)),
    "dwsep": lambda b, w, x: _relu6(
        _conv2d(_relu6(_conv2d(x, w["dw_w"], w["dw_b"], b.stride, b.cin)), w["pw_w"], w["pw_b"], 1, 1)
    ),
    "ir_dwproject": lambda b, w, x: _conv2d(
        _relu6(_conv2d(x, w["dw_w"], w["dw_b"], b.stride, b.cin)), w["pw_w"], w["pw_b"], 1, 1
    ),
    "ir_expand": lambda b, w, x: _relu6(
        _conv2d(_relu6(_conv2d(x, w["ex_w"], w["ex_b"], 1, 1)), w["dw_w"], w["dw_b"], b.stride, b.hidden)
    ),
    "ir_project": lambda b, w, x: _conv2d(x, w["pw_w"], w["pw_b"], 1, 1),
    "pool_fc": lambda b, w, x: x.mean(axis=(2, 3)) @ w["w"].T + w["b"],
    "embedding": lambda b, w, x: w["table"][x],
    "proj_dense": lambda b, w, x: np.maximum((x @ w["proj"]).mean(axis=1) @ w["w"].T + w["b"], 0.0),
    "dense": lambda b, w, x: x @ w["w"].T + w["b"],
}


def reference_forward(space, widths, x, seed=0):
    inputs = []
    for block in space.blocks(widths):
        inputs.append(x)
        x = REFERENCE[block.kind](block, block_weights(block, seed), x.astype(np.float64) if x.dtype.kind == "f" else x)
        if block.residual:
            x = x + inputs[block.residual_from]
    return x


# --- tests -----------------------------------------------------------------------------------


def test_same_pads_put_the_odd_pixel_at_the_end():
    assert same_pads(32, 2, 3) == [0, 0, 1, 1]
    assert same_pads(37, 2, 3) == [1, 1, 1, 1]
    assert same_pads(7, 1, 3) == [1, 1, 1, 1]
    assert same_pads(1, 2, 3) == [1, 1, 1, 1]


def test_every_block_kind_has_an_emitter():
    assert {"ir_dwproject", "ir_expand", "ir_project"} <= set(EMITTERS)
    assert set(BLOCK_COUNTERS) <= set(EMITTERS)


@pytest.mark.parametrize("resolution", [32, 37])
def test_mobilenet_matches_numpy_reference(resolution):
    space = make_space("mobilenet_v1", {"resolution": resolution})
    widths = [8, 16, 24, 16, 32, 24, 40, 16, 8, 24, 16, 32, 48, 24]
    model = build_onnx(space, widths, seed=3)
    inferred = checked_onnx(model)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [1, 1000]
    x = np.random.default_rng(0).uniform(-1, 1, space.input_shape).astype(np.float32)
    np.testing.assert_allclose(run_onnx(model, x), reference_forward(space, widths, x, seed=3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resolution", [32, 37])
def test_mobilenet_v2_matches_numpy_reference(resolution):
    space = make_space("mobilenet_v2", {"resolution": resolution, "levels": 5})
    rng = np.random.default_rng(4)
    widths = [int(rng.choice(layer.choices)) for layer in space.layers]
    model = build_onnx(space, widths, seed=2)
    inferred = checked_onnx(model)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [1, 1000]
    x = np.random.default_rng(1).uniform(-1, 1, space.input_shape).astype(np.float32)
    np.testing.assert_allclose(run_onnx(model, x), reference_forward(space, widths, x, seed=2), rtol=1e-4, atol=1e-4)


def test_mobilenet_v2_graph_is_the_inverted_residual_network_with_adds_on_later_blocks_only():
    space = make_space("mobilenet_v2", {"resolution": 32, "levels": 3})
    proto = onnx.load_from_string(build_onnx(space, space.smallest()))
    expected = ["Conv", "Clip"]  # stem
    for t, _c, n, _s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                         (6, 320, 1, 1)):
        for m in range(1, n + 1):
            expected += ["Conv", "Clip"] * (t > 1) + ["Conv", "Clip", "Conv"] + ["Add"] * (m > 1)
    expected += ["Conv", "Clip", "GlobalAveragePool", "Flatten", "Gemm"]  # head, classifier
    assert [n.op_type for n in proto.graph.node] == expected
    # an Add sums the linear projection just before it and the input of its block's 1x1 expansion
    nodes = list(proto.graph.node)
    for i, node in enumerate(nodes):
        if node.op_type == "Add":
            expand = nodes[i - 5]
            assert node.input[0] == nodes[i - 1].output[0] and node.input[1] == expand.input[0]
            assert expand.op_type == "Conv" and [a.ints for a in expand.attribute if a.name == "kernel_shape"] == [[1, 1]]


def test_mobilenet_v2_weights_in_the_model_match_the_exact_count():
    space = make_space("mobilenet_v2", {"resolution": 32, "levels": 4})
    rng = np.random.default_rng(9)
    widths = [int(rng.choice(layer.choices)) for layer in space.layers]
    proto = onnx.load_from_string(build_onnx(space, widths))
    weights = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if not t.name.startswith("relu6"))
    assert weights == space.counts(widths)[1]


def test_text_lowrank_matches_numpy_reference():
    space = make_space("text_lowrank", TEXT_PARAMS)
    widths = [5, 12]  # any positive widths, not only grid points
    model = build_onnx(space, widths, seed=1)
    checked_onnx(model)
    tokens = np.random.default_rng(0).integers(0, TEXT_PARAMS["vocab"], space.input_shape).astype(np.int64)
    out = run_onnx(model, tokens)
    assert out.shape == (1, TEXT_PARAMS["classes"])
    np.testing.assert_allclose(out, reference_forward(space, widths, tokens, seed=1), rtol=1e-4, atol=1e-5)


def test_parameters_in_the_model_match_the_exact_count():
    space = make_space("mobilenet_v1", {"resolution": 32})
    widths = space.smallest()
    proto = onnx.load_from_string(build_onnx(space, widths))
    weights = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if not t.name.startswith("relu6"))
    assert weights == space.counts(widths)[1]


def test_same_seed_same_bytes_other_seed_other_bytes():
    space = make_space("mobilenet_v1", {"resolution": 32})
    widths = space.smallest()
    assert build_onnx(space, widths, seed=5) == build_onnx(space, widths, seed=5)
    assert build_onnx(space, widths, seed=5) != build_onnx(space, widths, seed=6)


def test_int8_is_not_built_for_onnx():
    space = make_space("mobilenet_v1", {"resolution": 32})
    with pytest.raises(RuntimeUnavailable, match="float32 networks only"):
        build_onnx(space, space.smallest(), dtype="int8")


def test_bad_widths_are_refused():
    space = make_space("mobilenet_v1", {"resolution": 32})
    with pytest.raises(BadWidths):
        build_onnx(space, [8] * 13)
    with pytest.raises(BadWidths):
        build_onnx(space, [8] * 13 + [0])


def test_tensors_larger_than_the_weight_pool_read_it_cyclically():
    from widthwise.device_agents import weights

    slicer = weights._Slicer(2, 0)
    start = weights.POOL_SIZE - 100
    slicer.offset = start
    big = slicer.normal((2, weights.POOL_SIZE + 50), 0.5).ravel()
    cyclic = np.concatenate([slicer.pool[start:], slicer.pool, slicer.pool])[: big.size] * np.float32(0.5)
    np.testing.assert_array_equal(big, cyclic)


def test_onnx_and_tflite_float_networks_agree_for_a_seed():
    """Both builders take the same canonical weights, so the two networks compute the same logits."""
    if not sys.platform.startswith("linux"):
        pytest.skip("setup.cfg requires LiteRT (ai-edge-litert) on Linux only")
    litert = get_runtime("litert")  # required here: its absence fails, like an import error of ours
    space = make_space("mobilenet_v1", {"resolution": 32})
    widths = [8, 16, 24, 16, 32, 24, 40, 16, 8, 24, 16, 32, 48, 24]
    x = np.random.default_rng(2).uniform(-1, 1, space.input_shape).astype(np.float32)
    onnx_logits = run_onnx(build_onnx(space, widths, seed=7), x)
    session = litert.load(build_tflite(space, widths, seed=7))
    (tflite_logits,) = session.run({session.inputs[0].name: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    np.testing.assert_allclose(tflite_logits, onnx_logits, rtol=1e-4, atol=1e-4)


# sha256 of the networks the builders made before the spaces became trees of factors (producer
# version pinned): the chain spaces must keep building exactly the same bytes.
CHAIN_BYTES = {
    ("mobilenet_v1", (8, 16, 24, 24, 48, 48, 104, 104, 104, 104, 104, 104, 208, 208)):
        "67ea1cfe91a828e00fdaf3cf18f2d45d5f3e5c1b39d3832bbdea4eeb94b3e843",
    ("mobilenet_v1", (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)):
        "5dd7175aba6c18902d45622f6593810b80d4abf125d0b1cb47022cfe29ee9357",
    ("text_lowrank", (10, 64)): "4119177f9aaa985dba8acc39ee0eea6a369c3970909f0abdc41108fa2b93da87",
}


@pytest.mark.parametrize("name, widths", list(CHAIN_BYTES))
def test_chain_spaces_build_the_same_bytes_as_before(name, widths, monkeypatch):
    from widthwise.device_agents import build_onnx as module

    monkeypatch.setattr(module, "__version__", "pinned")
    params = {"resolution": 96} if name == "mobilenet_v1" else {"vocab": 2000, "dim": 64, "tokens": 16}
    model = build_onnx(make_space(name, params), widths, seed=3)
    assert hashlib.sha256(model).hexdigest() == CHAIN_BYTES[(name, widths)]


# sha256 of MobileNet-V2 networks (and one run of its blocks alone) as built before blocks carried
# an activation and the MobileNet-V3 kinds existed (producer version pinned): unchanged bytes.
V2_RANDOM = (40, 24, 16, 40, 112, 128, 32, 112, 288, 40, 40, 272, 344, 272, 112, 16, 112, 112, 232, 240, 384, 1056,
             1152, 160, 640)
V2_BYTES = {
    ("base", None): "6d6e272e909a4390e73f85dd4414111aae0ccc35af6142448eb51c6b9c097113",
    ("random", None): "b87052c8a48f0e905d5b0a4dfe61cfe0c373f8ce83e771160d7e6843c671533d",
    ("random", (3, 2)): "161b9844fb7fdd5001beaf2c330b387b187b7fcdb04b493af0bcc8f4881f5672",
}


@pytest.mark.parametrize("which, blocks", list(V2_BYTES))
def test_mobilenet_v2_builds_the_same_bytes_as_before(which, blocks, monkeypatch):
    from widthwise.device_agents import build_onnx as module

    monkeypatch.setattr(module, "__version__", "pinned")
    space = make_space("mobilenet_v2", {"resolution": 96})
    widths = space.base_widths() if which == "base" else V2_RANDOM
    model = build_onnx(space, widths, seed=3, blocks=blocks)
    assert hashlib.sha256(model).hexdigest() == V2_BYTES[(which, blocks)]
