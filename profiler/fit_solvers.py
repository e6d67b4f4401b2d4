"""Solvers of the latency system, a registry by name: pooled-prior, pooled-prior-monotone,
nnls-monotone, nnls, flops.

Each method takes the term layout (one unknown per factor entry; a chain's factors are its
blocks), the training widths and latencies and returns every term's latency plus a
constant. Regularisation strengths are chosen from the training
samples alone (cross-validation or a validation split of them), never hand-set. The
names `shipped` and `pooled-prior-free` (of pooled-prior) and `paper` (of nnls-monotone) are
accepted as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.optimize import minimize, nnls

from .fit_design import TermLayout
from .fit_monotone import monotone_projection


@dataclass(frozen=True)
class Solution:
    """A fitted system: per-term latency (ms), the constant (ms), and how it was chosen."""

    term_ms: np.ndarray
    constant_ms: float
    info: dict = field(default_factory=dict)

    def predict(self, layout: TermLayout, widths: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) of each configuration."""
        return self.constant_ms + self.term_ms[layout.term_indices(widths)].sum(axis=1)


Method = Callable[[TermLayout, np.ndarray, np.ndarray, np.random.Generator], Solution]
METHODS: dict[str, Method] = {}
#: former method names, still accepted: alias -> the method's name.
METHOD_ALIASES: dict[str, str] = {"shipped": "pooled-prior", "paper": "nnls-monotone",
                                  "pooled-prior-free": "pooled-prior"}

#: relative residual beyond which the pooled-prior fit's loss grows linearly (bursts, outliers)
HUBER_REL = 0.04
#: reweighting rounds of the Huber loss
HUBER_ROUNDS = 4
#: candidate strengths of the pull towards the prior (per term, in relative units)
PRIOR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: candidate penalties on the per-factor part of the prior's coefficients, in increasing order
#: (0: free per-factor coefficients; the last: nearly pooled per prior group, i.e. per op kind)
BLOCK_PENALTY_GRID = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)
#: candidate strengths of the nnls-monotone fit's monotonicity penalty
MONOTONE_GRID = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)
CV_FOLDS = 5


def register_method(name: str) -> Callable[[Method], Method]:
    """Register a fitting method under a name."""

    def deco(fn: Method) -> Method:
        METHODS[name] = fn
        return fn

    return deco


def resolve_method(name: str) -> str:
    """The registered name of a method given by its name or a former alias; KeyError if neither."""
    name = METHOD_ALIASES.get(name, name)
    if name not in METHODS:
        raise KeyError(name)
    return name


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [np.sort(order[i::k]) for i in range(min(k, n))]


def selection_score(pred: np.ndarray, y: np.ndarray) -> float:
    """Model-selection score: mean squared relative error, each capped at 10 % so bursts do not rule."""
    r = np.minimum(np.abs(pred - y) / y, 0.10)
    return float(np.mean(r * r))


# --- pooled-prior: pairwise terms = structured prior + ridge deviation, solved in closed form ----------
#
# The prior of a term is a non-negative combination of its features with coefficients shared by
# every factor of its prior group (fit_design.prior_group: the op kind), plus per-factor
# coefficients held near zero by `block_penalty`. Free per-factor coefficients fit random
# configurations as well, but they trade cost between neighbouring factors (whose features move
# together) and the search exploits the factors they make too cheap: the pooled coefficients
# keep extreme configurations honest. (The strength keeps its chain-era name, `block_penalty`.)


