"""`widthwise-table/2`: variables and factors validated field by field, the forest rule, the README example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.search.ofa_table import ofa_table
from tests.support.synthetic import mobilenet_v2_like_table, random_tree_table
from widthwise.search.table import FORMAT_V2, Table, TableError, load_table
from widthwise.search.tree import CycleError

README = Path(__file__).resolve().parents[2] / "tables" / "README.md"


@pytest.fixture()
def good() -> dict:
    """A /2 object with MobileNet-V2's structure at 6 levels (stage3 has 6 choices)."""
    return json.loads(json.dumps(mobilenet_v2_like_table(levels=6, seed=1).to_json()))


def _factor(obj: dict, name: str) -> dict:
    return next(f for f in obj["factors"] if f["name"] == name)


def _choices(obj: dict, name: str) -> list[int]:
    return next(v["choices"] for v in obj["variables"] if v["name"] == name)


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda t: t.pop("variables"), "variables", "non-empty list"),
        (lambda t: t["variables"][4].__setitem__("choices", [16, 8]), "variables[4].choices", "strictly increasing"),
        (lambda t: t["variables"][4]["choices"].__setitem__(0, 0), "variables[4].choices[0]", "positive integer"),
        (lambda t: t["variables"][4].__setitem__("name", "stage2"), "variables[4].name",
         "repeats the name 'stage2' of variables[3]"),
        (lambda t: t["variables"][2].__setitem__("group", 3), "variables[2].group", "must be a string"),
        (lambda t: t["variables"].__setitem__(1, ["stage1"]), "variables[1]", "must be an object"),
        (lambda t: t.__setitem__("factors", []), "factors", "non-empty list"),
        (lambda t: t["factors"][2].__setitem__("variables", ["stage1", "stage9"]), "factors[2].variables[1]",
         "unknown variable 'stage9'"),
        (lambda t: t["factors"][2].__setitem__("variables", ["stage1", "stage2", "stage3"]), "factors[2].variables",
         "one or two variable names"),
        (lambda t: t["factors"][2].__setitem__("variables", []), "factors[2].variables", "one or two variable names"),
        (lambda t: t["factors"][2].__setitem__("variables", ["stage2", "stage2"]), "factors[2].variables",
         "names the variable 'stage2' twice"),
        (lambda t: t["factors"][3].__setitem__("name", t["factors"][1]["name"]), "factors[3].name", "repeats the name"),
        (lambda t: t["factors"][3].__setitem__("kind", None), "factors[3].kind", "must be a string"),
        (lambda t: t["factors"][3]["ms"].pop(), "factors[3].ms", "one per choice of stage2.block1.expand"),
        (lambda t: t["factors"][3]["ms"][2].pop(), "factors[3].ms[2]", "one per choice of stage2"),
        (lambda t: t["factors"][3]["ms"][2].__setitem__(1, -1.0), "factors[3].ms[2][1]", "finite number >= 0"),
        (lambda t: t["factors"][0]["ms"].__setitem__(0, [1.0]), "factors[0].ms[0]", "finite number >= 0"),
        (lambda t: t["factors"][5]["params"][0].__setitem__(0, "x"), "factors[5].params[0][0]", "finite number"),
        (lambda t: t.__setitem__("space", "mobilenet_v2"), "space", "not an object"),
        (lambda t: t["space"].__setitem__("name", 2), "space.name", "must be a string"),
        (lambda t: t.__setitem__("constant_ms", -1), "constant_ms", "finite number >= 0"),
        (lambda t: t["runtime"].__setitem__("statistic", "p90"), "runtime.statistic", "must be one of"),
        (lambda t: t.__setitem__("unit", "s"), "unit", "must be 'ms'"),
    ],
)
def test_validation_names_the_field(good, mutate, field, message):
    mutate(good)
    with pytest.raises(TableError) as err:
        Table.from_json(good, source="v2.json")
    assert err.value.field == field and err.value.code == "table_invalid"
    assert str(err.value).startswith(f"v2.json: {field}:") and message in str(err.value)


def test_the_fixture_is_what_the_cases_above_assume(good):
    names = [v["name"] for v in good["variables"]]
    assert names[:5] == ["stem", "stage1", "stage2.block1.expand", "stage2", "stage2.block2.expand"]
    assert good["factors"][3]["variables"] == ["stage2.block1.expand", "stage2"]
    assert len(good["factors"][3]["ms"][2]) == len(good["variables"][3]["choices"])


def test_a_cycle_is_refused_on_load_naming_the_variables_that_close_it(tmp_path, good):
    good["factors"].append({"name": "shortcut", "kind": "conv", "variables": ["stage2", "stage4"],
                            "ms": [[0.0] * len(_choices(good, "stage4")) for _ in _choices(good, "stage2")]})
    path = tmp_path / "cyclic.json"
    path.write_text(json.dumps(good))
    with pytest.raises(CycleError) as err:
        load_table(path)
    assert str(err.value).startswith(f"{path}: factors: the factors are not a tree:")
    assert re.search(r"stage\S+ and stage\S+ close a cycle", str(err.value))
    assert err.value.field == "factors" and set(err.value.variables) <= {v["name"] for v in good["variables"]}


