"""The whole job on one agent, one function per step: collect, fit, validate, search, re-time.

`widthwise run` (and so `make run`) is `run_job` plus a printed report. Each step is the
code the separate commands use (`collect`, `fit`, `validate`, `query`) and can be called
alone: collecting needs a connected agent client, fitting and validating only the db and
the table file, the search only a table, the re-timing a client and a table. Every step's
output lands in the job's folder, so nothing is lost if a later step fails.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from widthwise.device_agents.spaces import Space, make_space
from widthwise.errors import UsageError
from widthwise.search.engine import Answer, InfeasibleBudget, Searcher, make_objective
from widthwise.search.table import Table, load_table

from .agent_client import AgentClient, check_agent_builds
from .cli_options import open_space
from .collect import CollectSettings, collect, reference_widths, resolve_runtime
from .collect_timing import TimingPolicy, timed_bench
from .errors import FitError
from .fit import FitResult, error_report, fit_table, split_holdout, table_reference
from .fit_prior import load_prior
from .stopping import RUN_UNTIL_ERROR
from .store import SampleStore

#: Budgets used when none is given: these fractions of the predicted latency of the 1.0x
#: network (each width at its layer's choice nearest the base width).
DEFAULT_BUDGET_FRACTIONS = (0.5, 0.75, 1.0)
#: fewest samples a job collects: enough to fit and still hold some out.
MIN_JOB_SAMPLES = 20
#: samples a job collects when none are asked for, per space (DEFAULT_SAMPLES for the others):
#: at 224 on this project's 2-core machine the whole job stays within about 5 minutes.
DEFAULT_SAMPLES = 300
SPACE_SAMPLES: dict[str, int] = {"mobilenet_v2": 500, "ofa_mbv3": 500}
#: a job collects until the table's cross-validated error is below this (profiler.stopping), the
#: samples above being the cap; and never stops before RUN_MIN_SAMPLES, so its hold-out keeps a few
DEFAULT_UNTIL_ERROR = RUN_UNTIL_ERROR
RUN_MIN_SAMPLES = 60
#: fresh uniform configurations a job times after fitting, in a db of their own, to score the table
CHECK_SAMPLES = 40


@dataclass(frozen=True)
class JobSettings:
    """What `widthwise run` was asked: the space, how much to collect, the budgets, where to write."""

    space: str = "mobilenet_v1"
    resolution: int | None = None  # None: the space's default (224 for the MobileNets)
    levels: int | None = None  # None: the space's default (14 for the MobileNets)
    samples: int | None = None  # None: SPACE_SAMPLES of the space, else DEFAULT_SAMPLES
    budgets: tuple[float, ...] = ()
    objective: str = "flops"
    out_dir: str = "runs"
    name: str | None = None
    runtime: str | None = None
    threads: int = 1
    seed: int = 0
    holdout: float = 0.15
    params: Mapping[str, object] = field(default_factory=dict)  # the space's other parameters
    until_error: float | None = DEFAULT_UNTIL_ERROR  # None: collect all `samples`
    check_samples: int = CHECK_SAMPLES  # fresh uniform configurations timed after the fit to score it (0: none)
    prior: str | None = None  # a table of the same space as the fit's prior (profiler.fit_prior)

    def __post_init__(self) -> None:
        for b in self.budgets:
            if not math.isfinite(b) or b <= 0:
                raise UsageError(f"budget must be a finite number > 0, got {b}", field="--budget-ms")
        if self.samples is None:
            object.__setattr__(self, "samples", SPACE_SAMPLES.get(self.space, DEFAULT_SAMPLES))
        if self.check_samples < 0:
            raise UsageError(f"check samples must be >= 0, got {self.check_samples}", field="--check-samples")
        if self.samples < MIN_JOB_SAMPLES:
            raise UsageError(f"at least {MIN_JOB_SAMPLES} samples are needed to fit and hold some out", field="--samples")
        space = self.make_space()  # an unknown space or parameter is refused before any work
        if self.prior is not None:
            load_prior(self.prior, space)  # so is a prior table of another space

    @property
    def space_params(self) -> dict:
        """The space's parameters as given (`resolution` and `levels` when set, then the others)."""
        given = {key: value for key, value in (("resolution", self.resolution), ("levels", self.levels))
                 if value is not None}
        return {**self.params, **given}

    def make_space(self) -> Space:
        """The job's space; an unknown space or parameter is a UsageError naming it."""
        return open_space(self.space, self.space_params)


