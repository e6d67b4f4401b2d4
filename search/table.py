"""The latency table, `widthwise-table/1` (a chain) and `widthwise-table/2` (a tree): read, validate, write.

A table's configurations pick one choice per variable; its latency is `constant_ms` plus a
sum of factors, each over one or two variables. A `/1` file stores a chain as blocks (block
k between layers k-1 and k, the ends fixed) and loads into the same `Table`, its blocks seen
as factors; it saves back as `/1`. A `/2` file lists the variables and the factors, whose
pairs must form a forest. The search owns both formats because it is the consumer; the
profiler writes tables through it. A reader refuses, naming the field, any file it cannot
trust: an unknown format, an array of the wrong shape, a negative number, a cycle among the
factors, or a non-finite number anywhere (`NaN`/`Infinity` literals are refused at parse
time, overflowing numbers after it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import TableError, WidthsError

__all__ = ["FORMAT", "FORMAT_V2", "FORMATS", "Block", "Factor", "Table", "TableError", "Variable", "WidthsError",
           "chain_factors", "load_table"]

FORMAT = "widthwise-table/1"
FORMAT_V2 = "widthwise-table/2"
FORMATS = (FORMAT, FORMAT_V2)


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
class Factor:
    """A latency term over one or two variables: `ms` has one axis per variable, in `variables` order."""

    name: str
    kind: str
    variables: tuple[int, ...]
    ms: np.ndarray
    macs: np.ndarray | None = None
    params: np.ndarray | None = None

    def value(self, idx: Sequence[int], key: str = "ms") -> float:
        """The term (`ms`, `macs` or `params`) at a configuration given as every variable's choice index."""
        return float(getattr(self, key)[tuple(int(idx[v]) for v in self.variables)])


@dataclass(frozen=True)
class Variable:
    """One searchable variable of a `/2` table: its name, its choices, an optional group (e.g. a
    stage) and optional labels, one per choice (an option variable: "k5e4", "skip")."""

    name: str
    choices: tuple[int, ...]
    group: str = ""
    labels: tuple[str, ...] = ()

    def label(self, value: int) -> str:
        """How a value prints: its label, or the number itself."""
        return self.labels[self.choices.index(int(value))] if self.labels else str(int(value))

    def to_json(self) -> dict[str, Any]:
        """name, choices, then group and labels when set."""
        return {"name": self.name, "choices": list(self.choices), **({"group": self.group} if self.group else {}),
                **({"labels": list(self.labels)} if self.labels else {})}


def depth_runs(space: dict, names: Sequence[str], choices: Sequence[Sequence[int]]) -> list[tuple[list[int], set[int]]]:
    """The space's `depth_runs` as (variable indices, skip codes); ValueError naming what is wrong.

    A run lists interchangeable blocks that may be skipped: a configuration is canonical when,
    within each run, no skipped block comes before a kept one."""
    raw = space.get("depth_runs", [])
    if not isinstance(raw, list):
        raise ValueError("must be a list of {variables, skip} objects")
    index = {n: k for k, n in enumerate(names)}
    out = []
    for i, run in enumerate(raw):
        if not (isinstance(run, dict) and isinstance(run.get("variables"), list) and isinstance(run.get("skip"), list)):
            raise ValueError(f"[{i}] must be an object with lists 'variables' and 'skip'")
        if not all(isinstance(n, str) and n in index for n in run["variables"]):
            raise ValueError(f"[{i}].variables names a variable the table does not have")
        vs = [index[n] for n in run["variables"]]
        skip = run["skip"]
        if not all(isinstance(c, int) and not isinstance(c, bool) and c in choices[v] for v in vs for c in skip):
            raise ValueError(f"[{i}].skip must list choices of every variable of the run")
        out.append((vs, set(skip)))
    return out


def chain_factors(blocks: Sequence[Block]) -> list[Factor]:
    """The factors of a chain: block k over layers (k-1, k); the first and last blocks are unary."""
    last = len(blocks) - 1
    out = []
    for k, b in enumerate(blocks):
        def view(m: np.ndarray | None) -> np.ndarray | None:
            if m is None:
                return None
            if k == 0:
                return m[0, :]
            return m[:, 0] if k == last else m
        variables = (0,) if k == 0 else ((k - 1,) if k == last else (k - 1, k))
        out.append(Factor(b.name, "", variables, view(b.ms), view(b.macs), view(b.params)))
    return out


