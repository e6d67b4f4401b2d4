"""The query daemon: width search over the tables of a folder, as an HTTP/JSON service.

FastAPI on uvicorn. Tables live in memory (search/table_store.py) with one Searcher per
(table, objective), so a warm budget query is a look-up in the cached exact front. The
service binds loopback by default; any other address needs a bearer token, checked on
every request in constant time. Status codes: 404 unknown table, 422 invalid request
(the field is named), 409 infeasible budget (the body states the least latency achievable),
413 body too large, 401 missing or wrong token, 503 a table whose file is broken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from . import daemon_models as m
from .daemon_guard import DaemonConfigError, GuardMiddleware, check_bind, is_loopback, read_token_file, replay
from .table_store import STATUS_ERROR, LoadedTable, TableEntry, TableStore

__all__ = ["DaemonConfigError", "check_bind", "is_loopback", "read_token_file", "create_app", "make_server",
           "bind_socket", "serve", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_BODY"]

logger = logging.getLogger("widthwise.daemon")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8731
#: Largest request body accepted (bytes); inline costs and loss samples fit well within it.
DEFAULT_MAX_BODY = 1024 * 1024


# --- searchers, cached per (table, objective) ------------------------------------------------

class SearchSlot:
    """One Searcher and which operations on it have run once (after which they are cheap)."""

    MAX_WARM = 256
    #: Serialised fronts kept (one per parameter budget); a 14x14 front is a few hundred KB.
    MAX_PARETO_BODIES = 4

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher
        self.lock = threading.Lock()
        self.warm: set[tuple] = set()
        self.pareto_bodies: dict[float | None, bytes] = {}

    def run_cold(self, op: tuple | None, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(searcher)` under the slot's lock (first use builds caches) and mark `op` warm."""
        with self.lock:
            result = fn(self.searcher)
            if op is not None and len(self.warm) < self.MAX_WARM:
                self.warm.add(op)
            return result


def _objective_key(req: m._Request) -> tuple[str, bool, str]:
    """(cache key, pinned, label) of a request's objective: named ones pinned, inline ones hashed."""
    if isinstance(req.objective, str) and req.loss_samples is None:
        return req.objective, True, req.objective
    payload = {
        "objective": req.objective if isinstance(req.objective, str) else req.objective.model_dump(),
        "loss_samples": req.loss_samples,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    label = req.objective if isinstance(req.objective, str) else "inline"
    return digest, False, label


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, allow_nan=False).encode(), status_code=status, media_type="application/json")


