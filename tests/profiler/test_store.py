"""The SQLite sample store: identity, plan, one transaction per sample, drift-normalised reads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from widthwise.device_agents.handlers import HANDLERS
from widthwise.device_agents.spaces import make_space
from widthwise.profiler.store import FORMAT, IdentityMismatch, PlanMismatch, SampleStore, StoreError
from tests.support.procs import read_line

SPACE_PARAMS = {"resolution": 32, "levels": 4}
TIMING = {"warmup": 1, "repeat": 5, "min_repeat_ms": 2.0}


def stored_plan(db: str) -> list[tuple[int, ...]]:
    """The plan table as the db holds it, read with plain SQLite."""
    with sqlite3.connect(db) as con:
        return [tuple(json.loads(w)) for (w,) in con.execute("SELECT widths FROM plan ORDER BY slot")]


def identity(**changes: object) -> dict:
    base = {
        "space": "mobilenet_v1",
        "space_params": SPACE_PARAMS,
        "device_fingerprint": "abc123",
        "runtime": "onnxruntime",
        "runtime_version": "1.0",
        "threads": 1,
        "dtype": "float32",
        "delegate": None,
        "timing": TIMING,
        "statistic": "min",
        "sampling": "coverage",
        "seed": 0,
        "device": {"cpu": "test cpu", "cores": 2},
    }
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenet_v1", SPACE_PARAMS)


@pytest.fixture(scope="module")
def measured(space) -> dict:
    """Real bench_spec responses of the agent's handler for three configurations."""
    out = {}
    for widths in (space.smallest(), space.base_widths(), space.largest()):
        request = {"type": "bench_spec", "id": 1, "spec": {"space": "mobilenet_v1", "params": SPACE_PARAMS, "widths": list(widths)}, "timing": TIMING}
        out[tuple(widths)], _ = HANDLERS["bench_spec"](request, b"")
    return out


def test_new_db_records_identity_and_reopens(tmp_path):
    path = tmp_path / "runs" / "a.sqlite"
    with SampleStore(path, identity()) as store:
        assert store.meta["format"] == FORMAT and store.meta["device"]["cores"] == 2
    with SampleStore(path, identity()) as store:  # same identity: accepted
        assert store.count() == 0
    with SampleStore(path) as store:  # read-only open
        assert store.space().param_dict == SPACE_PARAMS
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "field,value",
    [
        ("space_params", {"resolution": 64, "levels": 4}),
        ("device_fingerprint", "other-board"),
        ("runtime", "litert"),
        ("threads", 2),
        ("dtype", "int8"),
        ("delegate", "xnnpack"),
        ("seed", 7),
    ],
)
def test_other_identity_is_refused_naming_the_field(tmp_path, field, value):
    path = tmp_path / "a.sqlite"
    SampleStore(path, identity()).close()
    with pytest.raises(IdentityMismatch, match=field) as info:
        SampleStore(path, identity(**{field: value}))
    assert info.value.field == field and info.value.requested == value


