"""The sample db's format: its identity fields, SQL schema and measurement kinds (used by profiler.store).

A space written as a spec is part of the identity through `space_params` ({"spec": ...}); a
resumed collection whose spec differs is refused naming the first field that differs.

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


def first_difference(field: str, have: object, want: object) -> tuple[str, object, object]:
    """(path, stored, requested) of the first value two space specs differ in, so that a refusal
    names the spec's field (`space_params.spec.stages[2].blocks[0].kernel`) rather than printing
    both specs; other identity values are reported whole."""
    if not (field.startswith("space_params") and isinstance(have, dict) and isinstance(want, dict)
            and ("spec" in have or "spec" in want or field != "space_params")):
        return field, have, want
    if ("spec" in have) != ("spec" in want) and field == "space_params":
        def what(params: dict) -> str:
            return "(a spec file's space)" if "spec" in params else "(a built-in space)"
        return f"{field}.spec", what(have), what(want)
    for key in sorted(set(have) | set(want)):
        if key not in have or key not in want or have[key] != want[key]:
            a, b = have.get(key, "(absent)"), want.get(key, "(absent)")
            return _descend(f"{field}.{key}", a, b)
    return field, have, want


def _descend(path: str, have: object, want: object) -> tuple[str, object, object]:
    if isinstance(have, dict) and isinstance(want, dict):
        return first_difference(path, have, want)
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        for k, (a, b) in enumerate(zip(have, want)):
            if a != b:
                return _descend(f"{path}[{k}]", a, b)
    return path, have, want
