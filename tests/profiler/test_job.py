"""`widthwise run`'s steps one by one, on real data: a local agent collects and re-times, the
fit and the validation read the db it wrote."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from widthwise.errors import UsageError
from widthwise.profiler.agent_client import connect
from widthwise.profiler.errors import CollectError
from widthwise.profiler.job import (DEFAULT_SAMPLES, SPACE_SAMPLES, Fitted, JobSettings, collect_settings, collect_step,
                                    default_budgets, fit_step, job_files, retime_step, search_step, validate_step)
from widthwise.profiler.store import SampleStore
from widthwise.search.engine import InfeasibleBudget
from widthwise.search.table import load_table

QUICK = {"warmup": 1, "repeat": 4, "min_repeat_ms": 2.0, "target_ms": 15.0}


@pytest.fixture(scope="module")
def client():
    with connect("local", timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> JobSettings:
    return JobSettings(resolution=32, levels=4, samples=20, out_dir=str(tmp_path_factory.mktemp("job")), seed=1)


@pytest.fixture(scope="module")
def files(client, job):
    return job_files(job, client.hello())


@pytest.fixture(scope="module")
def settings(job, files):
    return dataclasses.replace(collect_settings(job, files), timing=QUICK)  # short samples: same steps, less time


@pytest.fixture(scope="module")
def collected(client, settings):
    return collect_step(client, settings, progress=False)


@pytest.fixture(scope="module")
def fitted(collected, job, files, settings) -> Fitted:
    return fit_step(files.db, files.table, settings.statistic, holdout=job.holdout, seed=job.seed)


def test_settings_refuse_bad_budgets_and_too_few_samples() -> None:
    for budgets in [(0.0,), (-1.0,), (math.nan,), (math.inf,)]:
        with pytest.raises(UsageError, match="budget must be a finite number > 0") as caught:
            JobSettings(budgets=budgets)
        assert caught.value.field == "--budget-ms"
    with pytest.raises(UsageError, match="at least 20 samples"):
        JobSettings(samples=19)


def test_settings_take_every_spaces_parameters_and_its_default_samples() -> None:
    assert JobSettings().samples == DEFAULT_SAMPLES and JobSettings(samples=25).samples == 25
    assert JobSettings(space="mobilenet_v2").samples == SPACE_SAMPLES["mobilenet_v2"]
    v2 = JobSettings(space="mobilenet_v2", resolution=64, levels=3).make_space()
    assert v2.name == "mobilenet_v2" and v2.param_dict == {"resolution": 64, "levels": 3}
    assert JobSettings(space="text_lowrank", params={"vocab": 1000}).make_space().param_dict["vocab"] == 1000
    for settings, message, field in [({"space": "resnet"}, "unknown space 'resnet'", "--space"),
                                     ({"space": "text_lowrank", "resolution": 64}, "no parameter 'resolution'",
                                      "--space-param")]:
        with pytest.raises(UsageError, match=message) as caught:
            JobSettings(**settings)
        assert caught.value.field == field


def test_files_are_named_after_space_and_runtime(client, job, files) -> None:
    assert files.runtime == "onnxruntime" and files.db.name == "mobilenet_v1-32-onnxruntime.sqlite"
    hello = client.hello()
    assert job_files(JobSettings(space="mobilenet_v2", resolution=64), hello).db.name == \
        "mobilenet_v2-64-onnxruntime.sqlite"
    assert job_files(JobSettings(space="text_lowrank"), hello).table.name == "text_lowrank-onnxruntime.json"
    assert files.table == files.db.with_suffix(".json") and str(files.db.parent) == job.out_dir
    with pytest.raises(CollectError, match="runtime nosuch is not usable on the agent"):
        job_files(dataclasses.replace(job, runtime="nosuch"), client.hello())


def test_collect_step_fills_the_db_and_resumes(client, settings, collected) -> None:
    assert collected["samples"] == 20 and collected["complete"] and collected["pairing"]
    with SampleStore(settings.db) as store:
        assert store.count("sample") == 20 and store.paired
    again = collect_step(client, settings, progress=False)
    assert again["new"] == 0 and again["samples"] == 20


def test_fit_step_saves_the_table_on_the_dbs_scale(fitted, files) -> None:
    table = load_table(files.table)
    assert fitted.paired and fitted.level_ms > 0
    assert table.extra["reference"]["level_ms"] == fitted.level_ms
    assert fitted.result.report["count"] == table.fit["holdout"]["count"] > 0


def test_validate_step_scores_the_saved_table_on_the_held_out_samples(fitted, job, files) -> None:
    report = validate_step(files.table, files.db, holdout=job.holdout, seed=job.seed)
    held = fitted.result.report
    assert report["count"] == held["count"]  # the same seeded split as the fit's
    for key in ("mape", "within_5pct", "within_10pct"):
        assert report[key] == pytest.approx(held[key], rel=1e-6, abs=1e-9)


def test_search_step_answers_each_budget_or_says_it_is_infeasible(fitted, job) -> None:
    table = fitted.table
    assert len(default_budgets(table, job.make_space())) == 3
    (tiny, infeasible), (generous, widest) = search_step(table, "flops", [0.001, 1000.0])
    assert isinstance(infeasible, InfeasibleBudget) and infeasible.min_latency_ms > tiny
    assert list(widest.widths) == [max(c) for c in table.choices] and widest.latency_ms <= generous


def test_retime_step_measures_the_answers_against_the_tables_reference(client, settings, files, fitted) -> None:
    answers = search_step(fitted.table, "flops", [0.001, 1000.0])
    retimed = retime_step(client, settings, files.runtime, fitted, answers)
    infeasible, row = retimed.rows
    assert "smallest achievable latency" in infeasible["error"]
    assert row["measured_ms"] > 0 and math.isfinite(row["error_pct"])
    # on the table's scale (ratio x R): a factor of 2 either way rules out only a wrong scale
    assert 0.5 < row["measured_adjusted_ms"] / row["predicted_ms"] < 2.0
    ref = retimed.reference
    assert ref["paired"] and ref["measured_ms"] > 0 and ref["table_level_ms"] == fitted.level_ms
    assert ref["widths"] == fitted.table.extra["reference"]["widths"]