def _counts_json(array: np.ndarray) -> list:
    """A count array as nested lists of integers (exact counts), or of floats where one is fractional."""
    flat = np.asarray(array, dtype=np.float64)
    if np.all(flat == np.round(flat)):
        return np.asarray(np.round(flat), dtype=np.int64).tolist()
    return flat.tolist()


class Table:
    """A validated latency table; `predict` gives a configuration's latency in ms.

    A chain (`/1`): `Table(space=…, blocks=[Block…], …)`; `space["layers"]` holds the
    variables. A tree (`/2`): `Table(space=…, variables=[Variable…], factors=[Factor…], …)`;
    `space` is then the space's identity (name, resolution, parameters). Every other field
    (`constant_ms`, `device`, `runtime`, `fit`, `created`, `extra`) is keyword-only and common.
    Both kinds offer `variable_names`, `choices`, `factors`, `indices`, `breakdown`, `predict`.
    """

    def __init__(self, space: dict, blocks: list[Block] | None = None, *, variables: Iterable[Variable] | None = None,
                 factors: Iterable[Factor] | None = None, constant_ms: float = 0.0, unit: str = "ms",
                 device: dict | None = None, runtime: dict | None = None, fit: dict | None = None,
                 created: str | None = None, extra: dict | None = None) -> None:
        if (blocks is None) == (variables is None and factors is None):
            raise ValueError("a table has either blocks (widthwise-table/1) or variables and factors (/2)")
        if blocks is None and (variables is None or factors is None):
            raise ValueError("a widthwise-table/2 table needs both variables and factors")
        self.space = space
        self.blocks = blocks
        self.variables: list[Variable] | None = None if variables is None else [
            Variable(v.name, tuple(int(c) for c in v.choices), v.group, tuple(v.labels)) for v in variables]
        self._factors: list[Factor] | None = None if factors is None else list(factors)
        self.constant_ms = constant_ms
        self.unit = unit
        self.device = {} if device is None else device
        self.runtime = {} if runtime is None else runtime
        self.fit = {} if fit is None else fit
        self.created = created
        self.extra = {} if extra is None else extra

    def __repr__(self) -> str:
        return f"Table({self.format}, space={self.space_name!r}, variables={self.num_layers})"

    @property
    def format(self) -> str:
        """`widthwise-table/1` for a chain of blocks, `widthwise-table/2` for variables and factors."""
        return FORMAT if self.blocks is not None else FORMAT_V2

    @property
    def space_name(self) -> str:
        return str(self.space.get("name", ""))

    @property
    def variable_names(self) -> tuple[str, ...]:
        if self.variables is not None:
            return tuple(v.name for v in self.variables)
        return tuple(str(layer["name"]) for layer in self.space["layers"])

    @property
    def layer_names(self) -> list[str]:
        """The variable names (the name a chain gives them)."""
        return list(self.variable_names)

    @property
    def variable_groups(self) -> tuple[str, ...]:
        """Each variable's group ("" when it has none): a stage, "stem", "head"."""
        if self.variables is not None:
            return tuple(v.group for v in self.variables)
        return tuple(str(layer.get("group", "")) for layer in self.space["layers"])

    def labelled(self, values: Sequence[int]) -> list[str]:
        """A configuration as printed: each value's label (option variables), else the number."""
        if self.variables is None:
            return [str(int(v)) for v in values]
        return [var.label(v) for var, v in zip(self.variables, values)]

    def canonical(self, values: Sequence[int]) -> tuple[int, ...]:
        """The same network in prefix form: within each of the space's depth runs, the kept
        blocks' values first, in order, then the skipped ones (identity without depth runs)."""
        out = [int(v) for v in values]
        for run, skip in depth_runs(self.space, self.variable_names, self.choices):
            kept = [out[v] for v in run if out[v] not in skip]
            for v, value in zip(run, kept + [out[v] for v in run if out[v] in skip]):
                out[v] = value
        return tuple(out)

    @property
    def factors(self) -> list[Factor]:
        """The latency terms over the variables (a chain's blocks as factors)."""
        if self._factors is not None:
            return self._factors
        return chain_factors(self.blocks)

    @property
    def choices(self) -> list[tuple[int, ...]]:
        if self.variables is not None:
            return [v.choices for v in self.variables]
        return [tuple(int(c) for c in layer["choices"]) for layer in self.space["layers"]]

    @property
    def num_layers(self) -> int:
        """The number of variables (a chain's layers)."""
        return len(self.variables) if self.variables is not None else len(self.space["layers"])

    @property
    def statistic(self) -> str:
        return str(self.runtime.get("statistic", "median"))

    def has_counts(self, key: str) -> bool:
        """Whether every factor carries `key` ("macs" or "params")."""
        return all(getattr(f, key) is not None for f in self.factors)

    def indices(self, widths: Sequence[int]) -> list[int]:
        """Each value's index among its variable's choices; WidthsError naming a bad one."""
        choices, names = self.choices, self.variable_names
        word = "layer" if self.blocks is not None else "variable"
        if len(widths) != len(choices):
            raise WidthsError(f"table has {len(choices)} {word}s, got {len(widths)} widths", field="widths")
        out = []
        for k, (w, opts) in enumerate(zip(widths, choices)):
            try:
                out.append(opts.index(int(w)))
            except (TypeError, ValueError):
                raise WidthsError(
                    f"width {w} of {word} {k} ({names[k]}) is not one of its choices {list(opts)}",
                    field=f"widths[{k}]",
                ) from None
        return out

    def breakdown(self, widths: Sequence[int]) -> list[tuple[str, float]]:
        """Per-factor predicted latency (ms) of a configuration, in the table's order (a chain's blocks)."""
        idx = self.indices(widths)
        return [(f.name, f.value(idx)) for f in self.factors]

    def predict(self, widths: Sequence[int]) -> float:
        """Predicted latency (ms): the constant plus every factor's term."""
        return self.constant_ms + sum(ms for _, ms in self.breakdown(widths))

    def to_json(self) -> dict:
        """The table as its format's JSON object (a `/1` table byte-compatibly as it was read)."""
        out: dict[str, Any] = {"format": self.format, "unit": self.unit, "space": self.space}
        if self.blocks is not None:
            out["blocks"] = [b.to_json() for b in self.blocks]
        else:
            out["variables"] = [v.to_json() for v in self.variables]
            out["factors"] = [self._factor_json(f) for f in self.factors]
        out.update({"constant_ms": float(self.constant_ms), "device": self.device, "runtime": self.runtime,
                    "fit": self.fit})
        if self.created is not None:
            out["created"] = self.created
        out.update(self.extra)
        return out

    def _factor_json(self, factor: Factor) -> dict:
        names = self.variable_names
        out: dict[str, Any] = {"name": factor.name, "kind": factor.kind,
                               "variables": [names[v] for v in factor.variables],
                               "ms": np.asarray(factor.ms, dtype=np.float64).tolist()}
        for key in ("macs", "params"):
            if getattr(factor, key) is not None:
                out[key] = _counts_json(getattr(factor, key))
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
    """Read and validate a table file of either format; TableError names the file and the faulty field."""
    from .table_checks import parse_json

    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TableError("file", f"cannot read: {exc.strerror or exc}", source) from exc
    return _parse(parse_json(text, source), source)


def _parse(obj: object, source: str | None) -> Table:
    """A validated Table from a parsed JSON object, by its format; TableError naming the first faulty field."""
    from .table_checks import refuse_non_finite
    from .table_v1 import parse_v1
    from .table_v2 import parse_v2

    refuse_non_finite(obj, source)
    if not isinstance(obj, dict):
        raise TableError("(top level)", "must be a JSON object", source)
    fmt = obj.get("format")
    if fmt not in FORMATS:
        raise TableError("format", f"unknown format {fmt!r}; this reader knows {' and '.join(map(repr, FORMATS))}",
                         source)
    unit = obj.get("unit", "ms")
    if unit != "ms":
        raise TableError("unit", f"must be 'ms', got {unit!r}", source)
    return parse_v1(obj, source) if fmt == FORMAT else parse_v2(obj, source)
