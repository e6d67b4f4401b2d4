"""The query daemon: width search over the tables of a folder, as an HTTP/JSON service.

FastAPI on uvicorn. Tables live in memory (search/table_store.py) with one Searcher per
(table, objective), so a warm budget query is a look-up in the cached exact front, answered
on the event loop; everything else (building a front, branch and bound, marginals, fitting
loss samples) runs in a few worker threads (daemon_guard.WorkSlots), so /healthz and cached
answers never wait behind it. Every front a request builds is capped in points and memory.
The service binds loopback by default; any other address needs a bearer token, checked on
every request in constant time. Answers are built by `answers.answer_*`, the functions the
CLI prints with `--json`; every error is a typed search error whose code maps to its HTTP
status in one table (errors.HTTP_STATUS), its body carrying `code`, `field` and `detail`.

The routes are module-level functions over one `DaemonState` (the tables, the work slots,
the front limits), which `create_app` puts on the FastAPI app; `QueryFastLane` answers a
query that a cached front answers at once with the same function, before FastAPI routes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from widthwise.errors import WidthwiseError

from . import daemon_models as m
from .answers import answer_marginals, answer_pareto, answer_query, encode
from .daemon_guard import GuardMiddleware, WorkSlots, check_bind, is_loopback, replay, token_from_file
from .errors import (DaemonConfigError, FrontLimitError, InvalidRequest, TableUnavailable, UnknownTable,
                     error_body)
from .front_limits import FrontLimits
from .table_store import STATUS_ERROR, STATUS_LOADING, LoadedTable, TableStore

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

JSON = "application/json"


# --- searchers, cached per (table, objective) ------------------------------------------------

class SearchSlot:
    """One Searcher, a lock that runs its heavy work one request at a time, and its serialised fronts."""

    #: Serialised fronts kept (one per parameter budget); a 14x14 front is a few hundred KB.
    MAX_PARETO_BODIES = 4

    def __init__(self, searcher: Any) -> None:
        self.searcher = searcher
        self.lock = threading.Lock()
        self.pareto_bodies: dict[float | None, bytes] = {}

    def keep_pareto_body(self, max_params: float | None, body: bytes) -> None:
        """Remember a serialised front (on the event loop), dropping the oldest beyond the cap."""
        self.pareto_bodies[max_params] = body
        while len(self.pareto_bodies) > self.MAX_PARETO_BODIES:
            del self.pareto_bodies[next(iter(self.pareto_bodies))]


def _objective_key(req: m._Request) -> tuple[str, bool]:
    """(cache key, pinned) of a request's objective: named ones pinned, inline ones and loss samples hashed."""
    if isinstance(req.objective, str) and req.loss_samples is None:
        return req.objective, True
    payload = {
        "objective": req.objective if isinstance(req.objective, str) else req.objective.model_dump(),
        "loss_samples": req.loss_samples,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest(), False


@dataclass
class DaemonState:
    """What every route reads: the tables, the work slots for heavy work, the caps on fronts."""

    store: TableStore
    slots: WorkSlots
    limits: FrontLimits

    def version(self, name: str) -> LoadedTable:
        """The version of table `name` that serves; UnknownTable (404) or TableUnavailable (503)."""
        entry = self.store.get(name)
        if entry is None:
            raise UnknownTable(f"unknown table {name!r}; known: {self.store.names()}", field="table")
        if entry.status == STATUS_LOADING:
            raise TableUnavailable(f"table {name!r} is still loading; retry shortly", field="table")
        if entry.status == STATUS_ERROR or entry.version is None:
            raise TableUnavailable(f"table {name!r} cannot be served: {entry.error}", field="table")
        return entry.version

    def cached_slot(self, version: LoadedTable, req: m._Request) -> SearchSlot | None:
        """The request's SearchSlot if it is built already (never builds: the event loop's path)."""
        return version.searchers.peek(_objective_key(req)[0])

    def cached_query(self, version: LoadedTable, req: m.QueryRequest) -> dict | None:
        """The answer to `req` when cached structures give it at once, else None (InfeasibleBudget may say why)."""
        slot = self.cached_slot(version, req)
        if slot is None:
            return None
        return answer_query(slot.searcher, req.table, req.budget_ms, req.method, req.max_params, cached_only=True)

    async def work(self, version: LoadedTable, req: m._Request, fn: Callable[[Any], Any]) -> tuple[Any, SearchSlot]:
        """`fn(searcher)` in a work slot (never on the event loop), with the slot it ran on."""
        def run() -> tuple[Any, SearchSlot]:
            slot = self._slot(version, req)
            with slot.lock:
                return fn(slot.searcher), slot
        return await self.slots.run(run)

    def _slot(self, version: LoadedTable, req: m._Request) -> SearchSlot:
        """The request's SearchSlot, built on a miss (in a worker thread: loss samples are fitted here)."""
        from . import engine   # imported here so `widthwise --help` does not pay for it

        key, pinned = _objective_key(req)

        def build() -> SearchSlot:
            objective_arg = req.objective if isinstance(req.objective, str) else req.objective.model_dump()
            samples = [[list(w), float(loss)] for w, loss in req.loss_samples] if req.loss_samples is not None else None
            objective = engine.make_objective(version.table, objective_arg, samples)
            return SearchSlot(engine.Searcher(version.table, objective, self.limits))
        return version.searchers.get_or_build(key, pinned, build)


def _state(request: Request) -> DaemonState:
    return request.app.state.daemon


def _json(payload: Any, status: int = 200, headers: Iterable[tuple[bytes, bytes]] = ()) -> Response:
    """A JSON answer, encoded by the one encoder the CLI prints with (never a non-finite number)."""
    return Response(encode(payload), status_code=status, media_type=JSON,
                    headers={name.decode(): value.decode() for name, value in headers})


# --- the routes --------------------------------------------------------------------------------

router = APIRouter()
_SEARCH_ERRORS = {404: {"model": m.ErrorBody}, 409: {"model": m.InfeasibleBody}, 422: {"model": m.LimitBody},
                  503: {"model": m.ErrorBody}}


@router.get("/healthz", response_model=m.HealthResponse, tags=["service"])
async def healthz(request: Request) -> Response:
    """Liveness, with the count of tables and of broken ones."""
    entries = _state(request).store.entries()
    return _json({"status": "ok", "tables": len(entries), "broken": sum(1 for e in entries if e.error is not None)})


@router.get("/v1/tables", response_model=m.TablesResponse, tags=["tables"])
async def tables(request: Request) -> Response:
    """Every table of the folder: identity, provenance, fit quality, health."""
    return _json({"tables": [e.describe() for e in _state(request).store.entries()]})


@router.post("/v1/query", response_model=m.QueryResponse, tags=["search"], responses=_SEARCH_ERRORS)
async def query(req: m.QueryRequest, request: Request) -> Response:
    """The configuration of least cost within the budget: a look-up when cached, else in a work slot."""
    state = _state(request)
    version = state.version(req.table)
    found = state.cached_query(version, req)
    if found is None:
        found, _ = await state.work(version, req, lambda searcher: answer_query(
            searcher, req.table, req.budget_ms, req.method, req.max_params))
    return _json(found)


@router.post("/v1/pareto", response_model=m.ParetoResponse, tags=["search"], responses=_SEARCH_ERRORS)
async def pareto(req: m.ParetoRequest, request: Request) -> Response:
    """The exact front, serialised once per (table, objective, max_params) and kept."""
    state = _state(request)
    version = state.version(req.table)
    slot = state.cached_slot(version, req)
    body = slot.pareto_bodies.get(req.max_params) if slot is not None else None
    if body is None:
        body, slot = await state.work(version, req, lambda searcher: encode(
            answer_pareto(searcher, req.table, req.max_params)))
        slot.keep_pareto_body(req.max_params, body)
    return Response(body, media_type=JSON)


@router.post("/v1/marginals", response_model=m.MarginalsResponse, tags=["search"], responses=_SEARCH_ERRORS)
async def marginals(req: m.MarginalsRequest, request: Request) -> Response:
    """Per-variable width probabilities at a budget and a temperature, in a work slot."""
    state = _state(request)
    version = state.version(req.table)
    found, _ = await state.work(version, req, lambda searcher: answer_marginals(
        searcher, req.table, req.budget_ms, req.temperature))
    return _json(found)


async def typed_error(request: Request, exc: WidthwiseError) -> Response:
    """Any typed error: status and headers by its code (errors.HTTP_STATUS), body `code`, `field`, `detail`."""
    if isinstance(exc, FrontLimitError):
        logger.warning("%s: %s", request.url.path, exc)
    status, body, headers = error_body(exc)
    return _json(body, status, headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """A body the request models refuse, as an InvalidRequest naming the first field at fault."""
    return await typed_error(request, invalid_request_error(exc.errors()))


def invalid_request_error(raw: Any) -> InvalidRequest:
    """Pydantic's errors as one InvalidRequest: the list of {loc, msg, type}, the first field named."""
    errors = []
    for e in raw:
        loc, msg = list(e.get("loc", ())), str(e.get("msg", ""))
        if e.get("type") == "json_invalid" and len(loc) > 1:
            msg, loc = f"{msg} at character {loc[1]}", loc[:1]
        errors.append({"loc": loc, "msg": msg, "type": str(e.get("type", ""))})
    first = next((e["loc"] for e in errors if e["loc"]), ["body"])
    field = ".".join(str(p) for p in first[1:]) if len(first) > 1 else str(first[0])
    message = next((e["msg"] for e in errors), "invalid request")
    return InvalidRequest(f"{field}: {message}", field=field, errors=errors)


# --- the app -----------------------------------------------------------------------------------

def create_app(tables: str | os.PathLike | TableStore, *, token: bytes | str | None = None,
               max_body: int = DEFAULT_MAX_BODY, limits: FrontLimits | None = None,
               work_slots: int = DEFAULT_WORK_SLOTS, work_queue: int = DEFAULT_WORK_QUEUE) -> GuardMiddleware:
    """The ASGI app over a tables folder (or a ready TableStore): guard -> query fast lane -> FastAPI.

    `limits` caps every front a request builds; heavy work runs in at most `work_slots`
    worker threads. The FastAPI instance is `create_app(...).app.app`.
    """
    store = tables if isinstance(tables, TableStore) else TableStore(tables)
    store.load_in_background()
    state = DaemonState(store, WorkSlots(work_slots, work_queue), limits if limits is not None else FrontLimits())
    app = FastAPI(
        title="widthwise query daemon",
        version="1",
        description="Width search under a latency budget over the latency tables of a folder. Every error "
                    "body has code, field and detail: 409 = infeasible budget (min_latency_ms states the "
                    "least achievable); 422 = invalid request (a front over the size limits says which "
                    "limit); 404 = unknown table; 401 = missing or wrong bearer token; 503 = broken table or busy.",
    )
    app.state.daemon = state
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(WidthwiseError, typed_error)
    app.include_router(router)
    return GuardMiddleware(QueryFastLane(app, state), token=token, max_body=max_body)


class QueryFastLane:
    """ASGI: answers POST /v1/query straight from a cached front, skipping FastAPI's routing.

    Same model, same answering function (`DaemonState.cached_query`) as the route; anything
    else (invalid, unknown table, work to do, infeasible budget) is handed on to FastAPI with
    the body replayed, so it is answered there in its documented shape.
    """

    PATH = "/v1/query"

    def __init__(self, app: Callable, state: DaemonState) -> None:
        self.app = app
        self.state = state

    def answer(self, body: bytes) -> bytes | None:
        """The response body of a valid query a cached front answers at once; None defers to FastAPI."""
        try:
            req = m.QueryRequest.model_validate_json(body)
            found = self.state.cached_query(self.state.version(req.table), req)
            return encode(found) if found is not None else None
        except (ValidationError, WidthwiseError):
            return None

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
