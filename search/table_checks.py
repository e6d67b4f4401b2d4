"""Checks shared by the table readers: JSON parsing with non-finite numbers refused, width
lists, non-negative arrays and the metadata objects, each failure a TableError naming the field."""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from widthwise.device_agents.statistics import FIT_STATISTICS

from .errors import TableError

__all__ = ["parse_json", "refuse_non_finite", "width_list", "label_list", "non_negative", "nested_array", "metadata",
           "created"]


class _NonFinite:
    """What a `NaN`, `Infinity` or `-Infinity` literal parses to: a marker the check below finds."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def parse_json(text: str, source: str | None) -> object:
    """The parsed object; non-finite literals parse to markers that `refuse_non_finite` reports."""
    try:
        return json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise TableError("file", f"not valid JSON ({exc.msg} at line {exc.lineno})", source) from exc


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


def refuse_non_finite(obj: object, source: str | None) -> None:
    """TableError naming the first non-finite number anywhere in the parsed object."""
    bad = _non_finite(obj)
    if bad is not None:
        raise TableError(bad[0], f"non-finite number ({bad[1]}): the file is corrupt", source)


def width_list(value: object, where: str, source: str | None, *, lowest: int = 1) -> tuple[int, ...]:
    """A non-empty list of integers >= `lowest` (positive widths; option codes start at 0)."""
    what = "positive integer" if lowest == 1 else f"integer >= {lowest}"
    if not isinstance(value, list) or not value:
        raise TableError(where, f"must be a non-empty list of {what}s", source)
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < lowest:
            raise TableError(f"{where}[{i}]", f"must be a {what}, got {v!r}", source)
        out.append(int(v))
    return tuple(out)


def label_list(value: object, count: int, where: str, source: str | None) -> tuple[str, ...]:
    """A variable's labels: `count` distinct non-empty strings, one per choice."""
    if not isinstance(value, list) or len(value) != count:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise TableError(where, f"must list {count} strings (one per choice), got {got}", source)
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v:
            raise TableError(f"{where}[{i}]", f"must be a non-empty string, got {v!r}", source)
        if v in value[:i]:
            raise TableError(f"{where}[{i}]", f"repeats the label {v!r}", source)
    return tuple(value)


def non_negative(value: object, where: str, source: str | None) -> float:
    """A finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise TableError(where, f"must be a finite number >= 0, got {value!r}", source)
    return float(value)


def nested_array(value: object, axes: Sequence[tuple[int, str]], where: str, source: str | None) -> np.ndarray:
    """A nested list with one axis per (length, what one entry stands for), every number finite and >= 0.

    The error for a wrong length names the axis, e.g. "expected 5 values (one per choice of stage2)".
    """
    length, what = axes[0]
    noun = "rows" if len(axes) > 1 else "values"
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise TableError(where, f"expected {length} {noun} (one per {what}), got {got}", source)
    if len(axes) == 1:
        for j, v in enumerate(value):
            non_negative(v, f"{where}[{j}]", source)
    else:
        for i, row in enumerate(value):
            nested_array(row, axes[1:], f"{where}[{i}]", source)
    return np.asarray(value, dtype=np.float64).reshape(tuple(n for n, _ in axes))


def metadata(obj: dict, source: str | None) -> dict[str, dict]:
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


def created(obj: dict, source: str | None) -> str | None:
    """The optional `created` time stamp (a string)."""
    value = obj.get("created")
    if value is not None and not isinstance(value, str):
        raise TableError("created", "must be a string (ISO 8601 time)", source)
    return value
