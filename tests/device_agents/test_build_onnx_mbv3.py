"""ONNX emitters of the MobileNet-V3 kinds: valid models, run in ONNX Runtime, equal to a numpy reference."""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.support.mbv3_reference import SINGLE_BLOCKS, mixed_chain, network_of, reference_forward
from tests.support.onnx_models import checked_onnx, run_onnx
from widthwise.device_agents.build_onnx import build_onnx, build_onnx_network
from widthwise.device_agents.errors import UnknownSpace
from widthwise.device_agents.spaces import make_space


def _input(net, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, net.input_shape).astype(np.float32)


@pytest.mark.parametrize("case", list(SINGLE_BLOCKS))
def test_each_kind_alone_runs_and_equals_the_numpy_reference(case):
    net = network_of(SINGLE_BLOCKS[case])
    model = build_onnx_network(net, seed=4)
    inferred = checked_onnx(model)
    assert tuple(d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim) == net.output_shape
    x = _input(net)
    out = run_onnx(model, x)
    assert out.shape == net.output_shape and np.isfinite(out).all()
    np.testing.assert_allclose(out, reference_forward(net.blocks, x, seed=4), rtol=1e-4, atol=1e-5)


def test_the_squeeze_excitation_changes_the_output_and_is_checked_numerically():
    """SE's gate is far from 1, so a builder that dropped or mis-wired it would miss the reference."""
    block = SINGLE_BLOCKS["mb_expand k5 s2 hswish se"]
    net = network_of(block)
    x = _input(net, seed=1)
    out = run_onnx(build_onnx_network(net, seed=2), x)
    with_se = reference_forward(net.blocks, x, seed=2)
    without = reference_forward((dataclasses.replace(block, se=False),), x, seed=2)
    assert np.abs(with_se - without).max() > 100 * 1e-4 * np.abs(with_se).max()
    np.testing.assert_allclose(out, with_se, rtol=1e-4, atol=1e-5)


def test_se_and_hswish_ops_and_the_opset_they_need():
    se_model = onnx.load_from_string(build_onnx_network(network_of(SINGLE_BLOCKS["mb_block k7 relu se"])))
    ops = [n.op_type for n in se_model.graph.node]
    assert ops == ["Conv", "Relu", "Conv", "Relu", "GlobalAveragePool", "Conv", "Relu", "Conv", "HardSigmoid", "Mul",
                   "Conv", "Add"]
    hard_sigmoid = next(n for n in se_model.graph.node if n.op_type == "HardSigmoid")
    attrs = {a.name: a.f for a in hard_sigmoid.attribute}
    assert attrs["alpha"] == pytest.approx(1 / 6) and attrs["beta"] == pytest.approx(0.5)
    assert se_model.opset_import[0].version == 13  # no h-swish: the opset every other model has
    hs_model = onnx.load_from_string(build_onnx_network(network_of(SINGLE_BLOCKS["mb_block k3 hswish"])))
    assert [n.op_type for n in hs_model.graph.node].count("HardSwish") == 2
    assert hs_model.opset_import[0].version == 14


def test_a_skipped_block_alone_is_a_copy_of_its_input():
    net = network_of(SINGLE_BLOCKS["identity"])
    proto = checked_onnx(build_onnx_network(net))
    assert [n.op_type for n in proto.graph.node] == ["Identity"] and not proto.graph.initializer
    x = _input(net)
    np.testing.assert_array_equal(run_onnx(build_onnx_network(net), x), x)


def test_a_network_through_every_kind_equals_the_reference():
    net = network_of(*mixed_chain())
    model = build_onnx_network(net, seed=5)
    checked_onnx(model)
    x = _input(net, seed=3)
    np.testing.assert_allclose(run_onnx(model, x), reference_forward(net.blocks, x, seed=5), rtol=1e-4, atol=1e-5)


def test_an_unknown_activation_is_refused_naming_the_block():
    block = dataclasses.replace(SINGLE_BLOCKS["mb_expand k3 s1 relu"], activation="gelu")
    with pytest.raises(UnknownSpace, match=r"block 0 \(e\): unknown activation 'gelu'"):
        build_onnx_network(network_of(block))


# --- the ofa_mbv3 space -----------------------------------------------------------------------


def _random_config(space, seed):
    rng = np.random.default_rng(seed)
    return [int(rng.choice(layer.choices)) for layer in space.layers]


@pytest.mark.parametrize("seed", [0, 1])
def test_ofa_mbv3_equals_the_reference_and_holds_the_counted_parameters(seed):
    space = make_space("ofa_mbv3", {"resolution": 40, "levels": 4})
    widths = _random_config(space, seed)
    model = build_onnx(space, widths, seed=seed)
    proto = checked_onnx(model)
    weights = sum(int(np.prod(t.dims)) for t in proto.graph.initializer if not t.name.startswith("relu6"))
    assert weights == space.counts(widths)[1]
    x = np.random.default_rng(seed).uniform(-1, 1, space.input_shape).astype(np.float32)
    np.testing.assert_allclose(run_onnx(model, x), reference_forward(space.blocks(widths), x, seed=seed),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_ofa_mbv3_at_224_runs(which):
    space = make_space("ofa_mbv3")
    widths = getattr(space, which)()
    out = run_onnx(build_onnx(space, widths), np.random.default_rng(0).uniform(-1, 1, space.input_shape).astype(np.float32))
    assert out.shape == (1, 1000) and np.isfinite(out).all() and np.abs(out).max() > 0


def test_ofa_mbv3_isolated_blocks_run_alone():
    """Every block of the network alone, as the isolated-block lookup table times them (skips included)."""
    space = make_space("ofa_mbv3", {"resolution": 32, "levels": 3})
    widths = list(space.largest())
    widths[[layer.name for layer in space.layers].index("stage2.block4")] = 0  # a skipped block
    assert "identity" in {b.kind for b in space.blocks(widths)}
    for k in range(len(space.templates)):
        model = build_onnx(space, widths, blocks=(k, 1))
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.ones(i.shape, np.float32) for i in session.get_inputs()}
        (out,) = session.run(None, feeds)
        assert np.isfinite(out).all(), space.templates[k].name
