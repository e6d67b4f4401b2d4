"""What a server keeps per connection and what bounds its connections.

`Connection` is one peer's state (nonces, version, request counter, the last answer);
`ServerConfig` the limits and credentials of a server; `ConnectionSlots` enforces the caps
on open connections in all and per address; `LogLimiter` keeps a flood of refusals from
flooding the log.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .protocol import MIN_MAX_FRAME, PROTOCOL_VERSION
from .transport import default_cap


@dataclass
class Connection:
    """One connection's state: the nonces, the negotiated version, the counter, the last answer."""

    peer: str
    nonce: str | None = None
    client_nonce: str | None = None
    version: int = PROTOCOL_VERSION
    requests: int = 0
    authenticated: bool = False
    #: the highest request counter accepted so far (with a token)
    last_seq: int = 0
    #: what identifies the last request ((seq, tag) with a token, (header, payload CRC) without)
    #: and the bytes of its answer, resent as they are when exactly that request comes again
    last_key: object = None
    last_answer: bytes | None = None


@dataclass
class ServerConfig:
    """Limits and credentials of one server."""

    token: bytes | None = None
    max_frame_bytes: int | None = None  # None: the transport's default cap
    idle_timeout_s: float = 3600.0  # an authenticated TCP connection silent this long is closed
    auth_timeout_s: float = 10.0  # with a token, a TCP connection not authenticated this long after accept is closed
    frame_timeout_s: float = 10.0  # a TCP frame stalled half-way this long is truncated
    serial_frame_timeout_s: float = 1.0  # the same on a serial line, where frames flow without gaps
    max_connections: int = 8
    max_per_address: int = 4  # below max_connections: one address never takes every slot

    def cap_for(self, transport: str) -> int:
        """The frame cap on a transport ("tcp" or "serial"): as configured, else the transport's default."""
        cap = default_cap(transport) if self.max_frame_bytes is None else self.max_frame_bytes
        if cap < MIN_MAX_FRAME:
            raise ValueError(f"max frame bytes must be at least {MIN_MAX_FRAME}, got {cap}")
        return cap


@dataclass
class ConnectionSlots:
    """The TCP connections being served, by peer address, within the caps of a ServerConfig."""

    max_connections: int
    max_per_address: int
    _active: dict[str, set[threading.Thread]] = field(default_factory=dict, repr=False)

    def refusal(self, address: str) -> str | None:
        """Why a new connection from `address` is refused now (a log line), or None if it may be served."""
        live = {a: {t for t in threads if t.is_alive()} for a, threads in self._active.items()}
        self._active = {a: threads for a, threads in live.items() if threads}
        mine = len(self._active.get(address, ()))
        total = sum(len(threads) for threads in self._active.values())
        if total < self.max_connections and mine < self.max_per_address:
            return None
        return (f"{mine} open from that address, {total} in all "
                f"(limits {self.max_per_address}, {self.max_connections})")

    def add(self, address: str, thread: threading.Thread) -> None:
        """Count a started connection thread against its address."""
        self._active.setdefault(address, set()).add(thread)


class LogLimiter:
    """A token bucket in front of a logger, so a peer that floods refusals cannot flood the log.

    Up to `burst` lines at once, then `per_second` on average; the next line that passes says
    how many were suppressed in between.
    """

    def __init__(self, logger: logging.Logger, burst: int = 20, per_second: float = 1.0) -> None:
        self.logger = logger
        self.burst = float(burst)
        self.per_second = float(per_second)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.suppressed = 0

    def _take(self) -> int | None:
        """Suppressed lines to report if a line may pass now, else None (and count it)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens < 1.0:
                self.suppressed += 1
                return None
            self._tokens -= 1.0
            held, self.suppressed = self.suppressed, 0
            return held

    def log(self, level: int, msg: str, *args: object) -> None:
        """Log one line if the bucket allows it."""
        if not self.logger.isEnabledFor(level):
            return
        held = self._take()
        if held is None:
            return
        if held:
            msg = f"{msg} [{held} similar lines suppressed before this one]"
        self.logger.log(level, msg, *args)

    def info(self, msg: str, *args: object) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(logging.ERROR, msg, *args)
