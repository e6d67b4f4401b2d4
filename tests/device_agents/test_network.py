"""Networks of blocks: the whole network and runs of its blocks alone, built by the same builders.

The isolated runs are checked on real runtimes by composition: the output of blocks 0..k-1
fed to block k alone (with the residual source's input as its skip) gives what blocks
0..k compute together, so a block alone sees exactly the tensors the whole network feeds it.
"""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.errors import BadRequest
from widthwise.device_agents.network import (
    INPUT_NAME,
    block_shapes,
    check_block_range,
    isolated_network,
    skip_input_name,
    whole_network,
)
from widthwise.device_agents.runtimes import get_runtime
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.timing import random_inputs

V2 = make_space("mobilenet_v2", {"resolution": 32, "levels": 4})
V1 = make_space("mobilenet_v1", {"resolution": 32, "levels": 4})
TEXT = make_space("text_lowrank", {"vocab": 300, "dim": 16, "tokens": 8, "classes": 4})
OFA = make_space("ofa_mbv3", {"resolution": 32, "levels": 4})


def _widths(space):
    """A configuration mixing the grid's ends, so no two neighbouring widths are equal by accident."""
    return tuple(layer.choices[k % len(layer.choices)] for k, layer in enumerate(space.layers))


@pytest.mark.parametrize("space", [V2, V1, TEXT, OFA], ids=lambda s: s.name)
def test_each_block_alone_is_fed_what_the_previous_block_makes(space):
    widths = _widths(space)
    n = len(space.templates)
    whole = whole_network(space, widths)
    assert whole.input_shape == space.input_shape and whole.output_shape == (1, space.output_channels)
    previous_out = whole.input_shape
    for k in range(n):
        net = isolated_network(space, widths, k)
        assert net.first == k and len(net.blocks) == 1
        assert net.input_shape == previous_out, space.blocks(widths)[k].name
        previous_out = net.output_shape
    assert previous_out == whole.output_shape
    assert isolated_network(space, widths, 0, n).blocks == whole.blocks


def test_a_residual_source_outside_the_run_becomes_a_skip_input_of_the_sum_s_shape():
    widths = _widths(V2)
    blocks = V2.blocks(widths)
    residual = [b for b in blocks if b.residual]
    assert residual, "mobilenet_v2 has residual Adds"
    for b in residual:
        alone = isolated_network(V2, widths, b.index)
        if b.residual_from < b.index:  # the projection of an expanded block reads the expansion's input
            assert alone.skips == ((b.residual_from, block_shapes(b)[1]),)
            assert block_shapes(blocks[b.residual_from])[0] == block_shapes(b)[1]
        else:  # the t=1 block adds its own input: nothing from outside
            assert alone.skips == ()
        together = isolated_network(V2, widths, b.residual_from, b.index - b.residual_from + 1)
        assert together.skips == ()


def test_a_block_range_outside_the_space_is_refused_naming_the_field():
    n = len(V2.templates)
    assert check_block_range(V2, n - 1) == (n - 1, 1)
    for bad in (n, -1, True, 1.0, "3", None):
        with pytest.raises(BadRequest, match=f"block must be the index of a block of space mobilenet_v2, 0 to {n - 1}") as exc:
            check_block_range(V2, bad)
        assert exc.value.details["field"] == "block"
    for bad in (0, n - 2, False, 2.0):
        with pytest.raises(BadRequest, match="block_count must be an integer from 1 to 2") as exc:
            check_block_range(V2, n - 2, bad)
        assert exc.value.details["field"] == "block_count"


def _run(runtime: str, model: bytes, feeds_by_name: dict) -> np.ndarray:
    session = get_runtime(runtime).load(model)
    names = [spec.name for spec in session.inputs]
    assert sorted(names) == sorted(feeds_by_name), names
    return session.run({name: feeds_by_name[name] for name in names})[0]


