"""Objectives: what the search minimises besides meeting the budget, as per-variable costs.

An objective is a unary cost per (variable, choice) plus an optional pairwise cost per
latency term: for a `widthwise-table/1` chain one matrix per block (the shape of its
`blocks[*].ms`), for a `/2` table one array per factor (the shape of its `ms`). Lower is
better. `flops` and `params` are proxies read from the table's exact counts; a
`widthwise-costs/1` object carries a user's own costs; loss samples logged by a supernet
are fitted to unary costs by least squares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ObjectiveError
from .table import Table

__all__ = ["COSTS_FORMAT", "NAMED_OBJECTIVES", "Objective", "ObjectiveError", "build_objective",
           "costs_objective", "loss_samples_objective"]

COSTS_FORMAT = "widthwise-costs/1"
#: Ridge weight of the loss-sample fit, relative to the number of samples.
RIDGE = 1e-3


@dataclass(frozen=True, eq=False)
class Objective:
    """Unary costs [V][K_v] and optional pairwise costs, one array per block (`/1`) or factor (`/2`)."""

    name: str
    unary: tuple[np.ndarray, ...]
    pairwise: tuple[np.ndarray, ...] | None
    description: str
    info: dict[str, Any] = field(default_factory=dict)


def _terms(table: Table) -> list[tuple[str, str, Any]]:
    """(field path, label, term) of each latency term: a chain's blocks, else the table's factors."""
    if table.blocks is not None:
        return [(f"blocks[{k}]", f"block {b.name}", b) for k, b in enumerate(table.blocks)]
    return [(f"factors[{k}]", f"factor {f.name}", f) for k, f in enumerate(table.factors)]


def _word(table: Table) -> str:
    """What one searchable value is called in messages: a chain's layer or a tree's variable."""
    return "layer" if table.blocks is not None else "variable"


def _widest_total(table: Table, key: str) -> float:
    """The count (`macs` or `params`) of the configuration with every variable at its widest."""
    widest = [max(range(len(c)), key=c.__getitem__) for c in table.choices]
    return float(sum(f.value(widest, key) for f in table.factors))


def _count_objective(table: Table, key: str) -> Objective:
    """Maximise a count: cost = -(count / S), pairwise per block or factor, S the power of two at or
    above the widest configuration's count: dividing integers by a power of two is exact, so two
    configurations of equal count get equal costs whatever order their terms are summed in."""
    terms = _terms(table)
    for where, label, term in terms:
        if getattr(term, key) is None:
            raise ObjectiveError(
                f"{where} ({term.name}): the table has no '{key}', so the '{_NAMES[key]}' objective "
                "cannot be used; give a costs file or loss samples", field="objective"
            )
    scale = 2.0 ** math.ceil(math.log2(_widest_total(table, key) or 1.0))
    pairwise = tuple(-np.asarray(getattr(term, key), dtype=np.float64) / scale for _, _, term in terms)
    unary = tuple(np.zeros(len(c)) for c in table.choices)
    what = "MACs" if key == "macs" else "parameters"
    return Objective(
        _NAMES[key],
        unary,
        pairwise,
        f"maximise {what} (a proxy for accuracy): cost = -{what} / the power of two at or above "
        f"the widest configuration's {what}",
        {"scale": scale},
    )


_NAMES = {"macs": "flops", "params": "params"}

#: objective name -> builder from a table.
NAMED_OBJECTIVES: dict[str, Callable[[Table], Objective]] = {
    "flops": lambda table: _count_objective(table, "macs"),
    "params": lambda table: _count_objective(table, "params"),
}


def _bad_objective(message: str) -> ObjectiveError:
    """An error about the request's objective (a name or a costs object)."""
    return ObjectiveError(message, field="objective")


def _number(value: object, where: str, field: str = "objective") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ObjectiveError(f"{where}: must be a finite number, got {value!r}", field=field)
    return float(value)