@dataclass(frozen=True)
class JobFiles:
    """Where a job's outputs go, named after the space and the runtime the agent uses."""

    runtime: str
    db: Path
    table: Path


@dataclass(frozen=True)
class Fitted:
    """The fit step's result: the table (saved), its report, and the db's reference level and mode."""

    result: FitResult
    level_ms: float | None  # paired: R, the ratios' scale; unpaired: the drift trend's level (None without references)
    paired: bool

    @property
    def table(self) -> Table:
        return self.result.table


@dataclass
class Retimed:
    """The re-timing step's rows (one per budget) and the reference's level now."""

    rows: list[dict]
    reference: dict = field(default_factory=dict)


def job_files(job: JobSettings, hello: Mapping[str, object]) -> JobFiles:
    """The db and table paths of a job on the agent that answered `hello` (its runtime picks the name)."""
    runtime = resolve_runtime(hello, job.runtime)[0]
    resolution = job.make_space().resolution
    stem = job.name or (f"{job.space}-{resolution}-{runtime}" if resolution is not None else f"{job.space}-{runtime}")
    out = Path(job.out_dir)
    return JobFiles(runtime, out / f"{stem}.sqlite", out / f"{stem}.json")


def collect_settings(job: JobSettings, files: JobFiles) -> CollectSettings:
    """The collection a job runs: the collector's defaults (paired, thread clock with one thread)."""
    return CollectSettings(space=job.space, samples=job.samples, db=str(files.db), space_params=job.space_params,
                           seed=job.seed, runtime=job.runtime, threads=job.threads, until_error=job.until_error,
                           min_samples=min(RUN_MIN_SAMPLES, int(job.samples or RUN_MIN_SAMPLES)), prior=job.prior)


def collect_step(client: AgentClient, settings: CollectSettings, *, progress: bool) -> dict:
    """Step 1: collect the job's samples into its db (resuming it); the collector's summary."""
    return collect(client, settings, progress=progress)


def fit_step(db: Path, table_path: Path, statistic: str, *, holdout: float, seed: int, prior: str | None = None) -> Fitted:
    """Step 2: fit a table on the db's training share (towards a `prior` table when given) and save it."""
    with SampleStore(str(db)) as store:
        data = store.training_data(statistic)
        level_ms = store.reference_level_ms()
        paired = store.paired
    try:
        table_prior = None if prior is None else load_prior(prior, data.space)
        result = fit_table(data, holdout=holdout, seed=seed, prior=table_prior)
    except FitError as exc:
        raise FitError(f"cannot fit {db}: {exc.message}", field=exc.field) from exc
    result.table.save(table_path)
    return Fitted(result, level_ms, paired)


def validate_step(table_path: Path, db: Path, *, holdout: float, seed: int) -> dict:
    """Step 3: the saved table's error on the samples its fit held out (the same seeded split)."""
    table = load_table(table_path)
    reference = table_reference(table)
    with SampleStore(str(db)) as store:
        level = float(reference["level_ms"]) if reference is not None and store.paired else None
        data = store.training_data(table.statistic, reference_level_ms=level)
    _, held = split_holdout(len(data), holdout, seed)
    return error_report(table, data.subset(held))


