"""Whole-space checks of a spec: names, the tree, kinds and the caps at the largest configuration."""

from __future__ import annotations

import pytest

from widthwise.device_agents import limits
from widthwise.device_agents.errors import BadRequest, LimitExceeded
from widthwise.device_agents.space_spec import parse_space_spec
from widthwise.device_agents.space_spec_checks import largest_configuration
from tests.support.space_specs import chain_spec, refused, spec_of


def test_a_cycle_names_the_variables_that_close_it():
    with pytest.raises(BadRequest) as info:
        parse_space_spec(chain_spec(["a", "b", "c", "a"]))
    assert 'block body.block4: field "out": the variables c - b - a - c close a cycle' in info.value.message
    space = parse_space_spec(chain_spec(["a", "b", "a", "b"]))  # the same pair twice is one edge, not a cycle
    assert [f.variables for f in space.factors] == [(0,), (0, 1), (1, 0), (0, 1), (1,)]
    assert parse_space_spec(chain_spec(["a", "b", "c"])).is_chain


def test_a_block_over_no_variable_isrefused():
    with pytest.raises(BadRequest, match='block body.block3: field "out": the block reads no variable'):
        parse_space_spec(chain_spec(["a", 16, 32]))


def test_a_network_over_the_caps_at_its_largest_isrefused():
    refused(lambda s: s["variables"][0]["grid"].update(base=20_000),
             "at its largest configuration, the network's multiply-accumulate count is", error=LimitExceeded)
    saved = limits.current()
    limits.configure(limits.with_overrides(max_memory_bytes=1 << 20))
    try:
        with pytest.raises(LimitExceeded, match="estimated peak memory"):
            parse_space_spec(spec_of("mcu_vww"))  # the parse is cached; the caps are checked every time
    finally:
        limits.configure(saved)
    assert parse_space_spec(spec_of("mcu_vww")).name == "mcu_vww"


def test_largest_configuration_picks_the_biggest_kept_option():
    space = parse_space_spec(spec_of("ofa_mbv3"))
    largest = largest_configuration(space)
    for layer, value in zip(space.layers, largest):
        assert layer.label(value) == "k7e6" if layer.options else value == layer.choices[-1]
