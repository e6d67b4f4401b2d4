"""Collect until the table is good enough: a cross-validated error estimate and the rule that stops.

The estimate is the K-fold out-of-fold MAPE of the pooled-prior model on the samples
collected so far: each sample is predicted by a table fitted without its fold, and the
mean of |predicted - measured| / measured is taken over them all but the all-smallest and
all-largest configurations (an extrapolation fresh configurations do not need). It estimates the error of the table on
fresh configurations of the same collection (one device state, one db): it does not see
how far a later collection, another load or a re-boot of the board moves the timings.

Cheap at every check: the two strengths of the pooled-prior fit are chosen by its full
cross-validation grid only at the first check and whenever the sample count has doubled
since (with the fit's test of the monotone projection); otherwise a check is one pooled-prior
solve per fold at the strengths last chosen, projected onto monotone tables when the fit
would project.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import click
import numpy as np

from widthwise.device_agents.spaces import Space
from widthwise.errors import UsageError

if TYPE_CHECKING:  # the fit's modules (scipy) load when a check first runs, not with the CLI
    from .fit_design import TermLayout

#: fewest samples before the first check (cross-validation needs a few per fold)
MIN_SAMPLES = 20
#: a check every this share of the samples so far (at least `MIN_INTERVAL` samples apart)
INTERVAL_SHARE = 0.10
MIN_INTERVAL = 5
#: relative improvement over the previous check below which the estimate "has stopped improving"
IMPROVEMENT = 0.10
#: what `widthwise run` collects until (its samples are the cap)
RUN_UNTIL_ERROR = 0.02
#: the note in the sample db that keeps the rule's checks, so a resumed collection continues it
NOTE = "until_error"


def parse_error_target(text: str | float, *, option: str = "--until-error") -> float:
    """An error target as a fraction: `2%` is 0.02, `0.02` is 0.02; UsageError naming the option
    for anything else or a value outside (0, 1)."""
    raw = str(text).strip()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)", raw)
    if match is None:
        raise UsageError(f"{option} must be a fraction such as 0.02 or a percentage such as 2%, got {raw!r}",
                         field=option)
    value = float(match.group(1)) / (100.0 if match.group(2) else 1.0)
    if not 0.0 < value < 1.0 or not math.isfinite(value):
        raise UsageError(f"{option} must be above 0 and below 100 %, got {raw!r}", field=option)
    return value


class ErrorTarget(click.ParamType):
    """The click type of `--until-error`: `parse_error_target`, a bad value a usage error naming the option."""

    name = "error"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        option = param.opts[0] if param is not None and param.opts else "--until-error"
        try:
            return parse_error_target(str(value), option=option)
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


def check_interval(count: int) -> int:
    """Samples between the check at `count` samples and the next one."""
    return max(MIN_INTERVAL, int(math.ceil(INTERVAL_SHARE * count)))


@dataclass
class ErrorEstimator:
    """The K-fold out-of-fold MAPE of the pooled-prior model, strengths re-chosen when the count doubles.

    `prior` (a fit_prior.TablePrior or None) replaces the feature prior by another table's terms."""

    layout: "TermLayout"
    seed: int = 0
    prior: object | None = None
    strengths: tuple[float, float] | None = None  # (block penalty, strength) last chosen
    monotone: bool = True  # whether the fit, as last chosen, projects its tables onto monotone ones
    chosen_at: int = 0

    def _layout(self) -> "TermLayout":
        return self.layout if self.prior is None else self.prior.layout_for(self.layout)  # type: ignore[attr-defined]

    def estimate(self, widths: np.ndarray, y: np.ndarray) -> float:
        """The out-of-fold MAPE (a fraction) of `len(y)` samples, each fold's table made monotone
        when `fit --method pooled-prior` would make it so."""
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        from .fit_solvers import CV_FOLDS, PriorProblem, _folds, _monotone_fit, select_prior  # noqa: PLC0415

        layout = self._layout()
        n = len(y)
        with threadpool_limits(limits=1, user_api="blas"):
            if self.strengths is None or n >= 2 * self.chosen_at:
                sel = select_prior(layout, widths, y, np.random.default_rng(self.seed), test_monotone=True)
                self.strengths, self.monotone, self.chosen_at = (sel.block_penalty, sel.strength), sel.monotone, n
            block_penalty, strength = self.strengths
            pred = np.zeros(n)
            for val in _folds(n, CV_FOLDS, np.random.default_rng(self.seed)):
                train = np.setdiff1d(np.arange(n), val)
                raw = PriorProblem.build(layout, widths[train], y[train]).solve(strength, block_penalty)
                table = _monotone_fit(layout, raw, widths[train]) if self.monotone else raw
                pred[val] = table.predict(layout, widths[val])
        return self._mape(widths, pred, y)

    def _mape(self, widths: np.ndarray, pred: np.ndarray, y: np.ndarray) -> float:
        """Mean relative error of the out-of-fold predictions, leaving out the all-smallest and
        all-largest configurations (coverage's first two draws): predicting either from the
        others is an extrapolation that fresh configurations do not need, and it alone could
        hold the estimate above any target (a 30 % miss of the smallest network at 20 samples)."""
        space = self.layout.space
        low = np.asarray([min(layer.choices) for layer in space.layers])
        high = np.asarray([max(layer.choices) for layer in space.layers])
        keep = ~(np.all(widths == low, axis=1) | np.all(widths == high, axis=1))
        rel = np.abs(pred - y) / y
        return float(np.mean(rel[keep] if keep.any() else rel))


