"""One JSON shape per answer: `widthwise query|pareto|marginals --json` print the daemon's exact bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from click.testing import CliRunner

from widthwise.profiler.cli import main
from widthwise.search import daemon
from widthwise.search.answers import Answer, Front, answer_marginals, answer_pareto, answer_query, encode
from widthwise.search.engine import Searcher, make_objective
from widthwise.search.errors import NonFiniteAnswer
from widthwise.search.table_store import TableStore
from tests.search.ofa_table import ofa_table
from tests.search.serving import running
from tests.support.synthetic import mobilenet_v1_table, mobilenet_v2_like_table, random_costs, random_table

MB = mobilenet_v1_table(seed=8)
SMALL = random_table(4, 3, 3)
V2 = mobilenet_v2_like_table(6, seed=8)


def _middle_budget(table: object) -> float:
    front = Searcher(table, make_objective(table)).front()
    return float(front.latency[len(front) // 2])


def _loss_samples(table: object) -> list:
    samples = []
    for i in range(200):
        widths = [c[(i * (k + 3)) % len(c)] for k, c in enumerate(table.choices)]
        samples.append([widths, 3.0 - 0.001 * sum(widths) / 100])
    return samples


COSTS = random_costs(SMALL, 4)
SMALL_BUDGET = _middle_budget(SMALL)
V2_BUDGET = _middle_budget(V2)

#: (endpoint, request body): every answer type, every method, both budgets, every kind of objective
REQUESTS = [
    ("query", {"table": "mb", "budget_ms": 9.5}),
    ("query", {"table": "mb", "budget_ms": 9.5, "method": "lagrangian"}),
    ("query", {"table": "mb", "budget_ms": 9.5, "method": "greedy"}),
    ("query", {"table": "mb", "budget_ms": 30.0, "max_params": 2_000_000.0}),
    ("query", {"table": "mb", "budget_ms": 9.5, "objective": "params"}),
    ("query", {"table": "mb", "budget_ms": 9.0, "loss_samples": _loss_samples(MB)}),
    ("query", {"table": "small", "budget_ms": SMALL_BUDGET, "objective": COSTS}),
    ("pareto", {"table": "mb"}),
    ("pareto", {"table": "small", "max_params": 1e9}),
    ("pareto", {"table": "small", "objective": COSTS}),
    ("marginals", {"table": "mb", "budget_ms": 9.5, "temperature": 0.05}),
    ("marginals", {"table": "small", "budget_ms": SMALL_BUDGET, "temperature": 0.5, "objective": COSTS}),
    ("query", {"table": "v2", "budget_ms": V2_BUDGET}),
    ("query", {"table": "v2", "budget_ms": V2_BUDGET, "method": "lagrangian"}),
    ("query", {"table": "v2", "budget_ms": V2_BUDGET, "method": "greedy", "objective": "params"}),
    ("pareto", {"table": "v2"}),
    ("marginals", {"table": "v2", "budget_ms": V2_BUDGET, "temperature": 0.05}),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tables")
    MB.save(path / "mb.json")
    SMALL.save(path / "small.json")
    V2.save(path / "v2.json")
    return path


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[httpx.Client]:
    with running(daemon.create_app(TableStore(folder))) as c:
        yield c


def cli_args(endpoint: str, body: dict, folder: Path, scratch: Path) -> list[str]:
    """The command line that asks `widthwise ENDPOINT` what `body` asks the daemon."""
    args = [endpoint, "--table", str(folder / f"{body['table']}.json")]
    for key, value in body.items():
        if key == "objective" and isinstance(value, dict):
            (scratch / "costs.json").write_text(json.dumps(value))
            args += ["--objective", str(scratch / "costs.json")]
        elif key == "loss_samples":
            (scratch / "loss.jsonl").write_text("\n".join(json.dumps(s) for s in value) + "\n")
            args += ["--loss-samples", str(scratch / "loss.jsonl")]
        elif key != "table":
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@pytest.mark.parametrize("endpoint, body", REQUESTS, ids=[f"{e}-{i}" for i, (e, _) in enumerate(REQUESTS)])
def test_cli_json_is_the_daemon_body(client: httpx.Client, folder: Path, tmp_path: Path, endpoint: str,
                                     body: dict) -> None:
    result = CliRunner().invoke(main, [*cli_args(endpoint, body, folder, tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    printed = result.output.rstrip("\n").encode()
    # twice: the first answer may be computed in a work slot, the second comes from the caches
    # (for a query, the fast lane); all three are the same bytes
    for _ in range(2):
        response = client.post(f"/v1/{endpoint}", json=body)
        assert response.status_code == 200, response.text
        assert response.content == printed
    parsed = json.loads(printed)
    assert parsed["table"] == body["table"]
    objective = body.get("objective", "flops")
    expected = "loss-samples" if "loss_samples" in body else "costs" if isinstance(objective, dict) else objective
    assert parsed["objective"] == expected
    names = {"mb": MB, "small": SMALL, "v2": V2}[body["table"]].variable_names
    if endpoint == "query":  # the widths named in the table's variable order
        assert list(parsed["named_widths"]) == list(names)
        assert list(parsed["named_widths"].values()) == parsed["widths"]
    elif endpoint == "marginals":
        assert [layer["name"] for layer in parsed["layers"]] == list(names)


def test_an_error_is_the_same_message_on_both(client: httpx.Client, folder: Path, tmp_path: Path) -> None:
    body = {"table": "mb", "budget_ms": 0.01}
    result = CliRunner().invoke(main, cli_args("query", body, folder, tmp_path))
    response = client.post("/v1/query", json=body)
    assert result.exit_code == 1 and response.status_code == 409
    answer = response.json()
    assert answer["code"] == "infeasible_budget" and answer["field"] == "budget_ms"
    assert result.output.strip() == f"Error: {answer['detail']}"


def test_answer_and_front_shapes() -> None:
    answer = Answer((8, 16), 1.5, -0.25, "exact", 100.0, 2000.0, None)
    assert list(answer.to_json()) == ["widths", "latency_ms", "cost", "method", "params", "macs", "gamma",
                                      "exact", "dual_bound", "gap", "gap_relative"]
    # an exact answer is its own bound; another method's has none unless it says so
    assert answer.to_json()["exact"] is True and answer.to_json()["gap"] == 0.0
    greedy = Answer((8, 16), 1.5, -0.25, "greedy", 100.0, 2000.0, None).to_json()
    assert greedy["exact"] is False and greedy["gap"] is None and greedy["dual_bound"] is None
    front = Front((answer, Answer((16, 16), 2.0, -0.5, "exact", None, None, None)))
    assert len(front) == 2 and front[-1].widths == (16, 16) and list(front)[0] is answer
    assert front.to_json() == {"count": 2, "front": [a.to_json() for a in front]}


def test_a_non_finite_answer_is_never_encoded() -> None:
    assert encode({"latency_ms": 1.5}) == b'{"latency_ms": 1.5}'
    with pytest.raises(NonFiniteAnswer) as err:
        encode({"cost": float("-inf")})
    assert err.value.field == "objective" and err.value.code == "non_finite_answer"


def test_answers_of_an_option_table_are_canonical_and_labelled() -> None:
    table = ofa_table()
    for f in table.factors:  # block 3 dearer than the identical block 4: the search keeps block 4 alone
        if f.name.endswith(".block3"):
            f.ms = f.ms * 3
    searcher = Searcher(table, make_objective(table))
    skewed = [a for a in searcher.pareto() if table.canonical(a.widths) != tuple(a.widths)]
    assert skewed, "some optimum skips block 3 and keeps block 4"
    raw = searcher.query(skewed[0].latency_ms)
    assert table.canonical(raw.widths) != tuple(raw.widths)
    got = answer_query(searcher, "ofa", skewed[0].latency_ms)
    assert tuple(got["widths"]) == table.canonical(raw.widths) and got["latency_ms"] == raw.latency_ms
    assert list(got["named_widths"].values()) == got["widths"]
    assert list(got["named_labels"].values()) == table.labelled(got["widths"])
    assert got["named_labels"]["stage1.block1"].startswith("k") and got["named_labels"]["stage1"].isdigit()
    front = answer_pareto(searcher, "ofa")
    assert all(tuple(a["widths"]) == table.canonical(a["widths"]) for a in front["front"])
    assert all(a["labels"] == table.labelled(a["widths"]) for a in front["front"])
    layers = answer_marginals(searcher, "ofa", skewed[0].latency_ms, 1e6)["layers"]
    assert layers[1]["labels"][0] == "k3e3" and "labels" not in layers[2]
    # a table without option variables answers as before: no labels anywhere
    plain = Searcher(V2, make_objective(V2))
    assert "named_labels" not in answer_query(plain, "v2", _middle_budget(V2))
    assert all("labels" not in a for a in answer_pareto(plain, "v2")["front"])
