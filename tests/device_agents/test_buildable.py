"""Which block kinds the agent can build: listed in hello, and a space needing another refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from widthwise.device_agents import build_onnx, buildable
from widthwise.device_agents.errors import BadRequest
from widthwise.device_agents.handlers import HANDLERS
from widthwise.device_agents.space_spec import parse_space_spec
from widthwise.device_agents.spaces import make_space

SPECS = Path(__file__).resolve().parents[2] / "docs" / "spaces"


@pytest.fixture
def fresh_kinds():
    buildable.buildable_kinds.cache_clear()
    yield
    buildable.buildable_kinds.cache_clear()


def test_hello_lists_the_kinds_each_target_builds():
    body, _ = HANDLERS["hello"]({"type": "hello", "id": 1}, b"")
    kinds = body["block_kinds"]
    assert set(kinds) == {"onnx", "tflite", "tflite_int8"}
    for name in ("mobilenet_v1", "mobilenet_v2", "ofa_mbv3", "text_lowrank"):
        assert buildable.space_kinds(make_space(name)) <= set(kinds["onnx"]), name
    assert body["space_spec_format"] == "widthwise-space/1"


def test_space_kinds_include_identity_when_a_block_can_be_skipped():
    assert "identity" in buildable.space_kinds(make_space("ofa_mbv3"))
    assert "identity" not in buildable.space_kinds(make_space("mobilenet_v2"))


def test_a_kind_a_target_lacks_is_refused_by_name(monkeypatch, fresh_kinds):
    space = parse_space_spec(json.loads((SPECS / "ofa_mbv3.json").read_text()))
    buildable.check_buildable(space, "onnx", "float32")
    monkeypatch.delitem(build_onnx.EMITTERS, "mb_block")  # an agent built before the kind existed
    buildable.buildable_kinds.cache_clear()
    with pytest.raises(BadRequest) as info:
        buildable.check_buildable(space, "onnx", "float32")
    assert "cannot build block kind 'mb_block' as float32 onnx (space ofa_mbv3)" in info.value.message
    assert info.value.details["kind"] == "mb_block"
    buildable.check_buildable(make_space("mobilenet_v2"), "onnx", "float32")  # a space without it still builds
    buildable.check_buildable(space, "tflite", "float32")


def test_target_names():
    assert buildable.target_name("onnx", "float32") == "onnx"
    assert buildable.target_name("tflite", "int8") == "tflite_int8"
