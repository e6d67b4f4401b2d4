"""Typed errors: every search error a user sees has a code and a field, and the daemon's one status table."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import widthwise.search
import widthwise.search.errors as errors
from widthwise.errors import WidthwiseError
from widthwise.search import daemon
from widthwise.search.table_store import TableStore
from tests.search.serving import running
from tests.support.synthetic import anti_latency_costs, mobilenet_v1_table, synthetic_table

CHOICES = [[8, 16, 24], [16, 32, 48, 64], [32, 64, 96], [64, 128]]

#: (module, exception) raised inside the search but never to a user: the Searcher checks the
#: input first, or turns the exception into a typed error (engine.py), or it guards a programming error.
INTERNAL = {
    ("branch_bound", "ValueError"), ("daemon_guard", "ValueError"),
    ("front_limits", "ValueError"), ("front_limits", "FrontLimitExceeded"), ("greedy", "GreedyStuck"),
    ("lagrangian", "LagrangianInfeasible"), ("marginals", "ValueError"), ("pareto_front", "ValueError"),
    ("branch_bound", "SearchTimedOut"),
    ("two_budget", "LagrangianInfeasible"), ("two_budget", "ValueError"), ("table_store", "LookupError"), ("table_store", "NotADirectoryError"),
    ("table", "ValueError"), ("tree", "ValueError"),
}


def _raised(module: object) -> Iterator[tuple[str, object]]:
    """(name, what it resolves to) of every `raise NAME(...)` in a module's source."""
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
            name = node.exc.func.id
            yield name, getattr(module, name, None) or getattr(builtins, name, None)


def _is_typed(target: object, module: object) -> bool:
    """A WidthwiseError class, or a helper whose annotated return type is one."""
    if inspect.isfunction(target):
        target = getattr(module, str(target.__annotations__.get("return")), None)
    return isinstance(target, type) and issubclass(target, WidthwiseError)


def test_every_error_the_search_raises_to_a_user_is_typed() -> None:
    seen = set()
    for info in pkgutil.iter_modules(widthwise.search.__path__):
        if info.name == "viterbi_jit":
            continue   # numba kernels: they return status codes, they raise nothing
        module = importlib.import_module(f"widthwise.search.{info.name}")
        for name, target in _raised(module):
            if not _is_typed(target, module):
                assert (info.name, name) in INTERNAL, f"search/{info.name}.py raises an untyped {name}"
                seen.add((info.name, name))
    assert seen == INTERNAL, f"no longer raised, drop from INTERNAL: {INTERNAL - seen}"


def test_every_error_class_has_its_own_code_and_a_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, WidthwiseError)
               and c.__module__ == errors.__name__]
    codes = [c.__dict__.get("code") for c in classes]
    assert all(isinstance(code, str) for code in codes) and len(set(codes)) == len(codes)
    assert errors.http_status(errors.FrontLimitError("x", field="objective", limit={})) == 422, "inherits invalid_query"
    assert errors.http_status(errors.UnknownTable("x", field="table")) == 404
    status, body, headers = errors.error_body(errors.Busy("all slots busy"))
    assert (status, body["code"], headers) == (503, "busy", [(b"retry-after", b"1")])


def test_a_422_body_lists_the_error_as_fastapi_does() -> None:
    limit = {"kind": "points", "limit": 10, "reached": 20, "block": 2, "blocks": 5}
    status, body, _ = errors.error_body(errors.FrontLimitError("objective: too big", field="objective", limit=limit))
    assert status == 422 and body["code"] == "front_too_large" and body["field"] == "objective"
    assert body["detail"] == [{"loc": ["body", "objective"], "msg": "objective: too big", "type": "front_too_large"}]
    assert body["limit"] == limit
    status, body, _ = errors.error_body(errors.InfeasibleBudget("too fast", float("inf"), 3.0, field="max_params"))
    assert status == 409 and body["min_latency_ms"] is None and body["min_params"] == 3.0, "never a non-finite number"


# --- the daemon's error bodies ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tables")
    synthetic_table(CHOICES, seed=3).save(path / "small.json")
    (path / "broken.json").write_text('{"format": "widthwise-table/1", "space": ')
    mobilenet_v1_table(seed=0).save(path / "mb.json")
    return path


@pytest.fixture(scope="module")
def client(folder: Path) -> Iterator[httpx.Client]:
    with running(daemon.create_app(TableStore(folder, check_interval=0.05), max_body=64 * 1024)) as c:
        yield c


