"""Reading a spec: the size caps come first, then each variable mistake is named."""

from __future__ import annotations

import json

import pytest

from widthwise.device_agents.errors import BadRequest
from widthwise.device_agents.space_spec import parse_space_spec
from widthwise.device_agents.space_spec_read import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES, check_spec_size, load_spec_text
from tests.support.space_specs import block_of, refused


def test_variable_mistakes_are_named():
    def choices(values):
        def mutate(s):
            s["variables"][1].pop("grid")
            s["variables"][1]["choices"] = values
        return mutate

    refused(choices([24, 16]), 'variable 2 (stage1): field "choices": must be strictly increasing, got [24, 16]')
    refused(choices([0, 16]), 'variable 2 (stage1): field "choices": must be integers from 1 to 65536, got 0')
    refused(choices([8, 16.5]), "got 16.5")
    refused(choices(list(range(1, 300))), 'field "choices": has 299 items, above the cap of 256')
    refused(lambda s: s["variables"][1].update(choices=[8]), "give exactly one of choices, grid or options, got "
                                                              "choices, grid")
    refused(lambda s: s["variables"][1].update(name="stem"), 'variable 2 (stem): field "name": is used by an earlier')
    refused(lambda s: s["variables"][0]["grid"].update(levels=10_000), 'field "levels": must be an integer from 1 '
                                                                        "to 256, got 10000")
    refused(lambda s: block_of(s, 2, 1).update(expand="stage2.block1.expand"),
             'variable 5 (stage2.block2.expand): field "name": no block reads it')


def test_the_size_caps_come_before_parsing():
    deep: object = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(BadRequest, match=f"nested deeper than {MAX_DEPTH} levels"):
        check_spec_size({"format": "widthwise-space/1", "x": deep})
    with pytest.raises(BadRequest, match=f"more than {MAX_NODES:,} values"):
        check_spec_size({"x": [0] * (MAX_NODES + 1)})
    with pytest.raises(BadRequest, match=f"above the cap of {MAX_SPEC_BYTES:,}"):
        check_spec_size({"doc": "x" * MAX_SPEC_BYTES})
    with pytest.raises(BadRequest, match="nested deeper than"):
        load_spec_text("[" * 100_000 + "]" * 100_000)  # refused by a scan, before the JSON parser recurses
    with pytest.raises(BadRequest, match="is not valid JSON"):
        load_spec_text('{"format": ')
    with pytest.raises(BadRequest, match="NaN is not a number JSON allows"):
        load_spec_text('{"doc": NaN}')
    with pytest.raises(BadRequest, match="holds a value JSON cannot carry"):
        parse_space_spec({"doc": float("inf")})
    with pytest.raises(BadRequest, match='field "spec": must be a JSON object, got list'):
        parse_space_spec([1, 2])
    with pytest.raises(BadRequest, match="must hold a JSON object, got list"):
        load_spec_text("[1, 2]")
    text = 'a [{ "quoted" bracket [[[[[[[[['
    assert load_spec_text(json.dumps({"doc": text})) == {"doc": text}