def check_step(client: AgentClient, settings: CollectSettings, files: JobFiles, count: int) -> dict:
    """Step 3b: time `count` fresh uniform configurations (seed + 1000, a db of their own beside the
    job's, resumable) and score the saved table on them, their ratios on the table's R."""
    check_db = files.db.with_name(files.db.stem + "-check.sqlite")
    fresh = replace(settings, samples=count, db=str(check_db), sampling="uniform", seed=settings.seed + 1000,
                    retime_outliers=False, until_error=None, prior=None)
    collect(client, fresh, progress=False)
    table = load_table(files.table)
    reference = table_reference(table)
    with SampleStore(str(check_db)) as store:
        level = float(reference["level_ms"]) if reference is not None and store.paired else None
        data = store.training_data(table.statistic, reference_level_ms=level)
    return {**error_report(table, data), "db": str(check_db)}


def default_budgets(table: Table, space: Space) -> tuple[float, ...]:
    """DEFAULT_BUDGET_FRACTIONS of the 1.0x network's predicted latency, rounded to µs."""
    base = table.predict(reference_widths(space))
    return tuple(round(base * f, 3) for f in DEFAULT_BUDGET_FRACTIONS)


def search_step(table: Table, objective: str, budgets: Sequence[float]) -> list[tuple[float, Answer | InfeasibleBudget]]:
    """Step 4: the exact search's answer for each budget (the InfeasibleBudget error when none fits)."""
    searcher = Searcher(table, make_objective(table, objective))
    answers: list[tuple[float, Answer | InfeasibleBudget]] = []
    for b in budgets:
        try:
            answers.append((b, searcher.query(b, method="exact")))
        except InfeasibleBudget as exc:
            answers.append((b, exc))
    return answers


