"""`widthwise fit`, `predict`, `validate` over real SQLite sample dbs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from widthwise.device_agents.spaces import make_space
from widthwise.profiler.cli import main
from tests.support.fit_synthetic import make_ground_truth, random_widths
from tests.support.synthetic import mobilenet_v2_like_table
from widthwise.profiler.store import SampleStore
from widthwise.search.table import load_table


def _write_db(path, space, truth, n: int, seed: int) -> None:
    """A real sample db: n configurations, each with 8 noisy repeats around the true latency."""
    rng = np.random.default_rng(seed)
    identity = {
        "space": space.name,
        "space_params": space.param_dict,
        "device_fingerprint": "cafe",
        "runtime": "onnxruntime",
        "runtime_version": "test",
        "threads": 1,
        "dtype": "float32",
        "delegate": None,
        "timing": {"repeat": 8},
        "statistic": "min",
        "sampling": "uniform",
        "seed": seed,
        "device": {"cpu": "test cpu", "cores": 2, "os": "Linux"},
    }
    widths = random_widths(space, n, rng)
    with SampleStore(str(path), identity) as store:
        for slot, (w, lat) in enumerate(zip(widths, truth.latency(widths))):
            times = lat * (1.0 + np.abs(rng.normal(0, 0.01, size=8)))
            store.add("sample", [int(v) for v in w], {"times_ms": times.tolist()}, fingerprint="cafe", slot=slot)


@pytest.fixture(scope="module")
def space():
    return make_space("mobilenet_v1", {"resolution": 32, "levels": 5})


@pytest.fixture(scope="module")
def dbs(tmp_path_factory, space):
    root = tmp_path_factory.mktemp("dbs")
    truth = make_ground_truth(space, seed=4)
    _write_db(root / "train.sqlite", space, truth, 120, seed=1)
    _write_db(root / "val.sqlite", space, truth, 40, seed=2)
    return root


@pytest.fixture(scope="module")
def table_path(dbs):
    out = dbs / "tables" / "t.json"
    result = CliRunner().invoke(main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(out), "--holdout", "0.2"])
    assert result.exit_code == 0, result.output
    assert "held out:" in result.output and "MAPE" in result.output
    return out


def test_fit_writes_a_valid_table(table_path, space):
    table = load_table(table_path)
    assert table.space == space.to_json()
    assert table.runtime["name"] == "onnxruntime" and table.runtime["statistic"] == "min"
    assert table.device["cpu"] == "test cpu" and table.device["fingerprint"] == "cafe"
    assert table.fit["samples"] == 96 and table.fit["holdout"]["count"] == 24


def test_fit_json_and_method(dbs, tmp_path):
    out = tmp_path / "flops.json"
    result = CliRunner().invoke(
        main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(out), "--method", "flops", "--seed", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["method"] == "flops" and report["table"] == str(out) and report["count"] == 18
    assert load_table(out).fit["method"] == "flops"


def test_predict_matches_the_table(table_path, space):
    widths = [layer.choices[1] for layer in space.layers]
    runner = CliRunner()
    result = runner.invoke(main, ["predict", "--table", str(table_path), "--widths", ",".join(map(str, widths)), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    table = load_table(table_path)
    assert out["latency_ms"] == pytest.approx(table.predict(widths))
    assert [b["name"] for b in out["blocks"]] == [b.name for b in table.blocks]
    text = runner.invoke(main, ["predict", "--table", str(table_path), "--widths", " ".join(map(str, widths))])
    assert text.exit_code == 0 and "predicted latency" in text.output and "classifier" in text.output


def test_predict_refuses_widths_off_the_grid(table_path, space):
    widths = [layer.choices[0] for layer in space.layers]
    widths[2] += 1
    result = CliRunner().invoke(main, ["predict", "--table", str(table_path), "--widths", ",".join(map(str, widths))])
    assert result.exit_code == 2
    assert f"width {widths[2]} of layer 2 (dwsep2) is not one of its choices" in result.output
    short = CliRunner().invoke(main, ["predict", "--table", str(table_path), "--widths", "8,8"])
    assert short.exit_code == 2 and "table has 14 layers, got 2 widths" in short.output
    junk = CliRunner().invoke(main, ["predict", "--table", str(table_path), "--widths", "8,x"])
    assert junk.exit_code == 2 and "item 1 ('x') is not an integer" in junk.output


def test_corrupt_table_is_one_line_naming_the_field(table_path, tmp_path):
    raw = json.loads(table_path.read_text())
    del raw["blocks"][1]["ms"][0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    result = CliRunner().invoke(main, ["predict", "--table", str(bad), "--widths", "8"])
    assert result.exit_code == 1
    assert "blocks[1].ms" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_validate_reports_and_plots(table_path, dbs, tmp_path):
    png = tmp_path / "scatter.png"
    result = CliRunner().invoke(
        main, ["validate", "--table", str(table_path), "--db", str(dbs / "val.sqlite"), "--plot", str(png), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # seeded synthetic timings with 1 % noise around the truth the table was fitted from: MAPE 0.3 %
    assert report["count"] == 40 and report["within_5pct"] >= 0.95 and report["mape"] < 0.02
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_refuses_a_db_of_another_space(table_path, tmp_path):
    other = make_space("mobilenet_v1", {"resolution": 32, "levels": 4})
    _write_db(tmp_path / "other.sqlite", other, make_ground_truth(other), 20, seed=5)
    result = CliRunner().invoke(main, ["validate", "--table", str(table_path), "--db", str(tmp_path / "other.sqlite")])
    assert result.exit_code == 1 and "width choices" in result.output


def test_fit_errors_are_one_line(tmp_path, space):
    missing = CliRunner().invoke(main, ["fit", "--db", str(tmp_path / "nope.sqlite"), "-o", str(tmp_path / "t.json")])
    assert missing.exit_code == 1 and "no sample db" in missing.output
    empty = tmp_path / "empty.sqlite"
    _write_db(empty, space, make_ground_truth(space), 0, seed=1)
    result = CliRunner().invoke(main, ["fit", "--db", str(empty), "-o", str(tmp_path / "t.json")])
    assert result.exit_code == 1 and "no samples" in result.output
    assert not (tmp_path / "t.json").exists()


# --- paired dbs: the table carries its reference; validate converts the other db's ratios with it ----


def _write_paired_db(path, space, truth, n: int, seed: int, ref_level: float, ref_widths=None) -> None:
    """A paired db: each sample's ratio to a reference whose level is `ref_level` on this 'machine'."""
    rng = np.random.default_rng(seed)
    ref_widths = list(ref_widths or space.smallest())
    true_ref = float(truth.latency(np.array([ref_widths]))[0])
    identity = {
        "space": space.name, "space_params": space.param_dict, "device_fingerprint": "cafe", "runtime": "onnxruntime",
        "runtime_version": "test", "threads": 1, "dtype": "float32", "delegate": None, "timing": {"repeat": 8},
        "statistic": "median", "sampling": "uniform", "seed": seed, "device": {"cpu": "test cpu", "cores": 2},
        "pairing": True, "clock": "thread_cpu", "reference_widths": ref_widths,
    }
    widths = random_widths(space, n, rng)
    with SampleStore(str(path), identity) as store:
        for slot, (w, lat) in enumerate(zip(widths, truth.latency(widths))):
            ratio = lat / true_ref * (1.0 + rng.normal(0, 0.002))
            times = (ratio * ref_level * np.ones(8)).tolist()
            pair = {"ratio_median": ratio, "ref_median_ms": ref_level * (1 + rng.normal(0, 0.01)), "ratios": [ratio] * 8}
            store.add("sample", [int(v) for v in w], {"times_ms": times, "pair": pair}, fingerprint="cafe", slot=slot)


