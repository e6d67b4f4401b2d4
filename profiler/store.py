"""The sample store: every measurement of a collection, in one SQLite file (WAL mode).

A db belongs to one space, device and runtime setting, recorded in its `meta` table; a
collection with any other identity is refused with the field that differs. The planned
configurations sit in `plan` (slot -> widths), the collector's progress notes in
`notes`, and each measurement is one row of `samples`, written in its own transaction
the moment it arrives, so a process killed at any instant leaves a db that opens, is
consistent, and tells exactly which slots are missing. Unique indexes make a slot measured twice, or a sample re-timed twice, an
error rather than a silent duplicate.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from widthwise.device_agents.spaces import Space, make_space

from widthwise.device_agents.statistics import STATISTICS

from .dataset import TrainingData
from .drift import DriftTrend, fit_trend
from .errors import IdentityMismatch, PlanMismatch, StoreError
from .store_schema import (_SCHEMA, DESCRIPTIVE_FIELDS, FORMAT, IDENTITY_FIELDS, KINDS, OPTIONAL_IDENTITY, PAIR_COLUMNS,
                           canonical, first_difference)

__all__ = ["FORMAT", "KINDS", "IdentityMismatch", "PlanMismatch", "SampleRow", "SampleStore", "StoreError"]

@dataclass(frozen=True)
class SampleRow:
    """One stored measurement, as read back."""

    id: int
    kind: str
    slot: int | None
    retime_of: int | None
    widths: tuple[int, ...]
    times_ms: tuple[float, ...]
    stats: dict
    agent_fingerprint: str
    runtime: dict
    wall_time: float
    pair_ratio: float | None = None  # paired rows: median of the per-pair ratios target/reference
    pair_ref_ms: float | None = None  # paired rows: the reference's median ms in this measurement

    def statistic(self, name: str) -> float:
        """This measurement's per-sample statistic, computed from its raw repeats."""
        return STATISTICS[name](np.asarray(self.times_ms, dtype=np.float64))


