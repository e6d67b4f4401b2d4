"""The agent's server: frames in, handler calls, frames out, over TCP or a serial line.

Every failure (bad frame, bad request, wrong token, a handler that raises) becomes an
error frame and the server goes on with the next request. Requests run one at a time
across all connections, so two clients never distort each other's timings. With a token,
a connection must authenticate (challenge, then a tagged `authenticate`) before anything
else is read beyond a small frame cap, and within a bounded time; every answer is tagged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

from . import __version__
from .auth import (
    ZERO_TAG,
    SessionKey,
    claimed_bind,
    is_nonce,
    new_nonce,
    require_token_for_bind,
    seal,
    split_tag,
    verify_request,
)
from .connections import Connection, ConnectionSlots, LogLimiter, ServerConfig
from .errors import (
    AgentConnectionError,
    AgentError,
    AgentTimeout,
    AuthError,
    BadRequest,
    FrameError,
    FrameTooLarge,
    ReplayedRequest,
    clip_text,
)
from .protocol import (
    MAX_REQUEST_ID,
    PREAUTH_MAX_FRAME,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Frame,
    encode_frame,
    encode_raw_frame,
    error_header,
    negotiate_version,
    result_header,
)
from .transport import FrameChannel, TcpStream, open_serial

Handler = Callable[[dict, bytes], tuple[dict, bytes]]
log = logging.getLogger(__name__)

#: Request types the server answers itself, before the handler table.
SERVER_TYPES = ("challenge", "authenticate")
#: Peer-chosen text in a log line is escaped and cut to this many characters.
LOG_TEXT_LIMIT = 200


@dataclass
class Reply:
    """An answer before encoding: its header and payload, and the (counter, request tag) its tag binds."""

    header: dict
    payload: bytes = b""
    bind: tuple[int, bytes] = (0, ZERO_TAG)
    cache_key: object = None
    cached: bytes | None = None


def default_handlers() -> Mapping[str, Handler]:
    """The execution handlers of device_agents.handlers (imported on first use)."""
    from .handlers import HANDLERS  # noqa: PLC0415

    return HANDLERS


def _peer_text(value: object) -> str:
    return clip_text(str(value), LOG_TEXT_LIMIT)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port whose accept() wakes every half second (to see a stop)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(16)
    listener.settimeout(0.5)
    return listener


@dataclass
class AgentServer:
    """Dispatches decoded requests to a handler table, enforcing protocol and auth."""

    handlers: Mapping[str, Handler] | None = None
    config: ServerConfig = field(default_factory=ServerConfig)
    _exec_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _log: LogLimiter = field(default_factory=lambda: LogLimiter(log), repr=False)

    def __post_init__(self) -> None:
        if self.handlers is None:
            self.handlers = default_handlers()

    # --- one request ------------------------------------------------------------------

    def answer(self, conn: Connection, frame: Frame, max_frame_bytes: int) -> bytes:
        """The bytes of the answer to one decoded frame (remembered for an exact resend)."""
        reply = self.respond(conn, frame, max_frame_bytes)
        if reply.cached is not None:
            return reply.cached
        data = self.encode(conn, reply, max_frame_bytes)
        if reply.cache_key is not None:
            conn.last_key, conn.last_answer = reply.cache_key, data
        return data

    def encode(self, conn: Connection, reply: Reply, max_frame_bytes: int) -> bytes:
        """A reply as frame bytes, tagged when the connection has a key; an over-cap answer becomes an error."""
        try:
            return self._encode(conn, reply.header, reply.payload, reply.bind, max_frame_bytes)
        except FrameError as exc:  # the answer itself is over the cap or not encodable
            return self._encode(conn, error_header(reply.header.get("id"), exc, conn.version), b"", reply.bind,
                                max_frame_bytes)

    def _encode(self, conn: Connection, header: dict, payload: bytes, bind: tuple[int, bytes], cap: int) -> bytes:
        key = self._key(conn)
        if key is None:
            return encode_frame(header, payload, max_frame_bytes=cap)
        seq, request_tag = bind
        head, region = seal(header, payload, lambda h, p: key.answer_tag(seq, request_tag, h, p))
        return encode_raw_frame(head, region, max_frame_bytes=cap)

    def _key(self, conn: Connection) -> SessionKey | None:
        if self.config.token is None or conn.nonce is None or conn.client_nonce is None:
            return None
        return SessionKey(self.config.token, conn.nonce, conn.client_nonce)

    def respond(self, conn: Connection, frame: Frame, max_frame_bytes: int) -> Reply:
        """The reply to one decoded frame; never raises AgentError."""
        header = frame.header
        rid = frame.request_id
        bind = claimed_bind(frame)
        try:
            rtype = self._check_envelope(header, rid)
            if rtype == "challenge":
                key = ("challenge", header, frame.payload)
                if conn.last_key == key and conn.last_answer is not None:
                    return Reply({}, cached=conn.last_answer)  # a resend: the same conn, not a new one
                body = self._challenge(conn, header, max_frame_bytes)
                return Reply(result_header(rid, body, conn.version), cache_key=key)
            if self.config.token is None:
                payload, _ = split_tag(frame)
                key = (header, zlib.crc32(payload))
                if conn.last_key == key and conn.last_answer is not None:
                    return Reply({}, cached=conn.last_answer)  # a resend after a corrupted answer
                return Reply(*self._dispatch(conn, rtype, rid, header, payload, max_frame_bytes), cache_key=key)
            return self._respond_signed(conn, frame, rtype, rid, max_frame_bytes)
        except AgentError as exc:
            if isinstance(exc, AuthError):
                self._log.warning("refused %s request %s from %s: %s", _peer_text(header.get("type")),
                                  _peer_text(header.get("id")), conn.peer, _peer_text(exc.message))
            else:
                self._log.info("error answering %s from %s: %s: %s", _peer_text(header.get("type")), conn.peer,
                               exc.code, _peer_text(exc.message))
            return Reply(error_header(rid, exc, conn.version), bind=bind)

    def _check_envelope(self, header: dict, rid: int | None) -> str:
        """The request type, once id, type and version are valid (errors name what is wrong)."""
        if rid is None:
            raise BadRequest(f"request id must be an integer in [0, {MAX_REQUEST_ID}], got {_peer_text(header.get('id'))}")
        rtype = header.get("type")
        if not isinstance(rtype, str):
            raise BadRequest(f"request 'type' must be a string, got {_peer_text(rtype)}")
        version = header.get("v", PROTOCOL_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise BadRequest(f"'v' must be an integer protocol version, got {_peer_text(version)}")
        if version not in SUPPORTED_VERSIONS:
            negotiate_version([version])  # raises ProtocolVersionError naming both sides
        return rtype

    def _respond_signed(self, conn: Connection, frame: Frame, rtype: str, rid: int, cap: int) -> Reply:
        """Verify a request on a connection with a token (tag, then counter), then answer it."""
        if conn.nonce is None:
            raise AuthError("this agent requires authentication: send a 'challenge' request first")
        if not conn.authenticated and rtype != "authenticate":
            raise AuthError("this connection has not authenticated: before 'authenticate' succeeds the agent "
                            "answers only 'challenge' and 'authenticate'")
        key = self._key(conn)
        assert key is not None
        seq, payload, tag = verify_request(key, frame)
        if conn.last_key == (seq, tag) and conn.last_answer is not None:
            return Reply({}, cached=conn.last_answer)  # an exact resend of the last request: not new work
        if seq <= conn.last_seq:
            raise ReplayedRequest(
                f"request counter {seq} is not above {conn.last_seq}, the last accepted on this connection: "
                "a replayed or reordered request is refused",
                seq=seq, last_seq=conn.last_seq,
            )
        conn.last_seq = seq
        if rtype == "authenticate":
            conn.authenticated = True
            header, out = result_header(rid, {"authenticated": True}, conn.version), b""
        else:
            header, out = self._dispatch(conn, rtype, rid, frame.header, payload, cap)
        return Reply(header, out, bind=(seq, tag), cache_key=(seq, tag))

    def _dispatch(self, conn: Connection, rtype: str, rid: int | None, header: dict, payload: bytes, max_frame_bytes: int) -> tuple[dict, bytes]:
        """Run the handler of an authenticated request; every failure becomes an error header."""
        try:
            handler = self.handlers.get(rtype)  # type: ignore[union-attr]
            if handler is None:
                known = ", ".join(sorted({*SERVER_TYPES, *self.handlers}))  # type: ignore[misc]
                raise BadRequest(f"unknown request type {_peer_text(repr(rtype))}; this agent answers: {known}",
                                 type=_peer_text(rtype))
            with self._exec_lock:
                body, payload = handler(header, payload)
            if rtype == "hello":
                body = dict(body)
                body["protocol"] = self._protocol_info(conn, max_frame_bytes)
            conn.requests += 1
            return result_header(rid, body, conn.version), payload
        except AgentError as exc:
            self._log.info("error answering %s from %s: %s: %s", _peer_text(rtype), conn.peer, exc.code,
                           _peer_text(exc.message))
            return error_header(rid, exc, conn.version), b""
        except Exception as exc:  # a handler bug must not take the agent down
            self._log.error("handler for %s failed: %s", _peer_text(rtype), clip_text(traceback.format_exc(), 4096))
            err = AgentError(f"internal error in the agent: {type(exc).__name__}: {clip_text(str(exc))}")
            return error_header(rid, err, conn.version), b""

    def _protocol_info(self, conn: Connection, max_frame_bytes: int) -> dict:
        info = {
            "version": conn.version,
            "supported": list(SUPPORTED_VERSIONS),
            "max_frame_bytes": max_frame_bytes,
            "auth_required": self.config.token is not None,
        }
        if self.config.token is not None:
            info["preauth_max_frame_bytes"] = min(max_frame_bytes, PREAUTH_MAX_FRAME)
            info["auth_timeout_s"] = self.config.auth_timeout_s
        return info

    def _challenge(self, conn: Connection, header: dict, max_frame_bytes: int) -> dict:
        version = negotiate_version(header.get("versions"))
        client_nonce = header.get("cnonce")
        if self.config.token is not None and not is_nonce(client_nonce):
            raise BadRequest("a challenge to an agent with a token needs 'cnonce': 32 lowercase hex digits", field="cnonce")
        conn.version = version
        conn.nonce, conn.client_nonce = new_nonce(), client_nonce if is_nonce(client_nonce) else None
        conn.authenticated, conn.last_seq = False, 0
        conn.last_key = conn.last_answer = None  # a new session (on a serial line: maybe a new client)
        body = {"nonce": conn.nonce, "agent_version": __version__}
        body["protocol"] = self._protocol_info(conn, max_frame_bytes)
        return body

    # --- a stream of requests -----------------------------------------------------------

    def _preauth(self, conn: Connection) -> bool:
        return self.config.token is not None and not conn.authenticated

    def serve_channel(
        self, channel: FrameChannel, conn: Connection, *, idle_timeout: float | None, frame_timeout: float | None = None,
        auth_timeout: float | None = None, closable: bool = True,
    ) -> None:
        """Answer frames on one channel until the peer closes, goes idle, fails to authenticate in time, or the server stops.

        `closable`: the channel is a connection that may be dropped (TCP), not a serial line.
        """
        cap = channel.max_frame_bytes
        stall = self.config.frame_timeout_s if frame_timeout is None else frame_timeout
        wait = 0.5 if idle_timeout is None else min(0.5, idle_timeout)
        opened, idle = time.monotonic(), 0.0
        while not self._stop.is_set():
            preauth = self._preauth(conn)
            channel.decoder.max_frame_bytes = min(cap, PREAUTH_MAX_FRAME) if preauth else cap
            if preauth and auth_timeout is not None and time.monotonic() - opened >= auth_timeout:
                self._log.info("closing %s: not authenticated within %g s", conn.peer, auth_timeout)
                return
            try:
                event = channel.receive(wait, stall)
            except AgentTimeout:
                idle += wait
                if idle_timeout is not None and idle >= idle_timeout and not channel.decoder.buffered:
                    self._log.info("closing idle connection %s", conn.peer)
                    return
                continue
            idle = 0.0
            if isinstance(event, Frame):
                channel.stream.write_all(self.answer(conn, event, cap))
                continue
            self._log.info("bad bytes from %s: %s", conn.peer, _peer_text(event.message))
            channel.send(error_header(None, event, conn.version), b"", max_frame_bytes=cap)
            if preauth and closable and isinstance(event, FrameTooLarge):
                self._log.info("closing %s: a frame above the %d-byte cap before authentication", conn.peer,
                               channel.decoder.max_frame_bytes)
                return

    # --- transports ---------------------------------------------------------------------

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0, *, on_bound: Callable[[int], None] | None = None) -> None:
        """Listen on host:port (a token is required beyond loopback) and serve until stopped."""
        require_token_for_bind(host, self.config.token)
        cap = self.config.cap_for("tcp")
        listener = _listen(host, port)
        bound = listener.getsockname()[1]
        log.info("serving tcp on %s:%d (auth %s)", host, bound, "on" if self.config.token else "off")
        if on_bound is not None:
            on_bound(bound)
        slots = ConnectionSlots(self.config.max_connections, self.config.max_per_address)
        try:
            while not self._stop.is_set():
                try:
                    sock, addr = listener.accept()
                except (socket.timeout, TimeoutError):
                    continue
                peer = f"{addr[0]}:{addr[1]}"
                refusal = slots.refusal(addr[0])
                if refusal is not None:
                    self._log.warning("refused connection from %s: %s", peer, refusal)
                    sock.close()
                    continue
                thread = threading.Thread(target=self._serve_conn, args=(sock, peer, cap), daemon=True)
                thread.start()
                slots.add(addr[0], thread)
        finally:
            listener.close()

    def _serve_conn(self, sock: socket.socket, peer: str, cap: int) -> None:
        channel = FrameChannel(TcpStream(sock, peer), max_frame_bytes=cap)
        try:
            self.serve_channel(channel, Connection(peer), idle_timeout=self.config.idle_timeout_s,
                               auth_timeout=self.config.auth_timeout_s)
        except (AgentConnectionError, AgentTimeout) as exc:
            self._log.info("connection %s ended: %s", peer, _peer_text(exc.message))
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
                    channel, Connection(f"serial:{device}"), idle_timeout=None, frame_timeout=self.config.serial_frame_timeout_s,
                    closable=False,
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

