"""The daemon as a hostile client or a corrupt table file would try it, against a real `widthwise serve`.

Each daemon runs as its own process (the CLI entry point, `--port 0`) under an address-space
limit, so that a regression runs out of memory alone instead of taking the machine with it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.support.synthetic import anti_latency_costs, mobilenet_v1_table, synthetic_table
from tests.search.serving import serve_process

EXAMPLE = Path(__file__).resolve().parents[2] / "tables" / "example-epyc2-mobilenet_v1-224.json"
#: Address space a test daemon may map: far above what a capped daemon needs, far below the machine.
DAEMON_ADDRESS_SPACE = 8 * 1024 ** 3
#: Generous bounds: the daemon must answer, not answer fast.
ANSWER_WITHIN_S = 10.0
RSS_GROWTH_BOUND_MIB = 500


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (DAEMON_ADDRESS_SPACE, DAEMON_ADDRESS_SPACE))


@contextmanager
def daemon_process(folder: Path, stderr_path: Path) -> Iterator[tuple[subprocess.Popen, httpx.Client]]:
    """`widthwise serve --tables folder --port 0` in its own process under the address-space limit;
    yields it and a client for it."""
    with serve_process(folder, stderr_path, preexec_fn=_limit_address_space, client_timeout=120) as (proc, client, _):
        yield proc, client


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- an objective whose front is every configuration ----------------------------------------

def test_anti_latency_costs_get_a_422_naming_the_limit_and_memory_stays_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    table = mobilenet_v1_table(seed=0)    # 14 layers x 14 choices: 14**14 configurations
    table.save(folder / "mb.json")
    costs = anti_latency_costs(table)
    with daemon_process(folder, tmp_path / "daemon.log") as (proc, client):
        assert client.post("/v1/query", json={"table": "mb", "budget_ms": 10}).status_code == 200
        before = rss_mib(proc.pid)
        for path, extra in (("/v1/query", {"budget_ms": 10}), ("/v1/pareto", {})):
            refused = client.post(path, json={"table": "mb", "objective": costs, **extra})
            assert refused.status_code == 422, refused.text[:500]
            body = refused.json()
            assert body["field"] == "objective" and body["limit"]["kind"] in ("points", "memory")
            assert body["limit"]["reached"] > body["limit"]["limit"], "says how far the build got"
            message = body["detail"][0]["msg"]
            assert f"{body['limit']['kind']} limit" in message and "lagrangian" in message
        hull = client.post("/v1/query", json={"table": "mb", "objective": costs, "budget_ms": 10,
                                              "method": "lagrangian"})
        assert hull.status_code == 200 and hull.json()["latency_ms"] <= 10
        assert client.get("/healthz", timeout=ANSWER_WITHIN_S).json()["status"] == "ok"
        assert client.post("/v1/query", json={"table": "mb", "budget_ms": 12}).status_code == 200
        assert rss_mib(proc.pid) - before < RSS_GROWTH_BOUND_MIB
        assert proc.poll() is None


# --- heavy work off the event loop -------------------------------------------------------------

def test_a_max_params_search_on_a_big_table_does_not_block_health_or_cached_queries(tmp_path: Path) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "real.json").write_bytes(EXAMPLE.read_bytes())
    with daemon_process(folder, tmp_path / "daemon.log") as (proc, client):
        front = client.post("/v1/pareto", json={"table": "real"}).json()["front"]
        lo, hi = front[0]["latency_ms"], front[-1]["latency_ms"]
        params = [p["params"] for p in front]
        cap = min(params) + 0.3 * (max(params) - min(params))
        # A params budget under a latency budget that cannot bind: a quick (params, cost) front.
        first = client.post("/v1/query", json={"table": "real", "budget_ms": hi * 1.2, "max_params": cap})
        assert first.status_code == 200, first.text[:500]
        # The same params budget under a binding latency budget: branch and bound, many seconds.
        slow: dict[str, object] = {}

        def ask_slow() -> None:
            with httpx.Client(base_url=client.base_url, timeout=600) as own:
                try:
                    slow["status"] = own.post("/v1/query", json={
                        "table": "real", "budget_ms": lo + 0.5 * (hi - lo), "max_params": cap}).status_code
                except httpx.HTTPError as exc:
                    slow["status"] = type(exc).__name__
        busy_from = cpu_seconds(proc.pid)
        worker = threading.Thread(target=ask_slow, daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        while cpu_seconds(proc.pid) - busy_from < 1.0 and "status" not in slow:
            assert time.monotonic() < deadline, "the daemon never started the search"
            time.sleep(0.05)
        assert "status" not in slow, "the search must still be running for this test to mean anything"
        health = client.get("/healthz", timeout=ANSWER_WITHIN_S)
        cached = client.post("/v1/query", json={"table": "real", "budget_ms": (lo + hi) / 2},
                             timeout=ANSWER_WITHIN_S)
        assert health.status_code == 200 and cached.status_code == 200
        assert cached.json()["latency_ms"] <= (lo + hi) / 2
        assert "status" not in slow, "both answered while the search was still running"


# --- corrupt table files ----------------------------------------------------------------------

def _corrupt(kind: str) -> str:
    """A table file with `Infinity` in a layer's choices, or `NaN` in its fit metadata."""
    obj = synthetic_table([[8, 16, 24], [16, 32], [32, 64]], seed=4).to_json()
    if kind == "inf-choices":
        obj["space"]["layers"][1]["choices"] = [16, "__bad__"]
    else:
        obj["fit"]["mape"] = "__bad__"
    return json.dumps(obj).replace('"__bad__"', "Infinity" if kind == "inf-choices" else "NaN")


@pytest.mark.parametrize("kind, field", [("inf-choices", "space.layers[1].choices[1]"), ("nan-metadata", "fit.mape")])
def test_a_corrupt_table_is_refused_alone_and_the_daemon_serves_the_other(tmp_path: Path, kind: str,
                                                                           field: str) -> None:
    folder = tmp_path / "tables"
    folder.mkdir()
    synthetic_table([[8, 16, 24], [16, 32], [32, 64]], seed=3).save(folder / "good.json")
    (folder / "bad.json").write_text(_corrupt(kind))
    log = tmp_path / "daemon.log"
    with daemon_process(folder, log) as (proc, client):
        assert client.get("/healthz").json() == {"status": "ok", "tables": 2, "broken": 1}
        listing = client.get("/v1/tables")
        assert listing.status_code == 200
        tables = {t["name"]: t for t in listing.json()["tables"]}
        assert tables["good"]["status"] == "ok"
        assert tables["bad"]["status"] == "error" and f"bad.json: {field}" in tables["bad"]["error"]
        assert "non-finite" in tables["bad"]["error"]
        assert client.post("/v1/query", json={"table": "good", "budget_ms": 100}).status_code == 200
        refused = client.post("/v1/query", json={"table": "bad", "budget_ms": 100})
        assert refused.status_code == 503 and "bad.json" in refused.json()["detail"]
    assert f"bad.json: {field}" in log.read_text(), "the refusal is in the log too"
