"""The widthwise-space/1 parser: the documented specs are the built-in spaces (same variables,
grids and factors, byte-identical networks), a custom family runs, and make_space reads a spec."""

from __future__ import annotations

import numpy as np
import pytest

from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.errors import BadRequest
from widthwise.device_agents.space_spec import parse_space_spec, space_from_params
from widthwise.device_agents.spaces import make_space
from tests.support.space_specs import spec_of


def configurations(space, count: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Smallest, largest, the base widths, and random configurations of the space."""
    rng = np.random.default_rng(seed)
    out = [space.smallest(), space.largest(), space.base_widths()]
    out += [tuple(int(rng.choice(layer.choices)) for layer in space.layers) for _ in range(count)]
    return out


@pytest.mark.parametrize("name", ["mobilenet_v2", "ofa_mbv3"])
def test_a_documented_spec_is_the_built_in_space(name):
    written, built = parse_space_spec(spec_of(name)), make_space(name)
    assert written.layers == built.layers  # names, bases, choice grids, groups, options
    assert written.templates == built.templates
    assert written.factors == built.factors
    assert (written.input_shape, written.input_dtype, written.output_channels, written.resolution) == (
        built.input_shape, built.input_dtype, built.output_channels, built.resolution)
    assert written.param_dict == {"spec": spec_of(name)}


@pytest.mark.parametrize("name", ["mobilenet_v2", "ofa_mbv3"])
def test_a_documented_spec_builds_byte_identical_networks(name):
    written, built = parse_space_spec(spec_of(name)), make_space(name)
    for seed, widths in enumerate(configurations(built, 3)):
        assert build_onnx(written, widths, seed=seed) == build_onnx(built, widths, seed=seed)
        assert build_tflite(written, widths, seed=seed) == build_tflite(built, widths, seed=seed)
    widths = built.smallest()
    assert build_tflite(written, widths, dtype="int8") == build_tflite(built, widths, dtype="int8")


def test_the_custom_family_runs():
    ort = pytest.importorskip("onnxruntime")
    space = parse_space_spec(spec_of("mcu_vww"))
    assert space.name == "mcu_vww" and space.num_layers == 10 and not space.is_chain
    for widths in (space.smallest(), space.largest()):
        session = ort.InferenceSession(build_onnx(space, widths))
        out = session.run(None, {"input": np.zeros((1, 3, 96, 96), np.float32)})[0]
        assert out.shape == (1, 2)
    # the stage widths are tied: each residual block's project writes the stage's variable
    stage2 = [layer.name for layer in space.layers].index("stage2")
    assert [f.name for f in space.factors if f.kind == "ir_project" and f.variables[-1] == stage2] == [
        "stage2.block1.project", "stage2.block2.project", "stage2.block3.project"]


def test_the_text_family_as_a_spec_is_the_built_in_chain():
    spec = {"format": "widthwise-space/1", "name": "text_lowrank",
            "input": {"shape": [1, 32], "dtype": "int64"}, "attrs": {"vocab": 100_000, "dim": 300, "tokens": 32},
            "variables": [{"name": "rank", "choices": [10, 20, 30, 40, 50, 75, 100, 150, 200, 300], "base": 300},
                          {"name": "hidden", "choices": [64, 128, 192, 256, 384, 512], "base": 256}],
            "stages": [{"name": "text", "blocks": [{"kind": "embedding", "name": "embedding", "out": "rank"},
                                                   {"kind": "proj_dense", "name": "projection", "out": "hidden"},
                                                   {"kind": "dense", "name": "classifier", "out": 20}]}]}
    written, built = parse_space_spec(spec), make_space("text_lowrank")
    assert written.is_chain and (written.layers, written.templates, written.attrs) == (
        built.layers, built.templates, built.attrs)
    assert build_onnx(written, (50, 128)) == build_onnx(built, (50, 128))
    spec["attrs"]["tokens"] = 16
    with pytest.raises(BadRequest, match='attrs: field "tokens": must equal the input\'s token count 32, got 16'):
        parse_space_spec(spec)


def test_space_from_params_is_how_make_space_reads_a_spec():
    spec = spec_of("mcu_vww")
    assert space_from_params("mcu_vww", {"spec": spec}).layers == parse_space_spec(spec).layers
    with pytest.raises(BadRequest, match="describes space 'mcu_vww', not 'other'"):
        space_from_params("other", {"spec": spec})
    with pytest.raises(BadRequest, match="takes no other parameter, got levels"):
        space_from_params("mcu_vww", {"spec": spec, "levels": 4})


def test_the_example_in_docs_spaces_md_parses():
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "spaces.md").read_text()
    example = re.search(r"## A whole spec, small\n\n```json\n(.*?)```", text, re.S).group(1)
    space = parse_space_spec(json.loads(example))
    assert [layer.name for layer in space.layers] == ["stem", "stage1.expand", "stage1", "head"]
    assert [f.kind for f in space.factors] == ["conv", "ir_expand", "ir_project", "conv", "pool_fc"]
