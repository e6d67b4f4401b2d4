"""`widthwise-table/1`: validation names the faulty field, round trips, and saves atomically."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.support.synthetic import mobilenet_v1_table, random_table
from widthwise.device_agents.statistics import FIT_STATISTICS
from widthwise.search.table import Table, TableError, WidthsError, load_table


@pytest.fixture()
def good():
    return mobilenet_v1_table(seed=1).to_json()


def test_round_trip_keeps_everything(tmp_path, good):
    path = tmp_path / "t.json"
    Table.from_json(good).save(path)
    again = load_table(path)
    assert again.to_json() == json.loads(json.dumps(good))
    assert again.choices == Table.from_json(good).choices
    for a, b in zip(again.blocks, Table.from_json(good).blocks):
        np.testing.assert_array_equal(a.ms, b.ms)
        np.testing.assert_array_equal(a.macs, b.macs)


def test_predict_is_constant_plus_block_terms():
    table = random_table(9, 3, 3, integer=False)
    widths = [c[-1] for c in table.choices]
    idx = [0, *table.indices(widths), 0]
    expected = table.constant_ms + sum(b.ms[idx[k], idx[k + 1]] for k, b in enumerate(table.blocks))
    assert table.predict(widths) == pytest.approx(expected)
    with pytest.raises(WidthsError, match=r"width 7 of layer 1 \(layer1\) is not one of its choices") as err:
        table.predict([widths[0], 7, widths[2]])
    assert err.value.field == "widths[1]" and isinstance(err.value, ValueError)
    with pytest.raises(WidthsError, match="table has 3 layers, got 2 widths"):
        table.predict(widths[:2])


@pytest.mark.parametrize("statistic", FIT_STATISTICS)
def test_every_fit_statistic_is_a_table_statistic(good, statistic):
    good["runtime"]["statistic"] = statistic
    assert Table.from_json(good).statistic == statistic


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda t: t.__setitem__("format", "widthwise-table/2"), "format"),
        (lambda t: t.__setitem__("unit", "us"), "unit"),
        (lambda t: t["space"].__setitem__("input_channels", 0), "space.input_channels"),
        (lambda t: t["space"]["layers"][3].__setitem__("choices", [8, 8]), "space.layers[3].choices"),
        (lambda t: t["space"]["layers"][2]["choices"].__setitem__(1, 2.5), "space.layers[2].choices[1]"),
        (lambda t: t["blocks"].pop(), "blocks"),
        (lambda t: t["blocks"][4].__setitem__("in", [1, 2]), "blocks[4].in"),
        (lambda t: t["blocks"][14].__setitem__("out", [999]), "blocks[14].out"),
        (lambda t: t["blocks"][5]["ms"].pop(), "blocks[5].ms"),
        (lambda t: t["blocks"][5]["ms"][2].pop(), "blocks[5].ms[2]"),
        (lambda t: t["blocks"][6]["ms"][0].__setitem__(1, float("nan")), "blocks[6].ms[0][1]"),
        (lambda t: t["blocks"][6]["macs"][0].__setitem__(0, -3), "blocks[6].macs[0][0]"),
        (lambda t: t.__setitem__("constant_ms", -0.1), "constant_ms"),
        (lambda t: t["runtime"].__setitem__("statistic", "p90"), "runtime.statistic"),
        (lambda t: t.__setitem__("device", "board"), "device"),
        (lambda t: t.__setitem__("device", []), "device"),
        (lambda t: t.__setitem__("fit", 0), "fit"),
    ],
)
def test_validation_names_the_field(good, mutate, field):
    mutate(good)
    with pytest.raises(TableError) as err:
        Table.from_json(good, source="x.json")
    assert err.value.field == field and err.value.code == "table_invalid"
    assert str(err.value).startswith(f"x.json: {field}:")


def test_unreadable_and_non_json_files_name_the_file(tmp_path):
    with pytest.raises(TableError, match="cannot read"):
        load_table(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TableError, match=r"bad.json: file: not valid JSON"):
        load_table(bad)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path, good, monkeypatch):
    path = tmp_path / "t.json"
    table = Table.from_json(good)
    table.save(path)
    before = path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["t.json"]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # A failure while writing keeps the old file whole and removes the temporary file.
    monkeypatch.setattr(os, "fsync", fail)
    table.constant_ms = 9.0
    with pytest.raises(OSError, match="disk full"):
        table.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.json"]


def test_unknown_top_level_fields_are_kept(good):
    good["notes"] = {"by": "lab"}
    assert Table.from_json(good).to_json()["notes"] == {"by": "lab"}


@pytest.mark.parametrize("where, literal, field", [
    (("space", "layers", 2, "choices", 1), "Infinity", "space.layers[2].choices[1]"),
    (("blocks", 3, "ms", 1, 2), "NaN", "blocks[3].ms[1][2]"),
    (("blocks", 0, "params", 0, 4), "-Infinity", "blocks[0].params[0][4]"),
    (("fit", "mape"), "NaN", "fit.mape"),
    (("device", "clock_ghz"), "1e999", "device.clock_ghz"),
    (("constant_ms",), "Infinity", "constant_ms"),
])
def test_non_finite_numbers_anywhere_are_refused_naming_the_field(tmp_path, good, where, literal, field):
    marker = "__non_finite__"
    obj = good
    for key in where[:-1]:
        obj = obj.setdefault(key, {}) if isinstance(key, str) else obj[key]
    obj[where[-1]] = marker
    path = tmp_path / "corrupt.json"
    path.write_text(json.dumps(good).replace(f'"{marker}"', literal))
    with pytest.raises(TableError) as refused:
        load_table(path)
    assert refused.value.field == field and "non-finite" in refused.value.problem
    assert str(path) in str(refused.value)