def test_a_forest_and_factors_sharing_a_pair_are_accepted(good):
    forest = random_tree_table("forest", 5, variables=6)
    assert Table.from_json(forest.to_json()).format == FORMAT_V2
    # Every later block of a stage has two factors over (stage, expansion): one edge, still a tree.
    table = Table.from_json(good)
    pairs = [tuple(sorted(f.variables)) for f in table.factors if len(f.variables) == 2]
    assert len(pairs) > len(set(pairs))


def test_non_finite_numbers_in_a_factor_are_refused_naming_the_entry(tmp_path, good):
    _factor(good, "stage3.block2.project")["ms"][1][0] = "__nan__"
    k = [f["name"] for f in good["factors"]].index("stage3.block2.project")
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(good).replace('"__nan__"', "NaN"))
    with pytest.raises(TableError) as err:
        load_table(path)
    assert err.value.field == f"factors[{k}].ms[1][0]" and "non-finite" in err.value.problem


def test_the_worked_example_of_the_tables_readme_holds():
    text = README.read_text()
    example = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))
    table = Table.from_json(example, source="README")
    assert table.format == FORMAT_V2 and table.variable_names == ("stage", "expand", "head")
    assert table.predict([24, 96, 64]) == pytest.approx(3.25)
    assert "**3.25**" in text
    assert dict(table.breakdown([24, 96, 64])) == {"block.expand": 1.25, "head": 1.0, "classifier": 0.5}
    example["factors"].append({"name": "extra", "variables": ["expand", "head"], "ms": [[0.0, 0.0]] * 3})
    with pytest.raises(CycleError, match="expand and head close a cycle"):
        Table.from_json(example)


# --- option variables: labels and depth runs ------------------------------------------------------


@pytest.fixture()
def labelled() -> dict:
    return json.loads(json.dumps(ofa_table().to_json()))


def test_labels_load_and_save_back_byte_for_byte(labelled, tmp_path):
    path = tmp_path / "ofa.json"
    path.write_text(json.dumps(labelled, indent=1) + "\n")
    table = load_table(path)
    assert table.variables[1].labels[:3] == ("k3e3", "k3e4", "k3e6") and table.variables[1].choices[0] == 0
    largest = table.labelled([v.choices[-1] for v in table.variables])
    assert table.variables[2].labels == () and largest[1:4] == ["k7e6", str(table.choices[2][-1]), "k7e6"]
    again = tmp_path / "again.json"
    table.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert "labels" not in json.loads(again.read_text())["variables"][2]


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda t: t["variables"][1]["labels"].pop(), "variables[1].labels",
         "must list 9 strings (one per choice), got 8"),
        (lambda t: t["variables"][1]["labels"].__setitem__(2, "k3e3"), "variables[1].labels[2]",
         "repeats the label 'k3e3'"),
        (lambda t: t["variables"][1]["labels"].__setitem__(0, 7), "variables[1].labels[0]", "non-empty string"),
        (lambda t: t["variables"][1]["choices"].__setitem__(0, -1), "variables[1].choices[0]", "integer >= 0"),
        (lambda t: t["variables"][1].pop("labels"), "variables[1].choices[0]", "positive integer, got 0"),
        (lambda t: t["space"]["depth_runs"][0].__setitem__("variables", ["stage1.block3", "stage9"]),
         "space.depth_runs", "names a variable the table does not have"),
        (lambda t: t["space"]["depth_runs"][0].__setitem__("skip", [12]), "space.depth_runs", "must list choices"),
        (lambda t: t["space"].__setitem__("depth_runs", {}), "space.depth_runs", "must be a list"),
    ],
)
def test_bad_labels_and_depth_runs_are_named(labelled, mutate, field, message):
    mutate(labelled)
    with pytest.raises(TableError, match=re.escape(field) + ".*" + re.escape(message)):
        Table.from_json(labelled)


def test_canonical_puts_a_stage_s_kept_blocks_first(labelled):
    table = Table.from_json(labelled)
    names = list(table.variable_names)
    values = [v.choices[-1] for v in table.variables]
    b3, b4 = names.index("stage2.block3"), names.index("stage2.block4")
    values[b3], values[b4] = 0, 4
    canon = table.canonical(values)
    assert (canon[b3], canon[b4]) == (4, 0) and table.canonical(canon) == canon
    assert table.labelled(canon)[b3] == "k5e3" and table.labelled(canon)[b4] == "skip"
    plain = mobilenet_v2_like_table(levels=4, seed=2)
    widths = [c[0] for c in plain.choices]
    assert plain.canonical(widths) == tuple(widths) and plain.labelled(widths) == [str(w) for w in widths]
