"""The query daemon: width search over the tables of a folder, as an HTTP/JSON service.

FastAPI on uvicorn. Tables live in memory (search/table_store.py) with one Searcher per
(table, objective), so a warm budget query is a look-up in the cached exact front, answered
on the event loop; everything else (building a front, branch and bound, marginals, fitting
loss samples) runs in a few worker threads (daemon_guard.WorkSlots), so /healthz and cached
answers never wait behind it. Every front a request builds is capped in points and memory.
The service binds loopback by default; any other address needs a bearer token, checked on
every request in constant time. Status codes: 404 unknown table, 422 invalid request (the
field is named; a front over its caps names the cap), 409 infeasible budget (the body states
the least latency achievable), 413 body too large, 401 missing or wrong token, 503 a table
whose file is broken or every work slot busy.
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

from . import daemon_models as m
from .daemon_guard import (Busy, DaemonConfigError, GuardMiddleware, WorkSlots, check_bind, is_loopback, replay,
                           token_from_file)
from .table_store import STATUS_ERROR, LoadedTable, TableStore

__all__ = ["DaemonConfigError", "check_bind", "is_loopback", "token_from_file", "create_app", "make_server",
           "bind_socket", "serve", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_MAX_BODY", "DEFAULT_WORK_SLOTS"]

logger = logging.getLogger("widthwise.daemon")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8731
#: Largest request body accepted (bytes); inline costs and loss samples fit well within it.
DEFAULT_MAX_BODY = 1024 * 1024
#: Heavy computations (front builds, branch and bound, marginals) run at once, each in a worker thread.
DEFAULT_WORK_SLOTS = 2
#: Requests that may wait for a work slot before more are refused with 503.
DEFAULT_WORK_QUEUE = 32


# --- searchers, cached per (table, objective) ------------------------------------------------

class SearchSlot:
    """One Searcher, a lock that runs its heavy work one request at a time, and its serialised fronts."""

    #: Serialised fronts kept (one per parameter budget); a 14x14 front is a few hundred KB.
    MAX_PARETO_BODIES = 4

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher
        self.lock = threading.Lock()
        self.pareto_bodies: dict[float | None, bytes] = {}


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
    """A JSON answer; never a non-finite number (a payload holding one becomes a 500 that says so)."""
    try:
        body = json.dumps(payload, allow_nan=False).encode()
    except ValueError:
        logger.error("an answer held a non-finite number (status %s); refused to send it", status)
        body, status = json.dumps({"detail": "the answer holds a non-finite number; the table or the "
                                             "objective overflows a float"}).encode(), 500
    return Response(body, status_code=status, media_type="application/json")


def _unprocessable(field: str, message: str, **extra: Any) -> Response:
    kind = "front_too_large" if "limit" in extra else "value_error"
    return _json({"detail": [{"loc": ["body", field], "msg": message, "type": kind}], "field": field, **extra}, 422)


# --- the app ---------------------------------------------------------------------------------

def create_app(tables: str | os.PathLike | TableStore, *, token: bytes | str | None = None,
               max_body: int = DEFAULT_MAX_BODY, limits: Any = None, work_slots: int = DEFAULT_WORK_SLOTS,
               work_queue: int = DEFAULT_WORK_QUEUE) -> GuardMiddleware:
    """The ASGI app over a tables folder (or a ready TableStore): guard -> query fast lane -> FastAPI.

    `limits` (engine.FrontLimits) caps every front a request builds; heavy work runs in at
    most `work_slots` worker threads. The FastAPI instance is `create_app(...).app.app`.
    """
    from . import engine   # imported here so `widthwise --help` does not pay for it

    limits = limits if limits is not None else engine.FrontLimits()
    store = tables if isinstance(tables, TableStore) else TableStore(tables)
    store.load_in_background()
    slots = WorkSlots(work_slots, work_queue)
    app = FastAPI(
        title="widthwise query daemon",
        version="1",
        description="Width search under a latency budget over the latency tables of a folder. "
                    "409 = infeasible budget (the body states min_latency_ms); 422 = invalid request "
                    "(the body names the field; a front over the size limits says which limit); "
                    "404 = unknown table; 401 = missing or wrong bearer token; 503 = broken table or busy.",
    )
    app.state.store = store
    app.state.work_slots = slots

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

    def version_for(name: str) -> LoadedTable:
        entry = store.get(name)
        if entry is None:
            raise HTTPException(404, f"unknown table {name!r}; known: {store.names()}")
        if entry.status == STATUS_ERROR or entry.version is None:
            raise HTTPException(503, f"table {name!r} cannot be served: {entry.error}")
        return entry.version

    def slot_for(version: LoadedTable, req: m._Request) -> SearchSlot:
        """The request's SearchSlot, built on a miss (in a worker thread: loss samples are fitted here)."""
        key, pinned, _ = _objective_key(req)

        def build() -> SearchSlot:
            objective_arg = req.objective if isinstance(req.objective, str) else req.objective.model_dump()
            samples = [[list(w), float(loss)] for w, loss in req.loss_samples] if req.loss_samples is not None else None
            objective = engine.make_objective(version.table, objective_arg, samples)
            return SearchSlot(engine.Searcher(version.table, objective, limits))
        return version.searchers.get_or_build(key, pinned, build)

    async def heavy(req: m._Request, version: LoadedTable, fn: Callable[[Any], Any],
                    render: Callable[[Any, SearchSlot], Response]) -> Response:
        """`fn(searcher)` in a work slot (never on the event loop); engine errors mapped to statuses."""
        def work() -> tuple[Any, SearchSlot]:
            slot = slot_for(version, req)
            with slot.lock:
                return fn(slot.searcher), slot
        try:
            result, slot = await slots.run(work)
        except Busy as exc:
            return Response(json.dumps({"detail": str(exc)}).encode(), status_code=503,
                            media_type="application/json", headers={"retry-after": "1"})
        except engine.InfeasibleBudget as exc:
            return _infeasible(exc)
        except engine.FrontLimitError as exc:
            logger.warning("table %s: %s", req.table, exc)
            return _unprocessable(exc.field, str(exc), limit=exc.limit)
        except (engine.ObjectiveError, ValueError) as exc:
            return _unprocessable(_objective_field(exc, req), str(exc))
        return render(result, slot)

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
                         422: {"model": m.LimitBody}, 503: {"model": m.ErrorBody}})
    async def query(req: m.QueryRequest) -> Response:
        version = version_for(req.table)
        key, _, label = _objective_key(req)
        slot = version.searchers.peek(key)
        try:
            found = slot.searcher.lookup(req.budget_ms, req.method, req.max_params) if slot is not None else None
        except engine.InfeasibleBudget as exc:
            return _infeasible(exc)
        if found is not None:
            return _json(_query_payload(req, label, found))
        return await heavy(req, version, lambda s: _run_query(s, req),
                           lambda ans, slot: _json(_query_payload(req, label, ans)))

    @app.post("/v1/pareto", response_model=m.ParetoResponse, tags=["search"],
              responses={404: {"model": m.ErrorBody}, 409: {"model": m.InfeasibleBody},
                         422: {"model": m.LimitBody}, 503: {"model": m.ErrorBody}})
    async def pareto(req: m.ParetoRequest) -> Response:
        version = version_for(req.table)
        key, _, label = _objective_key(req)
        slot = version.searchers.peek(key)
        body = slot.pareto_bodies.get(req.max_params) if slot is not None else None
        if body is not None:
            return Response(body, media_type="application/json")

        def build(searcher: Any) -> bytes:
            front = searcher.pareto(max_params=req.max_params)
            try:
                return json.dumps({"table": req.table, "objective": label, "count": len(front),
                                   "front": [a.to_json() for a in front]}, allow_nan=False).encode()
            except ValueError:
                raise engine.ObjectiveError("objective: the front holds a non-finite number (the costs overflow)") from None

        def render(body: bytes, slot: SearchSlot) -> Response:
            slot.pareto_bodies[req.max_params] = body
            while len(slot.pareto_bodies) > SearchSlot.MAX_PARETO_BODIES:
                del slot.pareto_bodies[next(iter(slot.pareto_bodies))]
            return Response(body, media_type="application/json")
        return await heavy(req, version, build, render)

    @app.post("/v1/marginals", response_model=m.MarginalsResponse, tags=["search"],
              responses={404: {"model": m.ErrorBody}, 409: {"model": m.InfeasibleBody},
                         503: {"model": m.ErrorBody}})
    async def marginals(req: m.MarginalsRequest) -> Response:
        version = version_for(req.table)
        label = _objective_key(req)[2]

        def render(per_layer: Any, slot: SearchSlot) -> Response:
            table = version.table
            layers = []
            for name, choices, probs in zip(table.layer_names, table.choices, per_layer):
                layers.append({"name": name, "widths": list(choices),
                               "probabilities": [float(probs.get(w, 0.0)) for w in choices]})
            return _json({"table": req.table, "objective": label, "budget_ms": req.budget_ms,
                          "temperature": req.temperature, "layers": layers})
        return await heavy(req, version, lambda s: s.marginals(req.budget_ms, req.temperature), render)

    def answer_cached_query(body: bytes) -> bytes | None:
        """The response body of a valid query a cached front answers at once; None defers to FastAPI."""
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
        try:
            found = slot.searcher.lookup(req.budget_ms, req.method, req.max_params) if slot is not None else None
        except ValueError:
            found = None   # infeasible: FastAPI's route answers in its documented shape
        if found is None:
            return None
        try:
            return json.dumps(_query_payload(req, label, found), allow_nan=False).encode()
        except ValueError:
            return None

    fast = QueryFastLane(app, answer_cached_query)
    return GuardMiddleware(fast, token=token, max_body=max_body)


