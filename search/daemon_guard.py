"""The daemon's front door: where it may bind, its bearer token, and the ASGI guard.

A non-loopback bind needs a shared token; with a token every request must carry
`Authorization: Bearer <token>` (compared in constant time, refusals logged without the
token). Request bodies are capped before any parsing, with or without Content-Length.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import stat
from pathlib import Path
from typing import Callable, Iterable

logger = logging.getLogger("widthwise.daemon")

#: Shortest bearer token accepted.
MIN_TOKEN_CHARS = 16


class DaemonConfigError(ValueError):
    """The daemon cannot start as configured (non-loopback without a token, bad token file)."""


# --- binding and tokens -------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """True when `host` names only this machine (127.0.0.0/8, ::1 or "localhost")."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False   # a host name other than localhost may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token: the daemon would answer anyone."""
    if not is_loopback(host) and not token:
        raise DaemonConfigError(
            f"--host {host} is not a loopback address: a shared token is required "
            "(--token-file FILE); every request must then carry 'Authorization: Bearer <token>'")


def read_token_file(path: str | os.PathLike) -> str:
    """The token in `path` (surrounding whitespace removed); DaemonConfigError if unusable."""
    try:
        st = os.stat(path)
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DaemonConfigError(f"token file {str(path)!r}: cannot read: {exc}") from exc
    if len(token) < MIN_TOKEN_CHARS:
        raise DaemonConfigError(f"token file {str(path)!r}: the token must have at least {MIN_TOKEN_CHARS} characters")
    if any(ch.isspace() for ch in token):
        raise DaemonConfigError(f"token file {str(path)!r}: the token must be one line without spaces")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("token file %s is readable by group or others; chmod 600 it", path)
    return token


# --- the guard in front of the app: auth and body size ---------------------------------------

class GuardMiddleware:
    """ASGI middleware: bearer-token check (when a token is set) and a request body cap."""

    def __init__(self, app: Callable, *, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
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
                await send_json(send, 401, {"detail": problem}, [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                await send_json(send, 400, {"detail": "Content-Length is not a number"})
                return
            if too_big:
                await send_json(send, 413, {"detail": f"request body larger than {self.max_body} bytes"})
                return
            await self.app(scope, receive, send)
            return
        body = await self._read_capped(receive)
        if body is None:
            await send_json(send, 413, {"detail": f"request body larger than {self.max_body} bytes"})
            return
        await self.app(scope, replay(body, receive), send)

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


async def send_json(send: Callable, status: int, payload: dict, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