def test_paired_table_carries_its_reference_and_validate_uses_it(space, tmp_path):
    truth = make_ground_truth(space, seed=4)
    _write_paired_db(tmp_path / "train.sqlite", space, truth, 120, seed=1, ref_level=2.0)
    _write_paired_db(tmp_path / "val.sqlite", space, truth, 40, seed=2, ref_level=2.2)  # a 10 % slower moment
    out = tmp_path / "paired.json"
    result = CliRunner().invoke(main, ["fit", "--db", str(tmp_path / "train.sqlite"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "statistic median (median of per-pair ratios x the reference level)" in result.output
    table = load_table(out)
    assert table.runtime["statistic"] == "median" and table.runtime["clock"] == "thread_cpu"
    assert table.extra["reference"]["widths"] == list(space.smallest())
    assert table.extra["reference"]["level_ms"] == pytest.approx(2.0, rel=0.02)
    result = CliRunner().invoke(main, ["validate", "--table", str(out), "--db", str(tmp_path / "val.sqlite"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["converted_with_table_reference"] and report["reference_level_ms"] == table.extra["reference"]["level_ms"]
    assert report["within_5pct"] > 0.9  # on the val db's own level (2.2 ms) every sample would be ~10 % off
    with SampleStore(str(tmp_path / "val.sqlite")) as store:
        from widthwise.profiler.fit import error_report

        own = error_report(table, store.training_data())
    assert own["within_5pct"] < 0.5 and own["mape"] > 0.05


def test_fit_accepts_the_former_method_names_and_refuses_unknown_ones(dbs, tmp_path):
    out = tmp_path / "alias.json"
    result = CliRunner().invoke(main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(out), "--method", "paper", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["method"] == "nnls-monotone" == load_table(out).fit["method"]
    bad = CliRunner().invoke(main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(out), "--method", "magic"])
    assert bad.exit_code == 1 and "unknown method 'magic'" in bad.output and "pooled-prior" in bad.output


def test_predict_on_a_tree_gives_the_breakdown_per_factor(tmp_path):
    table = mobilenet_v2_like_table(levels=4, seed=1)
    path = tmp_path / "v2.json"
    table.save(path)
    names = table.variable_names
    values = {n: c[1] for n, c in zip(names, table.choices)}
    result = CliRunner().invoke(main, ["predict", "--table", str(path), "--widths-json", json.dumps(values), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    flat = [values[n] for n in names]
    assert out["widths"] == flat and out["named_widths"] == values and "blocks" not in out
    assert out["latency_ms"] == pytest.approx(table.predict(flat))
    assert out["latency_ms"] == pytest.approx(out["constant_ms"] + sum(f["ms"] for f in out["factors"]))
    assert [(f["name"], f["kind"], f["variables"]) for f in out["factors"]] == \
        [(f.name, f.kind, [names[v] for v in f.variables]) for f in table.factors]
    text = CliRunner().invoke(main, ["predict", "--table", str(path), "--widths", " ".join(map(str, flat))])
    rows = [line.split() for line in text.output.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [(f.name, f.kind) for f in table.factors]
    assert sum(float(r[2]) for r in rows) == pytest.approx(out["latency_ms"] - out["constant_ms"], abs=1e-3 * len(rows))
    values["stage4"] += 1
    off = CliRunner().invoke(main, ["predict", "--table", str(path), "--widths-json", json.dumps(values)])
    assert off.exit_code == 2 and f"of variable {names.index('stage4')} (stage4) is not one of its choices" in off.output


def test_fit_validate_and_predict_on_a_mobilenet_v2_db(tmp_path):
    space = make_space("mobilenet_v2", {"resolution": 32, "levels": 3})
    truth = make_ground_truth(space, seed=2)
    _write_db(tmp_path / "train.sqlite", space, truth, 150, seed=1)
    _write_db(tmp_path / "val.sqlite", space, truth, 40, seed=2)
    out = tmp_path / "v2.json"
    fitted = CliRunner().invoke(main, ["fit", "--db", str(tmp_path / "train.sqlite"), "-o", str(out)])
    assert fitted.exit_code == 0, fitted.output
    table = load_table(out)
    assert table.format == "widthwise-table/2" and list(table.variable_names) == [v.name for v in space.layers]
    checked = CliRunner().invoke(main, ["validate", "--table", str(out), "--db", str(tmp_path / "val.sqlite"), "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["count"] == 40
    widths = [v.choices[-1] for v in space.layers]
    predicted = CliRunner().invoke(main, ["predict", "--table", str(out), "--widths", ",".join(map(str, widths)),
                                          "--json"])
    assert json.loads(predicted.output)["latency_ms"] == pytest.approx(table.predict(widths))


def test_fit_with_a_prior_table_reports_the_scale_and_refuses_another_space(dbs, table_path, tmp_path, space):
    """The same board's table as the prior of a refit: scale near 1, small departures; a table of
    another family is refused naming both spaces, before anything is written."""
    out = tmp_path / "p.json"
    result = CliRunner().invoke(main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(out), "--prior",
                                       str(table_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["prior"]
    assert report["table"] == str(table_path) and 0.9 < report["scale"] < 1.1 and report["departure_median_abs"] < 0.05
    assert load_table(out).fit["prior"]["scale"] == report["scale"]
    text = CliRunner().invoke(main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(out), "--prior", str(table_path)])
    assert f"prior: {table_path} x " in text.output and "(90th percentile)" in text.output
    other = tmp_path / "v2.json"
    mobilenet_v2_like_table().save(other)
    refused = CliRunner().invoke(main, ["fit", "--db", str(dbs / "train.sqlite"), "-o", str(tmp_path / "no.json"),
                                        "--prior", str(other)])
    assert refused.exit_code == 1 and "the samples of 'mobilenet_v1'" in refused.output
    assert not (tmp_path / "no.json").exists()
