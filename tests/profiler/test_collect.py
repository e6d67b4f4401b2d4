"""The collection loop against real local agents: resume, identity, references, re-timing, drift."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from device_agents.spaces import make_space
from profiler.agents import connect
from profiler.collect import (
    OUTLIER_NOTE,
    CollectError,
    CollectIncomplete,
    CollectSettings,
    collect,
    pair_reference_widths,
    reference_widths,
)
from profiler.sampling import make_sampler
from profiler.store import IdentityMismatch, SampleStore

SPACE_PARAMS = {"resolution": 32, "levels": 4}
FAST_TIMING = {"warmup": 1, "repeat": 4, "min_repeat_ms": 2.0}


def settings(db: Path, samples: int, **changes: object) -> CollectSettings:
    """Unpaired wall-clock settings (the mode with periodic references) unless `changes` say otherwise."""
    base = dict(space="mobilenet_v1", samples=samples, db=str(db), space_params=SPACE_PARAMS, timing=FAST_TIMING,
                reference_every=4, retime_outliers=False, pairing=False, clock="wall")
    base.update(changes)
    return CollectSettings(**base)  # type: ignore[arg-type]


def sample_rows(db: Path) -> list[tuple[int, int, str]]:
    """(id, slot, widths) of the sample rows, straight from SQLite."""
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, slot, widths FROM samples WHERE kind = 'sample' ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def agent():
    with connect("local", timeout=60) as client:
        yield client


def test_collects_then_resumes_only_what_is_missing(agent, tmp_path):
    db = tmp_path / "runs" / "a.sqlite"
    first = collect(agent, settings(db, 6), progress=False)
    assert (first["samples"], first["new"], first["complete"]) == (6, 6, True)
    rows = sample_rows(db)
    assert [slot for _, slot, _ in rows] == list(range(6))

    grown = collect(agent, settings(db, 10), progress=False)
    assert (grown["samples"], grown["new"], grown["missing"]) == (10, 4, 0)
    rows_after = sample_rows(db)
    assert rows_after[:6] == rows  # nothing re-measured or rewritten
    assert [slot for _, slot, _ in rows_after] == list(range(10))

    again = collect(agent, settings(db, 10), progress=False)
    assert (again["new"], again["references"]) == (0, 0)  # a complete db costs nothing

    space = make_space("mobilenet_v1", SPACE_PARAMS)
    plan = make_sampler("coverage", space, seed=0).plan(10)
    with SampleStore(db) as store:
        assert [r.widths for r in store.rows("sample")] == plan
        assert store.planned() == plan
        refs = store.rows("reference")
        assert refs and all(r.widths == reference_widths(space) for r in refs)
        assert {r.agent_fingerprint for r in store.rows()} == {agent.hello()["fingerprint"]}


def test_references_are_retimed_at_intervals(agent, tmp_path):
    db = tmp_path / "refs.sqlite"
    summary = collect(agent, settings(db, 9, reference_every=3), progress=False)
    with sqlite3.connect(db) as con:
        kinds = [k for (k,) in con.execute("SELECT kind FROM samples ORDER BY id")]
    # before samples 0, 3 and 6, and once after the last
    assert kinds == ["reference"] + (["sample"] * 3 + ["reference"]) * 3
    assert summary["references"] == summary["references_total"] == 4


def test_timing_aims_each_sample_at_the_target(agent, tmp_path):
    db = tmp_path / "target.sqlite"
    timing = {"warmup": 1, "repeat": 4, "min_repeat_ms": 2.0, "target_ms": 40.0}
    collect(agent, settings(db, 12, timing=timing), progress=False)
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT number, repeat, times_ms FROM samples ORDER BY id").fetchall()
    assert [r for _, r, _ in rows[:3]] == [4, 4, 4]  # no estimate yet: the agent's calibration
    later = rows[4:]
    assert all(r >= 5 for _, r, _ in later) and len({r for _, r, _ in later}) > 1  # sized per configuration
    timed = sorted(n * sum(json.loads(t)) for n, _, t in later)
    assert 15.0 < timed[len(timed) // 2] < 120.0  # about the 40 ms asked for, on a loaded machine


def test_another_setting_or_space_is_refused(agent, tmp_path):
    db = tmp_path / "a.sqlite"
    collect(agent, settings(db, 2), progress=False)
    with pytest.raises(IdentityMismatch, match="threads"):
        collect(agent, settings(db, 2, threads=2), progress=False)
    with pytest.raises(IdentityMismatch, match="space_params"):
        collect(agent, settings(db, 2, space_params={"resolution": 40, "levels": 4}), progress=False)
    with pytest.raises(IdentityMismatch, match="sampling"):
        collect(agent, settings(db, 2, sampling="uniform"), progress=False)
    assert len(sample_rows(db)) == 2


def test_bad_settings_fail_before_a_db_exists(agent, tmp_path):
    db = tmp_path / "bad.sqlite"
    with pytest.raises(CollectError, match="repeat"):
        settings(db, 2, timing={"repeat": 0})
    with pytest.raises(CollectError, match="unknown timing key"):
        settings(db, 2, timing={"repeats": 3})
    with pytest.raises(CollectError, match="no parameter 'width'"):
        settings(db, 2, space_params={"width": 3})
    with pytest.raises(CollectError, match="unknown sampling"):
        settings(db, 2, sampling="sobol")
    with pytest.raises(CollectError, match="runtime tflite is not usable"):
        collect(agent, settings(db, 2, runtime="tflite"), progress=False)
    assert not db.exists()


def test_flagged_samples_are_retimed_once_each(agent, tmp_path):
    db = tmp_path / "retime.sqlite"
    collect(agent, settings(db, 5), progress=False)
    ids = [i for i, _, _ in sample_rows(db)]
    with SampleStore(db) as store:  # the outlier list the pass keeps in the db, as an interrupted pass leaves it
        store.set_note(OUTLIER_NOTE, {"samples": 5, "flagged": [ids[1], ids[3]]})
    summary = collect(agent, settings(db, 5, retime_outliers=True), progress=False)
    assert summary["retimed"] == 2 and summary["outlier_check"] == "2 flagged"
    again = collect(agent, settings(db, 5, retime_outliers=True), progress=False)
    assert again["retimed"] == 0
    with SampleStore(db) as store:
        retimes = store.rows("retime")
        assert sorted(r.retime_of for r in retimes) == [ids[1], ids[3]]
        by_id = {r.id: r for r in store.rows("sample")}
        assert all(r.widths == by_id[r.retime_of].widths for r in retimes)
        data = store.training_data(normalise_drift=False)
        retimed = {r.retime_of: min(r.times_ms) for r in retimes}
        for sid, value in zip(data.sample_ids, data.latency_ms):
            assert value == pytest.approx(retimed.get(sid, min(by_id[sid].times_ms)))


def test_outlier_check_of_the_fit_when_present(agent, tmp_path):
    fit = pytest.importorskip("profiler.fit")
    if not hasattr(fit, "flag_outliers"):
        pytest.skip("profiler.fit has no flag_outliers yet")
    db = tmp_path / "fit.sqlite"
    summary = collect(agent, settings(db, 24, retime_outliers=True), progress=False)
    with SampleStore(db) as store:
        flagged = store.note(OUTLIER_NOTE)["flagged"]
        assert summary["retimed"] == len(flagged) == store.count("retime")


def test_a_dead_agent_stops_the_run_consistently_and_resume_completes(tmp_path, start_tcp_agent):
    db = tmp_path / "dead.sqlite"
    proc, port = start_tcp_agent()
    killer_done = threading.Event()

    def stored() -> int:
        try:
            return len(sample_rows(db)) if db.exists() else 0
        except sqlite3.OperationalError:  # the db is being created
            return 0

    def kill_after_three() -> None:
        while proc.poll() is None:
            if stored() >= 3:
                proc.kill()
                break
            time.sleep(0.01)
        killer_done.set()

    threading.Thread(target=kill_after_three, daemon=True).start()
    try:
        with connect(f"tcp://127.0.0.1:{port}", timeout=20, retries=1) as client:
            with pytest.raises(CollectIncomplete, match=r"stopped after \d+ of 40 samples") as info:
                collect(client, settings(db, 40), progress=False)
    finally:
        proc.kill()
        proc.wait()
    killer_done.wait(10)
    stopped = info.value.summary
    rows = sample_rows(db)
    assert stopped["complete"] is False and stopped["samples"] == len(rows) >= 3
    assert [slot for _, slot, _ in rows] == list(range(len(rows)))

    proc, port = start_tcp_agent()
    try:
        with connect(f"tcp://127.0.0.1:{port}", timeout=20) as client:
            resumed = collect(client, settings(db, 40), progress=False)
    finally:
        proc.kill()
        proc.wait()
    after = sample_rows(db)
    assert resumed["new"] == 40 - len(rows) and len(after) == 40
    assert after[: len(rows)] == rows
    assert sorted(slot for _, slot, _ in after) == list(range(40))


def _time_slope(widths: np.ndarray, times_s: np.ndarray, values: np.ndarray) -> float:
    """Growth of log latency per minute, pooled over configurations (one level per configuration)."""
    configs = sorted({tuple(w) for w in widths})
    design = np.column_stack([np.all(widths == c, axis=1) for c in configs] + [times_s / 60.0]).astype(float)
    coef, *_ = np.linalg.lstsq(design, np.log(values), rcond=None)
    return float(coef[-1])


def test_injected_drift_is_removed_by_the_reference_normalisation(tmp_path):
    """A real agent whose timings drift upwards: raw samples trend in time, normalised ones do not."""
    params = {"vocab": 1000, "dim": 256, "tokens": 128, "ranks": [32, 256], "hidden": [64, 512]}
    db = tmp_path / "drift.sqlite"
    rate = 300.0  # per minute of agent uptime: a drift far above a loaded machine's noise within seconds
    with connect("local", timeout=60, local_agent_args=["--inject-drift", str(rate)]) as client:
        collect(client, settings(db, 24, space="text_lowrank", space_params=params, reference_every=2,
                                 timing={"warmup": 1, "repeat": 8, "min_repeat_ms": 2.0}), progress=False)
    with SampleStore(db) as store:
        rows = {r.id: r for r in store.rows("sample")}
        raw = store.training_data(normalise_drift=False)
        norm = store.training_data()
    assert norm.identity["drift_normalised"] and norm.identity["references"] >= 12
    assert len({tuple(w) for w in raw.widths}) == 4  # every configuration of the 2x2 space, each several times
    times = np.array([rows[int(i)].wall_time for i in raw.sample_ids])
    times -= times.min()
    raw_slope = _time_slope(raw.widths, times, raw.latency_ms)
    norm_slope = _time_slope(norm.widths, times, norm.latency_ms)
    assert raw_slope > 5.0  # log latency grows by more than 5 per minute: the drift is there...
    assert abs(norm_slope) < 0.2 * raw_slope  # ...and the normalisation removes it
    assert np.median(norm.latency_ms) == pytest.approx(np.median(raw.latency_ms), rel=0.5)  # still ms, same scale


# --- paired timing (the default) ---------------------------------------------------------------


def test_paired_is_the_default_with_the_thread_clock_and_the_median_statistic(tmp_path):
    s = CollectSettings(space="mobilenet_v1", samples=1, db=str(tmp_path / "d.sqlite"))
    assert (s.pairing, s.clock, s.statistic) == (True, "thread_cpu", "median")
    assert CollectSettings(space="mobilenet_v1", samples=1, db="x", threads=2).clock == "wall"
    assert CollectSettings(space="mobilenet_v1", samples=1, db="x", pairing=False).statistic == "min"
    with pytest.raises(CollectError, match="thread_cpu needs threads=1"):
        CollectSettings(space="mobilenet_v1", samples=1, db="x", threads=2, clock="thread_cpu")
    with pytest.raises(CollectError, match="statistic must be median"):
        CollectSettings(space="mobilenet_v1", samples=1, db="x", statistic="min")
    with pytest.raises(CollectError, match="clock must be one of"):
        CollectSettings(space="mobilenet_v1", samples=1, db="x", clock="sundial")


def test_paired_collection_stores_ratios_and_no_periodic_references(agent, tmp_path):
    db = tmp_path / "paired.sqlite"
    summary = collect(agent, settings(db, 9, pairing=True, clock="thread_cpu", reference_every=2), progress=False)
    assert summary["pairing"] and summary["clock"] == "thread_cpu" and summary["references"] == 9
    space = make_space("mobilenet_v1", SPACE_PARAMS)
    with sqlite3.connect(db) as con:
        kinds = [k for (k,) in con.execute("SELECT kind FROM samples ORDER BY id")]
        pairs = [json.loads(p) for (p,) in con.execute("SELECT pair FROM samples ORDER BY id")]
    assert kinds == ["sample"] * 9  # the reference is timed inside every sample instead
    assert all(p["ref_widths"] == list(pair_reference_widths(space)) for p in pairs)
    assert sum(p["ref_kept"] for p in pairs) >= 8  # the agent keeps the reference session loaded
    with SampleStore(db) as store:
        rows = store.rows("sample")
        level = store.reference_level_ms()
        data = store.training_data()  # the statistic asked for does not apply: ratios are medians
        assert level == pytest.approx(float(np.median([r.pair_ref_ms for r in rows])))
        assert data.statistic == "median" and data.identity["reference"]["level_ms"] == level
        assert data.latency_ms == pytest.approx([r.pair_ratio * level for r in rows])
        assert data.identity["runtime"]["clock"] == "thread_cpu" and data.identity["drift_normalised"] is False
        other = store.training_data(reference_level_ms=2 * level)
        assert other.latency_ms == pytest.approx(2 * data.latency_ms)
    with pytest.raises(IdentityMismatch, match="pairing"):
        collect(agent, settings(db, 9, pairing=False, clock="thread_cpu", statistic="median"), progress=False)
    with pytest.raises(IdentityMismatch, match="clock"):
        collect(agent, settings(db, 9, pairing=True, clock="wall"), progress=False)
    with pytest.raises(IdentityMismatch, match="reference_widths"):  # another pair reference: other ratios
        collect(agent, settings(db, 9, pairing=True, clock="thread_cpu", pair_share=0.5), progress=False)
    with pytest.raises(CollectError, match="pair_share"):
        settings(db, 9, pair_share=0.0)