def test_missing_db_corrupt_db_and_bad_identity_are_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="no sample db"):
        SampleStore(tmp_path / "none.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable sample db"):
        SampleStore(junk, identity())
    with pytest.raises(StoreError, match="unknown identity field"):
        SampleStore(tmp_path / "b.sqlite", identity(colour="red"))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="no sample-db metadata"):
        SampleStore(other)
    with pytest.raises(StoreError, match=r"SQLite db of something else \(tables: t\)"):
        SampleStore(other, identity())
    with sqlite3.connect(other) as con:  # refused without a trace
        assert [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["t"]


def test_plan_slots_and_duplicates(tmp_path, space, measured):
    small, base, large = list(measured)
    with SampleStore(tmp_path / "a.sqlite", identity()) as store:
        store.ensure_plan([small, large, base])
        store.ensure_plan([small, large, base, base])  # growing the plan keeps the prefix
        assert stored_plan(store.path) == [small, large, base, base]
        with pytest.raises(PlanMismatch, match="slot 1"):
            store.ensure_plan([small, small])
        first = store.add("sample", small, measured[small], fingerprint="abc123", slot=0)
        store.add("sample", base, measured[base], fingerprint="abc123", slot=2)
        assert store.missing_slots(4) == [1, 3]
        with pytest.raises(StoreError, match="slot 0 is already stored"):
            store.add("sample", small, measured[small], fingerprint="abc123", slot=0)
        store.add("retime", small, measured[small], fingerprint="abc123", retime_of=first)
        with pytest.raises(StoreError, match=f"sample {first} is already stored"):
            store.add("retime", small, measured[small], fingerprint="abc123", retime_of=first)
        with pytest.raises(StoreError, match="unknown sample kind"):
            store.add("bogus", small, measured[small], fingerprint="abc123")
        with pytest.raises(StoreError, match="non-positive"):
            store.add("reference", small, {**measured[small], "times_ms": [0.0]}, fingerprint="abc123")
        assert store.retimed_ids() == {first}
        assert (store.count("sample"), store.count("retime"), store.count("reference")) == (2, 1, 0)
        row = store.rows("sample")[0]
        assert row.times_ms == tuple(measured[small]["times_ms"])
        assert row.runtime["name"] == "onnxruntime" and row.agent_fingerprint == "abc123"


def test_training_data_uses_statistic_retimes_and_drift(tmp_path, space, measured):
    small, base, large = list(measured)
    with SampleStore(tmp_path / "a.sqlite", identity()) as store:
        store.ensure_plan([small, large])
        slow = {**measured[small], "times_ms": [t * 3 for t in measured[small]["times_ms"]]}
        s0 = store.add("sample", small, slow, fingerprint="abc123", slot=0, wall_time=100.0)
        store.add("sample", large, measured[large], fingerprint="abc123", slot=1, wall_time=200.0)
        raw = store.training_data(normalise_drift=False)
        assert list(raw.sample_ids) == [s0, s0 + 1]
        assert raw.latency_ms[0] == pytest.approx(3 * min(measured[small]["times_ms"]))
        assert raw.identity["drift_normalised"] is False
        median = store.training_data("median", normalise_drift=False)
        assert median.latency_ms[1] == pytest.approx(float(np.median(measured[large]["times_ms"])))
        with pytest.raises(StoreError, match="unknown statistic"):
            store.training_data("max")

        # the re-timing replaces the flagged sample's value; the id stays the original's
        store.add("retime", small, measured[small], fingerprint="abc123", retime_of=s0, wall_time=300.0)
        data = store.training_data(normalise_drift=False)
        assert data.latency_ms[0] == pytest.approx(min(measured[small]["times_ms"]))
        assert list(data.sample_ids) == [s0, s0 + 1]
        np.testing.assert_array_equal(data.widths, np.array([small, large]))

        # references drifting geometrically to twice as slow: the trend is exact, scaled to its median level
        ref = measured[base]
        for t, scale in ((100.0, 1.0), (200.0, 2**0.5), (300.0, 2.0)):
            store.add("reference", base, {**ref, "times_ms": [x * scale for x in ref["times_ms"]]}, fingerprint="abc123", wall_time=t)
        norm = store.training_data()
        assert norm.identity["drift_normalised"] is True and norm.identity["references"] == 3
        assert norm.identity["runtime"]["statistic"] == "min"
        ratio = norm.latency_ms / store.training_data(normalise_drift=False).latency_ms
        assert ratio[0] == pytest.approx(2**-0.5, rel=1e-6)  # retimed at t=300: level 2, scale sqrt(2)
        assert ratio[1] == pytest.approx(1.0, rel=1e-6)  # t=200 is the median level


def test_a_killed_writer_leaves_a_consistent_db(tmp_path, measured):
    """A process killed in the middle of writing samples loses at most the row in flight."""
    path = tmp_path / "killed.sqlite"
    small = next(iter(measured))
    SampleStore(path, identity()).close()
    with SampleStore(path, identity()) as store:
        store.ensure_plan([small] * 100000)
    writer = textwrap.dedent(
        f"""
        import json, os, sys
        from widthwise.profiler.store import SampleStore
        ident = json.loads({json.dumps(json.dumps(identity()))})
        response = json.loads({json.dumps(json.dumps(measured[small]))})
        store = SampleStore({str(path)!r}, ident)
        for slot in range(100000):
            store.add("sample", {list(small)!r}, response, fingerprint="abc123", slot=slot)
            if slot == 50:
                print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(proc, 60).strip() == "ready"
    finally:
        proc.kill()
        proc.wait(30)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with SampleStore(path, identity()) as store:
        n = store.count()
        assert n > 50
        slots = [r.slot for r in store.rows("sample")]
        assert slots == list(range(n))  # no gap, no duplicate
        assert store.missing_slots(n + 5) == list(range(n, n + 5))


def test_a_db_of_another_format_version_is_refused(tmp_path):
    path = tmp_path / "v2.sqlite"
    SampleStore(path, identity()).close()
    with sqlite3.connect(path) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'format'", (json.dumps("widthwise-samples/2"),))
    with pytest.raises(IdentityMismatch, match="format"):
        SampleStore(path, identity())
    with pytest.raises(StoreError, match="is not a widthwise-samples/1 db"):
        SampleStore(path)


# --- paired dbs ----------------------------------------------------------------------------------


def _pair_response(response: dict, ratio: float, ref_ms: float) -> dict:
    return {**response, "pair": {"ratio_median": ratio, "ref_median_ms": ref_ms, "ratios": [ratio], "ref_times_ms": [ref_ms]}}


def test_a_db_from_before_pairing_opens_reads_and_resumes(tmp_path, measured):
    """A db whose samples table lacks the pair columns (and whose meta lacks pairing/clock)."""
    path = tmp_path / "old.sqlite"
    small = next(iter(measured))
    with SampleStore(path, identity()) as store:
        store.add("sample", small, measured[small], fingerprint="abc123", slot=0)
    with sqlite3.connect(path) as con:  # back to the schema and meta of a db written before pairing existed
        for column in ("pair_ratio", "pair_ref_ms", "pair"):
            con.execute(f"ALTER TABLE samples DROP COLUMN {column}")
        con.execute("DELETE FROM meta WHERE key IN ('pairing', 'clock')")
    with SampleStore(path) as store:  # read-only open: no migration needed
        assert not store.paired and store.rows()[0].pair_ratio is None and store.count_paired() == 0
        assert store.training_data().identity["runtime"]["clock"] == "wall"
    with pytest.raises(IdentityMismatch, match="pairing"):
        SampleStore(path, identity(pairing=True, clock="thread_cpu"))
    with SampleStore(path, identity(pairing=False, clock="wall")) as store:  # its implicit identity: accepted
        store.add("sample", small, _pair_response(measured[small], 1.5, 2.0), fingerprint="abc123", slot=1)
        assert [r.pair_ratio for r in store.rows()] == [None, 1.5]


def test_paired_training_data_is_ratio_times_reference_level(tmp_path, measured):
    path = tmp_path / "paired.sqlite"
    configs = list(measured)
    with SampleStore(path, identity(pairing=True, clock="thread_cpu", statistic="median", reference_widths=list(configs[0]))) as store:
        for slot, (ratio, ref) in enumerate([(1.0, 2.0), (2.0, 4.0), (3.0, 3.0)]):
            store.add("sample", configs[slot], _pair_response(measured[configs[slot]], ratio, ref), fingerprint="abc123", slot=slot)
        first = store.rows("sample")[0]
        store.add("retime", first.widths, _pair_response(measured[configs[0]], 1.2, 2.5), fingerprint="abc123", retime_of=first.id)
        assert store.paired and store.reference_level_ms() == pytest.approx(3.0)  # median of 2.5 (re-timed), 4, 3
        data = store.training_data("min")
        assert data.statistic == "median" and list(data.latency_ms) == pytest.approx([3.6, 6.0, 9.0])
        assert data.identity["reference"] == {"widths": list(configs[0]), "level_ms": 3.0, "own_level_ms": 3.0, "clock": "thread_cpu"}
        assert list(store.training_data(reference_level_ms=1.0).latency_ms) == pytest.approx([1.2, 2.0, 3.0])
        with pytest.raises(StoreError, match="refusing a paired measurement"):
            store.add("sample", configs[0], _pair_response(measured[configs[0]], float("nan"), 1.0), fingerprint="abc123", slot=9)
        store.add("sample", configs[0], measured[configs[0]], fingerprint="abc123", slot=3)  # a row without pair data
        with pytest.raises(StoreError, match="have no pair data"):
            store.training_data()


def test_a_spec_mismatch_names_the_first_field_that_differs():
    from widthwise.profiler.store_schema import first_difference

    spec = {"name": "s", "stages": [{"blocks": [{"kind": "conv", "kernel": 3}]}], "variables": [{"choices": [8, 16]}]}
    other = {"name": "s", "stages": [{"blocks": [{"kind": "conv", "kernel": 5}]}], "variables": [{"choices": [8, 16]}]}
    assert first_difference("space_params", {"spec": spec}, {"spec": other}) == (
        "space_params.spec.stages[0].blocks[0].kernel", 3, 5)
    longer = {**spec, "variables": [{"choices": [8, 16, 24]}]}
    assert first_difference("space_params", {"spec": spec}, {"spec": longer}) == (
        "space_params.spec.variables[0].choices", [8, 16], [8, 16, 24])
    assert first_difference("space_params", {"resolution": 224}, {"spec": spec}) == (
        "space_params.spec", "(a built-in space)", "(a spec file's space)")
    # a built-in space's parameters and any other field are reported whole, as before
    assert first_difference("space_params", {"resolution": 224}, {"resolution": 160}) == (
        "space_params", {"resolution": 224}, {"resolution": 160})
    assert first_difference("timing", {"repeat": 3}, {"repeat": 4}) == ("timing", {"repeat": 3}, {"repeat": 4})