BAD_BODIES = [
    (b'{"table": "small", "budget_ms": NaN}', "budget_ms", "invalid_request"),
    (b'{"table": "small", "budget_ms": Infinity}', "budget_ms", "invalid_request"),
    (b'{"table": "small", "budget_ms": -1}', "budget_ms", "invalid_request"),
    (b'{"table": "small", "budget_ms": 0}', "budget_ms", "invalid_request"),
    (b'{"table": "small", "budget_ms": "fast"}', "budget_ms", "invalid_request"),
    (b'{"table": "small"}', "budget_ms", "invalid_request"),
    (b'{"budget_ms": 5}', "table", "invalid_request"),
    (b'{"table": "../small", "budget_ms": 5}', "table", "invalid_request"),
    (b'{"table": "small", "budget_ms": 5, "method": "magic"}', "method", "invalid_request"),
    (b'{"table": "small", "budget_ms": 5, "max_params": -3}', "max_params", "invalid_request"),
    (b'{"table": "small", "budget_ms": 5, "objective": "latency"}', "objective", "invalid_request"),
    (b'{"table": "small", "budget_ms": 5, "objective": "/etc/passwd"}', "objective", "invalid_request"),
    (b'{"table": "small", "budget_ms": 5, "objective": {"format": "widthwise-costs/1", "unary": [[1, 2]]}}',
     "objective", "objective_invalid"),
    (b'{"table": "small", "budget_ms": 5, "loss_samples": [[[8, 16], 0.5]]}', "loss_samples", "objective_invalid"),
    (b'{"table": "small", "budget_ms": 5, "max_params": 10, "method": "lagrangian"}', "max_params", "invalid_query"),
    (b'{"table": "small", "budget_ms": 5, "budgetms": 5}', "budgetms", "invalid_request"),
    (b'{"table": "small", "budget_ms": 5', "body", "invalid_request"),
    (b'[1, 2]', "body", "invalid_request"),
]


@pytest.mark.parametrize("raw, field, code", BAD_BODIES)
def test_invalid_query_is_422_naming_the_field(client: httpx.Client, raw: bytes, field: str, code: str) -> None:
    response = client.post("/v1/query", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"].split(".")[0] == field and body["code"] == code, body
    assert body["detail"] and all({"loc", "msg", "type"} <= set(d) for d in body["detail"])
    assert client.get("/healthz").status_code == 200


def test_invalid_marginals_temperature_is_422(client: httpx.Client) -> None:
    for temperature in (0, -1, "hot"):
        response = client.post("/v1/marginals", json={"table": "small", "budget_ms": 5, "temperature": temperature})
        assert response.status_code == 422 and response.json()["field"] == "temperature"


def test_unknown_and_broken_tables(client: httpx.Client) -> None:
    for path, body in (("/v1/query", {"budget_ms": 5}), ("/v1/marginals", {"budget_ms": 5, "temperature": 1}),
                       ("/v1/pareto", {})):
        response = client.post(path, json={"table": "nope", **body})
        assert response.status_code == 404 and "nope" in response.json()["detail"]
        assert response.json()["code"] == "unknown_table" and response.json()["field"] == "table"
        response = client.post(path, json={"table": "broken", **body})
        assert response.status_code == 503 and "broken.json" in response.json()["detail"]
        assert response.json()["code"] == "table_unavailable" and response.json()["field"] == "table"


def test_a_front_over_its_cap_names_the_objective(client: httpx.Client) -> None:
    costs = anti_latency_costs(mobilenet_v1_table(seed=0))
    response = client.post("/v1/pareto", json={"table": "mb", "objective": costs})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "front_too_large" and body["field"] == "objective" and body["limit"]["kind"]


def test_an_oversize_body_is_413_with_its_code(client: httpx.Client) -> None:
    padding = [[[8, 16, 32, 64], 0.5]] * 4000
    response = client.post("/v1/query", json={"table": "small", "budget_ms": 5, "loss_samples": padding})
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"

    def chunked() -> Iterator[bytes]:
        yield b'{"table": "small", "budget_ms": 5, "loss_samples": ['
        for _ in range(4000):
            yield b'[[8, 16, 32, 64], 0.5],'
        yield b'[[8, 16, 32, 64], 0.5]]}'
    assert client.post("/v1/query", content=chunked()).status_code == 413
    assert client.post("/v1/query", json={"table": "small", "budget_ms": 50}).status_code == 200
