"""`widthwise run`: the whole job on a real local agent, small enough for the test suite."""

import json
import math
import subprocess
import sys

import pytest

from widthwise.search.table import load_table


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "widthwise.profiler.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    done = _run("--resolution", "32", "--samples", "30", "--out", str(out), "--budget-ms", "0.001",
                "--budget-ms", "1000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout)


def test_run_collects_fits_and_answers_with_measured_latency(finished):
    out, summary = finished
    assert summary["collect"]["samples"] == 30 and summary["collect"]["complete"]
    table = load_table(summary["table"])
    assert table.space_name == "mobilenet_v1" and table.fit["holdout"]["count"] > 0
    assert summary["fit"]["count"] == table.fit["holdout"]["count"]
    infeasible, generous = summary["answers"]
    assert infeasible["budget_ms"] == 0.001 and "smallest achievable latency" in infeasible["error"]
    assert infeasible["min_latency_ms"] > 0.001
    assert generous["predicted_ms"] <= 1000
    assert generous["measured_ms"] > 0 and math.isfinite(generous["error_pct"])
    # the widest configuration maximises MACs when the budget does not bind
    assert generous["widths"] == [layer["choices"][-1] for layer in table.space["layers"]]
    assert summary["reference"]["measured_ms"] > 0


def test_run_again_resumes_without_new_samples(finished):
    out, first = finished
    done = _run("--resolution", "32", "--samples", "30", "--out", str(out), "--budget-ms", "1000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["collect"]["new"] == 0 and summary["collect"]["samples"] == 30
    assert summary["db"] == first["db"]


@pytest.mark.parametrize("budget", ["-1", "nan", "inf", "0"])
def test_bad_budgets_are_refused_before_any_work(tmp_path, budget):
    done = _run("--resolution", "32", "--samples", "30", "--out", str(tmp_path / "o"), "--budget-ms", budget)
    assert done.returncode != 0
    assert "budget must be a finite number > 0" in done.stderr
    assert not (tmp_path / "o").exists()


def test_run_is_paired_and_retimes_against_the_tables_reference(finished):
    out, summary = finished
    table = load_table(summary["table"])
    reference = table.extra["reference"]
    assert summary["paired"] and summary["clock"] == "thread_cpu" and table.runtime["statistic"] == "median"
    assert summary["reference"]["widths"] == reference["widths"]
    assert summary["reference"]["table_level_ms"] == reference["level_ms"]
    generous = summary["answers"][1]
    # measured on the table's scale: the answer's ratio to the reference x R, paired on the thread's
    # CPU clock like every sample of the table, so load moves both networks of a pair alike; the
    # widest network's error is a few per cent here, and a factor of 2 either way only rules out
    # a wrong scale (an unconverted or unpaired value), not an inaccurate fit
    assert 0.5 < generous["measured_adjusted_ms"] / generous["predicted_ms"] < 2.0
