"""Fit a latency table from timed configurations, and judge a table against timings.

`fit_table` holds out a share of the samples (never used for fitting or for choosing any
strength), solves the system of factor entries with a method from `fit_solvers.METHODS`,
and returns a Table with its held-out error: `widthwise-table/1` for a chain space,
`widthwise-table/2` for a tree of factors.
`error_report` measures any table on any samples of its space; `flag_outliers` names the
samples whose timing disagrees with what the others predict, for the collector to re-time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from threadpoolctl import threadpool_limits

from widthwise.device_agents.statistics import FIT_STATISTICS
from widthwise.device_agents.spaces import Space
from widthwise.search.table import Block, Factor, Table, Variable

from .dataset import TrainingData
from .errors import FitError, SpaceMismatch
from .fit_design import TermLayout, term_layout
from .fit_prior import TablePrior
from .fit_solvers import METHOD_ALIASES, METHODS, PRIOR_GRID, Solution, cross_validated_predictions, resolve_method

DEFAULT_METHOD = "pooled-prior"
#: fewest training samples a fit accepts (cross-validation needs a few per fold)
MIN_TRAINING_SAMPLES = 10
#: the methods whose prior another table can replace (`fit_table(prior=...)`)
PRIOR_METHODS = ("pooled-prior", "pooled-prior-monotone")

@dataclass(frozen=True)
class FitResult:
    """A fitted table (ready to save) and its error on the held-out samples."""

    table: Table
    report: dict
    solution: Solution


def _check_data(data: TrainingData) -> None:
    if len(data) == 0:
        raise FitError("no samples: the db holds no timed configurations", field="samples")
    y = np.asarray(data.latency_ms, dtype=np.float64)
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        bad = int(np.flatnonzero(~np.isfinite(y) | (y <= 0))[0])
        raise FitError(f"sample {int(data.sample_ids[bad])} has latency {y[bad]!r}; latencies must be finite and > 0",
                       field="latency_ms")
    if data.statistic not in FIT_STATISTICS:
        raise FitError(f"statistic {data.statistic!r} cannot go into a table; use one of {', '.join(FIT_STATISTICS)}",
                       field="statistic")


def _metrics(pred: np.ndarray, measured: np.ndarray) -> dict:
    """MAPE (a fraction), RMSE in ms, and the shares within +-5 % and +-10 % of the measurement."""
    if len(measured) == 0:
        return {"mape": None, "rmse_ms": None, "within_5pct": None, "within_10pct": None, "count": 0}
    rel = np.abs(pred - measured) / measured
    return {
        "mape": float(np.mean(rel)),
        "rmse_ms": float(np.sqrt(np.mean((pred - measured) ** 2))),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "count": int(len(measured)),
    }


def split_holdout(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) sample positions: a seeded random share `holdout` is held out."""
    if not 0.0 <= holdout < 1.0:
        raise FitError(f"holdout must be in [0, 1), got {holdout}", field="holdout")
    n_hold = int(round(holdout * n))
    if holdout > 0 and n_hold == 0 and n > 1:
        n_hold = 1
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def fit_table(data: TrainingData, *, holdout: float = 0.15, seed: int = 0, method: str = DEFAULT_METHOD,
              prior: TablePrior | None = None) -> FitResult:
    """Fit a latency table on the training share of `data`; report the error on the held-out share.

    `method` is a name of fit_solvers.METHODS or a former alias (shipped, paper); the table
    and the report name the method itself. `prior` (fit_prior.load_prior) replaces the
    pooled prior's features by another table of the space, scaled; the report's `prior` says
    how far this fit departs from it.
    """
    try:
        method = resolve_method(method)
    except KeyError:
        raise FitError(f"unknown method {method!r}; known: {', '.join([*METHODS, *METHOD_ALIASES])}",
                       field="method") from None
    _check_data(data)
    train, held = split_holdout(len(data), holdout, seed)
    if len(train) < MIN_TRAINING_SAMPLES:
        raise FitError(f"{len(train)} training samples left after the hold-out; a fit needs at least {MIN_TRAINING_SAMPLES}",
                       field="holdout")
    layout = term_layout(data.space)
    if prior is not None:
        if method not in PRIOR_METHODS:
            raise FitError(f"a prior table needs method {' or '.join(PRIOR_METHODS)}, got {method}", field="method")
        layout = prior.layout_for(layout)
    y = np.asarray(data.latency_ms, dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"):
        solution = METHODS[method](layout, data.widths[train], y[train], np.random.default_rng(seed + 1))
    metrics = _metrics(solution.predict(layout, data.widths[held]), y[held])
    strengths = {k: v for k, v in solution.info.items() if isinstance(v, (int, float))}
    fit_field = {"samples": int(len(train)), "method": method, "holdout": metrics, "seed": seed, **strengths}
    report = {**metrics, "samples": int(len(train)), "holdout": metrics["count"], "method": method, **strengths}
    if prior is not None:
        fit_field["prior"] = report["prior"] = prior.departures(layout, data.widths[train], y[train], solution.term_ms)
    table = build_table(data, layout, solution, fit_field)
    return FitResult(table, report, solution)


def _identity_part(identity: dict, key: str) -> dict:
    value = identity.get(key)
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else {}


def build_table(data: TrainingData, layout: TermLayout, solution: Solution, fit_field: dict) -> Table:
    """A Table from a solution: ms per factor entry, exact MACs and params, identity and reference.

    A chain space gives a `widthwise-table/1` table (one matrix per block), any other space a
    `widthwise-table/2` table (one array per factor, one axis per variable)."""
    space = data.space
    runtime = _identity_part(data.identity, "runtime")
    runtime["statistic"] = data.statistic
    extra = {}
    reference = data.identity.get("reference")
    if isinstance(reference, dict) and reference.get("level_ms"):  # paired samples: ratios x this level
        extra["reference"] = {k: reference.get(k) for k in ("widths", "level_ms", "clock")}
    common = dict(
        space=space.to_json(),
        constant_ms=max(0.0, float(solution.constant_ms)),
        device=_identity_part(data.identity, "device"),
        runtime=runtime,
        fit=fit_field,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        extra=extra,
    )
    ms = layout.split(np.maximum(solution.term_ms, 0.0))
    macs, params = layout.split(layout.macs), layout.split(layout.params)
    if space.is_chain:
        return Table(blocks=_chain_blocks(space, ms, macs, params), **common)
    factors = [
        Factor(name=spec.name, kind=spec.kind, variables=tuple(spec.variables), ms=ms[f], macs=macs[f], params=params[f])
        for f, spec in enumerate(space.factors)
    ]
    return tree_table(factors=factors, **common)


def tree_table(*, space: dict, factors: list[Factor], **fields: object) -> Table:
    """A `widthwise-table/2` Table: the space's identity, its variables (name, choices, group, and
    the labels of an option variable's codes) and the factors; the variables live in the table's
    own list, not under `space`."""
    variables = [Variable(str(l["name"]), tuple(int(c) for c in l["choices"]), str(l.get("group", "")),
                          tuple(str(x) for x in l.get("labels", ())))
                 for l in space["layers"]]
    identity = {k: v for k, v in space.items() if k != "layers"}
    return Table(space=identity, variables=variables, factors=factors, **fields)


def _chain_blocks(space: Space, ms: list, macs: list, params: list) -> list[Block]:
    """The blocks of a chain table: factor k as an (in-widths x out-widths) matrix, the fixed
    input of block 0 and output of the last block as axes of length one."""
    last = space.num_layers
    blocks = []
    for k in range(last + 1):
        ins = (space.input_channels,) if k == 0 else space.layers[k - 1].choices
        outs = (space.output_channels,) if k == last else space.layers[k].choices
        shape = (len(ins), len(outs))
        blocks.append(Block(name=space.factors[k].name, in_widths=tuple(ins), out_widths=tuple(outs),
                            ms=ms[k].reshape(shape), macs=macs[k].reshape(shape), params=params[k].reshape(shape)))
    return blocks


def table_reference(table: Table) -> dict | None:
    """The pair reference a table was fitted on ({"widths", "level_ms", "clock"}), or None."""
    reference = table.extra.get("reference")
    if not isinstance(reference, dict):
        return None
    level = reference.get("level_ms")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not np.isfinite(level) or level <= 0:
        raise FitError(f"table field reference.level_ms must be a finite number > 0, got {level!r}",
                       field="reference.level_ms")
    return reference


def check_same_space(table: Table, data: TrainingData) -> None:
    """SpaceMismatch naming the first difference between a table's space and the samples'."""
    mine = data.space.to_json()
    theirs = table.space
    for key in ("name", "input_channels", "output_channels", "resolution"):
        if key in theirs and theirs.get(key) != mine.get(key):
            raise SpaceMismatch(f"samples are of space {key}={mine.get(key)!r}, the table of {key}={theirs.get(key)!r}",
                                field=f"space.{key}")
    if [l["choices"] for l in mine["layers"]] != [list(c) for c in table.choices]:
        raise SpaceMismatch("samples and table have different width choices (levels or family differ)",
                            field="space.layers")
    if tuple(l["name"] for l in mine["layers"]) != tuple(table.variable_names):
        raise SpaceMismatch("samples and table name their variables differently (the family differs)",
                            field="space.layers")


def _table_levels(table: Table, widths: np.ndarray) -> np.ndarray:
    """(N, V) choice indices of configurations on a table's grids; FitError naming a width off them."""
    noun = "layer" if table.format.endswith("/1") else "variable"
    level = np.empty(widths.shape, dtype=np.int64)
    for v, choices in enumerate(table.choices):
        grid = np.asarray(choices)
        order = np.argsort(grid)
        pos = np.searchsorted(grid[order], widths[:, v]).clip(0, len(grid) - 1)
        off = grid[order][pos] != widths[:, v]
        if np.any(off):
            bad = widths[np.flatnonzero(off)[0], v]
            raise FitError(f"width {int(bad)} of {noun} {v} ({table.variable_names[v]}) is not one of its choices "
                           f"{list(choices)}", field="widths")
        level[:, v] = order[pos]
    return level


def table_predictions(table: Table, widths: np.ndarray) -> np.ndarray:
    """Predicted latency (ms) of each configuration (rows), vectorised over the table's factors."""
    widths = np.asarray(widths, dtype=np.int64).reshape(-1, len(table.choices))
    level = _table_levels(table, widths)
    pred = np.full(len(widths), float(table.constant_ms))
    for factor in table.factors:
        pred += np.asarray(factor.ms)[tuple(level[:, v] for v in factor.variables)]
    return pred


def error_report(table: Table, data: TrainingData) -> dict:
    """The table's error on these samples: MAPE, RMSE, within +-5 % / +-10 %, count, method."""
    _check_data(data)
    check_same_space(table, data)
    metrics = _metrics(table_predictions(table, data.widths), np.asarray(data.latency_ms, dtype=np.float64))
    return {**metrics, "samples": int(len(data)), "holdout": metrics["count"], "method": table.fit.get("method")}


def flag_outliers(data: TrainingData, *, threshold: float = 4.0, min_relative: float = 0.04, seed: int = 0) -> list[int]:
    """Sample ids whose latency is off what the other samples predict (out-of-fold) by more than
    `threshold` robust standard deviations and more than `min_relative`: the ones to re-time."""
    _check_data(data)
    if len(data) < MIN_TRAINING_SAMPLES:
        return []
    layout = term_layout(data.space)
    y = np.asarray(data.latency_ms, dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"):
        pred, scores, _ = cross_validated_predictions(layout, data.widths, y, np.random.default_rng(seed))
    best = pred[int(np.argmin(scores))]
    resid = np.log(y / np.maximum(best, 1e-12))
    centre = float(np.median(resid))
    spread = 1.4826 * float(np.median(np.abs(resid - centre)))
    off = np.abs(resid - centre)
    flagged = (off > threshold * spread) & (off > np.log1p(min_relative))
    return [int(i) for i in np.asarray(data.sample_ids)[flagged]]


__all__ = [
    "FitError",
    "FitResult",
    "SpaceMismatch",
    "PRIOR_GRID",
    "error_report",
    "fit_table",
    "flag_outliers",
    "table_predictions",
    "table_reference",
]
