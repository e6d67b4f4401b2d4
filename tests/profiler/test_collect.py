"""The collection loop against real local agents: resume, identity, references, re-timing, drift."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.agent_client import connect
from widthwise.profiler.collect import (
    OUTLIER_NOTE,
    CollectError,
    CollectIncomplete,
    CollectSettings,
    collect,
    flag_outliers_function,
    pair_reference_widths,
    reference_widths,
)
from widthwise.profiler.collect_timing import LatencyEstimator, TimingPolicy
from widthwise.profiler.fit import flag_outliers
from widthwise.profiler.sampling import make_sampler
from widthwise.profiler.store import IdentityMismatch, SampleStore

SPACE_PARAMS = {"resolution": 32, "levels": 4}
FAST_TIMING = {"warmup": 1, "repeat": 4, "min_repeat_ms": 2.0}


def stored_plan(db: str) -> list[tuple[int, ...]]:
    """The plan table as the db holds it, read with plain SQLite."""
    with sqlite3.connect(db) as con:
        return [tuple(json.loads(w)) for (w,) in con.execute("SELECT widths FROM plan ORDER BY slot")]


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
        assert stored_plan(store.path) == plan
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
    """Every request asks for the repeats the policy gives for the estimate the earlier rows make, and the agent runs them.

    Replayed from the db: the estimator is fed each row's MACs and mean run time in the
    order the collector stored them, so what the collector must have asked for is known
    exactly, whatever the machine's speed; no time bound is involved.
    """
    db = tmp_path / "target.sqlite"
    timing = {"warmup": 1, "repeat": 4, "min_repeat_ms": 2.0, "target_ms": 40.0}
    collect(agent, settings(db, 12, timing=timing), progress=False)
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT widths, number, repeat, times_ms FROM samples ORDER BY id").fetchall()
    space, policy, estimator = make_space("mobilenet_v1", SPACE_PARAMS), TimingPolicy(timing), LatencyEstimator()
    sized = 0
    for widths, number, repeat, times_ms in rows:
        macs = space.counts(json.loads(widths))[0]
        asked = policy.for_estimate(estimator.predict(macs))
        assert repeat == asked["repeat"] and len(json.loads(times_ms)) == repeat
        if "number" in asked:  # sized from an estimate: runs grouped only below the 1 ms floor
            sized += 1
            assert number == asked["number"]
            assert number * repeat * estimator.predict(macs) >= 40.0 or repeat == 5  # the budget, or the floor of 5
        times = json.loads(times_ms)
        estimator.add(macs, sum(times) / len(times))
    assert [r for _, _, r, _ in rows[:3]] == [4, 4, 4]  # no estimate yet: the agent's calibration
    assert sized == len(rows) - 3  # from then on every request is sized from the estimate


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


def test_outlier_check_of_the_fit(agent, tmp_path):
    assert flag_outliers_function() is flag_outliers  # the collector finds the fit's check
    db = tmp_path / "fit.sqlite"
    summary = collect(agent, settings(db, 24, retime_outliers=True), progress=False)
    with SampleStore(db) as store:
        flagged = store.note(OUTLIER_NOTE)["flagged"]
        assert summary["outlier_check"] == f"{len(flagged)} flagged"
        assert summary["retimed"] == len(flagged) == store.count("retime")
        assert sorted(r.retime_of for r in store.rows("retime")) == sorted(flagged)


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
        proc.wait(30)
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
        proc.wait(30)
    after = sample_rows(db)
    assert resumed["new"] == 40 - len(rows) and len(after) == 40
    assert after[: len(rows)] == rows
    assert sorted(slot for _, slot, _ in after) == list(range(40))


def _part_ratio(widths: np.ndarray, values: np.ndarray, second: np.ndarray) -> float:
    """How much higher the second part's values are than the first's: the median over configurations
    of the ratio of their medians (each configuration against itself, so mixing them does not matter)."""
    ratios = []
    for config in {tuple(w) for w in widths}:
        mine = np.all(widths == config, axis=1)
        assert (mine & second).any() and (mine & ~second).any(), f"{config} is not in both parts"
        ratios.append(np.median(values[mine & second]) / np.median(values[mine & ~second]))
    return float(np.median(ratios))


def test_injected_drift_is_removed_by_the_reference_normalisation(tmp_path):
    """A real agent whose timings drift upwards: raw samples grow between two parts of the run, normalised ones do not.

    The agent adds, to each run, that run's own time x rate x the minutes it has been up, so
    a run costs 1 + r u times its work (r per second, u its uptime). The run is collected in
    two parts separated by a pause p of three times the time U from starting the agent to the
    end of the first part, so every run of the second part carries at least
    1 + r p / (1 + r U) times the drift factor of any run of the first (2.5 or more once U
    >= 0.5 s), however fast or loaded the machine is. On the thread's CPU clock a busier
    machine does not change that factor either: a run that is descheduled lasts longer on
    the wall clock, but its spin, as long as the run's wall time x r u, is descheduled alike,
    so the CPU time counted stays about (1 + r u) x the run's CPU time.
    """
    params = {"vocab": 1000, "dim": 256, "tokens": 128, "ranks": [32, 256], "hidden": [64, 512]}
    db = tmp_path / "drift.sqlite"
    rate = 120.0  # per minute of agent uptime

    def part(samples: int) -> None:
        collect(client, settings(db, samples, space="text_lowrank", space_params=params, reference_every=2,
                                 clock="thread_cpu", timing={"warmup": 1, "repeat": 8, "min_repeat_ms": 2.0}),
                progress=False)

    begun = time.monotonic()
    with connect("local", timeout=60, local_agent_args=["--inject-drift", str(rate)]) as client:
        part(12)
        uptime = time.monotonic() - begun  # the agent started after `begun`: its uptime is at most this
        split = time.time()
        time.sleep(3 * uptime)
        part(24)
    injected = 1 + (rate / 60) * (3 * uptime) / (1 + (rate / 60) * uptime)
    with SampleStore(db) as store:
        rows = {r.id: r for r in store.rows("sample")}
        raw = store.training_data(normalise_drift=False)
        norm = store.training_data()
    assert norm.identity["drift_normalised"] and norm.identity["references"] >= 12
    assert len({tuple(w) for w in raw.widths}) == 4  # every configuration of the 2x2 space, each several times
    second = np.array([rows[int(i)].wall_time > split for i in raw.sample_ids])
    assert second.sum() == 12
    raw_growth = _part_ratio(raw.widths, raw.latency_ms, second)
    norm_growth = _part_ratio(norm.widths, norm.latency_ms, second)
    assert np.log(raw_growth) > 0.5 * np.log(injected), (raw_growth, injected)  # the drift is there...
    assert abs(np.log(norm_growth)) < 0.25 * np.log(raw_growth), (norm_growth, raw_growth)  # ...and is removed
    # still milliseconds: the reference's median level x each sample's cost relative to the reference
    assert raw.latency_ms.min() <= np.median(norm.latency_ms) <= raw.latency_ms.max()


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


# --- a tree space: MobileNet-V2's flat configuration of widths and expansions -------------------------


def test_a_tree_space_collects_resumes_and_fits_to_a_version_2_table(agent, tmp_path):
    from widthwise.profiler.fit import fit_table
    from widthwise.profiler.sampling import factor_terms

    params = {"resolution": 32, "levels": 3}
    db = tmp_path / "v2.sqlite"
    v2 = dict(space="mobilenet_v2", space_params=params, pairing=True, clock="thread_cpu")
    first = collect(agent, settings(db, 7, **v2), progress=False)
    rows = sample_rows(db)
    grown = collect(agent, settings(db, 14, **v2), progress=False)
    assert (first["new"], grown["new"], grown["samples"]) == (7, 7, 14)
    assert sample_rows(db)[:7] == rows  # resumed: nothing re-measured
    with pytest.raises(IdentityMismatch, match="space_params"):
        collect(agent, settings(db, 14, **{**v2, "space_params": {"resolution": 32, "levels": 4}}), progress=False)
    space = make_space("mobilenet_v2", params)
    plan = stored_plan(str(db))
    assert plan == make_sampler("coverage", space, seed=0).plan(14)
    # 14 draws at 3 levels exercise every entry of every factor (the largest has 12)
    entries = {t for w in plan for t in factor_terms(space, w)}
    assert len(entries) == sum(int(np.prod([len(space.layers[v].choices) for v in f.variables])) for f in space.factors)
    with sqlite3.connect(db) as con:
        pairs = [json.loads(p) for (p,) in con.execute("SELECT pair FROM samples ORDER BY id")]
    assert all(p["ref_widths"] == list(pair_reference_widths(space)) for p in pairs)
    assert len(pairs[0]["ref_widths"]) == space.num_layers == 25
    with SampleStore(db) as store:
        data = store.training_data()
    assert data.widths.shape == (14, 25) and np.all(data.latency_ms > 0)
    table = fit_table(data, holdout=0.0).table
    assert table.format == "widthwise-table/2" and len(table.factors) == len(space.factors)
    assert table.extra["reference"]["widths"] == list(pair_reference_widths(space))
    measured = data.latency_ms
    assert np.median(np.abs(np.array([table.predict(w) for w in data.widths]) - measured) / measured) < 0.1