@dataclass
class StopRule:
    """Stop at a check whose estimate is below `threshold` and improved on the previous check's by
    less than IMPROVEMENT (relative); never before `min_samples`; `cap` is the cap.

    `history` holds (samples, estimate) of every check, oldest first (kept in the db's note)."""

    threshold: float
    cap: int
    min_samples: int = MIN_SAMPLES
    history: list[tuple[int, float]] = field(default_factory=list)
    reason: str | None = None  # "estimate" or "cap" once decided

    def due(self, count: int) -> bool:
        """Whether a check is due with `count` samples stored."""
        if count < self.min_samples or count >= self.cap:
            return False
        if not self.history:
            return True
        last = self.history[-1][0]
        return count >= last + check_interval(last)

    def record(self, count: int, estimate: float) -> bool:
        """Add a check; True when the rule says stop."""
        self.history = [h for h in self.history if h[0] < count] + [(count, float(estimate))]
        return self._decide()

    def _decide(self) -> bool:
        if len(self.history) >= 2:
            (_, before), (_, now) = self.history[-2:]
            if now < self.threshold and now > (1.0 - IMPROVEMENT) * before:
                self.reason = "estimate"
        return self.reason == "estimate"

    @property
    def estimate(self) -> float | None:
        """The latest estimate, or None before the first check."""
        return self.history[-1][1] if self.history else None

    def note(self) -> dict:
        """What the db keeps of the rule."""
        return {"threshold": self.threshold, "cap": self.cap, "min_samples": self.min_samples,
                "history": [[n, e] for n, e in self.history], "reason": self.reason}

    def resume(self, note: dict | None, count: int) -> None:
        """Continue from a db's note: its checks up to `count` samples, decided again with this
        threshold when the last of them saw all `count` samples (else the next check is due as usual)."""
        if not note:
            return
        self.history = [(int(n), float(e)) for n, e in note.get("history") or () if int(n) <= count]
        if self.history and self.history[-1][0] == count:
            self._decide()

    def summary(self, count: int) -> dict:
        """The rule's part of a collection summary: why it stopped (or not yet) and the estimate."""
        reason = self.reason or ("cap" if count >= self.cap else None)
        return {"threshold": self.threshold, "estimate": self.estimate, "reason": reason, "samples": count,
                "cap": self.cap, "min_samples": self.min_samples, "checks": len(self.history),
                "history": [[n, round(e, 6)] for n, e in self.history]}


class UntilError:
    """The stop rule of one collection with its estimator: checks on the db as samples arrive,
    the rule's state kept in the db's note (`NOTE`) so that a resumed collection continues it."""

    def __init__(self, space: Space, threshold: float, *, cap: int, min_samples: int = MIN_SAMPLES, seed: int = 0,
                 prior: str | None = None) -> None:
        from .fit_design import term_layout  # noqa: PLC0415
        from .fit_prior import load_prior  # noqa: PLC0415

        self.rule = StopRule(threshold, cap=cap, min_samples=min_samples)
        table_prior = None if prior is None else load_prior(prior, space)
        self.estimator = ErrorEstimator(term_layout(space), seed=seed, prior=table_prior)

    @property
    def stopped(self) -> bool:
        return self.rule.reason == "estimate"

    def resume(self, store) -> None:
        """Continue the rule from the db's note."""
        self.rule.resume(store.note(NOTE), store.count("sample"))

    def check(self, store, statistic: str) -> bool:
        """Estimate and decide when a check is due at the db's sample count; True when one ran."""
        count = store.count("sample")
        if self.rule.reason is not None or not self.rule.due(count):
            return False
        data = store.training_data(statistic)
        self.rule.record(count, self.estimator.estimate(data.widths, np.asarray(data.latency_ms, dtype=np.float64)))
        store.set_note(NOTE, self.rule.note())
        return True

    def postfix(self) -> dict:
        """The progress bar's fields: the latest estimate and the goal."""
        est = self.rule.estimate
        return {"cv_err": "-" if est is None else f"{100 * est:.2f}%", "goal": f"{100 * self.rule.threshold:g}%"}
