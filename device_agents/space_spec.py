"""Spaces as data: the `widthwise-space/1` spec format, parsed and validated into a `Space`.

A spec is a JSON object a user writes by hand (docs/spaces.md): the input, the variables
with their choices, and the stages of blocks in computation order, each block of a kind
this agent can build. `parse_space_spec` returns an ordinary `Space` whose `params` are
`{"spec": <the spec object>}`, so a space written as a spec travels, and is recorded,
wherever a space is named by (name, params): bench requests, the sample store's identity,
tables. Host and agent run the same code; every refusal is a BadRequest (field
`space_spec...`) whose one-line message names the stage, block and field, and the spec's
size is capped before it is read any further (device_agents.space_spec_read). Only data:
nothing in a spec is executed.
"""

from __future__ import annotations

import functools
import json
from typing import Mapping

from .errors import BadRequest
from .space_model import Space
from .space_spec_blocks import build_templates
from .space_spec_checks import check_limits, check_space
from .space_spec_read import (ATTR_KEYS, DEFAULT_LEVELS, DTYPES, MAX_DEPTH, MAX_LEVELS, MAX_NODES, MAX_SPEC_BYTES,
                              SPEC_FORMAT, TOP_KEYS, check_keys, check_spec_size, load_spec_text, parse_variables,
                              read_int, read_name, spec_error)

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_SPEC_BYTES", "SPEC_FORMAT", "check_spec_size", "load_spec_text",
           "parse_space_spec", "space_from_params"]


# --- the whole spec ---------------------------------------------------------------------------


def _input(spec: Mapping) -> tuple[tuple[int, ...], str, dict[str, int]]:
    """(input shape, dtype, attrs): an image (1, C, H, H) float32, or token ids (1, T) int64 with attrs."""
    if "input" not in spec:
        raise spec_error("", "input", 'is missing: {"shape": [1, C, H, W], "dtype": "float32"}', ".input")
    obj = check_keys(spec["input"], ("shape", "dtype"), "", "input", ".input")
    shape = obj.get("shape")
    dtype = obj.get("dtype", "float32")
    if dtype not in DTYPES:
        raise spec_error("input", "dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}", ".input.dtype")
    want = 4 if dtype == "float32" else 2
    if (not isinstance(shape, list) or len(shape) != want or shape[0] != 1
            or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 4096 for d in shape)):
        form = "[1, C, H, W]" if want == 4 else "[1, tokens]"
        raise spec_error("input", "shape", f"must be {form} with positive integers for dtype {dtype}, got {shape!r}",
                         ".input.shape")
    if want == 4 and shape[2] != shape[3]:
        raise spec_error("input", "shape", f"must be square (H = W), got {shape}", ".input.shape")
    attrs: dict[str, int] = {}
    if "attrs" in spec:
        given = check_keys(spec["attrs"], ATTR_KEYS, "", "attrs", ".attrs")
        for key in given:
            attrs[key] = read_int(given, key, "attrs", lo=1, hi=10_000_000, path=".attrs")
    if dtype == "int64":
        missing = [k for k in ATTR_KEYS if k not in attrs]
        if missing:
            raise spec_error("attrs", missing[0], "is missing: token input needs attrs vocab, dim and tokens",
                             ".attrs")
        if attrs["tokens"] != shape[1]:
            raise spec_error("attrs", "tokens", f"must equal the input's token count {shape[1]}, got "
                                                f"{attrs['tokens']}", ".attrs.tokens")
    return tuple(shape), str(dtype), attrs


def parse_space_spec(spec: object) -> Space:
    """The `Space` a `widthwise-space/1` spec describes; BadRequest naming the stage, block and field."""
    space = _parse_canonical(check_spec_size(spec))
    check_limits(space)  # every time: the caps in force may change, the parse is cached
    return space


@functools.lru_cache(maxsize=8)
def _parse_canonical(text: str) -> Space:
    """Parse a spec given as its compact JSON (a cache: an agent sees the same spec request after request)."""
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise spec_error("", "spec", f"must be a JSON object, got {type(spec).__name__}")
    check_keys(spec, TOP_KEYS, "", "a spec")
    if spec.get("format") != SPEC_FORMAT:
        raise spec_error("", "format", f"must be {SPEC_FORMAT!r}, got {spec.get('format')!r}", ".format")
    name = read_name(spec, "name", "")
    if "doc" in spec and not isinstance(spec["doc"], str):
        raise spec_error("", "doc", "must be a string", ".doc")
    levels = read_int(spec, "levels", "", lo=1, hi=MAX_LEVELS, default=DEFAULT_LEVELS)
    shape, dtype, attrs = _input(spec)
    layers = parse_variables(spec, levels)
    in_channels = attrs["vocab"] if dtype == "int64" else shape[1]
    in_hw = shape[2] if dtype == "float32" else 1
    templates, out_channels = build_templates(spec, layers, in_channels, in_hw, dtype)
    space = Space(
        name=name,
        params=(("spec", spec),),
        input_channels=in_channels,
        output_channels=out_channels,
        input_shape=shape,
        input_dtype=dtype,
        layers=layers,
        templates=templates,
        attrs=tuple((key, attrs[key]) for key in ATTR_KEYS if key in attrs),
        resolution=shape[2] if dtype == "float32" else None,
    )
    check_space(space)
    return space


def space_from_params(name: str, params: Mapping[str, object]) -> Space:
    """The space of params {"spec": obj}, which must be named `name` (how `make_space` reads a spec)."""
    extra = sorted(set(params) - {"spec"})
    if extra:
        raise BadRequest(f"a space given as a spec takes no other parameter, got {', '.join(extra)}",
                         field="spec.params")
    space = parse_space_spec(params["spec"])
    if space.name != name:
        raise BadRequest(f"the spec describes space {space.name!r}, not {name!r}", field="spec.space")
    return space