def _vector(value: object, length: int, where: str, what: str = "width choice") -> np.ndarray:
    """A list of `length` finite numbers, one per `what`."""
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise _bad_objective(f"{where}: expected {length} values (one per {what}), got {got}")
    return np.array([_number(v, f"{where}[{j}]") for j, v in enumerate(value)], dtype=np.float64)


def costs_objective(table: Table, costs: dict) -> Objective:
    """Validate a parsed `widthwise-costs/1` object against the table and wrap it."""
    if not isinstance(costs, dict):
        raise _bad_objective(f"costs: must be a JSON object, got {type(costs).__name__}")
    unknown = sorted(set(costs) - {"format", "space", "unary", "pairwise", "description"})
    if unknown:
        raise _bad_objective(f"costs.{unknown[0]}: unknown field")
    if costs.get("format") != COSTS_FORMAT:
        raise _bad_objective(f"costs.format: unknown format {costs.get('format')!r}; expected {COSTS_FORMAT!r}")
    space = costs.get("space")
    if space not in (None, "") and table.space_name and space != table.space_name:
        raise _bad_objective(f"costs.space: costs are for space {space!r} but the table is {table.space_name!r}")
    unary = _costs_unary(table, costs.get("unary"))
    pairwise = None if costs.get("pairwise") is None else _costs_pairwise(table, costs["pairwise"])
    description = str(costs.get("description") or "user costs (widthwise-costs/1)")
    return Objective("costs", unary, pairwise, description)


def _costs_unary(table: Table, raw: object) -> tuple[np.ndarray, ...]:
    """`costs.unary`: one list per variable (a chain's layer), one value per choice."""
    choices, names, word = table.choices, table.variable_names, _word(table)
    if not isinstance(raw, list) or len(raw) != len(choices):
        got = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise _bad_objective(f"costs.unary: expected {len(choices)} {word}s (one list per {word}), got {got}")
    return tuple(_vector(row, len(choices[k]), f"costs.unary[{k}] ({word} {names[k]})") for k, row in enumerate(raw))


def _costs_pairwise(table: Table, raw: object) -> tuple[np.ndarray, ...]:
    """`costs.pairwise`: one array per block (`/1`: rows per input width) or per factor (`/2`: its `ms` shape)."""
    terms = _terms(table)
    noun = "blocks" if table.blocks is not None else "factors"
    if not isinstance(raw, list) or len(raw) != len(terms):
        got = len(raw) if isinstance(raw, list) else type(raw).__name__
        raise _bad_objective(f"costs.pairwise: expected {len(terms)} {noun}, got {got}")
    out = []
    for k, (value, (_, label, term)) in enumerate(zip(raw, terms)):
        where = f"costs.pairwise[{k}] ({label})"
        if table.blocks is not None:
            axes = [(len(term.in_widths), "input width"), (len(term.out_widths), "width choice")]
        else:
            axes = [(len(table.choices[v]), f"choice of {table.variable_names[v]}") for v in term.variables]
        out.append(_array(value, axes, where))
    return tuple(out)


def _array(value: object, axes: Sequence[tuple[int, str]], where: str) -> np.ndarray:
    """A nested list of finite numbers, one axis per (length, what an entry stands for)."""
    length, what = axes[0]
    if len(axes) == 1:
        return _vector(value, length, where, what)
    if not isinstance(value, list) or len(value) != length:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise _bad_objective(f"{where}: expected {length} rows (one per {what}), got {got}")
    return np.stack([_array(row, axes[1:], f"{where}[{i}]") for i, row in enumerate(value)])


