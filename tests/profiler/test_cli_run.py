"""`widthwise run`: the whole job on a real local agent, small enough for the test suite."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from widthwise.profiler.cli import main
from widthwise.profiler.cli_run import report_lines
from widthwise.profiler.job import DEFAULT_SAMPLES, SPACE_SAMPLES
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


def test_run_on_mobilenet_v2_collects_fits_a_tree_and_retimes_its_answers(tmp_path):
    done = _run("--space", "mobilenet_v2", "--resolution", "32", "--levels", "3", "--samples", "24",
                "--out", str(tmp_path), "--budget-ms", "1000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["db"].endswith("mobilenet_v2-32-onnxruntime.sqlite") and summary["collect"]["samples"] == 24
    table = load_table(summary["table"])
    assert table.format == "widthwise-table/2" and table.space_name == "mobilenet_v2"
    assert {f.kind for f in table.factors} == {"conv", "ir_dwproject", "ir_expand", "ir_project", "pool_fc"}
    (widest,) = summary["answers"]
    assert widest["widths"] == [max(c) for c in table.choices]
    assert widest["named_widths"] == dict(zip(table.variable_names, widest["widths"]))
    assert widest["measured_ms"] > 0 and 0.5 < widest["measured_adjusted_ms"] / widest["predicted_ms"] < 2.0
    assert summary["variable_groups"] == list(table.variable_groups)
    row, v = report_lines(summary)[-2], widest["named_widths"]
    assert f"  stem {v['stem']} | stage1 {v['stage1']} | stage2 {v['stage2']} " \
           f"[{v['stage2.block1.expand']} {v['stage2.block2.expand']}] | stage3 " in row
    assert row.endswith(f" | head {v['head']}")


def test_run_refuses_an_unknown_space_or_parameter_before_any_work(tmp_path):
    for args, message in [(["--space", "resnet"], "unknown space 'resnet'"),
                          (["--space", "text_lowrank", "--levels", "3"], "no parameter 'levels'")]:
        done = _run(*args, "--out", str(tmp_path / "o"))
        assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "o").exists()


def test_run_help_states_each_spaces_default_samples():
    text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    assert f"default {DEFAULT_SAMPLES}," in text
    assert all(f"{n} for {space}" in text for space, n in SPACE_SAMPLES.items())


def test_run_on_a_space_file_names_its_files_after_the_spec(tmp_path):
    from pathlib import Path

    spec_file = Path(__file__).resolve().parents[2] / "docs" / "spaces" / "mcu_vww.json"
    done = _run("--space-file", str(spec_file), "--samples", "20", "--out", str(tmp_path), "--budget-ms", "1000",
                "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["db"].endswith("mcu_vww-96-onnxruntime.sqlite") and summary["collect"]["samples"] == 20
    table = load_table(summary["table"])
    assert table.space_name == "mcu_vww" and table.space["params"]["spec"] == json.loads(spec_file.read_text())
    (widest,) = summary["answers"]
    assert widest["widths"] == [max(c) for c in table.choices] and widest["measured_ms"] > 0
    refused = _run("--space-file", str(spec_file), "--resolution", "64", "--out", str(tmp_path / "o"))
    assert refused.returncode == 2 and "--space-file describes the whole space; drop --resolution" in refused.stderr


def test_run_stops_at_the_cap_when_it_is_below_the_rules_minimum_and_says_so(finished):
    _, summary = finished
    stop = summary["collect"]["stop"]
    assert stop["reason"] == "cap" and stop["samples"] == stop["cap"] == 30 and stop["checks"] == 0
    assert "stopped    : stopped at the cap of 30 samples: no estimate yet (goal 2 %)" in report_lines(summary)


def test_run_scores_its_table_on_fresh_configurations_timed_after_the_fit(finished):
    out, summary = finished
    fresh = summary["fresh"]
    assert fresh["count"] == 40 and fresh["db"].endswith("mobilenet_v1-32-onnxruntime-check.sqlite")
    assert 0.0 <= fresh["within_5pct"] <= fresh["within_10pct"] <= 1.0 and fresh["mape"] > 0
    line = next(l for l in report_lines(summary) if l.startswith("fresh      :"))
    assert line.startswith("fresh      : 40 configurations timed after the fit: MAPE ")


def test_run_collects_until_the_error_target_and_its_report_says_why_it_stopped(tmp_path):
    done = _run("--resolution", "32", "--samples", "90", "--until-error", "50%", "--out", str(tmp_path),
                "--budget-ms", "1000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    stop, collected = summary["collect"]["stop"], summary["collect"]["samples"]
    assert stop["reason"] == "estimate" and 60 <= collected == stop["samples"] < 90 and stop["estimate"] < 0.5
    line = next(l for l in report_lines(summary) if l.startswith("stopped    :"))
    assert line == (f"stopped    : stopped at {collected} samples: cross-validated error {100 * stop['estimate']:.2f} %, "
                    "below 50 % and no longer improving")
    assert load_table(summary["table"]).fit["samples"] + summary["validate"]["count"] == collected


def test_run_refuses_a_prior_table_of_another_space_before_any_work(tmp_path):
    v2 = Path(__file__).resolve().parents[2] / "tables" / "example-xeon2-mobilenet_v2-224.json"
    done = _run("--prior", str(v2), "--out", str(tmp_path / "o"))
    assert done.returncode == 1 and "is of space 'mobilenet_v2', the samples of 'mobilenet_v1'" in done.stderr
    assert not (tmp_path / "o").exists()