def _run_query(searcher: Any, req: m.QueryRequest) -> Any:
    return searcher.query(req.budget_ms, method=req.method, max_params=req.max_params)


def _query_payload(req: m.QueryRequest, label: str, ans: Any) -> dict:
    return {"table": req.table, "objective": label, **ans.to_json()}


class QueryFastLane:
    """ASGI: answers POST /v1/query straight from a cached front, skipping FastAPI's routing.

    Same model, same payload as the FastAPI route; anything else (invalid, unknown table,
    work to do, infeasible budget) is handed on to FastAPI with the body replayed.
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


def _infeasible(exc: Exception) -> Response:
    """409: the budget cannot be met; the body states the least that can."""
    return _json({"error": "infeasible_budget", "detail": str(exc),
                  "min_latency_ms": _finite_or_none(getattr(exc, "min_latency_ms", None)),
                  "min_params": _finite_or_none(getattr(exc, "min_params", None))}, 409)


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
          token: bytes | str | None = None, max_body: int = DEFAULT_MAX_BODY, log_level: str = "info",
          limits: Any = None, work_slots: int = DEFAULT_WORK_SLOTS,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted; `announce` gets one line with the address actually bound.

    A table that fails to load is logged and listed as an error; it never stops the start.
    """
    check_bind(host, token)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = TableStore(tables_dir)
    app = create_app(store, token=token, max_body=max_body, limits=limits, work_slots=work_slots)
    sock = bind_socket(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    (announce or _print_flush)(f"widthwise daemon serving {len(store.names())} table(s) from {tables_dir} "
             f"on http://{shown}:{bound[1]} ({'token required' if token else 'no token'})")
    make_server(app, log_level=log_level).run(sockets=[sock])


def _print_flush(line: str) -> None:
    print(line, flush=True)
