"""Space specs for the spec parser's tests: the documented files, and a refusal helper."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from widthwise.device_agents.errors import BadRequest
from widthwise.device_agents.space_spec import load_spec_text, parse_space_spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "spaces"


def spec_of(name: str) -> dict:
    """The object of docs/spaces/NAME.json."""
    return load_spec_text((DOCS / f"{name}.json").read_text(), f"{name}.json")


def refused(mutate, match: str, error=BadRequest, name: str = "mobilenet_v2") -> None:
    """`mutate` a copy of a documented spec and check the parser refuses it in one line holding `match`."""
    spec = copy.deepcopy(spec_of(name))
    mutate(spec)
    with pytest.raises(error) as info:
        parse_space_spec(spec)
    assert "\n" not in info.value.message
    assert match in info.value.message, info.value.message


def block_of(spec: dict, stage: int, block: int) -> dict:
    """Block `block` of stage `stage` (both from 0) of a spec."""
    return spec["stages"][stage]["blocks"][block]


def chain_spec(outs: list) -> dict:
    """A conv chain writing the given outputs in turn, then a classifier."""
    names = sorted({o for o in outs if isinstance(o, str)})
    return {
        "format": "widthwise-space/1", "name": "chain", "input": {"shape": [1, 3, 32, 32]},
        "variables": [{"name": n, "choices": [8, 16]} for n in names],
        "stages": [{"name": "body", "blocks": [{"kind": "conv", "kernel": 3, "out": o} for o in outs]
                    + [{"kind": "pool_fc", "name": "classifier", "out": 10}]}],
    }