class SampleStore:
    """One collection's SQLite db; open with an identity to create or check, without to read."""

    def __init__(self, path: str | os.PathLike, identity: Mapping[str, object] | None = None) -> None:
        self.path = os.fspath(path)
        if identity is None and not os.path.exists(self.path):
            raise StoreError(f"no sample db at {self.path}", field="db")
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if identity is not None:
                self._create_or_check(identity)
            self.meta = self._read_meta()
            if self.meta.get("format") != FORMAT:
                raise StoreError(f"{self.path} is not a {FORMAT} db (format={self.meta.get('format')!r})", field="db")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path} is not a usable sample db: {exc}", field="db") from exc
        except BaseException:
            self._db.close()
            raise

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> "SampleStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite as it sees fit)."""
        self._db.close()

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)

    def _create_or_check(self, identity: Mapping[str, object]) -> None:
        wanted = {"format": FORMAT, **OPTIONAL_IDENTITY, **{k: canonical(v) for k, v in identity.items()}}
        unknown = set(wanted) - set(IDENTITY_FIELDS) - set(OPTIONAL_IDENTITY) - set(DESCRIPTIVE_FIELDS)
        if unknown:
            raise StoreError(f"unknown identity field(s): {', '.join(sorted(unknown))}", field="identity")
        missing = [k for k in IDENTITY_FIELDS if k not in wanted]
        if missing:
            raise StoreError(f"identity lacks field(s): {', '.join(missing)}", field="identity")
        with self._transaction() as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                raise StoreError(f"{self.path} is an SQLite db of something else (tables: {', '.join(sorted(tables))})",
                                 field="db")
            stored = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")} if tables else {}
            if stored and stored.get("format") != FORMAT:
                raise IdentityMismatch(self.path, "format", stored.get("format"), FORMAT)
            for statement in _SCHEMA:
                db.execute(statement)
            have = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
            for name, kind in PAIR_COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE samples ADD COLUMN {name} {kind}")
            if not stored:
                wanted.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v, sort_keys=True)) for k, v in wanted.items()],
                )
                return
        cut = IDENTITY_FIELDS.index("statistic")  # pairing decides the statistic: report it first
        for key in (*IDENTITY_FIELDS[:cut], *OPTIONAL_IDENTITY, *IDENTITY_FIELDS[cut:]):
            have = stored.get(key, OPTIONAL_IDENTITY.get(key))
            if have != wanted[key]:
                raise IdentityMismatch(self.path, *first_difference(key, have, wanted[key]))

    def _read_meta(self) -> dict:
        try:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.path} has no sample-db metadata ({exc})", field="db") from exc
        return {k: json.loads(v) for k, v in rows}

    # --- identity and plan -------------------------------------------------------------

    def space(self) -> Space:
        """The space this db's configurations belong to (a spec's space from the spec it records)."""
        return make_space(self.meta["space"], self.meta.get("space_params") or {})

    def ensure_plan(self, plan: Sequence[Sequence[int]]) -> None:
        """Record the planned configurations; refuse if a stored slot plans other widths."""
        with self._transaction() as db:
            stored = dict(db.execute("SELECT slot, widths FROM plan WHERE slot < ?", (len(plan),)))
            for slot, widths in enumerate(plan):
                text = json.dumps([int(w) for w in widths])
                if slot in stored and stored[slot] != text:
                    raise PlanMismatch(
                        f"{self.path}: slot {slot} was planned as {stored[slot]}, this run plans {text}", field="plan"
                    )
            db.executemany(
                "INSERT INTO plan (slot, widths) VALUES (?, ?)",
                [(s, json.dumps([int(w) for w in ws])) for s, ws in enumerate(plan) if s not in stored],
            )

    def missing_slots(self, n: int) -> list[int]:
        """Slots 0..n-1 that have no sample yet, in order."""
        done = {s for (s,) in self._db.execute("SELECT slot FROM samples WHERE kind = 'sample' AND slot < ?", (n,))}
        return [s for s in range(n) if s not in done]

    def count(self, kind: str = "sample") -> int:
        """How many rows of this kind the db holds."""
        return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE kind = ?", (kind,)).fetchone()[0])

    def count_paired(self) -> int:
        """How many rows carry a paired reference timing (0 for a db older than pairing)."""
        if not self._has_pair_columns():
            return 0
        return int(self._db.execute("SELECT COUNT(*) FROM samples WHERE pair_ratio IS NOT NULL").fetchone()[0])

    def note(self, key: str) -> dict | None:
        """A progress note the collector keeps in the db (e.g. the outlier pass), or None."""
        row = self._db.execute("SELECT value FROM notes WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_note(self, key: str, value: Mapping[str, object]) -> None:
        """Write (or replace) a progress note, in its own transaction."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO notes (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # --- writing -------------------------------------------------------------------------

    def add(
        self,
        kind: str,
        widths: Sequence[int],
        response: Mapping[str, object],
        *,
        fingerprint: str,
        slot: int | None = None,
        retime_of: int | None = None,
        wall_time: float | None = None,
    ) -> int:
        """Store one bench_spec response as a row of `kind`, in its own transaction; its id."""
        if kind not in KINDS:
            raise StoreError(f"unknown sample kind {kind!r}; known: {', '.join(KINDS)}", field="kind")
        times = [float(t) for t in response["times_ms"]]  # type: ignore[union-attr]
        if not times or not all(np.isfinite(times)) or min(times) <= 0:
            raise StoreError(f"refusing a measurement with empty, non-finite or non-positive times: {times}", field="times_ms")
        pair = response.get("pair")
        pair_ratio, pair_ref = _pair_values(pair)  # type: ignore[arg-type]
        row = (
            kind,
            slot,
            retime_of,
            json.dumps([int(w) for w in widths]),
            json.dumps(times),
            STATISTICS["min"](np.asarray(times)),
            STATISTICS["median"](np.asarray(times)),
            json.dumps(response.get("stats") or {}, sort_keys=True),
            response.get("warmup"),
            response.get("number"),
            response.get("repeat"),
            response.get("init_ms"),
            response.get("build_ms"),
            response.get("peak_rss_kb"),
            response.get("model_bytes"),
            json.dumps(list(response.get("warnings") or [])),
            fingerprint,
            json.dumps(response.get("runtime") or {}, sort_keys=True),
            time.time() if wall_time is None else float(wall_time),
            pair_ratio,
            pair_ref,
            None if pair is None else json.dumps(pair, sort_keys=True),
        )
        try:
            with self._transaction() as db:
                cur = db.execute(
                    "INSERT INTO samples (kind, slot, retime_of, widths, times_ms, stat_min, stat_median, stats,"
                    " warmup, number, repeat, init_ms, build_ms, peak_rss_kb, model_bytes, warnings,"
                    " agent_fingerprint, runtime, wall_time, pair_ratio, pair_ref_ms, pair)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                return int(cur.lastrowid)
        except sqlite3.IntegrityError as exc:
            what = f"slot {slot}" if kind == "sample" else f"sample {retime_of}" if kind == "retime" else kind
            raise StoreError(f"{self.path}: {what} is already stored as a {kind} ({exc})", field=kind) from exc

    # --- reading -------------------------------------------------------------------------

    def rows(self, kind: str | None = None) -> list[SampleRow]:
        """Stored measurements (of one kind, or all), oldest first."""
        pair = "pair_ratio, pair_ref_ms" if self._has_pair_columns() else "NULL, NULL"  # a db older than pairing
        query = f"SELECT id, kind, slot, retime_of, widths, times_ms, stats, agent_fingerprint, runtime, wall_time, {pair} FROM samples"
        args: tuple = ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        return [
            SampleRow(i, k, s, r, tuple(json.loads(w)), tuple(json.loads(t)), json.loads(st), fp, json.loads(rt), wt, pr, pm)
            for i, k, s, r, w, t, st, fp, rt, wt, pr, pm in self._db.execute(query + " ORDER BY id", args)
        ]

    def _has_pair_columns(self) -> bool:
        return "pair_ratio" in {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}

    @property
    def paired(self) -> bool:
        """Whether this db was collected with paired timing (values are ratios to a reference)."""
        return bool(self.meta.get("pairing", OPTIONAL_IDENTITY["pairing"]))

    def _chosen(self) -> tuple[list[SampleRow], list[SampleRow]]:
        """(samples by slot, the row that stands for each: its re-timing when it has one)."""
        samples = sorted(self.rows("sample"), key=lambda r: r.slot)
        retimes = {r.retime_of: r for r in self.rows("retime")}
        return samples, [retimes.get(s.id, s) for s in samples]

    def reference_level_ms(self) -> float | None:
        """R, the db's one reference level: paired, the median over the samples of the reference's
        median ms; unpaired, the level of the reference trend. None when there is none."""
        if self.paired:
            levels = [r.pair_ref_ms for r in self._chosen()[1] if r.pair_ref_ms is not None]
            return float(np.median(levels)) if levels else None
        trend = self.drift_trend("min")
        return None if trend.empty else float(np.exp(trend.log_scale))

    def retimed_ids(self) -> set[int]:
        """Ids of samples that already have their (single) re-timing."""
        return {r for (r,) in self._db.execute("SELECT retime_of FROM samples WHERE kind = 'retime'")}

    def drift_trend(self, statistic: str = "min") -> DriftTrend:
        """The robust trend of the reference configuration's statistic over wall-clock time."""
        refs = self.rows("reference")
        return fit_trend(
            np.array([r.wall_time for r in refs]), np.array([r.statistic(statistic) for r in refs])
        )

    def training_data(
        self, statistic: str = "min", normalise_drift: bool = True, *, reference_level_ms: float | None = None
    ) -> TrainingData:
        """Each sample's statistic, drift-normalised by the reference trend at its time.

        A paired db gives ratio_median x R instead (R: `reference_level_ms`, default this db's
        own, see reference_level_ms()); its statistic is "median" whatever is asked, and no
        drift normalisation is applied, the ratios being free of drift already.
        A sample that was re-timed is represented by its re-timing (value and time): the
        re-timing exists because the fit judged the first measurement wrong. Both rows
        stay in the db; `sample_ids` name the original samples.
        """
        if statistic not in STATISTICS:
            raise StoreError(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}", field="statistic")
        if self.paired:
            return self._paired_training_data(reference_level_ms)
        space = self.space()
        samples, chosen = self._chosen()
        values = np.array([r.statistic(statistic) for r in chosen], dtype=np.float64)
        trend = self.drift_trend(statistic)
        normalised = normalise_drift and not trend.empty
        if normalised:
            values = values * trend.factor(np.array([r.wall_time for r in chosen]))
        widths = np.array([s.widths for s in samples], dtype=np.int64).reshape(len(samples), space.num_layers)
        return TrainingData(
            space=space,
            widths=widths,
            latency_ms=values,
            sample_ids=np.array([s.id for s in samples], dtype=np.int64),
            statistic=statistic,
            identity=self.identity_summary(statistic, normalised, len(trend.times)),
        )

    def _paired_training_data(self, level_ms: float | None) -> TrainingData:
        samples, chosen = self._chosen()
        unpaired = [r.id for r in chosen if r.pair_ratio is None]
        if unpaired:
            raise StoreError(f"{self.path} is a paired db but measurement(s) {unpaired[:5]} have no pair data", field="pair")
        own = self.reference_level_ms()
        level = own if level_ms is None else float(level_ms)
        if level is None or not np.isfinite(level) or level <= 0:
            raise StoreError(f"{self.path}: no reference level to convert ratios to ms (got {level!r})", field="reference")
        space = self.space()
        values = np.array([r.pair_ratio for r in chosen], dtype=np.float64) * level
        widths = np.array([s.widths for s in samples], dtype=np.int64).reshape(len(samples), space.num_layers)
        identity = self.identity_summary("median", False, len(chosen))
        identity["reference"] = {
            "widths": list(self.meta.get("reference_widths") or []),
            "level_ms": level,
            "own_level_ms": own,
            "clock": self.meta.get("clock"),
        }
        return TrainingData(space, widths, values, np.array([s.id for s in samples], dtype=np.int64), "median", identity)

    def identity_summary(self, statistic: str, drift_normalised: bool, references: int) -> dict:
        """Device and runtime facts in the shape the table's `device` and `runtime` take."""
        meta = self.meta
        device = dict(meta.get("device") or {})
        device["fingerprint"] = meta.get("device_fingerprint")
        return {
            "device": device,
            "runtime": {
                "name": meta.get("runtime"),
                "version": meta.get("runtime_version"),
                "threads": meta.get("threads"),
                "dtype": meta.get("dtype"),
                "delegate": meta.get("delegate"),
                "statistic": statistic,
                "clock": meta.get("clock", OPTIONAL_IDENTITY["clock"]),
                "paired": self.paired,
            },
            "space": {"name": meta.get("space"), "params": meta.get("space_params")},
            "timing": meta.get("timing"),
            "drift_normalised": drift_normalised,
            "references": references,
            "db": self.path,
        }


def _pair_values(pair: Mapping[str, object] | None) -> tuple[float | None, float | None]:
    """(median ratio, reference median ms) of a paired answer's `pair` block; (None, None) unpaired."""
    if pair is None:
        return None, None
    ratio, ref = float(pair["ratio_median"]), float(pair["ref_median_ms"])  # type: ignore[arg-type]
    if not (np.isfinite(ratio) and np.isfinite(ref) and ratio > 0 and ref > 0):
        raise StoreError(f"refusing a paired measurement with ratio {ratio} and reference {ref} ms", field="pair")
    return ratio, ref


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including Ctrl-C)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