def _nhwc(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _compose(runtime: str, build, space, widths, k: int, layout) -> tuple[np.ndarray, np.ndarray]:
    """(blocks 0..k together, block k alone fed from blocks 0..k-1 and the skip's source)."""
    image = np.random.default_rng(3).uniform(-1, 1, space.input_shape).astype(np.float32)
    x = layout(image)
    together = _run(runtime, build(blocks=(0, k + 1)), {INPUT_NAME: x})
    feeds = {INPUT_NAME: _run(runtime, build(blocks=(0, k)), {INPUT_NAME: x})}
    for index, _ in isolated_network(space, widths, k).skips:
        feeds[skip_input_name(index)] = _run(runtime, build(blocks=(0, index)), {INPUT_NAME: x}) if index else x
    return together, _run(runtime, build(blocks=(k, 1)), feeds)


def _v2_blocks_to_check(widths) -> list[int]:
    """A residual projection (fed a skip), a t=1 block, an expansion, the head conv and the classifier."""
    blocks = V2.blocks(widths)
    later = next(b.index for b in blocks if b.residual and b.residual_from < b.index)
    dwproject = next(b.index for b in blocks if b.kind == "ir_dwproject")
    expand = next(b.index for b in blocks if b.kind == "ir_expand" and b.stride == 2)
    return [later, dwproject, expand, len(blocks) - 2, len(blocks) - 1]


def test_onnx_blocks_alone_compute_what_they_compute_in_the_whole_network():
    widths = _widths(V2)

    def build(blocks):
        return build_onnx(V2, widths, seed=5, blocks=blocks)

    for k in _v2_blocks_to_check(widths):
        together, alone = _compose("onnxruntime", build, V2, widths, k, lambda x: x)
        np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-4 * float(np.abs(together).max()))
    whole = _run("onnxruntime", build_onnx(V2, widths, seed=5), {INPUT_NAME: np.ones(V2.input_shape, np.float32)})
    every = _run("onnxruntime", build((0, len(V2.templates))), {INPUT_NAME: np.ones(V2.input_shape, np.float32)})
    np.testing.assert_allclose(every, whole, rtol=1e-5, atol=1e-6)


def test_tflite_float_blocks_alone_compute_what_they_compute_in_the_whole_network():
    widths = _widths(V2)

    def build(blocks):
        return build_tflite(V2, widths, seed=5, blocks=blocks)

    for k in _v2_blocks_to_check(widths)[:2]:
        together, alone = _compose("litert", build, V2, widths, k, _nhwc)
        np.testing.assert_allclose(alone, together, rtol=1e-4, atol=1e-4 * float(np.abs(together).max()))


@pytest.mark.parametrize("space", [V2, TEXT, OFA], ids=lambda s: s.name)
def test_every_block_alone_builds_and_runs_in_every_format_with_its_output_shape(space):
    widths = _widths(space)
    for k in range(len(space.templates)):
        net = isolated_network(space, widths, k)
        models = {
            ("onnxruntime", "float32"): build_onnx(space, widths, blocks=(k, 1)),
            ("litert", "float32"): build_tflite(space, widths, blocks=(k, 1)),
            ("litert", "int8"): build_tflite(space, widths, dtype="int8", blocks=(k, 1)),
        }
        for (runtime, dtype), model in models.items():
            session = get_runtime(runtime).load(model)
            assert len(session.inputs) == 1 + len(net.skips)
            out = session.run(random_inputs(session.inputs, int_high=net.int_high))[0]
            expected = net.output_shape if runtime == "onnxruntime" else _nhwc(np.empty(net.output_shape)).shape
            assert out.shape == tuple(expected), (net.name, runtime, dtype)
            assert np.isfinite(out).all()


def test_a_block_alone_is_a_smaller_model_than_the_whole_network():
    widths = V2.base_widths()
    whole = len(build_onnx(V2, widths))
    sizes = [len(build_onnx(V2, widths, blocks=(k, 1))) for k in range(len(V2.templates))]
    assert max(sizes) < whole
    assert build_onnx(V2, widths, blocks=(3, 1)) == build_onnx(V2, widths, blocks=(3, 1))  # deterministic


def test_a_skipped_block_passes_its_input_through_and_an_mb_block_adds_its_own_input():
    widths = _widths(OFA)
    blocks = OFA.blocks(widths)
    skipped = [b for b in blocks if b.kind == "identity"]
    assert skipped, "the mixed configuration skips some block"
    for b in skipped:
        net = isolated_network(OFA, widths, b.index)
        assert net.input_shape == net.output_shape == (1, b.cin, b.in_hw, b.in_hw) and net.skips == ()
    kept = next(b for b in blocks if b.kind == "mb_block")
    assert kept.residual_from == kept.index and isolated_network(OFA, widths, kept.index).skips == ()