def _unprocessable(field: str, message: str) -> Response:
    return _json({"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}], "field": field}, 422)


# --- the app ---------------------------------------------------------------------------------

def create_app(tables: str | os.PathLike | TableStore, *, token: str | None = None,
               max_body: int = DEFAULT_MAX_BODY) -> GuardMiddleware:
    """The ASGI app over a tables folder (or a ready TableStore): guard -> query fast lane -> FastAPI.

    The FastAPI instance (routes, OpenAPI schema) is `create_app(...).app.app`.
    """
    from . import engine   # imported here so `widthwise --help` does not pay for it

    store = tables if isinstance(tables, TableStore) else TableStore(tables)
    app = FastAPI(
        title="widthwise query daemon",
        version="1",
        description="Width search under a latency budget over the latency tables of a folder. "
                    "409 = infeasible budget (the body states min_latency_ms); 422 = invalid request "
                    "(the body names the field); 404 = unknown table; 401 = missing or wrong bearer token.",
    )
    app.state.store = store

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for e in exc.errors():
            loc, msg = list(e.get("loc", ())), str(e.get("msg", ""))
            if e.get("type") == "json_invalid" and len(loc) > 1:
                msg, loc = f"{msg} at character {loc[1]}", loc[:1]
            errors.append({"loc": loc, "msg": msg, "type": str(e.get("type", ""))})
        first = next((e["loc"] for e in errors if e["loc"]), ["body"])
        field = ".".join(str(p) for p in first[1:]) if len(first) > 1 else str(first[0])
        return _json({"detail": errors, "field": field}, 422)

    def entry_for(name: str) -> TableEntry:
        entry = store.get(name)
        if entry is None:
            raise HTTPException(404, f"unknown table {name!r}; known: {store.names()}")
        if entry.status == STATUS_ERROR:
            raise HTTPException(503, f"table {name!r} cannot be served: {entry.error}")
        return entry

    def slot_for(version: LoadedTable, req: m._Request) -> tuple[SearchSlot, str]:
        key, pinned, label = _objective_key(req)
        table = version.table

        def build() -> SearchSlot:
            objective_arg = req.objective if isinstance(req.objective, str) else req.objective.model_dump()
            samples = [[list(w), float(loss)] for w, loss in req.loss_samples] if req.loss_samples is not None else None
            objective = engine.make_objective(table, objective_arg, samples)
            return SearchSlot(engine.Searcher(table, objective))
        return version.searchers.get_or_build(key, pinned, build), label

    async def answer(req: m._Request, op: tuple | None, fn: Callable[[Any], Any]) -> Any:
        """Run `fn` on the request's Searcher: inline when warm, in a worker thread when not."""
        version = entry_for(req.table).version
        key, _, label = _objective_key(req)
        slot = version.searchers.peek(key)
        if slot is not None and op is not None and op in slot.warm:
            return fn(slot.searcher), slot, label, version

        def cold() -> tuple[Any, SearchSlot, str, LoadedTable]:
            slot, label = slot_for(version, req)
            return slot.run_cold(op, fn), slot, label, version
        return await run_in_threadpool(cold)

    async def guarded(req: m._Request, op: tuple | None, fn: Callable[[Any], Any], render: Callable) -> Response:
        """Answer with `fn(searcher)` (`op` None: always in a worker thread) and map engine errors."""
        try:
            result, slot, label, version = await answer(req, op, fn)
        except engine.InfeasibleBudget as exc:
            return _json({"error": "infeasible_budget", "detail": str(exc),
                          "min_latency_ms": _finite_or_none(getattr(exc, "min_latency_ms", None)),
                          "min_params": _finite_or_none(getattr(exc, "min_params", None))}, 409)
        except engine.ObjectiveError as exc:
            return _unprocessable(_objective_field(exc, req), str(exc))
        except ValueError as exc:
            return _unprocessable(_objective_field(exc, req), str(exc))
        return render(result, slot, label, version)

    @app.get("/healthz", response_model=m.HealthResponse, tags=["service"])
    async def healthz() -> Response:
        entries = store.entries()
        broken = sum(1 for e in entries if e.error is not None)
        return _json({"status": "ok", "tables": len(entries), "broken": broken})

    @app.get("/v1/tables", response_model=m.TablesResponse, tags=["tables"])
    async def tables_() -> Response:
        return _json({"tables": [e.describe() for e in store.entries()]})

    @app.post("/v1/query", response_model=m.QueryResponse, tags=["search"],
              responses={404: {"model": m.ErrorBody}, 409: {"model": m.InfeasibleBody},
                         503: {"model": m.ErrorBody}})
    async def query(req: m.QueryRequest) -> Response:
        def render(ans: Any, slot: SearchSlot, label: str, version: LoadedTable) -> Response:
            return _json(_query_payload(req, label, ans))
        return await guarded(req, _query_op(req), lambda s: _run_query(s, req), render)

    @app.post("/v1/pareto", response_model=m.ParetoResponse, tags=["search"],
              responses={404: {"model": m.ErrorBody}, 409: {"model": m.InfeasibleBody},
                         503: {"model": m.ErrorBody}})
    async def pareto(req: m.ParetoRequest) -> Response:
        slot = entry_for(req.table).version.searchers.peek(_objective_key(req)[0])
        body = slot.pareto_bodies.get(req.max_params) if slot is not None else None
        if body is not None:
            return Response(body, media_type="application/json")
        label = _objective_key(req)[2]

        def build(searcher: Any) -> bytes:
            front = searcher.pareto(max_params=req.max_params)
            return json.dumps({"table": req.table, "objective": label, "count": len(front),
                               "front": [a.to_json() for a in front]}, allow_nan=False).encode()

        def render(body: bytes, slot: SearchSlot, label: str, version: LoadedTable) -> Response:
            slot.pareto_bodies[req.max_params] = body
            while len(slot.pareto_bodies) > SearchSlot.MAX_PARETO_BODIES:
                del slot.pareto_bodies[next(iter(slot.pareto_bodies))]
            return Response(body, media_type="application/json")
        return await guarded(req, None, build, render)

    @app.post("/v1/marginals", response_model=m.MarginalsResponse, tags=["search"],
              responses={404: {"model": m.ErrorBody}, 409: {"model": m.InfeasibleBody},
                         503: {"model": m.ErrorBody}})
    async def marginals(req: m.MarginalsRequest) -> Response:
        def render(per_layer: Any, slot: SearchSlot, label: str, version: LoadedTable) -> Response:
            table = version.table
            layers = []
            for name, choices, probs in zip(table.layer_names, table.choices, per_layer):
                layers.append({"name": name, "widths": list(choices),
                               "probabilities": [float(probs.get(w, 0.0)) for w in choices]})
            return _json({"table": req.table, "objective": label, "budget_ms": req.budget_ms,
                          "temperature": req.temperature, "layers": layers})
        op = ("marginals",)
        return await guarded(req, op, lambda s: s.marginals(req.budget_ms, req.temperature), render)

    def answer_warm_query(body: bytes) -> bytes | None:
        """The response body of a valid query whose Searcher is warm; None defers to FastAPI."""
        try:
            req = m.QueryRequest.model_validate_json(body)
        except ValidationError:
            return None
        entry = store.get(req.table)
        version = entry.version if entry is not None else None
        if version is None:
            return None
        key, _, label = _objective_key(req)
        slot = version.searchers.peek(key)
        if slot is None or _query_op(req) not in slot.warm:
            return None
        try:
            ans = _run_query(slot.searcher, req)
        except ValueError:
            return None   # infeasible or refused: FastAPI's route says so in its documented shape
        return json.dumps(_query_payload(req, label, ans), allow_nan=False).encode()

    fast = QueryFastLane(app, answer_warm_query)
    return GuardMiddleware(fast, token=token, max_body=max_body)


def _query_op(req: m.QueryRequest) -> tuple:
    return ("query", req.method, req.max_params)


def _run_query(searcher: Any, req: m.QueryRequest) -> Any:
    return searcher.query(req.budget_ms, method=req.method, max_params=req.max_params)


def _query_payload(req: m.QueryRequest, label: str, ans: Any) -> dict:
    return {"table": req.table, "objective": label, **ans.to_json()}


class QueryFastLane:
    """ASGI: answers POST /v1/query straight from a warm Searcher, skipping FastAPI's routing.

    Same model, same payload as the FastAPI route; anything else (invalid, unknown table,
    cold Searcher, infeasible budget) is handed on to FastAPI with the body replayed.
    """

    PATH = "/v1/query"

    def __init__(self, app: Callable, answer: Callable[[bytes], bytes | None]) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return   # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        payload = self.answer(body)
        if payload is None:
            await self.app(scope, replay(body, receive), send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def _objective_field(exc: Exception, req: m._Request) -> str:
    """Which request field an objective error is about: the engine's own word, else a best guess."""
    named = getattr(exc, "field", None)
    if isinstance(named, str) and named:
        return named
    text = str(exc).lower()
    prefix = text.split(":", 1)[0].strip()
    if prefix in type(req).model_fields:
        return prefix
    if text.startswith(("costs", "objective")):
        return "objective"
    if req.loss_samples is not None and ("loss" in text or "sample" in text):
        return "loss_samples"
    if getattr(req, "max_params", None) is not None and "param" in text and isinstance(req.objective, str):
        return "max_params"
    return "objective"


# --- running it ------------------------------------------------------------------------------

def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.create_server((host.strip("[]"), port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def make_server(app: Any, *, log_level: str = "warning") -> Any:
    """A uvicorn server for `app`, on uvloop and httptools when installed; over 1,024 connections get 503."""
    import uvicorn

    config = uvicorn.Config(app, loop=_available("uvloop", "asyncio"), http=_available("httptools", "h11"),
                            lifespan="off", access_log=False, log_level=log_level,
                            timeout_keep_alive=30, server_header=False, limit_concurrency=1024)
    return uvicorn.Server(config)


def _available(module: str, fallback: str) -> str:
    import importlib.util

    return module if importlib.util.find_spec(module) is not None else fallback


def serve(tables_dir: str | os.PathLike, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          token: str | None = None, max_body: int = DEFAULT_MAX_BODY, log_level: str = "info",
          announce: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; `announce` gets one line with the address actually bound."""
    check_bind(host, token)
    store = TableStore(tables_dir)
    app = create_app(store, token=token, max_body=max_body)
    sock = bind_socket(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for entry in store.entries():
        if entry.error:
            logger.warning("table %s: %s", entry.name, entry.error)
    (announce or _print_flush)(f"widthwise daemon serving {len(store.names())} table(s) from {tables_dir} "
             f"on http://{shown}:{bound[1]} ({'token required' if token else 'no token'})")
    make_server(app, log_level=log_level).run(sockets=[sock])


def _print_flush(line: str) -> None:
    print(line, flush=True)
