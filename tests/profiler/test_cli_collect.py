"""`widthwise collect` end to end: JSON summary, refusals, and Ctrl-C then resume."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.cli import main
from widthwise.profiler.store import SampleStore
from widthwise.errors import EXIT_STATUS
from widthwise.profiler.cli_collect import parse_assignments

V2_TABLE = Path(__file__).resolve().parents[2] / "tables" / "example-xeon2-mobilenet_v2-224.json"
BASE = ["collect", "--resolution", "32", "--levels", "4", "--timing", "repeat=4", "--timing", "min_repeat_ms=2",
        "--timing", "target_ms=15",
        "--timing", "warmup=1", "--reference-every", "3", "--no-progress"]


def invoke(*args: str):
    return CliRunner().invoke(main, [*BASE, *args])


def slots(db: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, slot FROM samples WHERE kind = 'sample' ORDER BY id").fetchall()


def test_collect_prints_a_json_summary_and_refuses_another_setting(tmp_path):
    db = tmp_path / "runs" / "cli.sqlite"
    result = invoke("--samples", "4", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["samples"] == summary["new"] == 4 and summary["complete"] is True
    assert summary["references"] >= 2 and summary["db"] == str(db)
    assert [s for _, s in slots(db)] == [0, 1, 2, 3]

    refused = invoke("--samples", "4", "--db", str(db), "--threads", "2")
    assert refused.exit_code == 1
    assert "threads=1" in refused.output and "threads=2" in refused.output
    assert len(slots(db)) == 4


@pytest.mark.parametrize(
    "args,message",
    [
        (["--space-param", "width=3"], "no parameter 'width'"),
        (["--space-param", "resolution=40"], "resolution given both"),
        (["--space-param", "oops"], "expected KEY=VALUE"),
        (["--timing", "repeats=3"], "unknown timing key"),
        (["--timing", "number=-1"], "timing.number must be at least 0"),
        (["--timing", "repeat=5"], "repeat given twice"),
        (["--space", "resnet"], "unknown space 'resnet'"),
        (["--agent", "http://127.0.0.1:1"], "unknown agent URL"),
        (["--agent", "tcp://127.0.0.1:1"], "cannot connect"),
        (["--until-error", "2%%"], "--until-error must be a fraction"),
        (["--until-error", "100%"], "--until-error must be above 0 and below 100 %"),
        (["--until-error", "2%", "--min-samples", "3"], "--min-samples"),
        (["--prior", str(V2_TABLE)], "--prior serves the checks of --until-error"),
        (["--prior", str(V2_TABLE), "--until-error", "2%"], "is of space 'mobilenet_v2', the samples of 'mobilenet_v1'"),
    ],
)
def test_bad_options_are_named_and_nothing_is_created(tmp_path, args, message):
    db = tmp_path / "bad.sqlite"
    result = invoke("--samples", "2", "--db", str(db), *args)
    assert result.exit_code != 0
    assert message in result.output
    assert not db.exists()


def test_text_space_parameters_are_typed_and_unknown_ones_refused(tmp_path):
    assert parse_assignments(("ranks=[8,16]", "vocab=1000", "name=abc"), "--space-param") == {
        "ranks": [8, 16], "vocab": 1000, "name": "abc"}
    result = CliRunner().invoke(main, ["collect", "--space", "text_lowrank", "--resolution", "224", "--samples", "1",
                                       "--db", str(tmp_path / "t.sqlite")])
    assert result.exit_code != 0 and "no parameter 'resolution'" in result.output


def _check_rows_complete(db: Path) -> None:
    """The db passes SQLite's integrity check and every stored sample is a whole row of its plan.

    Whole: planned widths for its slot, every repeat's time (as many as the repeat column
    says, all finite and positive), the statistics of those times, and the pair block the
    default paired collection stores with each sample.
    """
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        plan = dict(con.execute("SELECT slot, widths FROM plan"))
        rows = con.execute(
            "SELECT slot, widths, times_ms, repeat, stat_min, stat_median, pair_ratio, pair_ref_ms, pair, runtime"
            " FROM samples WHERE kind = 'sample' ORDER BY id"
        ).fetchall()
    assert rows
    for slot, widths, times_ms, repeat, stat_min, stat_median, ratio, ref_ms, pair, runtime in rows:
        assert widths == plan[slot] and len(json.loads(widths)) == 14, slot
        times = json.loads(times_ms)
        assert len(times) == repeat >= 1 and all(math.isfinite(t) and t > 0 for t in times), slot
        assert stat_min == min(times) and stat_median == pytest.approx(statistics.median(times)), slot
        assert ratio > 0 and ref_ms > 0 and json.loads(pair)["ratio_median"] == ratio, slot
        assert json.loads(runtime)["clock"] == "thread_cpu", slot


def test_ctrl_c_stops_consistently_and_the_same_command_resumes(tmp_path):
    db = tmp_path / "int.sqlite"
    # samples of ~150 ms each: the run lasts seconds, so the interrupt below lands mid-run even when
    # this test's polling is slowed down by a loaded machine
    slow = ["target_ms=150" if arg == "target_ms=15" else arg for arg in BASE]
    cmd = [sys.executable, "-c", "from widthwise.profiler.cli import main; main()", *slow, "--samples", "30", "--db", str(db), "--json"]
    # Ctrl-C as a terminal sends it, even when this suite runs where SIGINT is ignored (a background
    # job of a shell without job control passes SIG_IGN on, and Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if db.exists() and len(slots(db)) >= 3:
                    break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == EXIT_STATUS["interrupted"] == 130, err
    assert "stopped after" in err and "run the same command again to resume" in err
    stopped = json.loads(out.strip().splitlines()[-1])
    before = slots(db)
    assert stopped["complete"] is False and stopped["samples"] == len(before) < 30
    assert [s for _, s in before] == list(range(len(before)))
    _check_rows_complete(db)  # what the interrupt left: an intact db of whole samples

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    after = slots(db)
    assert summary["new"] == 30 - len(before) and len(after) == 30
    assert after[: len(before)] == before and sorted(s for _, s in after) == list(range(30))
    _check_rows_complete(db)


def test_pairing_and_clock_options_reach_the_db_identity(tmp_path):
    db = tmp_path / "wall.sqlite"
    result = invoke("--samples", "3", "--db", str(db), "--no-pairing", "--clock", "wall", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["pairing"] is False and summary["clock"] == "wall" and summary["references_total"] >= 2
    refused = invoke("--samples", "3", "--db", str(db))  # the defaults: paired, thread clock
    assert refused.exit_code == 1 and "pairing=false" in refused.output and "pairing=true" in refused.output
    bad = invoke("--samples", "3", "--db", str(tmp_path / "t.sqlite"), "--threads", "2", "--clock", "thread_cpu")
    assert bad.exit_code == 1 and "thread_cpu needs threads=1" in bad.output


def test_collect_samples_mobilenet_v2_with_its_parameters(tmp_path):
    db = tmp_path / "v2.sqlite"
    result = invoke("--space", "mobilenet_v2", "--samples", "3", "--db", str(db), "--json")  # BASE: 32 px, 4 levels
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["samples"] == 3
    space = make_space("mobilenet_v2", {"resolution": 32, "levels": 4})
    with SampleStore(str(db)) as store:
        assert store.meta["space"] == "mobilenet_v2" and store.meta["space_params"] == space.param_dict
    with sqlite3.connect(db) as con:
        widths = [json.loads(w) for (w,) in con.execute("SELECT widths FROM samples WHERE kind = 'sample'")]
    assert len(widths) == 3 and all(len(w) == space.num_layers for w in widths)
    assert all(v in layer.choices for w in widths for v, layer in zip(w, space.layers))


def test_collect_and_fit_a_space_file_whose_table_records_the_spec(tmp_path):
    spec_file = Path(__file__).resolve().parents[2] / "docs" / "spaces" / "mcu_vww.json"
    spec = json.loads(spec_file.read_text())
    db, table = tmp_path / "mcu.sqlite", tmp_path / "mcu.json"
    args = [*BASE[5:], "--space-file", str(spec_file), "--db", str(db)]  # BASE without collect, --resolution, --levels
    result = CliRunner().invoke(main, ["collect", *args, "--samples", "14", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["samples"] == 14
    with SampleStore(str(db)) as store:
        assert store.meta["space"] == "mcu_vww" and store.meta["space_params"] == {"spec": spec}
    fitted = CliRunner().invoke(main, ["fit", "--db", str(db), "-o", str(table), "--holdout", "0.2"])
    assert fitted.exit_code == 0, fitted.output
    written = json.loads(table.read_text())
    assert written["space"]["name"] == "mcu_vww" and written["space"]["params"] == {"spec": spec}
    assert [v["name"] for v in written["variables"]] == [v["name"] for v in spec["variables"]]
    # another spec of the same name is another space: refused, naming the field that differs
    other = tmp_path / "other.json"
    other.write_text(spec_file.read_text().replace('"kernel": 5, "stride": 2', '"kernel": 3, "stride": 2'))
    again = CliRunner().invoke(main, ["collect", *BASE[5:], "--space-file", str(other), "--db", str(db),
                                      "--samples", "14"])
    assert again.exit_code != 0 and "space_params.spec.stages[2].blocks[0].kernel=5, but this run has " \
        "space_params.spec.stages[2].blocks[0].kernel=3" in again.output, again.output


def test_until_error_stops_early_keeps_every_sample_and_a_rerun_continues_the_rule(tmp_path):
    """A real local agent, a 32-pixel space: a loose target stops before the cap, with the
    estimate and why in the summary; the same command again adds nothing; a tighter target
    goes on from there to its cap."""
    db = tmp_path / "u.sqlite"
    loose = invoke("--samples", "80", "--until-error", "50%", "--min-samples", "10", "--db", str(db), "--json")
    assert loose.exit_code == 0, loose.output
    first = json.loads(loose.stdout.strip().splitlines()[-1])
    stop = first["stop"]
    assert stop["reason"] == "estimate" and first["complete"] and first["missing"] == 0
    assert 10 < first["samples"] == stop["samples"] == first["new"] < 80 and len(slots(db)) == first["samples"]
    (_, before), (last, now) = stop["history"][-2:]
    assert last == first["samples"] and now < 0.5 and now > 0.9 * before
    assert stop["estimate"] == pytest.approx(now, abs=1e-6) and stop["threshold"] == 0.5

    again = invoke("--samples", "80", "--until-error", "50%", "--min-samples", "10", "--db", str(db))
    assert again.exit_code == 0, again.output
    assert "(0 new this run" in again.output
    assert f"stopped at {first['samples']} samples: cross-validated error" in again.output
    assert "below 50 % and no longer improving" in again.output

    cap = first["samples"] + 6
    tighter = invoke("--samples", str(cap), "--until-error", "0.01%", "--min-samples", "10", "--db", str(db), "--json")
    assert tighter.exit_code == 0, tighter.output
    summary = json.loads(tighter.stdout.strip().splitlines()[-1])
    assert summary["samples"] == cap and summary["new"] == 6 and summary["stop"]["reason"] == "cap"
    assert summary["stop"]["history"][: len(stop["history"])] == stop["history"]  # the same checks, continued
    assert [s for _, s in slots(db)] == list(range(cap))
