"""The table of either format: round trips, predictions over factors, the shipped table, atomic saves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.support.synthetic import TREE_SHAPES, mobilenet_v1_table, mobilenet_v2_like_table, random_table, random_tree_table
from widthwise.device_agents.statistics import FIT_STATISTICS
from widthwise.search.table import FORMAT, FORMAT_V2, Factor, Table, TableError, Variable, WidthsError, load_table

SHIPPED = Path(__file__).resolve().parents[2] / "tables" / "example-epyc2-mobilenet_v1-224.json"


@pytest.fixture()
def good():
    return mobilenet_v1_table(seed=1).to_json()


def test_round_trip_keeps_everything(tmp_path, good):
    path = tmp_path / "t.json"
    Table.from_json(good).save(path)
    again = load_table(path)
    assert again.format == FORMAT and again.to_json() == json.loads(json.dumps(good))
    assert again.choices == Table.from_json(good).choices
    for a, b in zip(again.blocks, Table.from_json(good).blocks):
        np.testing.assert_array_equal(a.ms, b.ms)
        np.testing.assert_array_equal(a.macs, b.macs)


@pytest.mark.parametrize("make", [lambda: mobilenet_v2_like_table(levels=6, seed=2),
                                  *(lambda s=s: random_tree_table(s, 3, levels=3, variables=6) for s in TREE_SHAPES)])
def test_a_v2_table_round_trips_through_a_file(tmp_path, make):
    table = make()
    path = tmp_path / "t.json"
    table.save(path)
    again = load_table(path)
    assert again.format == FORMAT_V2 and again.blocks is None
    assert json.loads(path.read_text())["format"] == FORMAT_V2
    assert again.to_json() == json.loads(json.dumps(table.to_json()))
    assert again.variable_names == table.variable_names and again.variable_groups == table.variable_groups
    assert again.choices == table.choices
    for a, b in zip(again.factors, table.factors):
        assert (a.name, a.kind, a.variables) == (b.name, b.kind, b.variables)
        for key in ("ms", "macs", "params"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


def test_the_shipped_table_loads_predicts_and_saves_byte_for_byte(tmp_path):
    table = load_table(SHIPPED)
    assert table.format == FORMAT and table.space_name == "mobilenet_v1" and table.num_layers == 14
    # The fastest point of the front search/DAEMON.md shows for this table.
    widths = [8, 16, 24, 24, 48, 48, 104, 104, 104, 104, 104, 104, 208, 208]
    assert table.predict(widths) == pytest.approx(1.63119431666512, rel=1e-12)
    table.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == SHIPPED.read_bytes()


def test_a_chain_is_seen_as_factors_with_the_same_prediction():
    table = random_table(4, 4, 3, integer=False)
    factors = table.factors
    assert [f.variables for f in factors] == [(0,), (0, 1), (1, 2), (2, 3), (3,)]
    assert [f.name for f in factors] == [b.name for b in table.blocks]
    rng = np.random.default_rng(0)
    for _ in range(20):
        widths = [int(rng.choice(c)) for c in table.choices]
        idx = [0, *table.indices(widths), 0]
        by_block = table.constant_ms + sum(b.ms[idx[k], idx[k + 1]] for k, b in enumerate(table.blocks))
        assert table.predict(widths) == pytest.approx(by_block)


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


def tiny_tree() -> Table:
    """Three variables, a star around `s`: the worked example of tables/README.md."""
    return Table(
        space={"name": "tiny"},
        variables=[Variable("s", (16, 24), "stage1"), Variable("e", (48, 96, 144), "stage1"), Variable("h", (32, 64))],
        factors=[
            Factor("block.expand", "ir_expand", (0, 1), np.array([[0.5, 0.75, 1.0], [0.75, 1.25, 1.75]])),
            Factor("head", "conv", (2, 0), np.array([[0.25, 0.5], [0.5, 1.0]])),
            Factor("classifier", "pool_fc", (2,), np.array([0.25, 0.5])),
        ],
        constant_ms=0.5,
    )


def test_a_tree_predicts_the_sum_of_its_factors_in_their_own_axis_order():
    table = tiny_tree()
    # head is listed over (h, s): rows are h's choices, so h=64, s=16 is ms[1][0].
    assert table.breakdown([16, 144, 64]) == [("block.expand", 1.0), ("head", 0.5), ("classifier", 0.5)]
    assert table.predict([16, 144, 64]) == pytest.approx(2.5)
    assert table.predict([24, 96, 64]) == pytest.approx(0.5 + 1.25 + 1.0 + 0.5)
    assert table.variable_groups == ("stage1", "stage1", "")
    assert table.layer_names == ["s", "e", "h"] and table.num_layers == 3


def test_a_tree_names_the_variable_of_a_bad_value():
    table = tiny_tree()
    with pytest.raises(WidthsError, match=r"width 50 of variable 1 \(e\) is not one of its choices \[48, 96, 144\]") as err:
        table.predict([16, 50, 32])
    assert err.value.field == "widths[1]"
    with pytest.raises(WidthsError, match="table has 3 variables, got 4 widths"):
        table.indices([16, 48, 32, 8])


def test_the_constructor_takes_blocks_or_variables_and_factors_not_both():
    chain = random_table(0)
    tree = tiny_tree()
    with pytest.raises(ValueError, match="either blocks"):
        Table(space={}, blocks=chain.blocks, variables=tree.variables, factors=tree.factors)
    with pytest.raises(ValueError, match="either blocks"):
        Table(space={})
    with pytest.raises(ValueError, match="needs both"):
        Table(space={}, variables=tree.variables)


def test_counts_are_saved_as_integers_and_fractions_kept(tmp_path):
    table = tiny_tree()
    table.factors[0].macs = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    table.factors[0].params = np.array([[0.5, 2.0, 3.0], [4.0, 5.0, 6.0]])
    obj = table.to_json()["factors"][0]
    assert obj["macs"] == [[1, 2, 3], [4, 5, 6]] and isinstance(obj["macs"][0][0], int)
    assert obj["params"][0] == [0.5, 2.0, 3.0]
    assert "macs" not in table.to_json()["factors"][1]
    assert table.has_counts("macs") is False


@pytest.mark.parametrize("statistic", FIT_STATISTICS)
def test_every_fit_statistic_is_a_table_statistic(good, statistic):
    good["runtime"]["statistic"] = statistic
    assert Table.from_json(good).statistic == statistic


@pytest.mark.parametrize("fmt", ["widthwise-table/3", None, 1])
def test_an_unknown_format_is_refused_naming_both_known_ones(good, fmt):
    good["format"] = fmt
    with pytest.raises(TableError, match=r"x.json: format: unknown format .*'widthwise-table/1' and 'widthwise-table/2'"):
        Table.from_json(good, source="x.json")


def test_unreadable_and_non_json_files_name_the_file(tmp_path):
    with pytest.raises(TableError, match="cannot read"):
        load_table(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TableError, match=r"bad.json: file: not valid JSON"):
        load_table(bad)


@pytest.mark.parametrize("make", [lambda: mobilenet_v1_table(seed=1), tiny_tree])
def test_save_is_atomic_and_leaves_no_temporary(tmp_path, make, monkeypatch):
    path = tmp_path / "t.json"
    table = make()
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


@pytest.mark.parametrize("make", [lambda: mobilenet_v1_table(seed=1), tiny_tree])
def test_unknown_top_level_fields_are_kept(make):
    obj = make().to_json()
    obj["notes"] = {"by": "lab"}
    assert Table.from_json(obj).to_json()["notes"] == {"by": "lab"}


SHIPPED_TABLES = sorted((Path(__file__).resolve().parents[2] / "tables").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED_TABLES, ids=[p.name for p in SHIPPED_TABLES])
def test_every_shipped_table_loads_and_answers_both_searches(path: Path) -> None:
    from widthwise.search.engine import Searcher, make_objective

    table = load_table(path)
    searcher = Searcher(table, make_objective(table, "flops"))
    front = searcher.pareto().answers
    middle = front[len(front) // 2]
    exact = searcher.query(middle.latency_ms)
    lagrangian = searcher.query(middle.latency_ms, method="lagrangian")
    assert exact.cost <= lagrangian.cost + 1e-12
    assert table.predict(exact.widths) == pytest.approx(exact.latency_ms, rel=1e-9)
    assert {load_table(p).format for p in SHIPPED_TABLES} == {"widthwise-table/1", "widthwise-table/2"}