def retime_step(client: AgentClient, settings: CollectSettings, runtime: str, fitted: Fitted,
                answers: Sequence[tuple[float, Answer | InfeasibleBudget]]) -> Retimed:
    """Step 5: time each answer on the agent, on the table's scale.

    Paired, each answer is alternated run by run with the table's pair reference (measured =
    ratio x the table's R); unpaired, the 1.0x reference is timed once and its drift factor
    applied. Every request is the collector's (`timed_bench`), with its repeat budget.
    """
    table, space = fitted.table, make_space(settings.space, dict(settings.space_params))
    pair_ref = table_reference(table) if fitted.paired else None
    ref_widths = tuple(pair_ref["widths"]) if pair_ref else reference_widths(space)
    policy = TimingPolicy(settings.timing)
    base = {"space": settings.space, "params": dict(settings.space_params), "dtype": settings.dtype}
    ref_seen: list[float] = []

    def measure(widths: Sequence[int], estimate_ms: float) -> tuple[float, float]:
        """(raw statistic of the target in ms, the same on the table's scale)."""
        body = timed_bench(client, {**base, "widths": list(widths)}, policy, runtime=runtime, threads=settings.threads,
                           clock=settings.clock, estimate_ms=estimate_ms, pair_widths=ref_widths if pair_ref else None,
                           pair_estimate_ms=table.predict(ref_widths))
        if pair_ref is None:
            raw = float(body["stats"][settings.statistic])
            return raw, raw
        ref_seen.append(float(body["pair"]["ref_median_ms"]))
        return float(body["stats"]["median"]), float(body["pair"]["ratio_median"]) * float(pair_ref["level_ms"])

    ref_now = math.nan if pair_ref else measure(ref_widths, table.predict(ref_widths))[0]
    scale = 1.0 if pair_ref or not fitted.level_ms else fitted.level_ms / ref_now
    rows = [_answer_row(b, ans, measure, scale, table) for b, ans in answers]
    if pair_ref is not None:  # the reference's level now, from the pairs just timed
        ref_now = float(sorted(ref_seen)[len(ref_seen) // 2]) if ref_seen else math.nan
    level = fitted.level_ms
    reference = {"widths": list(ref_widths), "measured_ms": ref_now, "table_level_ms": level,
                 "drift_factor": level / ref_now if level and ref_now == ref_now else 1.0, "paired": fitted.paired}
    return Retimed(rows, reference)


def _answer_row(budget: float, answer: Answer | InfeasibleBudget,
                measure: Callable[[Sequence[int], float], tuple[float, float]], scale: float,
                table: Table) -> dict:
    """One row of the report: the answer (in prefix form where blocks can be skipped), its measured
    latency and the error against the prediction."""
    if isinstance(answer, InfeasibleBudget):
        return {"budget_ms": budget, "error": str(answer), "min_latency_ms": answer.min_latency_ms}
    widths = table.canonical(answer.widths)
    raw, on_scale = measure(widths, answer.latency_ms)
    adjusted = on_scale * scale
    names = table.variable_names
    row = {
        "budget_ms": budget,
        "widths": list(widths),
        "named_widths": dict(zip(names, widths)),
        "predicted_ms": answer.latency_ms,
        "measured_ms": raw,
        "measured_adjusted_ms": adjusted,
        "error_pct": 100.0 * (answer.latency_ms - adjusted) / adjusted,
        "macs": answer.macs,
        "params": answer.params,
    }
    if any(v.labels for v in table.variables or ()):
        row["named_labels"] = dict(zip(names, table.labelled(widths)))
    return row


def run_job(client: AgentClient, job: JobSettings, *, say: Callable[[str], None] = lambda _: None,
            progress: bool = False, started: float | None = None) -> dict:
    """Every step in order on a connected agent; the summary `widthwise run` prints (`elapsed_s`
    counts from `started`, a time.monotonic() value, by default from this call)."""
    started = time.monotonic() if started is None else started
    hello = client.hello()
    files = job_files(job, hello)
    settings = collect_settings(job, files)
    check_agent_builds(hello, job.make_space(), files.runtime, settings.dtype)  # before the db is created
    files.db.parent.mkdir(parents=True, exist_ok=True)
    say(f"agent: {client.url}  cpu: {hello.get('cpu')}  cores: {hello.get('cores')}  runtime: {files.runtime}")
    steps = 5 if job.check_samples else 4
    step = iter(range(1, steps + 1))
    say(f"[{next(step)}/{steps}] " + (f"collecting {job.samples} samples into {files.db}" if job.until_error is None else
        f"collecting into {files.db} until the cross-validated error is below {100 * job.until_error:g} % "
        f"(at most {job.samples} samples)"))
    collected = collect_step(client, settings, progress=progress)
    say(f"[{next(step)}/{steps}] fitting {files.table}")
    fitted = fit_step(files.db, files.table, str(settings.statistic), holdout=job.holdout, seed=job.seed,
                      prior=job.prior)
    held_out = validate_step(files.table, files.db, holdout=job.holdout, seed=job.seed)
    if job.check_samples:
        say(f"[{next(step)}/{steps}] timing {job.check_samples} fresh configurations to score the table")
        fresh = check_step(client, settings, files, job.check_samples)
    budgets = job.budgets or default_budgets(fitted.table, job.make_space())
    say(f"[{next(step)}/{steps}] exact search for budgets {', '.join(f'{b:g} ms' for b in budgets)}")
    answers = search_step(fitted.table, job.objective, budgets)
    say(f"[{next(step)}/{steps}] re-timing the chosen configurations on the agent")
    retimed = retime_step(client, settings, files.runtime, fitted, answers)
    return {
        "db": str(files.db),
        "table": str(files.table),
        "collect": collected,
        "fit": fitted.result.report,
        "validate": held_out,
        **({"fresh": fresh} if job.check_samples else {}),
        "answers": retimed.rows,
        "variable_groups": list(fitted.table.variable_groups),
        "statistic": settings.statistic,
        "paired": fitted.paired,
        "clock": settings.clock,
        "reference": retimed.reference,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
