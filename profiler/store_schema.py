"""The sample db's SQL schema, measurement kinds and per-sample statistics (used by profiler.store)."""

from __future__ import annotations

from typing import Callable

import numpy as np

KINDS = ("sample", "reference", "retime")

#: per-sample statistic name -> its function of the raw per-repeat times.
STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda t: float(np.min(t)),
    "median": lambda t: float(np.median(t)),
    "mean": lambda t: float(np.mean(t)),
    "p90": lambda t: float(np.percentile(t, 90)),
}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS plan (slot INTEGER PRIMARY KEY, widths TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('sample', 'reference', 'retime')),
        slot INTEGER,
        retime_of INTEGER REFERENCES samples(id),
        widths TEXT NOT NULL,
        times_ms TEXT NOT NULL,
        stat_min REAL NOT NULL,
        stat_median REAL NOT NULL,
        stats TEXT NOT NULL,
        warmup INTEGER, number INTEGER, repeat INTEGER,
        init_ms REAL, build_ms REAL, peak_rss_kb INTEGER, model_bytes INTEGER,
        warnings TEXT NOT NULL,
        agent_fingerprint TEXT NOT NULL,
        runtime TEXT NOT NULL,
        wall_time REAL NOT NULL,
        pair_ratio REAL, pair_ref_ms REAL, pair TEXT,
        CHECK ((kind = 'sample') = (slot IS NOT NULL)),
        CHECK ((kind = 'retime') = (retime_of IS NOT NULL))
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS samples_one_per_slot ON samples(slot) WHERE kind = 'sample'",
    "CREATE UNIQUE INDEX IF NOT EXISTS samples_one_retime ON samples(retime_of) WHERE kind = 'retime'",
    "CREATE INDEX IF NOT EXISTS samples_by_kind ON samples(kind, wall_time)",
)
#: nullable columns of paired timing (median target/reference ratio, reference median ms, the
#: agent's whole `pair` block); added to a db created before them when it is opened for writing.
PAIR_COLUMNS = (("pair_ratio", "REAL"), ("pair_ref_ms", "REAL"), ("pair", "TEXT"))
