"""The latency table, `widthwise-table/1`: read, validate, write.

The search owns this format because it is the consumer; the profiler writes tables
through it. A reader refuses, naming the field, any file it cannot trust: an unknown
format, a matrix of the wrong shape, a negative number, or a non-finite number anywhere
(`NaN`/`Infinity` literals are refused at parse time, overflowing numbers after it).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from widthwise.device_agents.statistics import FIT_STATISTICS

from .errors import TableError, WidthsError

__all__ = ["FORMAT", "Block", "Table", "TableError", "WidthsError", "load_table"]

FORMAT = "widthwise-table/1"


@dataclass
class Block:
    """One block of the chain: latency (and optional MACs/params) per (in, out) width pair."""

    name: str
    in_widths: tuple[int, ...]
    out_widths: tuple[int, ...]
    ms: np.ndarray
    macs: np.ndarray | None = None
    params: np.ndarray | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "name": self.name,
            "in": list(self.in_widths),
            "out": list(self.out_widths),
            "ms": [[float(v) for v in row] for row in self.ms],
        }
        if self.macs is not None:
            out["macs"] = [[int(v) for v in row] for row in self.macs]
        if self.params is not None:
            out["params"] = [[int(v) for v in row] for row in self.params]
        return out


@dataclass
class Table:
    """A validated latency table; `predict` gives a configuration's latency in ms."""

    space: dict
    blocks: list[Block]
    constant_ms: float = 0.0
    unit: str = "ms"
    device: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    created: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def space_name(self) -> str:
        return str(self.space.get("name", ""))

    @property
    def layer_names(self) -> list[str]:
        return [str(layer["name"]) for layer in self.space["layers"]]

    @property
    def choices(self) -> list[tuple[int, ...]]:
        return [tuple(int(c) for c in layer["choices"]) for layer in self.space["layers"]]

    @property
    def num_layers(self) -> int:
        return len(self.space["layers"])

    @property
    def statistic(self) -> str:
        return str(self.runtime.get("statistic", "median"))

    def indices(self, widths: Sequence[int]) -> list[int]:
        """Each width's index among its layer's choices; WidthsError naming a bad one."""
        choices = self.choices
        if len(widths) != len(choices):
            raise WidthsError(f"table has {len(choices)} layers, got {len(widths)} widths", field="widths")
        out = []
        for k, (w, opts) in enumerate(zip(widths, choices)):
            try:
                out.append(opts.index(int(w)))
            except ValueError:
                raise WidthsError(
                    f"width {w} of layer {k} ({self.layer_names[k]}) is not one of its choices {list(opts)}",
                    field=f"widths[{k}]",
                ) from None
        return out

    def breakdown(self, widths: Sequence[int]) -> list[tuple[str, float]]:
        """Per-block predicted latency (ms) of a configuration, in chain order."""
        idx = [0, *self.indices(widths), 0]
        return [(b.name, float(b.ms[idx[k], idx[k + 1]])) for k, b in enumerate(self.blocks)]

    def predict(self, widths: Sequence[int]) -> float:
        """Predicted latency (ms): the constant plus every block's term."""
        return self.constant_ms + sum(ms for _, ms in self.breakdown(widths))

    def to_json(self) -> dict:
        out: dict[str, Any] = {
            "format": FORMAT,
            "unit": self.unit,
            "space": self.space,
            "blocks": [b.to_json() for b in self.blocks],
            "constant_ms": float(self.constant_ms),
            "device": self.device,
            "runtime": self.runtime,
            "fit": self.fit,
        }
        if self.created is not None:
            out["created"] = self.created
        out.update(self.extra)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a temporary file in the same folder, then a rename."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.to_json(), fh, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def from_json(cls, obj: object, source: str | None = None) -> "Table":
        """Validate a parsed table object (the inverse of `to_json`, for tables that are not files)."""
        return _parse(obj, source)


def load_table(path: str | os.PathLike) -> Table:
    """Read and validate a table file; TableError names the file and the faulty field."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TableError("file", f"cannot read: {exc.strerror or exc}", source) from exc
    try:
        obj = json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise TableError("file", f"not valid JSON ({exc.msg} at line {exc.lineno})", source) from exc
    return _parse(obj, source)


class _NonFinite:
    """What a `NaN`, `Infinity` or `-Infinity` literal parses to: a marker the check below finds."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _non_finite(obj: object) -> tuple[str, str] | None:
    """(field path, the value as written) of the first non-finite number in `obj`, or None."""
    stack: list[tuple[str, object]] = [("", obj)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, _NonFinite):
            return where or "(top level)", value.literal
        elif isinstance(value, float) and not math.isfinite(value):
            return where or "(top level)", "a number too large for a float"
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 1023:
            return where or "(top level)", "an integer too large for a float"
    return None


