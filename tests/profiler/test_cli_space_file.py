"""A space written as a spec file, end to end through every command that reads its db or table.

One small collection of `docs/spaces/mcu_vww.json` against a real local agent, one fit; then
`validate`, `predict`, `query`, `pareto`, `marginals` and `serve` each work from the table
alone and speak the spec's names; a spec edited in the db or the table is refused in one line
naming the field.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.search.serving import serve_process
from widthwise.device_agents.spaces import make_space
from widthwise.profiler.cli import main
from widthwise.search.table import Table, load_table

SPEC_FILE = Path(__file__).resolve().parents[2] / "docs" / "spaces" / "mcu_vww.json"
SAMPLES = 18
COLLECT = ["--timing", "repeat=3", "--timing", "min_repeat_ms=1", "--timing", "target_ms=5", "--timing", "warmup=1",
           "--reference-every", "4", "--no-progress"]


def invoke(*args: str):
    """The CLI in process; stderr is part of `output` (click's runner mixes it in)."""
    return CliRunner().invoke(main, list(args))


def refused(result, status: int = 1) -> str:
    """The one error line of a refused command (no traceback, the given exit status)."""
    assert result.exit_code == status, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads(SPEC_FILE.read_text())


@pytest.fixture(scope="module")
def space(spec):
    return make_space(spec["name"], {"spec": spec})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path]:
    """(db, table): SAMPLES configurations collected with --space-file, fitted into tables/mcu_vww.json."""
    root = tmp_path_factory.mktemp("space_file")
    db, table = root / "mcu.sqlite", root / "tables" / "mcu_vww.json"
    collected = invoke("collect", "--space-file", str(SPEC_FILE), "--samples", str(SAMPLES), "--db", str(db),
                       "--json", *COLLECT)
    assert collected.exit_code == 0, collected.output
    summary = json.loads(collected.stdout.strip().splitlines()[-1])
    assert summary["space"] == "mcu_vww" and summary["samples"] == SAMPLES and summary["complete"] is True
    done = invoke("fit", "--db", str(db), "-o", str(table), "--holdout", "0")
    assert done.exit_code == 0, done.output
    return db, table


@pytest.fixture(scope="module")
def table(fitted) -> Table:
    return load_table(fitted[1])


