"""The query daemon over a real loopback socket: endpoints, reload, broken tables, bad requests, auth."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner

from widthwise.search import daemon
from tests.search.serving import running, serve_process
from widthwise.search.cli_serve import serve as serve_command
from tests.support.synthetic import random_tree_table, synthetic_table
from widthwise.search.table import Table
from widthwise.search.table_store import TableStore

CHOICES = [[8, 16, 24], [16, 32, 48, 64], [32, 64, 96], [64, 128]]
TOKEN = "s3cret-token-0123456789abcdef"


# --- helpers -------------------------------------------------------------------------------

def replace_atomically(path: Path, data: bytes) -> None:
    """Write elsewhere in the folder, then rename over `path` (what a table writer does)."""
    tmp = path.with_name(f".{path.name}.incoming")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def table_bytes(table: Table) -> bytes:
    return json.dumps(table.to_json()).encode()


def configs(table: Table) -> list[tuple[tuple[int, ...], float, float]]:
    """Every configuration with its predicted latency and exact MACs (brute force over the factors)."""
    out = []
    for widths in itertools.product(*table.choices):
        idx = table.indices(widths)
        out.append((widths, table.predict(widths), sum(f.value(idx, "macs") for f in table.factors)))
    return out


def params_of(table: Table, widths: list[int] | tuple[int, ...]) -> float:
    idx = table.indices(widths)
    return sum(f.value(idx, "params") for f in table.factors)


def best_macs(table: Table, budget_ms: float) -> float:
    return max(macs for _, lat, macs in configs(table) if lat <= budget_ms + 1e-9)


def macs_of(table: Table, widths: list[int]) -> float:
    return next(macs for w, _, macs in configs(table) if list(w) == list(widths))


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small() -> Table:
    return synthetic_table(CHOICES, seed=3)


@functools.cache
def tree_table() -> Table:
    """A small `widthwise-table/2` tree (6 variables, 3 choices each: 729 configurations to check by brute force)."""
    return random_tree_table("random", seed=9, levels=3, variables=6)


def fill(folder: Path, small: Table) -> Path:
    """Two good chains (`/1`), a good tree (`/2`), one broken file and a file that is not a table."""
    small.save(folder / "small.json")
    tree_table().save(folder / "tree.json")
    synthetic_table(CHOICES[:3], seed=5).save(folder / "other.json")
    (folder / "broken.json").write_text('{"format": "widthwise-table/1", "space": ')
    (folder / "notes.txt").write_text("not a table")
    return folder


@pytest.fixture
def tables_dir(tmp_path: Path, small: Table) -> Path:
    return fill(tmp_path, small)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, small: Table) -> Iterator[httpx.Client]:
    """One daemon shared by the tests that do not change its folder."""
    folder = fill(tmp_path_factory.mktemp("tables"), small)
    with running(daemon.create_app(TableStore(folder, check_interval=0.05))) as c:
        yield c


@pytest.fixture
def own_client(tables_dir: Path) -> Iterator[httpx.Client]:
    """A daemon of the test's own, for tests that replace files in its folder."""
    with running(daemon.create_app(TableStore(tables_dir, check_interval=0.05))) as c:
        yield c


def tables_by_name(client: httpx.Client) -> dict[str, dict]:
    response = client.get("/v1/tables")
    assert response.status_code == 200
    return {t["name"]: t for t in response.json()["tables"]}


# --- endpoints -----------------------------------------------------------------------------

def test_health_and_tables_report_a_broken_file_beside_good_ones(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "tables": 4, "broken": 1}
    tables = tables_by_name(client)
    assert set(tables) == {"small", "other", "tree", "broken"}
    assert tables["small"]["status"] == "ok" and tables["small"]["error"] is None
    assert tables["small"]["space"]["layers"] == len(CHOICES)
    assert tables["small"]["runtime"]["name"] == "synthetic" and "fit" in tables["small"]
    assert tables["broken"]["status"] == "error"
    assert "broken.json" in tables["broken"]["error"] and "JSON" in tables["broken"]["error"]
    assert str(client.base_url) not in tables["broken"]["error"]
    unusable = client.post("/v1/query", json={"table": "broken", "budget_ms": 5})
    assert unusable.status_code == 503 and "broken.json" in unusable.json()["detail"]
    assert client.post("/v1/query", json={"table": "other", "budget_ms": 50}).status_code == 200