def _sample_indices(table: Table, samples: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    """Choice indices [n][V] and losses [n] of loss samples; ObjectiveError naming a bad sample and variable."""
    choices, names, word = table.choices, table.layer_names, _word(table)
    lookup = [{w: j for j, w in enumerate(c)} for c in choices]
    rows, losses = [], []
    for s, sample in enumerate(samples):
        if not isinstance(sample, (list, tuple)) or len(sample) != 2:
            raise ObjectiveError(f"loss sample {s}: must be [[w_0, ..., w_{len(choices) - 1}], loss]", field="loss_samples")
        widths, loss = sample
        if not isinstance(widths, (list, tuple)) or len(widths) != len(choices):
            got = len(widths) if isinstance(widths, (list, tuple)) else type(widths).__name__
            raise ObjectiveError(f"loss sample {s}: expected {len(choices)} widths, got {got}", field="loss_samples")
        row = []
        for k, w in enumerate(widths):
            j = lookup[k].get(w) if isinstance(w, int) and not isinstance(w, bool) else None
            if j is None:
                raise ObjectiveError(
                    f"loss sample {s}: width {w!r} of {word} {k} ({names[k]}) is not one of its choices {list(choices[k])}",
                    field="loss_samples",
                )
            row.append(j)
        rows.append(row)
        losses.append(_number(loss, f"loss sample {s}: loss", "loss_samples"))
    if not rows:
        raise ObjectiveError("loss samples: none given", field="loss_samples")
    return np.asarray(rows, dtype=np.int64), np.asarray(losses)


def loss_samples_objective(table: Table, samples: Sequence[object], ridge: float = RIDGE) -> Objective:
    """Fit per-variable unary costs to logged (configuration, loss) pairs by ridge-regularised least squares.

    The design is one-hot per (variable, choice) with a free intercept; the ridge pulls a choice
    that no sample used to its variable's average, so it neither attracts nor repels the search.
    """
    idx, losses = _sample_indices(table, samples)
    sizes = [len(c) for c in table.choices]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n, width = len(losses), int(offsets[-1])
    design = np.zeros((n, width))
    design[np.arange(n)[:, None], idx + offsets[:-1]] = 1.0
    mean_x, mean_y = design.mean(axis=0), losses.mean()
    centred = design - mean_x
    lam = ridge * max(n, 1)
    gram = centred.T @ centred + lam * np.eye(width)
    coef = np.linalg.solve(gram, centred.T @ (losses - mean_y))
    fitted = centred @ coef + mean_y
    rmse = float(np.sqrt(np.mean((fitted - losses) ** 2)))
    counts = np.bincount((idx + offsets[:-1]).ravel(), minlength=width)
    unary = tuple(coef[offsets[k] : offsets[k + 1]].copy() for k in range(len(sizes)))
    unobserved = {
        table.layer_names[k]: [table.choices[k][j] for j in range(sizes[k]) if counts[offsets[k] + j] == 0]
        for k in range(len(sizes))
    }
    info = {
        "samples": n,
        "rmse": rmse,
        "intercept": float(mean_y - mean_x @ coef),
        "unobserved": {k: v for k, v in unobserved.items() if v},
    }
    return Objective("loss-samples", unary, None, f"unary costs fitted to {n} loss samples (rmse {rmse:.4g})", info)


def build_objective(table: Table, objective: str | dict = "flops", loss_samples: list | None = None) -> Objective:
    """The objective for a table: a name, a parsed costs object, or (when given) fitted loss samples."""
    if loss_samples is not None:
        if objective not in ("flops", None):
            raise _bad_objective("objective: give either an objective or loss samples, not both")
        return loss_samples_objective(table, loss_samples)
    if isinstance(objective, str):
        builder = NAMED_OBJECTIVES.get(objective)
        if builder is None:
            raise ObjectiveError(
                f"objective: unknown name {objective!r}; use one of {', '.join(NAMED_OBJECTIVES)} or a costs object",
                field="objective",
            )
        return builder(table)
    if isinstance(objective, dict):
        return costs_objective(table, objective)
    raise _bad_objective(f"objective: must be a name or a widthwise-costs/1 object, got {type(objective).__name__}")