def _prior_coefficients(collapsed: np.ndarray, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Non-negative prior coefficients and constant minimising the weighted relative error."""
    system = np.hstack([collapsed, np.ones((len(y), 1))]) * weight[:, None]
    coef, _ = nnls(system, y * weight, maxiter=50 * system.shape[1])
    return coef


@dataclass(frozen=True)
class PriorProblem:
    """What the pooled-prior fit needs of a training set, computed once for every strength tried."""

    layout: TermLayout
    y: np.ndarray
    design: sp.csr_matrix
    basis: sp.csr_matrix
    collapsed: np.ndarray
    scale: np.ndarray
    gram: np.ndarray
    num_shared: int

    @classmethod
    def build(cls, layout: TermLayout, widths: np.ndarray, y: np.ndarray) -> "PriorProblem":
        design = layout.design(widths)
        shared = layout.shared_prior_basis()
        basis = sp.hstack([shared, layout.prior_basis()]).tocsr()
        collapsed = (design @ basis).toarray()
        num_shared = shared.shape[1]
        coef = _prior_coefficients(collapsed[:, :num_shared], y, 1.0 / y)
        # penalties are relative to the pooled prior's value of each term (floored for tiny terms)
        floor = 0.02 * float(np.median(y)) / layout.num_factors
        scale = np.maximum(shared @ coef[:-1], floor)
        scaled = design @ sp.diags(scale)
        return cls(layout, y, design, basis, collapsed, scale, (scaled @ scaled.T).toarray(), num_shared)

    def solve(self, strength: float, block_penalty: float = BLOCK_PENALTY_GRID[-1]) -> Solution:
        """Terms = basis x theta + scale x u; ridge `strength` on u, `block_penalty` on the per-factor
        part of theta (relative to the median latency); Huber loss by reweighting.

        The deviations u are integrated out exactly (an N x N system), so theta >= 0 is a small
        NNLS and the pairwise terms follow in closed form.
        """
        n, p = len(self.y), self.layout.num_terms
        g = np.hstack([self.collapsed, np.ones((n, 1))])
        per_factor = np.arange(self.num_shared, self.collapsed.shape[1])
        penalty_rows = np.zeros((len(per_factor), g.shape[1]))
        penalty_rows[np.arange(len(per_factor)), per_factor] = np.sqrt(block_penalty) / float(np.median(self.y))
        h = np.ones(n)
        for _ in range(HUBER_ROUNDS):
            d = np.sqrt(h / n) / self.y
            kernel = np.eye(n) + (p / strength) * (d[:, None] * self.gram * d[None, :])
            chol = np.linalg.cholesky(kernel)
            theta, _ = nnls(
                np.vstack([sla.solve_triangular(chol, d[:, None] * g, lower=True), penalty_rows]),
                np.concatenate([sla.solve_triangular(chol, d * self.y, lower=True), np.zeros(len(per_factor))]),
                maxiter=50 * g.shape[1],
            )
            resid = d * (self.y - g @ theta)
            u = (p / strength) * (self.design.T @ (d * sla.cho_solve((chol, True), resid)))
            terms = self.basis @ theta[:-1] + self.scale * u
            rel = np.abs(self.design @ terms + theta[-1] - self.y) / self.y
            h = np.where(rel <= HUBER_REL, 1.0, HUBER_REL / np.maximum(rel, 1e-12))
        return Solution(np.maximum(terms, 0.0), float(theta[-1]), {"prior_coefficients": theta[:-1]})


@dataclass(frozen=True)
class PriorSelection:
    """Cross-validation of the pooled-prior model: every (per-factor penalty, strength) tried, its
    out-of-fold predictions and score, and the pair chosen."""

    candidates: tuple[tuple[float, float], ...]
    predictions: np.ndarray
    scores: np.ndarray
    folds: int
    block_penalty: float
    strength: float
    monotone: bool = True
    monotone_scores: dict = field(default_factory=dict)

    def score(self, block_penalty: float, strength: float) -> float:
        """The selection score of one tried pair."""
        return float(self.scores[self.candidates.index((block_penalty, strength))])


def _most_constrained_within_noise(losses: np.ndarray) -> int:
    """Row of the most constrained model (rows ordered from least to most constrained, e.g. by
    block penalty) whose mean out-of-fold loss is within one paired standard error of the best
    row's: the most constrained model the data allow."""
    best = int(np.argmin(losses.mean(axis=1)))
    for row in range(len(losses) - 1, best, -1):
        diff = losses[row] - losses[best]
        if diff.mean() <= diff.std(ddof=1) / np.sqrt(len(diff)):
            return row
    return best


def _monotone_fit(layout: TermLayout, raw: Solution, widths: np.ndarray) -> Solution:
    """`raw` projected onto monotone factor tables, each term as firm as the samples that touch it."""
    support = np.bincount(layout.term_indices(widths).ravel(), minlength=layout.num_terms)
    return Solution(monotone_projection(layout, raw.term_ms, weights=1.0 + support), raw.constant_ms, raw.info)


def select_prior(layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator, *,
                 test_monotone: bool = False) -> PriorSelection:
    """k-fold CV in two stages: the block penalty with the prior dominant (strongest pull), the
    most pooled within noise of the best; then the strength of the pull at that penalty. With
    `test_monotone`, a third: whether monotone tables predict as well as free ones, within noise."""
    folds = _folds(len(y), CV_FOLDS, rng)
    problems = []
    for val in folds:
        train = np.setdiff1d(np.arange(len(y)), val)
        problems.append((val, train, PriorProblem.build(layout, widths[train], y[train])))
    tried: dict[tuple[float, float], np.ndarray] = {}

    def out_of_fold(block_penalty: float, strength: float) -> np.ndarray:
        if (block_penalty, strength) not in tried:
            pred = np.zeros(len(y))
            for val, _, problem in problems:
                pred[val] = problem.solve(strength, block_penalty).predict(layout, widths[val])
            tried[(block_penalty, strength)] = pred
        return tried[(block_penalty, strength)]

    def losses(pred: np.ndarray) -> np.ndarray:
        return np.minimum(np.abs(pred - y) / y, 0.10) ** 2

    dominant = PRIOR_GRID[-1]
    by_penalty = np.array([losses(out_of_fold(b, dominant)) for b in BLOCK_PENALTY_GRID])
    block_penalty = BLOCK_PENALTY_GRID[_most_constrained_within_noise(by_penalty)]
    strength_scores = [selection_score(out_of_fold(block_penalty, g), y) for g in PRIOR_GRID]
    strength = PRIOR_GRID[int(np.argmin(strength_scores))]
    candidates = tuple(tried)
    predictions = np.array([tried[c] for c in candidates])
    scores = np.array([selection_score(p, y) for p in predictions])
    selection = PriorSelection(candidates, predictions, scores, len(folds), block_penalty, strength)
    if not test_monotone:
        return selection
    free = out_of_fold(block_penalty, strength)
    monotone = np.zeros(len(y))
    for val, train, problem in problems:
        raw = problem.solve(strength, block_penalty)
        monotone[val] = _monotone_fit(layout, raw, widths[train]).predict(layout, widths[val])
    keep = _most_constrained_within_noise(np.array([losses(free), losses(monotone)])) == 1
    return replace(selection, monotone=keep,
                   monotone_scores={"monotone": selection_score(monotone, y), "free": selection_score(free, y)})


def cross_validated_predictions(
    layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Out-of-fold predictions of the pooled-prior model for every (block penalty, strength) pair
    `select_prior` tried, (tried, N), their selection scores, and the number of folds."""
    selection = select_prior(layout, widths, y, rng)
    return selection.predictions, selection.scores, selection.folds


def _pooled_prior(layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator, *,
                  test_monotone: bool) -> Solution:
    """The pooled-prior fit, its tables projected monotone always or only where CV keeps them so."""
    sel = select_prior(layout, widths, y, rng, test_monotone=test_monotone)
    raw = PriorProblem.build(layout, widths, y).solve(sel.strength, sel.block_penalty)
    solution = _monotone_fit(layout, raw, widths) if sel.monotone else raw
    info = {
        "prior_strength": sel.strength,
        "block_penalty": sel.block_penalty,
        "monotone": sel.monotone,
        "cv_folds": sel.folds,
        "cv_scores": {f"{g:g}": sel.score(sel.block_penalty, g) for g in PRIOR_GRID},
        "block_penalty_scores": {f"{b:g}": sel.score(b, PRIOR_GRID[-1]) for b in BLOCK_PENALTY_GRID},
    }
    if test_monotone:
        info["monotone_cv_scores"] = sel.monotone_scores
    return Solution(solution.term_ms, raw.constant_ms, info)


@register_method("pooled-prior")
def fit_pooled_prior(layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Solution:
    """Factor terms pulled towards a prior (MACs, activation and weight sizes, a constant; pooled
    per op kind with penalised per-factor parts), relative Huber loss, both strengths by k-fold
    CV; the tables are projected monotone unless cross-validation finds the free ones better
    beyond noise (a device whose widths off its SIMD tile run slower than the next wider one)."""
    return _pooled_prior(layout, widths, y, rng, test_monotone=True)


@register_method("pooled-prior-monotone")
def fit_pooled_prior_monotone(layout: TermLayout, widths: np.ndarray, y: np.ndarray,
                              rng: np.random.Generator) -> Solution:
    """pooled-prior with its tables always projected monotone, whatever cross-validation says:
    more channels are never predicted faster, at the price of accuracy on a non-monotone device."""
    return _pooled_prior(layout, widths, y, rng, test_monotone=False)


# --- nnls-monotone: NNLS with a monotonicity penalty --------------------------------------------


def _fit_monotone_penalty(layout: TermLayout, widths: np.ndarray, y: np.ndarray, strength: float) -> Solution:
    """Least squares in ms over terms and constant >= 0, plus strength x squared monotonicity violations."""
    design = layout.design(widths)
    design_t = design.T.tocsr()
    n, p = design.shape
    lo, hi = layout.monotone_pairs()
    unit = float(np.mean(y))
    pair_scale = unit / layout.num_factors

    def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
        x, c = v[:p], v[-1]
        r = (design @ x + c - y) / unit
        grad = np.zeros_like(v)
        grad[:p] = design_t @ (2.0 * r / unit / n)
        grad[-1] = float(np.sum(2.0 * r / unit / n))
        loss = float(r @ r) / n
        if strength > 0:
            viol = np.maximum((x[lo] - x[hi]) / pair_scale, 0.0)
            loss += strength / len(lo) * float(viol @ viol)
            gv = 2.0 * strength / len(lo) * viol / pair_scale
            grad[:p] += np.bincount(lo, gv, minlength=p) - np.bincount(hi, gv, minlength=p)
        return loss, grad

    res = minimize(
        objective,
        np.zeros(p + 1),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * (p + 1),
        options={"maxiter": 3000, "ftol": 1e-14, "gtol": 1e-10},
    )
    return Solution(res.x[:p].copy(), float(res.x[-1]))


@register_method("nnls-monotone")
def fit_nnls_monotone(layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Solution:
    """The fit of the AOWS width-search paper (Berman et al., "AOWS: Adaptive and Optimal Network Width
    Search with Latency Constraints", CVPR 2020), over the factor terms: NNLS with a penalty on
    monotonicity violations along every axis of every factor, its strength chosen on a validation split."""
    order = rng.permutation(len(y))
    n_val = max(1, len(y) // 5)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    scores = [
        selection_score(_fit_monotone_penalty(layout, widths[train], y[train], s).predict(layout, widths[val]), y[val])
        for s in MONOTONE_GRID
    ]
    best = MONOTONE_GRID[int(np.argmin(scores))]
    sol = _fit_monotone_penalty(layout, widths, y, best)
    info = {"monotonicity_strength": best, "validation_scores": {f"{g:g}": v for g, v in zip(MONOTONE_GRID, scores)}}
    return Solution(sol.term_ms, sol.constant_ms, info)


# --- baselines ----------------------------------------------------------------------------------


@register_method("nnls")
def fit_nnls(layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Solution:
    """Plain non-negative least squares on the factor terms and the constant."""
    design = layout.design(widths).toarray()
    system = np.hstack([design, np.ones((len(y), 1))])
    coef, _ = nnls(system, y, maxiter=20 * system.shape[1])
    return Solution(coef[:-1].copy(), float(coef[-1]))


@register_method("flops")
def fit_flops(layout: TermLayout, widths: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Solution:
    """A straight line in the network's MACs: latency = slope x MACs + intercept (both >= 0)."""
    macs = layout.macs[layout.term_indices(widths)].sum(axis=1)
    scale = float(macs.max()) or 1.0
    coef, _ = nnls(np.stack([macs / scale, np.ones_like(macs)], axis=1), y)
    slope = coef[0] / scale
    return Solution(slope * layout.macs, float(coef[1]), {"ms_per_gmac": float(slope * 1e9)})
