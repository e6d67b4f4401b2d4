"""Another table of the same space as the prior of a fit: a second board is roughly a scaled first one.

The pooled-prior fit pulls every factor entry towards a prior made of per-kind features
(MACs, activation and weight sizes). With `--prior TABLE.json` the prior is that table's
entries times one fitted factor (the scale) plus the pooled features (non-negative, for
what a plain scale misses), with per-factor scales held near the pooled one by the fit's
block penalty and per-entry deviations by its ridge strength, both chosen by
cross-validation as usual: on a board, runtime, dtype, thread count or resolution whose
costs are a roughly scaled copy of the prior's, a few samples fix the scale and the
deviations stay small. The table must have the same variables, choices and factors; the
fit reports the scale and how far the entries depart from the scaled prior.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from widthwise.device_agents.spaces import Space
from widthwise.search.table import Table, load_table

from .errors import SpaceMismatch
from .fit_design import TermLayout, term_layout
from .fit_solvers import _prior_coefficients


@dataclass(frozen=True)
class PriorLayout(TermLayout):
    """A term layout whose prior basis is a table's entries (one pooled column, one column per factor)."""

    prior_ms: np.ndarray | None = None

    def shared_prior_basis(self) -> sp.csr_matrix:
        """(P, 1 + groups x features): the prior table's entries in ms (its coefficient is the scale),
        then the pooled per-kind features, for what a plain scale misses (e.g. another resolution
        changes activation costs more than per-call costs)."""
        table = sp.csr_matrix(np.asarray(self.prior_ms, dtype=np.float64).reshape(-1, 1))
        return sp.hstack([table, super().shared_prior_basis()]).tocsr()

    def prior_basis(self) -> sp.csr_matrix:
        """(P, factors): each factor's own prior entries, scaled to max 1 (penalised towards the pooled scale)."""
        ms = np.asarray(self.prior_ms, dtype=np.float64)
        owner = self.factor_of_term
        peak = np.zeros(self.num_factors)
        np.maximum.at(peak, owner, ms)
        peak[peak <= 0] = 1.0
        return sp.csr_matrix((ms / peak[owner], (np.arange(len(ms)), owner)), shape=(len(ms), self.num_factors))


@dataclass(frozen=True)
class TablePrior:
    """A prior table's entries laid out as a space's terms, and where it came from."""

    source: str
    prior_ms: np.ndarray
    constant_ms: float
    description: dict

    def layout_for(self, layout: TermLayout) -> PriorLayout:
        """`layout` with this table as its prior basis."""
        if isinstance(layout, PriorLayout):
            return layout
        return PriorLayout(**{f.name: getattr(layout, f.name) for f in fields(TermLayout)}, prior_ms=self.prior_ms)

    def scale(self, layout: TermLayout, widths: np.ndarray, y: np.ndarray) -> float:
        """The one factor that best puts the prior on these samples (relative least squares, with a constant)."""
        summed = layout.design(widths) @ self.prior_ms
        coef = _prior_coefficients(summed.reshape(-1, 1), y, 1.0 / y)
        return float(coef[0])

    def departures(self, layout: TermLayout, widths: np.ndarray, y: np.ndarray, term_ms: np.ndarray) -> dict:
        """How far a fitted table departs from this prior: the scale, and the spread of the relative
        departures of the fitted entries from the scaled prior's, over the entries the samples touch."""
        scale = self.scale(layout, widths, y)
        touched = np.zeros(layout.num_terms, dtype=bool)
        touched[layout.term_indices(widths).ravel()] = True
        base = scale * self.prior_ms
        keep = touched & (base > 1e-3 * float(np.max(base, initial=0.0)))
        rel = term_ms[keep] / base[keep] - 1.0 if keep.any() else np.zeros(1)
        absrel = np.abs(rel)
        return {
            "table": self.source,
            **self.description,
            "scale": scale,
            "departure_median_abs": float(np.median(absrel)),
            "departure_p90_abs": float(np.quantile(absrel, 0.9)),
            "departure_median": float(np.median(rel)),
            "entries_compared": int(keep.sum()),
        }


def _check_compatible(table: Table, space: Space, source: str) -> None:
    """SpaceMismatch naming the first difference between the prior table's space and `space`."""
    if table.space_name != space.name:
        raise SpaceMismatch(f"prior table {source} is of space {table.space_name!r}, the samples of {space.name!r}",
                            field="prior.space")
    mine, theirs_names = [layer.name for layer in space.layers], list(table.variable_names)
    if theirs_names != mine:
        at = next((i for i, (a, b) in enumerate(zip(theirs_names, mine)) if a != b), min(len(mine), len(theirs_names)))
        names = [repr(n[at]) if at < len(n) else "none" for n in (theirs_names, mine)]
        raise SpaceMismatch(f"prior table {source}: variable {at} is {names[0]}, the space's {names[1]} "
                            f"({len(theirs_names)} variables against {len(mine)})", field="prior.variables")
    for v, (theirs, layer) in enumerate(zip(table.choices, space.layers)):
        if tuple(theirs) != tuple(layer.choices):
            raise SpaceMismatch(f"prior table {source}: variable {v} ({layer.name}) has choices {list(theirs)}, "
                                f"the space {list(layer.choices)}", field="prior.choices")
    if len(table.factors) != len(space.factors):
        raise SpaceMismatch(f"prior table {source} has {len(table.factors)} factors, the space {len(space.factors)}",
                            field="prior.factors")
    for f, (theirs, spec) in enumerate(zip(table.factors, space.factors)):
        if tuple(theirs.variables) != tuple(spec.variables):
            raise SpaceMismatch(f"prior table {source}: factor {f} ({spec.name}) reads variables "
                                f"{list(theirs.variables)}, the space's {list(spec.variables)}", field="prior.factors")


def table_prior(table: Table, space: Space, source: str = "the prior table") -> TablePrior:
    """A table as the prior of a fit on `space`; SpaceMismatch naming what differs."""
    _check_compatible(table, space, source)
    layout = term_layout(space)
    parts = [np.asarray(f.ms, dtype=np.float64).ravel() for f in table.factors]
    for f, (part, shape) in enumerate(zip(parts, layout.shapes)):
        if part.size != int(np.prod(shape)):
            raise SpaceMismatch(f"prior table {source}: factor {f} has {part.size} entries, "
                                f"the space's {int(np.prod(shape))}", field="prior.factors")
    prior_ms = np.maximum(np.concatenate(parts), 0.0)
    if not np.all(np.isfinite(prior_ms)) or not prior_ms.any():
        raise SpaceMismatch(f"prior table {source} has no positive finite entries", field="prior")
    runtime = {k: table.runtime[k] for k in ("name", "dtype", "threads", "delegate") if table.runtime.get(k) is not None}
    description = {"space_resolution": table.space.get("resolution"), "runtime": runtime}
    return TablePrior(source, prior_ms, float(table.constant_ms), description)


def load_prior(path: str | Path, space: Space) -> TablePrior:
    """The table at `path` as the prior of a fit on `space`: a missing or invalid file is the table
    reader's error, another space's table a SpaceMismatch naming the difference."""
    return table_prior(load_table(path), space, str(path))