# --- validation ------------------------------------------------------------------------

_KNOWN = {"format", "unit", "space", "blocks", "constant_ms", "device", "runtime", "fit", "created"}


def _width_list(value: object, where: str, source: str | None) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise TableError(where, "must be a non-empty list of positive integers", source)
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v <= 0:
            raise TableError(f"{where}[{i}]", f"must be a positive integer, got {v!r}", source)
        out.append(int(v))
    return tuple(out)


def _matrix(value: object, rows: int, cols: int, where: str, source: str | None, dtype: type) -> np.ndarray:
    if not isinstance(value, list) or len(value) != rows:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise TableError(where, f"expected {rows} rows (one per input width), got {got}", source)
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise TableError(f"{where}[{i}]", f"expected {cols} values (one per output width), got {got}", source)
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise TableError(f"{where}[{i}][{j}]", f"must be a finite number >= 0, got {v!r}", source)
    return np.asarray(value, dtype=dtype).reshape(rows, cols)


def _parse(obj: object, source: str | None) -> Table:
    """A validated Table from a parsed JSON object; TableError naming the first faulty field."""
    bad = _non_finite(obj)
    if bad is not None:
        raise TableError(bad[0], f"non-finite number ({bad[1]}): the file is corrupt", source)
    if not isinstance(obj, dict):
        raise TableError("(top level)", "must be a JSON object", source)
    fmt = obj.get("format")
    if fmt != FORMAT:
        raise TableError("format", f"unknown format {fmt!r}; this reader knows {FORMAT!r}", source)
    unit = obj.get("unit", "ms")
    if unit != "ms":
        raise TableError("unit", f"must be 'ms', got {unit!r}", source)
    space, choices = _space(obj.get("space"), source)
    blocks = _blocks(obj.get("blocks"), space, choices, source)
    constant = obj.get("constant_ms", 0.0)
    if isinstance(constant, bool) or not isinstance(constant, (int, float)) or not math.isfinite(constant) or constant < 0:
        raise TableError("constant_ms", f"must be a finite number >= 0, got {constant!r}", source)
    meta = _metadata(obj, source)
    created = obj.get("created")
    if created is not None and not isinstance(created, str):
        raise TableError("created", "must be a string (ISO 8601 time)", source)
    return Table(space=space, blocks=blocks, constant_ms=float(constant), unit="ms", device=meta["device"],
                 runtime=meta["runtime"], fit=meta["fit"], created=created,
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
        ch = _width_list(layer.get("choices"), f"space.layers[{k}].choices", source)
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
        ins = _width_list(raw.get("in"), f"{where}.in", source)
        outs = _width_list(raw.get("out"), f"{where}.out", source)
        for key, got, expected in (("in", ins, chain[k]), ("out", outs, chain[k + 1])):
            if got != tuple(expected):
                raise TableError(f"{where}.{key}", f"must equal {list(expected)}, got {list(got)}", source)
        ms = _matrix(raw.get("ms"), len(ins), len(outs), f"{where}.ms", source, np.float64)
        counts = {key: _matrix(raw[key], len(ins), len(outs), f"{where}.{key}", source, np.float64)
                  for key in ("macs", "params") if raw.get(key) is not None}
        blocks.append(Block(str(raw.get("name", f"block{k}")), ins, outs, ms, counts.get("macs"), counts.get("params")))
    return blocks


def _metadata(obj: dict, source: str | None) -> dict[str, dict]:
    """The `device`, `runtime` and `fit` objects (empty when absent); the statistic must be a fit one."""
    meta = {}
    for key in ("device", "runtime", "fit"):
        value = obj.get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise TableError(key, "must be an object", source)
        meta[key] = value
    stat = meta["runtime"].get("statistic", "median")
    if stat not in FIT_STATISTICS:
        raise TableError("runtime.statistic", f"must be one of {', '.join(FIT_STATISTICS)}, got {stat!r}", source)
    return meta
