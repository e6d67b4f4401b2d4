"""The collection loop: plan configurations, time the missing ones on an agent, store each.

The db is the single source of truth. A run plans the configurations (seeded, so the
same command plans the same slots), asks the store which slots have no sample yet, and
times only those, one transaction per sample. By default every sample is timed paired:
alternated run by run with a fixed pair reference in the same request, and stored as the
median of its per-run ratios (docs/collect.md). Unpaired (`pairing=False`), a reference
configuration is re-timed at intervals instead so the store can remove drift. After the
main pass the fit's outlier check names samples to re-time, once each; the list it named
is kept in the db so an interrupted pass resumes instead of starting over. Ctrl-C or a
dead agent stops the loop with everything measured so far stored (`CollectIncomplete`
says how far).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from widthwise.device_agents.errors import AgentError, RuntimeUnavailable
from widthwise.device_agents.handlers import DTYPES
from widthwise.device_agents.spaces import Space, make_space
from widthwise.device_agents.timing import CLOCKS, TimingSettings

from .collect_timing import AGENT_KEYS, POLICY_KEYS, LatencyEstimator, TimingPolicy, timed_bench
from .dataset import TrainingData
from .errors import CollectError, CollectIncomplete, CollectInterrupted, StoreError, UnknownSampler
from .sampling import make_sampler, sampler_class
from .stopping import MIN_SAMPLES, UntilError
from .store import SampleStore

__all__ = [
    "CLOCKS", "DEFAULT_TIMING", "DTYPES", "TIMING_KEYS", "CollectError", "CollectIncomplete", "CollectInterrupted",
    "CollectSettings", "Collector", "collect", "pair_reference_widths", "reference_widths", "resolve_runtime",
]

#: about 250 ms of timed repeats per sample, after one warm-up run (see collect_timing); the
#: first few samples, before there is an estimate, use 12 repeats of at least 20 ms.
DEFAULT_TIMING: Mapping[str, object] = {"warmup": 1, "repeat": 12, "min_repeat_ms": 20.0, "target_ms": 250.0}
TIMING_KEYS = AGENT_KEYS + POLICY_KEYS
OUTLIER_NOTE = "outlier_pass"
#: the pair reference: each variable's choice nearest this share of its base width. The 1.0x
#: network: its ratios to the sampled configurations spread half as much as the 0.5x
#: network's (2.8 % against 5.1 % relative IQR at 224 here), and since the repeat budget
#: covers both networks of a pair, a cheaper reference buys more pairs, not a shorter run.
PAIR_REFERENCE_SHARE = 1.0


@dataclass(frozen=True)
class CollectSettings:
    """What to collect and how; everything except `db` and the reference cadence is db identity."""

    space: str
    samples: int
    db: str
    space_params: Mapping[str, object] = field(default_factory=dict)
    seed: int = 0
    sampling: str = "coverage"
    runtime: str | None = None
    dtype: str = "float32"
    threads: int = 1
    delegate: str | None = None
    timing: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULT_TIMING))
    statistic: str | None = None  # None: "median" (of the ratios) when paired, else "min"
    reference_every: int = 15  # unpaired only: a paired sample times its reference itself
    reference_seconds: float = 15.0
    retime_outliers: bool = True
    pairing: bool = True  # alternate every run with the pair reference (see docs/collect.md)
    clock: str | None = None  # None: "thread_cpu" with one thread, else "wall"
    pair_share: float = PAIR_REFERENCE_SHARE  # the pair reference: each variable nearest this x its base width
    until_error: float | None = None  # stop once the cross-validated error is below this (profiler.stopping)
    min_samples: int = MIN_SAMPLES  # until_error: fewest samples before the first check
    prior: str | None = None  # until_error: a table of the same space as the estimate's prior (profiler.fit_prior)

    def __post_init__(self) -> None:
        if self.statistic is None:
            object.__setattr__(self, "statistic", "median" if self.pairing else "min")
        if self.clock is None:
            object.__setattr__(self, "clock", "thread_cpu" if self.threads == 1 else "wall")
        unknown = sorted(set(self.timing) - set(TIMING_KEYS))
        checks = (  # (setting that is wrong, message), first failure reported
            (self.clock not in CLOCKS, "clock", f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}"),
            (self.clock == "thread_cpu" and self.threads != 1, "clock",
             f"clock thread_cpu needs threads=1 (got {self.threads}): use clock wall"),
            (not 0.0 < self.pair_share <= 2.0, "pair_share", f"pair_share must be in (0, 2], got {self.pair_share}"),
            (self.pairing and self.statistic != "median", "statistic", "a paired collection records the median of "
             f"its per-pair ratios; statistic must be median, got {self.statistic!r}"),
            (self.samples < 0, "samples", f"samples must be non-negative, got {self.samples}"),
            (self.until_error is not None and not 0.0 < self.until_error < 1.0, "until_error",
             f"until_error must be a fraction in (0, 1), got {self.until_error}"),
            (self.min_samples < 10, "min_samples", f"min_samples must be at least 10, got {self.min_samples}"),
            (self.dtype not in DTYPES, "dtype", f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"),
            (self.threads < 1, "threads", f"threads must be at least 1, got {self.threads}"),
            (self.reference_every < 1 or self.reference_seconds <= 0, "reference_every",
             "reference_every must be >= 1 and reference_seconds > 0"),
            (bool(unknown), "timing", f"unknown timing key(s) {', '.join(unknown)}; known: {', '.join(TIMING_KEYS)}"),
        )
        for failed, name, message in checks:
            if failed:
                raise CollectError(message, field=name)
        self._check_with_the_agents_rules()

    def _check_with_the_agents_rules(self) -> None:
        """The agent's own validation of timing and space, and the sampler's name, before a db is created."""
        try:
            policy = TimingPolicy(self.timing)
            policy.validate()
            TimingSettings.from_dict({**policy.agent_fixed(), "threads": self.threads, "clock": self.clock})
            make_space(self.space, dict(self.space_params))
        except AgentError as exc:
            where = exc.details.get("field")
            raise CollectError(exc.message, field=where if isinstance(where, str) else None) from exc
        except ValueError as exc:
            raise CollectError(str(exc), field="timing") from exc
        try:
            sampler_class(self.sampling)
        except UnknownSampler as exc:
            raise CollectError(exc.message, field="sampling") from exc


def reference_widths(space: Space) -> tuple[int, ...]:
    """The fixed reference configuration: each variable's choice nearest its base width (the 1.0x network)."""
    return pair_reference_widths(space, 1.0)


