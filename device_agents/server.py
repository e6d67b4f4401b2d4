"""The agent's server: frames in, handler calls, frames out, over TCP or a serial line.

Every failure (bad frame, bad request, wrong token, a handler that raises) becomes an
error frame and the server goes on with the next request. Requests run one at a time
across all connections, so two clients never distort each other's timings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from . import __version__
from .auth import new_nonce, require_token_for_bind, verify_request
from .errors import AgentConnectionError, AgentError, AgentTimeout, BadRequest, FrameError
from .protocol import (
    MAX_REQUEST_ID,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Frame,
    error_header,
    negotiate_version,
    result_header,
)
from .transport import FrameChannel, TcpStream, default_cap, open_serial

Handler = Callable[[dict, bytes], tuple[dict, bytes]]
log = logging.getLogger("device_agents.server")

#: Request types the server answers itself, before the handler table.
SERVER_TYPES = ("challenge",)


@dataclass
class Session:
    """Per-connection state: the nonce requests must sign, the negotiated version."""

    peer: str
    nonce: str | None = None
    version: int = PROTOCOL_VERSION
    requests: int = 0
    #: (request header, payload CRC, answer header, answer payload) of the last request, whose
    #: answer is resent when exactly the same request (same id too) comes again
    last_answer: tuple[dict, int, dict, bytes] | None = None


@dataclass
class ServerConfig:
    """Limits and credentials of one server."""

    token: bytes | None = None
    max_frame_bytes: int | None = None  # None: the transport's default cap
    idle_timeout_s: float = 3600.0  # a TCP connection silent this long is closed
    frame_timeout_s: float = 10.0  # a TCP frame stalled half-way this long is truncated
    serial_frame_timeout_s: float = 1.0  # the same on a serial line, where frames flow without gaps
    max_connections: int = 8

    def cap_for(self, transport: str) -> int:
        cap = default_cap(transport) if self.max_frame_bytes is None else self.max_frame_bytes
        if cap < MIN_MAX_FRAME:
            raise ValueError(f"max frame bytes must be at least {MIN_MAX_FRAME}, got {cap}")
        return cap


def default_handlers() -> Mapping[str, Handler]:
    """The execution handlers of device_agents.handlers (imported on first use)."""
    from .handlers import HANDLERS  # noqa: PLC0415

    return HANDLERS


@dataclass
class AgentServer:
    """Dispatches decoded requests to a handler table, enforcing protocol and auth."""

    handlers: Mapping[str, Handler] | None = None
    config: ServerConfig = field(default_factory=ServerConfig)
    _exec_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if self.handlers is None:
            self.handlers = default_handlers()

    # --- one request ------------------------------------------------------------------

    def respond(self, session: Session, frame: Frame, max_frame_bytes: int) -> tuple[dict, bytes]:
        """The response (header, payload) to one decoded frame; never raises AgentError."""
        header = frame.header
        rid = frame.request_id
        try:
            if rid is None:
                raise BadRequest(f"request id must be an integer in [0, {MAX_REQUEST_ID}], got {header.get('id')!r}")
            rtype = header.get("type")
            if not isinstance(rtype, str):
                raise BadRequest(f"request 'type' must be a string, got {rtype!r}")
            version = header.get("v", PROTOCOL_VERSION)
            if isinstance(version, bool) or not isinstance(version, int):
                raise BadRequest(f"'v' must be an integer protocol version, got {version!r}")
            if version not in SUPPORTED_VERSIONS:
                negotiate_version([version])  # raises ProtocolVersionError naming both sides
            if rtype == "challenge":
                body = self._challenge(session, header, max_frame_bytes)
                return result_header(rid, body, session.version), b""
            if self.config.token is not None:
                try:
                    verify_request(self.config.token, session.nonce, header)
                except AgentError as exc:
                    log.warning("refused %s request %s from %s: %s", rtype, rid, session.peer, exc.message)
                    raise
            last = session.last_answer
            payload_crc = zlib.crc32(frame.payload)
            if last is not None and last[0] == header and last[1] == payload_crc:
                return last[2], last[3]  # a resend after a corrupted answer: no need to time again
            header_out, payload_out = self._dispatch(session, rtype, rid, header, frame.payload, max_frame_bytes)
            session.last_answer = (header, payload_crc, header_out, payload_out)
            return header_out, payload_out
        except AgentError as exc:
            if exc.code != "unauthorized":
                log.info("error answering %s from %s: %s: %s", header.get("type"), session.peer, exc.code, exc.message)
            return error_header(rid, exc, session.version), b""

    def _dispatch(self, session: Session, rtype: str, rid: int | None, header: dict, payload: bytes, max_frame_bytes: int) -> tuple[dict, bytes]:
        """Run the handler of an authenticated request; every failure becomes an error header."""
        try:
            handler = self.handlers.get(rtype)  # type: ignore[union-attr]
            if handler is None:
                known = ", ".join(sorted({*SERVER_TYPES, *self.handlers}))  # type: ignore[misc]
                raise BadRequest(f"unknown request type {rtype!r}; this agent answers: {known}", type=rtype)
            with self._exec_lock:
                body, payload = handler(header, payload)
            if rtype == "hello":
                body = dict(body)
                body["protocol"] = self._protocol_info(session, max_frame_bytes)
            session.requests += 1
            return result_header(rid, body, session.version), payload
        except AgentError as exc:
            if exc.code != "unauthorized":
                log.info("error answering %s from %s: %s: %s", header.get("type"), session.peer, exc.code, exc.message)
            return error_header(rid, exc, session.version), b""
        except Exception as exc:  # a handler bug must not take the agent down
            log.error("handler for %r failed:\n%s", header.get("type"), traceback.format_exc())
            err = AgentError(f"internal error in the agent: {type(exc).__name__}: {exc}")
            return error_header(rid, err, session.version), b""

    def _protocol_info(self, session: Session, max_frame_bytes: int) -> dict:
        return {
            "version": session.version,
            "supported": list(SUPPORTED_VERSIONS),
            "max_frame_bytes": max_frame_bytes,
            "auth_required": self.config.token is not None,
        }

    def _challenge(self, session: Session, header: dict, max_frame_bytes: int) -> dict:
        session.version = negotiate_version(header.get("versions"))
        session.nonce = new_nonce()
        session.last_answer = None  # a new session (on a serial line: maybe a new client)
        body = {"nonce": session.nonce, "agent_version": __version__}
        body["protocol"] = self._protocol_info(session, max_frame_bytes)
        return body

    # --- a stream of requests -----------------------------------------------------------

    def serve_channel(
        self, channel: FrameChannel, session: Session, *, idle_timeout: float | None, frame_timeout: float | None = None
    ) -> None:
        """Answer frames on one channel until the peer closes, goes idle, or the server stops."""
        cap = channel.max_frame_bytes
        stall = self.config.frame_timeout_s if frame_timeout is None else frame_timeout
        wait = 0.5 if idle_timeout is None else min(0.5, idle_timeout)
        idle = 0.0
        while not self._stop.is_set():
            try:
                event = channel.receive(wait, stall)
            except AgentTimeout:
                idle += wait
                if idle_timeout is not None and idle >= idle_timeout and not channel.decoder.buffered:
                    log.info("closing idle connection %s", session.peer)
                    return
                continue
            idle = 0.0
            if isinstance(event, Frame):
                header, payload = self.respond(session, event, cap)
            else:
                log.info("bad bytes from %s: %s", session.peer, event.message)
                header, payload = error_header(None, event, session.version), b""
            self._send(channel, header, payload, cap)

    def _send(self, channel: FrameChannel, header: dict, payload: bytes, cap: int) -> None:
        try:
            channel.send(header, payload, max_frame_bytes=cap)
        except FrameError as exc:  # the answer itself is over the cap or not encodable
            channel.send(error_header(header.get("id"), exc), b"", max_frame_bytes=cap)

    # --- transports ---------------------------------------------------------------------

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *, on_bound: Callable[[int], None] | None = None) -> None:
        """Listen on host:port (a token is required beyond loopback) and serve until stopped."""
        require_token_for_bind(host, self.config.token)
        cap = self.config.cap_for("tcp")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(16)
        listener.settimeout(0.5)
        bound = listener.getsockname()[1]
        log.info("serving tcp on %s:%d (auth %s)", host, bound, "on" if self.config.token else "off")
        if on_bound is not None:
            on_bound(bound)
        active: set[threading.Thread] = set()
        try:
            while not self._stop.is_set():
                try:
                    conn, addr = listener.accept()
                except (socket.timeout, TimeoutError):
                    continue
                active = {t for t in active if t.is_alive()}
                peer = f"{addr[0]}:{addr[1]}"
                if len(active) >= self.config.max_connections:
                    log.warning("refused connection from %s: %d connections already open", peer, len(active))
                    conn.close()
                    continue
                thread = threading.Thread(target=self._serve_conn, args=(conn, peer, cap), daemon=True)
                thread.start()
                active.add(thread)
        finally:
            listener.close()

    def _serve_conn(self, conn: socket.socket, peer: str, cap: int) -> None:
        channel = FrameChannel(TcpStream(conn, peer), max_frame_bytes=cap)
        try:
            self.serve_channel(channel, Session(peer), idle_timeout=self.config.idle_timeout_s)
        except (AgentConnectionError, AgentTimeout) as exc:
            log.info("connection %s ended: %s", peer, exc.message)
        finally:
            channel.close()

    def serve_serial(self, device: str, baud: int = 115200, *, on_open: Callable[[], None] | None = None) -> None:
        """Serve one serial line until stopped; if the device goes away, reopen it when it returns."""
        cap = self.config.cap_for("serial")
        channel = FrameChannel(open_serial(device, baud), max_frame_bytes=cap)
        log.info("serving serial line %s at %d baud (auth %s)", device, baud, "on" if self.config.token else "off")
        if on_open is not None:
            on_open()
        while True:
            try:
                self.serve_channel(
                    channel, Session(f"serial:{device}"), idle_timeout=None, frame_timeout=self.config.serial_frame_timeout_s
                )
                return
            except (AgentConnectionError, AgentTimeout) as exc:  # device unplugged, or a write stuck
                log.warning("serial line %s failed (%s); reopening", device, exc.message)
            finally:
                channel.close()
            reopened = self._reopen_serial(device, baud, cap)
            if reopened is None:
                return
            channel = reopened

    def _reopen_serial(self, device: str, baud: int, cap: int) -> FrameChannel | None:
        """Retry opening a serial device once a second until it is back; None if the server stops."""
        while not self._stop.is_set():
            try:
                return FrameChannel(open_serial(device, baud), max_frame_bytes=cap)
            except AgentConnectionError:
                self._stop.wait(1.0)
        return None

    def stop(self) -> None:
        """Ask the serving loops to return (within about half a second)."""
        self._stop.set()


def write_port_file(path: str | os.PathLike[str], port: int) -> None:
    """Write the bound port atomically, so a reader never sees a half-written number."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, target)
