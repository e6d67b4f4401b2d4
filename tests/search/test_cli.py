"""`widthwise query | pareto | marginals`: answers, files, and one-line errors with non-zero exits."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from widthwise.profiler.cli import main
from widthwise.search.cli import widths_line
from widthwise.search.engine import Searcher, make_objective
from widthwise.search.table import load_table
from tests.search.ofa_table import ofa_table
from tests.support.synthetic import (anti_latency_costs, mobilenet_v1_table, mobilenet_v2_like_table, random_costs,
                                     random_table)


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "mb.json"
    mobilenet_v1_table(seed=8).save(path)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_query_json_matches_the_engine(table_file):
    result = run("query", "--table", table_file, "--budget-ms", 9.5, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    table = mobilenet_v1_table(seed=8)
    expected = Searcher(table, make_objective(table)).query(9.5)
    assert got["widths"] == list(expected.widths) and got["method"] == "exact"
    assert got["latency_ms"] == pytest.approx(expected.latency_ms) and got["latency_ms"] <= 9.5


@pytest.mark.parametrize("method", ["exact", "lagrangian", "greedy"])
def test_query_text_names_the_method(table_file, method):
    result = run("query", "--table", table_file, "--budget-ms", 8, "--method", method)
    assert result.exit_code == 0, result.output
    assert f"method      {method}" in result.output and "latency_ms" in result.output


def test_query_with_params_budget(table_file):
    result = run("query", "--table", table_file, "--budget-ms", 30, "--max-params", 2_000_000, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["params"] <= 2_000_000


@pytest.mark.parametrize("budget", ["nan", "inf", "-1"])
def test_query_refuses_bad_budgets(table_file, budget):
    result = run("query", "--table", table_file, "--budget-ms", budget)
    assert result.exit_code != 0
    assert "--budget-ms" in result.output and "finite number >= 0" in result.output


def test_infeasible_budget_is_one_line_with_the_smallest_latency(table_file):
    result = run("query", "--table", table_file, "--budget-ms", 0.1)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and "smallest achievable latency" in lines[0]


def test_broken_table_is_one_line_naming_the_field(tmp_path):
    obj = mobilenet_v1_table().to_json()
    obj["blocks"][2]["ms"][1][3] = -1.0
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(obj))
    result = run("query", "--table", path, "--budget-ms", 10)
    assert result.exit_code == 1
    assert "blocks[2].ms[1][3]: must be a finite number >= 0" in result.output
    assert "Traceback" not in result.output


def test_costs_file_of_the_wrong_shape_names_the_layer(tmp_path):
    table = random_table(4, 3, 3)
    table_path = tmp_path / "t.json"
    table.save(table_path)
    costs = random_costs(table, 4)
    costs["unary"][2] = costs["unary"][2] + [0.0]
    costs_path = tmp_path / "costs.json"
    costs_path.write_text(json.dumps(costs))
    result = run("query", "--table", table_path, "--budget-ms", 100, "--objective", costs_path)
    assert result.exit_code == 1 and "costs.unary[2] (layer layer2)" in result.output
    costs["unary"][2].pop()
    costs_path.write_text(json.dumps(costs))
    result = run("query", "--table", table_path, "--budget-ms", 100, "--objective", costs_path, "--json")
    assert result.exit_code == 0, result.output


def test_loss_samples_file(tmp_path, table_file):
    table = mobilenet_v1_table(seed=8)
    lines = []
    for i in range(200):
        widths = [c[(i * (k + 3)) % len(c)] for k, c in enumerate(table.choices)]
        lines.append(json.dumps([widths, 3.0 - 0.001 * sum(widths) / 100]))
    samples = tmp_path / "loss.jsonl"
    samples.write_text("\n".join(lines) + "\n\n")
    result = run("query", "--table", table_file, "--budget-ms", 9, "--loss-samples", samples, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["objective"] == "loss-samples"
    samples.write_text(lines[0] + "\n[[1, 2], oops\n")
    result = run("query", "--table", table_file, "--budget-ms", 9, "--loss-samples", samples)
    assert result.exit_code == 1 and "line 2 is not valid JSON" in result.output


def test_pareto_csv_plot_and_json(tmp_path, table_file):
    csv_path, png_path = tmp_path / "front.csv", tmp_path / "front.png"
    result = run("pareto", "--table", table_file, "--csv", csv_path, "--plot", png_path)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(csv_path.open()))
    lats = [float(r["latency_ms"]) for r in rows]
    costs = [float(r["cost"]) for r in rows]
    assert lats == sorted(lats) and costs == sorted(costs, reverse=True)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{len(rows)} Pareto-optimal" in result.output
    as_json = json.loads(run("pareto", "--table", table_file, "--json").output)
    assert as_json["count"] == len(rows) and as_json["table"] == "mb" and as_json["objective"] == "flops"
    assert [a["latency_ms"] for a in as_json["front"]] == pytest.approx(lats)


def test_marginals_json_sums_to_one(table_file):
    result = run("marginals", "--table", table_file, "--budget-ms", 9, "--temperature", 0.05, "--json")
    assert result.exit_code == 0, result.output
    layers = json.loads(result.output)["layers"]
    assert len(layers) == 14 and all(sum(layer["probabilities"]) == pytest.approx(1.0) for layer in layers)
    result = run("marginals", "--table", table_file, "--budget-ms", 9, "--temperature", 0)
    assert result.exit_code == 1 and "temperature" in result.output


def test_console_script_in_a_real_process(table_file):
    proc = subprocess.run(
        [sys.executable, "-c", "from widthwise.profiler.cli import main; main()", "query", "--table", str(table_file),
         "--budget-ms", "0.01"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: budget 0.01 ms is below the smallest achievable latency")


@pytest.mark.parametrize("command", [["query", "--budget-ms", "10"], ["pareto"]])
def test_a_front_over_its_cap_is_one_line_naming_the_limit(tmp_path, command):
    table = mobilenet_v1_table(seed=0)
    table_path, costs_path = tmp_path / "t.json", tmp_path / "anti.json"
    table.save(table_path)
    costs_path.write_text(json.dumps(anti_latency_costs(table)))
    result = run(command[0], "--table", table_path, "--objective", costs_path, *command[1:])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and "points limit" in lines[0] and "200,000" in lines[0] and "lagrangian" in lines[0]


# --- a tree table (widthwise-table/2) --------------------------------------------------------------

@pytest.fixture(scope="module")
def tree_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("trees") / "v2.json"
    mobilenet_v2_like_table(levels=5, seed=2).save(path)
    return path


def test_query_on_a_tree_prints_the_widths_by_stage_and_block(tree_file):
    table = load_table(tree_file)
    answer = Searcher(table, make_objective(table)).query(4.0)
    result = run("query", "--table", tree_file, "--budget-ms", 4.0)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "widths      " + " ".join(map(str, answer.widths))
    value = dict(zip(table.variable_names, answer.widths))
    by_group = {line.split()[0]: line.split()[1:] for line in lines[1:] if line.startswith("  ")}
    assert by_group["stem"] == [str(value["stem"])] and by_group["head"] == [str(value["head"])]
    # a stage: its own width, then each of its blocks' expansions by name
    assert by_group["stage3"] == [str(value["stage3"]), "block1.expand", str(value["stage3.block1.expand"]),
                                  "block2.expand", str(value["stage3.block2.expand"]),
                                  "block3.expand", str(value["stage3.block3.expand"])]
    assert set(by_group) == set(table.variable_groups)


def test_query_json_on_a_tree_names_each_variables_width(tree_file):
    got = json.loads(run("query", "--table", tree_file, "--budget-ms", 4.0, "--json").output)
    table = load_table(tree_file)
    assert got["named_widths"] == dict(zip(table.variable_names, got["widths"]))
    assert got["latency_ms"] == pytest.approx(table.predict(got["widths"])) and got["latency_ms"] <= 4.0


def test_pareto_and_marginals_on_a_tree(tree_file, tmp_path):
    table = load_table(tree_file)
    text = run("pareto", "--table", tree_file)
    assert text.exit_code == 0, text.output
    rows = [line for line in text.output.splitlines()[2:] if line]
    front = json.loads(run("pareto", "--table", tree_file, "--json").output)["front"]
    assert len(rows) == len(front) >= 2
    stem, stage1 = table.variable_names.index("stem"), table.variable_names.index("stage1")
    assert rows[-1].split(None, 2)[2].startswith(f"stem {front[-1]['widths'][stem]} | "
                                                  f"stage1 {front[-1]['widths'][stage1]} | stage2 ")
    run("pareto", "--table", tree_file, "--csv", tmp_path / "f.csv")
    assert next(csv.reader((tmp_path / "f.csv").open()))[4:] == list(table.variable_names)
    layers = json.loads(run("marginals", "--table", tree_file, "--budget-ms", 4.0, "--temperature", 0.05,
                            "--json").output)["layers"]
    assert [v["name"] for v in layers] == list(table.variable_names)
    assert all(sum(v["probabilities"]) == pytest.approx(1.0) for v in layers)
    human = run("marginals", "--table", tree_file, "--budget-ms", 4.0, "--temperature", 0.05)
    assert human.output.splitlines()[2].startswith("stage2.block1.expand ")


def test_widths_line_groups_a_stage_and_keeps_a_chain_plain():
    names = ["stem", "stage1", "stage2.block1.expand", "stage2", "stage2.block2.expand", "head"]
    groups = ["stem", "stage1", "stage2", "stage2", "stage2", "head"]
    assert widths_line([32, 16, 96, 24, 144, 1280], names, groups) == \
        "stem 32 | stage1 16 | stage2 24 [96 144] | head 1280"
    assert widths_line([8, 16], ["a", "b"], ["", ""], sep=",") == "8,16"


def test_an_option_table_prints_labels_per_stage(tmp_path):
    path = tmp_path / "ofa.json"
    table = ofa_table()
    table.save(path)
    budget = Searcher(table, make_objective(table)).front().latency[-1]
    result = run("query", "--table", path, "--budget-ms", float(budget))
    assert result.exit_code == 0, result.output
    stage1 = next(line for line in result.output.splitlines() if line.strip().startswith("stage1 "))
    assert "block1 k7e6" in stage1 and "block4 k7e6" in stage1
    assert result.output.splitlines()[0].startswith("widths      16 8 ")  # the flat list keeps the codes
    result = run("pareto", "--table", path)
    assert result.exit_code == 0, result.output
    assert "[its blocks' options]" in result.output and "stage1 8 [k3e3 k3e3 skip skip]" in result.output
    result = run("marginals", "--table", path, "--budget-ms", float(budget), "--temperature", 1.0)
    assert result.exit_code == 0, result.output
    assert "stage1.block3" in result.output and "skip:" in result.output and "k7e6:" in result.output
    assert widths_line(["k3e3", 24, "skip"], ["stage1.block1", "stage1", "stage1.block3"], ["stage1"] * 3) == \
        "stage1 24 [k3e3 skip]"