def pair_reference_widths(space: Space, share: float = PAIR_REFERENCE_SHARE) -> tuple[int, ...]:
    """The pair reference configuration: each width's choice nearest `share` x its base width
    (widths and expansions alike), and each option variable at its base option (a code, not a size)."""
    return tuple(layer.base if layer.options else min(layer.choices, key=lambda w: (abs(w - share * layer.base), w))
                 for layer in space.layers)


def resolve_runtime(hello: Mapping[str, object], requested: str | None) -> tuple[str, str]:
    """(name, version) of the runtime to use: the requested one, else onnxruntime when the agent
    has it, else the agent's first; the one place that default is chosen (collect, run)."""
    runtimes = dict(hello.get("runtimes") or {})  # type: ignore[arg-type]
    if requested is None:
        if not runtimes:
            raise CollectError("the agent has no usable runtime", field="runtime")
        requested = "onnxruntime" if "onnxruntime" in runtimes else next(iter(runtimes))
    if requested not in runtimes:
        why = dict(hello.get("runtimes_unavailable") or {}).get(requested, "not installed")  # type: ignore[arg-type]
        raise CollectError(f"runtime {requested} is not usable on the agent: {why}", field="runtime")
    return requested, str(runtimes[requested])


def flag_outliers_function() -> Callable[[TrainingData], list[int]] | None:
    """The fit's `flag_outliers`, or None when profiler.fit does not provide it."""
    try:
        module = importlib.import_module("widthwise.profiler.fit")
    except ImportError:
        return None
    return getattr(module, "flag_outliers", None)


