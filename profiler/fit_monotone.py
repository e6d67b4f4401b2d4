"""Projection of per-factor latency tables onto monotone ones (more channels is not faster).

Each pairwise factor's matrix (one axis per variable) is replaced by the closest matrix, in
a weighted least-squares sense, that does not decrease along rows or columns: Dykstra's
alternating projections between the row-wise and the column-wise isotonic regressions. A
unary factor's vector is projected by one isotonic regression.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import isotonic_regression

from .fit_design import TermLayout


def _isotonic_rows(m: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = m.copy()
    if m.shape[1] > 1:
        for i in range(m.shape[0]):
            out[i] = isotonic_regression(m[i], weights=w[i]).x
    return out


def monotone_matrix(m: np.ndarray, w: np.ndarray, *, rounds: int = 200, tol: float = 1e-10) -> np.ndarray:
    """The weighted projection of m onto matrices non-decreasing along both axes."""
    x = np.asarray(m, dtype=np.float64).copy()
    p = np.zeros_like(x)
    q = np.zeros_like(x)
    for _ in range(rounds):
        y = _isotonic_rows(x + p, w)
        p = x + p - y
        x_new = _isotonic_rows((y + q).T, w.T).T
        q = y + q - x_new
        done = np.max(np.abs(x_new - x)) <= tol * (1.0 + np.max(np.abs(x_new)))
        x = x_new
        if done:
            break
    # the last projection was column-wise; make rows exact too (ties of float round-off)
    return np.maximum.accumulate(np.maximum.accumulate(x, axis=1), axis=0)


def monotone_vector(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The weighted projection of v onto non-decreasing vectors."""
    if len(v) < 2:
        return np.asarray(v, dtype=np.float64).copy()
    return np.maximum.accumulate(isotonic_regression(np.asarray(v, dtype=np.float64), weights=w).x)


def monotone_projection(layout: TermLayout, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Every factor's table of a flat term vector made monotone along its monotone axes
    (`layout.monotone_axes`: not an option variable's); weights say how firm each term is."""
    out = np.asarray(terms, dtype=np.float64).copy()
    for o, shape, axes in zip(layout.offsets, layout.shapes, layout.monotone_axes):
        sl = slice(o, o + int(np.prod(shape)))
        w = np.asarray(weights[sl], dtype=np.float64)
        if not any(axes):
            continue
        if len(shape) == 1:
            out[sl] = monotone_vector(out[sl], w)
        elif all(axes):
            out[sl] = monotone_matrix(out[sl].reshape(shape), w.reshape(shape)).ravel()
        else:  # one monotone axis: each line along it on its own
            axis = axes.index(True)
            lines = np.moveaxis(out[sl].reshape(shape), axis, -1)
            line_w = np.moveaxis(w.reshape(shape), axis, -1)
            proj = np.stack([monotone_vector(r, rw) for r, rw in zip(lines, line_w)])
            out[sl] = np.moveaxis(proj, -1, axis).ravel()
    return out
