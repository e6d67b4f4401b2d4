"""The `widthwise-table/1` reader: a chain of L layers and its L + 1 blocks, each matching the widths around it."""

from __future__ import annotations

from .errors import TableError
from .table import Block, Table
from .table_checks import created, metadata, nested_array, non_negative, width_list

__all__ = ["parse_v1"]

_KNOWN = {"format", "unit", "space", "blocks", "constant_ms", "device", "runtime", "fit", "created"}


def parse_v1(obj: dict, source: str | None) -> Table:
    """A validated chain Table from a parsed `/1` object (format and unit already checked)."""
    space, choices = _space(obj.get("space"), source)
    blocks = _blocks(obj.get("blocks"), space, choices, source)
    constant = non_negative(obj.get("constant_ms", 0.0), "constant_ms", source)
    meta = metadata(obj, source)
    return Table(space=space, blocks=blocks, constant_ms=constant, unit="ms", device=meta["device"],
                 runtime=meta["runtime"], fit=meta["fit"], created=created(obj, source),
                 extra={k: v for k, v in obj.items() if k not in _KNOWN})


def _space(space: object, source: str | None) -> tuple[dict, list[tuple[int, ...]]]:
    """The validated `space` object and each layer's width choices."""
    if not isinstance(space, dict):
        raise TableError("space", "missing or not an object", source)
    for key in ("input_channels", "output_channels"):
        v = space.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise TableError(f"space.{key}", f"must be a positive integer, got {v!r}", source)
    layers = space.get("layers")
    if not isinstance(layers, list) or not layers:
        raise TableError("space.layers", "must be a non-empty list", source)
    choices = []
    for k, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise TableError(f"space.layers[{k}]", "must be an object with a string 'name'", source)
        ch = width_list(layer.get("choices"), f"space.layers[{k}].choices", source)
        if len(set(ch)) != len(ch):
            raise TableError(f"space.layers[{k}].choices", "has repeated widths", source)
        choices.append(ch)
    return space, choices


def _blocks(raw_blocks: object, space: dict, choices: list[tuple[int, ...]], source: str | None) -> list[Block]:
    """The validated blocks: one per layer plus the output, each matching the widths around it."""
    n_blocks = len(choices) + 1
    if not isinstance(raw_blocks, list) or len(raw_blocks) != n_blocks:
        got = len(raw_blocks) if isinstance(raw_blocks, list) else type(raw_blocks).__name__
        raise TableError("blocks", f"expected {n_blocks} blocks (layers + 1), got {got}", source)
    chain = [(space["input_channels"],), *choices, (space["output_channels"],)]
    blocks = []
    for k, raw in enumerate(raw_blocks):
        where = f"blocks[{k}]"
        if not isinstance(raw, dict):
            raise TableError(where, "must be an object", source)
        ins = width_list(raw.get("in"), f"{where}.in", source)
        outs = width_list(raw.get("out"), f"{where}.out", source)
        for key, got, expected in (("in", ins, chain[k]), ("out", outs, chain[k + 1])):
            if got != tuple(expected):
                raise TableError(f"{where}.{key}", f"must equal {list(expected)}, got {list(got)}", source)
        axes = [(len(ins), "input width"), (len(outs), "output width")]
        ms = nested_array(raw.get("ms"), axes, f"{where}.ms", source)
        counts = {key: nested_array(raw[key], axes, f"{where}.{key}", source)
                  for key in ("macs", "params") if raw.get(key) is not None}
        blocks.append(Block(str(raw.get("name", f"block{k}")), ins, outs, ms, counts.get("macs"), counts.get("params")))
    return blocks