@pytest.fixture(scope="module")
def budget(table: Table) -> float:
    """A budget between the fastest and the widest configuration: the middle choices' latency."""
    return table.predict([c[len(c) // 2] for c in table.choices])


def test_the_table_records_the_spec_and_its_names(table: Table, spec: dict, space) -> None:
    assert table.space_name == "mcu_vww" and table.space["params"]["spec"] == spec
    assert list(table.variable_names) == [v["name"] for v in spec["variables"]]
    assert [list(c) for c in table.choices] == [list(layer.choices) for layer in space.layers]
    assert [(f.name, f.kind) for f in table.factors] == [(f.name, f.kind) for f in space.factors]


def test_validate_reports_the_error_on_the_db(fitted) -> None:
    db, path = fitted
    result = invoke("validate", "--table", str(path), "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["count"] == report["samples"] == SAMPLES and report["table"] == str(path)
    assert 0 <= report["mape"] < 1 and report["rmse_ms"] >= 0
    assert report["converted_with_table_reference"] is True
    text = invoke("validate", "--table", str(path), "--db", str(db))
    assert text.exit_code == 0 and f"over {SAMPLES} samples" in text.output and "MAPE" in text.output


def test_predict_breaks_the_latency_down_by_the_specs_blocks(fitted, table: Table, space) -> None:
    widths = [c[-1] for c in table.choices]
    result = invoke("predict", "--table", str(fitted[1]), "--widths", ",".join(map(str, widths)), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["named_widths"] == dict(zip(table.variable_names, widths))
    assert [(f["name"], f["kind"]) for f in out["factors"]] == [(f.name, f.kind) for f in space.factors]
    names = table.variable_names
    assert [f["variables"] for f in out["factors"]] == [[names[v] for v in f.variables] for f in space.factors]
    assert out["latency_ms"] == pytest.approx(table.predict(widths))
    assert out["latency_ms"] == pytest.approx(out["constant_ms"] + sum(f["ms"] for f in out["factors"]))
    named = invoke("predict", "--table", str(fitted[1]), "--widths-json", json.dumps(out["named_widths"]))
    assert named.exit_code == 0, named.output
    rows = named.output.splitlines()
    assert rows[0].startswith(f"predicted latency: {out['latency_ms']:.3f} ms")
    assert any(r.split()[:2] == ["stage2.block3.project", "ir_project"] for r in rows)
    assert any(r.split()[:2] == ["classifier", "pool_fc"] for r in rows)


def test_query_answers_with_the_specs_variable_names(fitted, table: Table, budget: float) -> None:
    result = invoke("query", "--table", str(fitted[1]), "--budget-ms", str(budget), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["table"] == "mcu_vww" and answer["exact"] is True
    assert list(answer["named_widths"]) == list(table.variable_names)
    assert list(answer["named_widths"].values()) == answer["widths"]
    assert all(w in c for w, c in zip(answer["widths"], table.choices))
    assert answer["latency_ms"] == pytest.approx(table.predict(answer["widths"])) and answer["latency_ms"] <= budget
    text = invoke("query", "--table", str(fitted[1]), "--budget-ms", str(budget))
    assert text.exit_code == 0, text.output
    v = answer["named_widths"]
    lines = [" ".join(line.split()) for line in text.output.splitlines()]
    assert f"stage1 {v['stage1']} block1.expand {v['stage1.block1.expand']} block2.expand " \
           f"{v['stage1.block2.expand']}" in lines
    assert f"head {v['head']}" in lines and "method exact" in lines


def test_pareto_front_is_ordered_and_printed_by_the_specs_stages(fitted, table: Table) -> None:
    result = invoke("pareto", "--table", str(fitted[1]), "--json")
    assert result.exit_code == 0, result.output
    front = json.loads(result.output)
    points = front["front"]
    assert front["table"] == "mcu_vww" and front["count"] == len(points) >= 2
    latencies, costs = [p["latency_ms"] for p in points], [p["cost"] for p in points]
    assert latencies == sorted(latencies) and costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    for p in points:
        assert p["latency_ms"] == pytest.approx(table.predict(p["widths"]))
    text = invoke("pareto", "--table", str(fitted[1]))
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0].startswith(f"{len(points)} Pareto-optimal configurations")
    w = dict(zip(table.variable_names, points[0]["widths"]))
    assert lines[2].endswith(f"stem {w['stem']} | features {w['features']} | stage1 {w['stage1']} "
                             f"[{w['stage1.block1.expand']} {w['stage1.block2.expand']}] | stage2 {w['stage2']} "
                             f"[{w['stage2.block1.expand']} {w['stage2.block2.expand']} {w['stage2.block3.expand']}]"
                             f" | head {w['head']}")


def test_marginals_are_distributions_over_the_specs_variables(fitted, table: Table, budget: float) -> None:
    result = invoke("marginals", "--table", str(fitted[1]), "--budget-ms", str(budget), "--temperature", "0.05",
                    "--json")
    assert result.exit_code == 0, result.output
    layers = json.loads(result.output)["layers"]
    assert [layer["name"] for layer in layers] == list(table.variable_names)
    assert [layer["widths"] for layer in layers] == [list(c) for c in table.choices]
    for layer in layers:
        assert sum(layer["probabilities"]) == pytest.approx(1.0) and min(layer["probabilities"]) >= 0
    text = invoke("marginals", "--table", str(fitted[1]), "--budget-ms", str(budget), "--temperature", "0.05")
    assert text.exit_code == 0, text.output
    assert [line.split()[0] for line in text.output.splitlines()] == list(table.variable_names)


def test_serve_answers_a_query_on_the_spec_table_over_http(fitted, table: Table, budget: float,
                                                            tmp_path: Path) -> None:
    with serve_process(fitted[1].parent, tmp_path / "serve.log", entry="widthwise") as (_, client, _line):
        listed = client.get("/v1/tables").json()
        assert "mcu_vww" in json.dumps(listed)
        served = client.post("/v1/query", json={"table": "mcu_vww", "budget_ms": budget})
    assert served.status_code == 200, served.text
    body = served.json()
    assert list(body["named_widths"]) == list(table.variable_names)
    local = json.loads(invoke("query", "--table", str(fitted[1]), "--budget-ms", str(budget), "--json").output)
    assert body["widths"] == local["widths"] and body["latency_ms"] == pytest.approx(local["latency_ms"])


def _edit_kernel(spec: dict, kernel: int) -> dict:
    """The spec with stage2's second block's kernel replaced."""
    spec = json.loads(json.dumps(spec))
    spec["stages"][2]["blocks"][1]["kernel"] = kernel
    return spec


def test_a_db_whose_recorded_spec_was_edited_is_refused_by_name(fitted, tmp_path: Path) -> None:
    db = tmp_path / "edited.sqlite"
    db.write_bytes(fitted[0].read_bytes())
    with sqlite3.connect(db) as con:
        params = json.loads(con.execute("SELECT value FROM meta WHERE key = 'space_params'").fetchone()[0])
        params["spec"] = _edit_kernel(params["spec"], 4)
        con.execute("UPDATE meta SET value = ? WHERE key = 'space_params'", (json.dumps(params, sort_keys=True),))
    expected = 'stage 3 block 2 (stage2.block2): field "kernel": must be an odd integer from 1 to 11, got 4'
    for args in (["fit", "--db", str(db), "-o", str(tmp_path / "t.json")],
                 ["validate", "--table", str(fitted[1]), "--db", str(db)]):
        line = refused(invoke(*args))
        assert line.startswith(f"Error: {db}: ") and expected in line
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("kernel", [4, 3], ids=["invalid", "another-family"])
def test_validate_refuses_a_table_whose_spec_differs_from_the_dbs(fitted, tmp_path: Path, kernel: int) -> None:
    obj = json.loads(fitted[1].read_text())
    obj["space"]["params"]["spec"] = _edit_kernel(obj["space"]["params"]["spec"], kernel)
    edited = tmp_path / "mcu_vww.json"
    edited.write_text(json.dumps(obj))
    line = refused(invoke("validate", "--table", str(edited), "--db", str(fitted[0])))
    assert line == f"Error: {fitted[0]} was collected with spec.stages[2].blocks[1].kernel=5, " \
                   f"the table has spec.stages[2].blocks[1].kernel={kernel}"
