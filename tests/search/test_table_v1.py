"""`widthwise-table/1`: validation names the faulty field of a chain's space and blocks."""

from __future__ import annotations

import json

import pytest

from tests.support.synthetic import mobilenet_v1_table
from widthwise.search.table import Table, TableError, load_table


@pytest.fixture()
def good():
    return mobilenet_v1_table(seed=1).to_json()


@pytest.mark.parametrize(
    "mutate, field",
    [
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
        (lambda t: t.__setitem__("created", 5), "created"),
    ],
)
def test_validation_names_the_field(good, mutate, field):
    mutate(good)
    with pytest.raises(TableError) as err:
        Table.from_json(good, source="x.json")
    assert err.value.field == field and err.value.code == "table_invalid"
    assert str(err.value).startswith(f"x.json: {field}:")


def test_a_short_row_says_what_its_values_stand_for(good):
    good["blocks"][5]["ms"][2].pop()
    with pytest.raises(TableError, match=r"blocks\[5\]\.ms\[2\]: expected \d+ values \(one per output width\), got"):
        Table.from_json(good)


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
