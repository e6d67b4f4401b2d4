"""The daemon's front door: where it may bind, its bearer token, the ASGI guard, the work slots.

A non-loopback bind needs a shared token, read by the one token reader the agent uses too
(`device_agents.auth.load_token`); with a token every request must carry
`Authorization: Bearer <token>` (compared as bytes in constant time, refusals logged without
the token). Request bodies are capped before any parsing, with or without Content-Length.
Heavy computations run in worker threads, a few at a time (`WorkSlots`), never on the loop.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from typing import Any, Callable, Iterable

import anyio
import anyio.to_thread

from widthwise.device_agents import auth
from widthwise.errors import WidthwiseError

from .errors import BadRequest, BodyTooLarge, Busy, DaemonConfigError, Unauthorized, error_body

logger = logging.getLogger("widthwise.daemon")


# --- binding and tokens -------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """True when `host` names only this machine; `[::1]`, `LOCALHOST` and spaces are normalised first."""
    return auth.is_loopback(host.strip().strip("[]").lower())


def check_bind(host: str, token: bytes | str | None) -> None:
    """Refuse a non-loopback bind without a token: the daemon would answer anyone."""
    if not is_loopback(host) and not token:
        raise DaemonConfigError(
            f"--host {host} is not a loopback address: a shared token is required "
            "(--token-file FILE); every request must then carry 'Authorization: Bearer <token>'", field="host")


def token_from_file(path: str | os.PathLike) -> bytes:
    """The bearer token in `path`, by the agent's rules (`auth.load_token`); DaemonConfigError if unusable."""
    try:
        token = auth.load_token(path)
    except auth.ConfigError as exc:
        raise DaemonConfigError(str(exc), field="token_file") from None
    if not auth.token_file_is_private(path):
        logger.warning("token file %s is readable by group or others; chmod 600 it", path)
    return token


# --- work slots: heavy computations off the event loop -------------------------------------

class WorkSlots:
    """Runs heavy computations in worker threads, at most `slots` at once and `queue` more waiting.

    The event loop only awaits them, so /healthz and cached answers stay prompt while a
    front is being built; beyond the queue a request is refused (503) instead of piling up.
    """

    def __init__(self, slots: int, queue: int) -> None:
        if slots < 1 or queue < 0:
            raise ValueError(f"work slots must be >= 1 and the queue >= 0, got {slots} and {queue}")
        self.slots = slots
        self.queue = queue
        self._limiter: anyio.CapacityLimiter | None = None
        self._admitted = 0   # running + waiting; touched on the event loop only

    async def run(self, fn: Callable[[], Any]) -> Any:
        """`fn()` in a worker thread once a slot is free; Busy when slots and queue are full."""
        if self._admitted >= self.slots + self.queue:
            raise Busy(f"all {self.slots} work slots are busy and {self.queue} requests wait; retry shortly")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)   # made on the loop that uses it
        self._admitted += 1
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        finally:
            self._admitted -= 1

    @property
    def admitted(self) -> int:
        """Requests running or waiting for a slot now (what a probe of the queue reads)."""
        return self._admitted


# --- the guard in front of the app: auth and body size ---------------------------------------

class GuardMiddleware:
    """ASGI middleware: bearer-token check (when a token is set) and a request body cap."""

    def __init__(self, app: Callable, *, token: bytes | str | None, max_body: int) -> None:
        self.app = app
        self.token = (token.encode() if isinstance(token, str) else bytes(token)) if token else None
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self.token is not None:
            problem = self._auth_problem(headers.get(b"authorization"))
            if problem is not None:
                client = scope.get("client") or ("?", 0)
                logger.warning("refused %s %s from %s:%s: %s", scope.get("method"), scope.get("path"),
                               client[0], client[1], problem)
                await send_error(send, Unauthorized(problem, field="authorization"))
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await send_error(send, BadRequest("Content-Length is not a number", field="content-length"))
                return
            if too_big:
                await send_error(send, self._too_large())
                return
            await self.app(scope, receive, send)
            return
        body = await self._read_capped(receive)
        if body is None:
            await send_error(send, self._too_large())
            return
        await self.app(scope, replay(body, receive), send)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body larger than {self.max_body} bytes", field="body")

    def _auth_problem(self, header: bytes | None) -> str | None:
        if not header:
            return "missing bearer token"
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
            return "invalid bearer token"
        return None

    async def _read_capped(self, receive: Callable) -> bytes | None:
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def replay(body: bytes, receive: Callable) -> Callable:
    """A `receive` that hands back an already read body, then defers to the real one."""
    sent = False

    async def receive_again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return receive_again


async def send_error(send: Callable, error: WidthwiseError) -> None:
    """Answer with a typed error: its status and headers from errors.HTTP_STATUS, its body from `error_body`."""
    status, payload, headers = error_body(error)
    await send_json(send, status, payload, headers)


async def send_json(send: Callable, status: int, payload: dict, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with a JSON body straight on the ASGI channel (before any framework sees the request)."""
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