def test_openapi_schema_is_served(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/tables", "/v1/query", "/v1/pareto", "/v1/marginals"} <= set(schema["paths"])
    assert "409" in schema["paths"]["/v1/query"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("method", ["exact", "lagrangian", "greedy"])
def test_query_meets_the_budget_and_exact_is_optimal(client: httpx.Client, small: Table, method: str) -> None:
    latencies = sorted(lat for _, lat, _ in configs(small))
    for budget in (latencies[3], latencies[len(latencies) // 2], latencies[-1] + 1):
        response = client.post("/v1/query", json={"table": "small", "budget_ms": budget, "method": method})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["table"] == "small" and body["objective"] == "flops"
        assert body["latency_ms"] == pytest.approx(small.predict(body["widths"]), abs=1e-6)
        assert body["latency_ms"] <= budget + 1e-9
        reached, optimum = macs_of(small, body["widths"]), best_macs(small, budget)
        if method == "exact":
            assert reached == pytest.approx(optimum)
        else:
            assert reached <= optimum + 1e-6


def test_query_answers_repeat_from_the_cache(client: httpx.Client) -> None:
    first = client.post("/v1/query", json={"table": "small", "budget_ms": 2.0}).json()
    for _ in range(5):
        assert client.post("/v1/query", json={"table": "small", "budget_ms": 2.0}).json() == first


def test_fast_lane_answers_equal_the_routed_ones(tables_dir: Path, small: Table) -> None:
    guarded = daemon.create_app(TableStore(tables_dir))
    lane = guarded.app
    assert isinstance(lane, daemon.QueryFastLane)
    answered: dict[str, list[bool]] = {}
    real_answer = lane.answer

    def spy(body: bytes) -> bytes | None:
        out = real_answer(body)
        answered.setdefault(json.loads(body)["method"], []).append(out is not None)
        return out
    lane.answer = spy
    routed_only = daemon.create_app(TableStore(tables_dir)).app.app   # the FastAPI app alone
    budgets = sorted({lat for _, lat, _ in configs(small)})[5::9]
    fastest = min(lat for _, lat, _ in configs(small))
    with running(guarded) as fast, running(routed_only) as routed:
        for method in ("exact", "lagrangian", "greedy"):
            for budget in [*budgets, fastest / 2]:
                body = {"table": "small", "budget_ms": budget, "method": method}
                a, b = fast.post("/v1/query", json=body), routed.post("/v1/query", json=body)
                assert (a.status_code, a.content) == (b.status_code, b.content)
    for method in ("exact", "lagrangian"):
        assert answered[method] == [False] + [True] * (len(budgets) - 1) + [False], \
            f"{method}: the first query builds the cache, later ones are look-ups, the infeasible one is routed"
    assert not any(answered["greedy"]), "greedy computes: it always goes to a work slot"


def test_concurrent_clients_get_consistent_answers(client: httpx.Client, small: Table) -> None:
    budgets = [lat for _, lat, _ in configs(small)][::4]
    expected = {b: client.post("/v1/query", json={"table": "small", "budget_ms": b}).json() for b in budgets}
    failures: list[str] = []

    def worker(offset: int) -> None:
        with httpx.Client(base_url=client.base_url, timeout=30) as own:
            for b in budgets[offset:] + budgets[:offset]:
                got = own.post("/v1/query", json={"table": "small", "budget_ms": b})
                if got.status_code != 200 or got.json() != expected[b]:
                    failures.append(f"{b}: {got.status_code} {got.text[:100]}")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_pareto_is_served_from_its_cache_unchanged(client: httpx.Client) -> None:
    first = client.post("/v1/pareto", json={"table": "other"})
    second = client.post("/v1/pareto", json={"table": "other"})
    assert first.status_code == second.status_code == 200 and first.content == second.content


@pytest.mark.parametrize("name", ["small", "tree"])
def test_params_objective_with_a_parameter_budget(client: httpx.Client, small: Table, name: str) -> None:
    table = small if name == "small" else tree_table()
    everything = [(w, lat, params_of(table, w)) for w, lat, _ in configs(table)]
    cap = (max(p for _, _, p in everything) + min(p for _, _, p in everything)) / 2
    budget = sorted(lat for _, lat, _ in everything)[len(everything) // 2]
    response = client.post("/v1/query", json={"table": name, "budget_ms": budget, "objective": "params",
                                              "max_params": cap})
    assert response.status_code == 200, response.text
    widths, optimum = response.json()["widths"], max(p for _, lat, p in everything if lat <= budget and p <= cap)
    assert params_of(table, widths) <= cap and table.predict(widths) <= budget + 1e-9
    assert params_of(table, widths) == pytest.approx(optimum)  # exact within both budgets on a small table


def test_pareto_front_is_sorted_and_reaches_the_optimum(client: httpx.Client, small: Table) -> None:
    response = client.post("/v1/pareto", json={"table": "small"})
    assert response.status_code == 200, response.text
    body = response.json()
    front = body["front"]
    assert body["count"] == len(front) >= 2
    latencies = [p["latency_ms"] for p in front]
    costs = [p["cost"] for p in front]
    assert latencies == sorted(latencies)
    assert all(a > b for a, b in zip(costs, costs[1:])), "cost must fall as latency rises"
    assert macs_of(small, front[-1]["widths"]) == pytest.approx(max(m for _, _, m in configs(small)))
    for point in front:
        assert macs_of(small, point["widths"]) == pytest.approx(best_macs(small, point["latency_ms"]))


def test_marginals_are_distributions_over_each_layers_choices(client: httpx.Client, small: Table) -> None:
    budget = sorted(lat for _, lat, _ in configs(small))[40]
    response = client.post("/v1/marginals", json={"table": "small", "budget_ms": budget, "temperature": 0.5})
    assert response.status_code == 200, response.text
    layers = response.json()["layers"]
    assert [layer["widths"] for layer in layers] == [list(c) for c in small.choices]
    for layer in layers:
        assert sum(layer["probabilities"]) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 <= p <= 1.0 for p in layer["probabilities"])


def test_inline_costs_objective_is_optimised(client: httpx.Client, small: Table) -> None:
    unary = [[float((7 * k + 3 * j) % 5) for j in range(len(c))] for k, c in enumerate(small.choices)]
    costs = {"format": "widthwise-costs/1", "space": "synthetic", "unary": unary}
    budget = sorted(lat for _, lat, _ in configs(small))[60]
    response = client.post("/v1/query", json={"table": "small", "budget_ms": budget, "objective": costs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["objective"] == "costs"

    def cost(widths: tuple[int, ...]) -> float:
        return sum(unary[k][j] for k, j in enumerate(small.indices(widths)))
    optimum = min(cost(w) for w, lat, _ in configs(small) if lat <= budget)
    assert cost(tuple(body["widths"])) == pytest.approx(optimum)
    assert body["cost"] == pytest.approx(optimum)


def test_inline_loss_samples_are_fitted(client: httpx.Client, small: Table) -> None:
    # An additive loss that prefers a narrow first layer and a wide last one, unlike MACs.
    prefs = [[0.0, 1.0, 2.0], [0.5, 0.0, 1.5, 3.0], [2.0, 0.0, 1.0], [3.0, 0.0]]

    def loss(widths: tuple[int, ...]) -> float:
        return sum(prefs[k][j] for k, j in enumerate(small.indices(widths)))
    everything = configs(small)
    samples = [[list(w), loss(w)] for w, _, _ in everything]
    chosen = None
    for budget in sorted({lat for _, lat, _ in everything}):
        feasible = sorted((loss(w), w) for w, lat, _ in everything if lat <= budget)
        best_macs_widths = max((macs, w) for w, lat, macs in everything if lat <= budget)[1]
        unique = len(feasible) == 1 or feasible[1][0] - feasible[0][0] >= 0.5
        if unique and feasible[0][1] != best_macs_widths and loss(best_macs_widths) > feasible[0][0]:
            chosen = budget, feasible[0]
            break
    assert chosen is not None, "the test table must have a budget where the two objectives disagree"
    budget, (best_loss, best_widths) = chosen
    flops = client.post("/v1/query", json={"table": "small", "budget_ms": budget})
    fitted = client.post("/v1/query", json={"table": "small", "budget_ms": budget, "loss_samples": samples})
    assert flops.status_code == fitted.status_code == 200, fitted.text
    assert fitted.json()["latency_ms"] <= budget + 1e-9
    assert tuple(fitted.json()["widths"]) == best_widths, "the loss objective's own optimum within the budget"
    assert loss(tuple(flops.json()["widths"])) > best_loss, "the default objective picks another configuration"


def test_infeasible_budget_states_the_smallest_latency(client: httpx.Client, small: Table) -> None:
    fastest = min(lat for _, lat, _ in configs(small))
    response = client.post("/v1/query", json={"table": "small", "budget_ms": fastest * 0.5})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "infeasible_budget" and body["field"] == "budget_ms"
    assert body["min_latency_ms"] == pytest.approx(fastest, rel=1e-6)
    assert f"{fastest:.3f}"[:4] in body["detail"]


def test_a_tree_table_is_served_beside_the_chains(client: httpx.Client) -> None:
    tree, names = tree_table(), list(tree_table().variable_names)
    listed = tables_by_name(client)["tree"]
    assert listed["status"] == "ok" and listed["error"] is None and listed["format"] == "widthwise-table/2"
    assert listed["space"]["variables"] == len(names) and listed["space"]["names"] == names
    everything = configs(tree)
    latencies = sorted(lat for _, lat, _ in everything)
    for budget in (latencies[len(latencies) // 4], latencies[len(latencies) // 2], latencies[-1]):
        body = client.post("/v1/query", json={"table": "tree", "budget_ms": budget}).json()
        assert body["latency_ms"] == pytest.approx(tree.predict(body["widths"])) and body["latency_ms"] <= budget + 1e-9
        assert macs_of(tree, body["widths"]) == pytest.approx(best_macs(tree, budget)), budget
        assert body["named_widths"] == dict(zip(names, body["widths"]))
    front = client.post("/v1/pareto", json={"table": "tree"}).json()["front"]
    assert macs_of(tree, front[-1]["widths"]) == pytest.approx(max(m for _, _, m in everything))
    for point in front:
        assert macs_of(tree, point["widths"]) == pytest.approx(best_macs(tree, point["latency_ms"]))
    layers = client.post("/v1/marginals", json={"table": "tree", "budget_ms": latencies[100],
                                                "temperature": 0.5}).json()["layers"]
    assert [(v["name"], v["widths"]) for v in layers] == [(n, list(c)) for n, c in zip(names, tree.choices)]
    assert all(sum(v["probabilities"]) == pytest.approx(1.0, abs=1e-6) for v in layers)
    infeasible = client.post("/v1/query", json={"table": "tree", "budget_ms": latencies[0] / 2})
    assert infeasible.status_code == 409 and infeasible.json()["min_latency_ms"] == pytest.approx(latencies[0])


# --- reload -----------------------------------------------------------------------------------

def test_a_table_renamed_in_is_picked_up_without_restart(own_client: httpx.Client, tables_dir: Path,
                                                         small: Table) -> None:
    client = own_client
    budget = sorted(lat for _, lat, _ in configs(small))[30]
    before = client.post("/v1/query", json={"table": "small", "budget_ms": budget}).json()
    faster = synthetic_table(CHOICES, seed=3, ns_per_mac=0.025, overhead_ms=0.01, constant_ms=0.1)
    replace_atomically(tables_dir / "small.json", table_bytes(faster))

    def reloaded() -> bool:
        body = client.post("/v1/query", json={"table": "small", "budget_ms": budget}).json()
        return body["latency_ms"] != before["latency_ms"]
    wait_for(reloaded)
    after = client.post("/v1/query", json={"table": "small", "budget_ms": budget}).json()
    assert after["latency_ms"] == pytest.approx(faster.predict(after["widths"]), abs=1e-6)
    assert macs_of(faster, after["widths"]) == pytest.approx(best_macs(faster, budget))
    assert tables_by_name(client)["small"]["status"] == "ok"
    # A new file appears, a removed one disappears.
    replace_atomically(tables_dir / "fresh.json", table_bytes(faster))
    (tables_dir / "other.json").unlink()
    wait_for(lambda: set(tables_by_name(client)) == {"small", "fresh", "tree", "broken"})
    # a file that appears is listed at once, "loading" (queries on it: 503) until its loader is done
    wait_for(lambda: tables_by_name(client)["fresh"]["status"] == "ok")
    assert client.post("/v1/query", json={"table": "other", "budget_ms": 5}).status_code == 404
    fresh = client.post("/v1/query", json={"table": "fresh", "budget_ms": budget}).json()
    assert fresh == {**after, "table": "fresh"}


def test_a_truncated_replacement_is_refused_and_the_old_table_serves(
        own_client: httpx.Client, tables_dir: Path, small: Table) -> None:
    client = own_client
    budget = sorted(lat for _, lat, _ in configs(small))[30]
    before = client.post("/v1/query", json={"table": "small", "budget_ms": budget}).json()
    whole = table_bytes(synthetic_table(CHOICES, seed=9))
    replace_atomically(tables_dir / "small.json", whole[: len(whole) // 2])
    wait_for(lambda: tables_by_name(client)["small"]["status"] == "stale")
    entry = tables_by_name(client)["small"]
    assert "small.json" in entry["error"] and "JSON" in entry["error"]
    assert entry["space"]["layers"] == len(CHOICES), "the old table's description stays"
    assert client.post("/v1/query", json={"table": "small", "budget_ms": budget}).json() == before
    assert client.get("/healthz").json()["broken"] == 2
    # Shape errors are refused the same way, and a good file then replaces the old one.
    wrong = json.loads(whole)
    wrong["blocks"][1]["ms"] = wrong["blocks"][1]["ms"][:-1]
    replace_atomically(tables_dir / "small.json", json.dumps(wrong).encode())
    wait_for(lambda: "blocks[1].ms" in (tables_by_name(client)["small"]["error"] or ""))
    assert client.post("/v1/query", json={"table": "small", "budget_ms": budget}).json() == before
    replace_atomically(tables_dir / "small.json", whole)
    wait_for(lambda: tables_by_name(client)["small"]["status"] == "ok")
    assert client.post("/v1/query", json={"table": "small", "budget_ms": budget}).status_code == 200


# --- binding and auth -------------------------------------------------------------------------

def test_serve_command_refuses_a_public_host_without_a_token(tables_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(serve_command, ["--tables", str(tables_dir), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code != 0 and "token" in result.output
    short = tmp_path / "short.token"
    for token in ("abc", "fifteen-chars-x"):   # 3 and 15 bytes: both under the shared 16-byte rule
        short.write_text(token + "\n")
        result = CliRunner().invoke(serve_command, ["--tables", str(tables_dir), "--host", "0.0.0.0",
                                                    "--token-file", str(short)])
        assert result.exit_code != 0 and "at least 16" in result.output and str(short) in result.output
        assert len(result.output.strip().splitlines()) == 1, "one clear line"


def test_bearer_token_is_required_on_every_request(tables_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = daemon.create_app(TableStore(tables_dir), token=TOKEN)
    caplog.set_level(logging.WARNING, logger="widthwise.daemon")
    with running(app) as client:
        for path in ("/healthz", "/v1/tables", "/openapi.json", "/docs"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": f"Bearer {TOKEN[:-1]}x"}
        assert client.post("/v1/query", json={"table": "small", "budget_ms": 5}, headers=wrong).status_code == 401
        assert client.get("/healthz", headers={"Authorization": TOKEN}).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/healthz", headers=good).status_code == 200
        assert client.post("/v1/query", json={"table": "small", "budget_ms": 50}, headers=good).status_code == 200
    refusals = [r for r in caplog.records if r.name == "widthwise.daemon" and "refused" in r.getMessage()]
    assert len(refusals) >= 6
    assert all(TOKEN not in r.getMessage() for r in refusals)


def test_serve_command_runs_and_prints_its_port(tables_dir: Path, tmp_path: Path) -> None:
    with serve_process(tables_dir, tmp_path / "serve.log") as (_, client, line):
        assert "http://127.0.0.1:" in line
        assert client.get("/healthz").json()["tables"] == 4
        assert "no token" in line
