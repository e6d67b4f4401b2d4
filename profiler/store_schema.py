"""The sample db's format: its identity fields, SQL schema and measurement kinds (used by profiler.store).

The per-sample statistics are the agent's (`device_agents.statistics`), so a db's `stats`
and the values the store computes from its raw repeats are named and computed alike.
"""

from __future__ import annotations

import json

KINDS = ("sample", "reference", "retime")

FORMAT = "widthwise-samples/1"

#: identity fields compared when a collection opens an existing db, in reporting order.
IDENTITY_FIELDS: tuple[str, ...] = (
    "format",
    "space",
    "space_params",
    "device_fingerprint",
    "runtime",
    "runtime_version",
    "threads",
    "dtype",
    "delegate",
    "timing",
    "statistic",
    "sampling",
    "seed",
)
#: identity fields added later, compared like the others; a db created before them holds
#: their default (it was collected unpaired on the wall clock).
OPTIONAL_IDENTITY: dict[str, object] = {"pairing": False, "clock": "wall", "reference_widths": None}
#: stored with the identity but not compared (facts that describe, not define, the db).
DESCRIPTIVE_FIELDS: tuple[str, ...] = ("device", "created")


def canonical(value: object) -> object:
    """A JSON round trip, so that tuples and lists (and int keys) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True))


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