class Collector:
    """One collection run against a connected agent client (see `collect`)."""

    def __init__(self, client, settings: CollectSettings, *, progress: bool = True) -> None:
        self.client = client
        self.settings = settings
        self.progress = progress
        self.space = make_space(settings.space, dict(settings.space_params))
        self.pairing = settings.pairing
        self.reference = pair_reference_widths(self.space, settings.pair_share) if self.pairing else reference_widths(self.space)
        self.policy = TimingPolicy(settings.timing)
        self.latency_line = LatencyEstimator()
        self.reference_ms = LatencyEstimator()  # paired: the reference's ms per run, as last seen
        self.counts = {"new": 0, "references": 0, "retimed": 0}
        self.since_reference = 0
        self.last_reference = float("-inf")
        self.started = time.monotonic()
        self.outlier_check = "not reached"
        self.store: SampleStore | None = None
        self.until = None if settings.until_error is None else UntilError(
            self.space, settings.until_error, cap=settings.samples, min_samples=settings.min_samples,
            seed=settings.seed, prior=settings.prior)

    # --- setup ---------------------------------------------------------------------------

    def open_store(self) -> SampleStore:
        """Greet the agent, derive the db identity, open (or create) the db with it."""
        s = self.settings
        hello = self.client.hello()
        self.fingerprint = str(hello.get("fingerprint"))
        self.runtime, version = resolve_runtime(hello, s.runtime)
        identity = {
            "space": self.space.name,
            "space_params": self.space.param_dict,
            "device_fingerprint": self.fingerprint,
            "runtime": self.runtime,
            "runtime_version": version,
            "threads": s.threads,
            "dtype": s.dtype,
            "delegate": s.delegate,
            "timing": dict(s.timing),
            "statistic": s.statistic,
            "sampling": s.sampling,
            "seed": s.seed,
            "device": {k: hello.get(k) for k in ("cpu", "cores", "os", "machine", "python", "agent_version")},
            "reference_widths": list(self.reference),
            "pairing": s.pairing,
            "clock": s.clock,
        }
        self.identity = identity
        self.store = SampleStore(s.db, identity)
        for row in self.store.rows():  # a resumed run starts with what the db already knows
            self.latency_line.add(self.space.counts(row.widths)[0], sum(row.times_ms) / len(row.times_ms))
            if row.pair_ref_ms is not None:
                self.reference_ms.add(self.space.counts(self.reference)[0], row.pair_ref_ms)
        return self.store

    # --- measuring -----------------------------------------------------------------------

    def bench(self, widths: Sequence[int]) -> dict:
        """Time one configuration on the agent and check it ran with the db's settings."""
        s = self.settings
        spec = {"space": self.space.name, "params": self.space.param_dict, "widths": list(widths), "dtype": s.dtype}
        macs = self.space.counts(widths)[0]
        response = timed_bench(
            self.client, spec, self.policy, runtime=self.runtime, threads=s.threads, clock=s.clock,
            estimate_ms=self.latency_line.predict(macs), options={"delegate": s.delegate} if s.delegate is not None else None,
            pair_widths=self.reference if self.pairing else None, pair_estimate_ms=self.reference_ms.latest(),
        )
        ran = dict(response.get("runtime") or {})
        for key, want in (("name", self.runtime), ("version", self.identity["runtime_version"]), ("threads", s.threads),
                          ("dtype", s.dtype), ("clock", s.clock)):
            if key in ran and ran[key] != want:
                raise RuntimeUnavailable(f"the agent ran with runtime {key}={ran[key]!r}, the db is for {want!r}",
                                         field=f"runtime.{key}")
        times = [float(t) for t in response.get("times_ms") or ()]
        self.latency_line.add(macs, sum(times) / len(times) if times else math.nan)  # what a run costs, noise included
        if self.pairing:
            self.reference_ms.add(self.space.counts(self.reference)[0], float(response["pair"]["ref_median_ms"]))
            self.counts["references"] += 1  # every paired sample times the reference too
        return response

    def take_reference(self) -> None:
        """Re-time the reference configuration and store it."""
        assert self.store is not None
        self.store.add("reference", self.reference, self.bench(self.reference), fingerprint=self.fingerprint)
        self.counts["references"] += 1
        self.since_reference = 0
        self.last_reference = time.monotonic()

    def reference_due(self) -> bool:
        s = self.settings
        if self.pairing:
            return False  # each paired sample carries its own reference timing
        return self.since_reference >= s.reference_every or time.monotonic() - self.last_reference >= s.reference_seconds

    def measure(self, kind: str, widths: Sequence[int], **where: int) -> None:
        """Store one measurement of `kind`, re-timing the reference first when it is due."""
        assert self.store is not None
        if self.reference_due():
            self.take_reference()
        self.store.add(kind, widths, self.bench(widths), fingerprint=self.fingerprint, **where)
        self.since_reference += 1

    # --- the run -------------------------------------------------------------------------

    def run(self) -> dict:
        """Main pass over the missing slots, then the outlier re-timing pass; the summary."""
        s = self.settings
        store = self.open_store()
        plan = make_sampler(s.sampling, self.space, seed=s.seed).plan(s.samples)
        store.ensure_plan(plan)
        missing = store.missing_slots(s.samples)
        bar = _progress_bar(s.samples, s.samples - len(missing), enabled=self.progress)
        try:
            if self.until is not None:
                self.until.resume(store)
            for slot in missing:
                if self.stop_now(bar):
                    break
                self.measure("sample", plan[slot], slot=slot)
                self.counts["new"] += 1
                bar.set_postfix(self._postfix(), refresh=False)
                bar.update(1)
            if self.counts["new"] and not self.pairing:
                self.take_reference()  # closes the series so the last samples are interpolated, not extrapolated
            bar.close()
            self.outlier_pass()
        except (KeyboardInterrupt, AgentError, StoreError) as exc:
            bar.close()
            interrupted = isinstance(exc, KeyboardInterrupt)
            reason = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
            summary = self.summary(complete=False, reason=reason)
            raise (CollectInterrupted if interrupted else CollectIncomplete)(
                f"collection stopped after {summary['samples']} of {s.samples} samples "
                f"({summary['new']} new this run) because {reason}; {s.db} is consistent: "
                "run the same command again to resume",
                summary,
            ) from exc
        return self.summary(complete=True)

    # --- the stop rule (until_error) ---------------------------------------------------------

    def stop_now(self, bar) -> bool:
        """Run a check of the stop rule when one is due; True once it says stop."""
        if self.until is None or self.store is None:
            return False
        checked = self.until.check(self.store, str(self.settings.statistic))
        if checked:
            bar.set_postfix(self._postfix(), refresh=True)
        return self.until.stopped

    def _postfix(self) -> dict:
        return {"refs": self.counts["references"], **(self.until.postfix() if self.until is not None else {})}

    def target_samples(self) -> int:
        """The samples this run aims at: the stop rule's count once it has stopped, else `samples`."""
        if self.until is not None and self.until.stopped and self.store is not None:
            return min(self.settings.samples, self.store.count("sample"))
        return self.settings.samples

    def outlier_pass(self) -> None:
        """Re-time, once each, the samples the fit flags; the flagged list is kept in the db."""
        s, store = self.settings, self.store
        assert store is not None
        if not s.retime_outliers:
            self.outlier_check = "disabled"
            return
        note = store.note(OUTLIER_NOTE)
        target = self.target_samples()
        if note is None or note.get("samples") != target:
            flag = flag_outliers_function()
            if flag is None:
                self.outlier_check = "skipped: profiler.fit.flag_outliers is not available"
                return
            try:
                flagged = [int(i) for i in flag(store.training_data(s.statistic))]
            except ValueError as exc:
                self.outlier_check = f"skipped: {exc}"
                return
            note = {"samples": target, "flagged": flagged}
            store.set_note(OUTLIER_NOTE, note)
        by_id = {row.id: row for row in store.rows("sample")}
        todo = [i for i in note["flagged"] if i in by_id and i not in store.retimed_ids()]
        for sample_id in todo:
            self.measure("retime", by_id[sample_id].widths, retime_of=sample_id)
            self.counts["retimed"] += 1
        if todo and not self.pairing:
            self.take_reference()
        self.outlier_check = f"{len(note['flagged'])} flagged"

    def summary(self, *, complete: bool, reason: str | None = None) -> dict:
        """What the db holds and what this run added."""
        store = self.store
        samples = store.count("sample") if store else 0
        out = {
            "db": self.settings.db,
            "space": self.space.name,
            "asked": self.settings.samples,
            "samples": samples,
            "missing": len(store.missing_slots(self.target_samples())) if store else self.settings.samples,
            "new": self.counts["new"],
            "references": self.counts["references"],
            "retimed": self.counts["retimed"],
            "references_total": (store.count("reference") + store.count_paired()) if store else 0,
            "pairing": self.pairing,
            "clock": self.settings.clock,
            "reference_widths": list(self.reference),
            "retimed_total": store.count("retime") if store else 0,
            "outlier_check": self.outlier_check,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "complete": complete,
        }
        if reason is not None:
            out["reason"] = reason
        if self.until is not None:
            out["stop"] = self.until.rule.summary(samples)
        return out


def _progress_bar(total: int, initial: int, *, enabled: bool):
    """A tqdm bar on stderr with rate and ETA (disabled bars cost nothing)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="sample", file=sys.stderr, disable=not enabled, dynamic_ncols=True, smoothing=0.1)


def collect(client, settings: CollectSettings, *, progress: bool = True) -> dict:
    """Collect `settings.samples` samples into `settings.db` through a connected client; the summary.

    Raises CollectIncomplete (with the summary) when the agent dies, CollectInterrupted (a
    CollectIncomplete) on Ctrl-C or SIGTERM, and CollectError or StoreError (e.g.
    IdentityMismatch) when it cannot start.
    """
    collector = Collector(client, settings, progress=progress)
    try:
        return collector.run()
    finally:
        if collector.store is not None:
            collector.store.close()
