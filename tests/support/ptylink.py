"""A bridged serial link on this machine: two pseudo-terminal pairs and a relay between them.

The agent opens one slave path and the client the other, both through pyserial, as they
would a USB serial adapter. Bytes are copied between the two masters by one thread per
direction, optionally through a seeded fault injector (flipped bits, dropped and inserted
bytes) so tests can prove the protocol survives a noisy line.
"""

from __future__ import annotations

import os
import random
import select
import threading
import tty
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultCounts:
    """How many bytes the injector touched in one direction."""

    flipped: int = 0
    dropped: int = 0
    inserted: int = 0


@dataclass
class FaultInjector:
    """Corrupts a byte stream at given per-byte rates, reproducibly from a seed."""

    flip_rate: float = 0.0
    drop_rate: float = 0.0
    insert_rate: float = 0.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    flipped: int = 0
    dropped: int = 0
    inserted: int = 0

    def __post_init__(self) -> None:
        for name in ("flip_rate", "drop_rate", "insert_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self._rng = random.Random(self.seed)

    @property
    def active(self) -> bool:
        return bool(self.flip_rate or self.drop_rate or self.insert_rate)

    def apply(self, data: bytes) -> bytes:
        """The bytes after corruption (unchanged when every rate is 0)."""
        if not self.active:
            return data
        out = bytearray()
        rng = self._rng
        with self._lock:
            for byte in data:
                if rng.random() < self.insert_rate:
                    out.append(rng.randrange(256))
                    self.inserted += 1
                if rng.random() < self.drop_rate:
                    self.dropped += 1
                    continue
                if rng.random() < self.flip_rate:
                    byte ^= 1 << rng.randrange(8)
                    self.flipped += 1
                out.append(byte)
        return bytes(out)

    def counts(self) -> FaultCounts:
        return FaultCounts(self.flipped, self.dropped, self.inserted)


def _open_raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line editing, before anyone opens the path
    return master, slave, os.ttyname(slave)


class PtyLink:
    """Two pty pairs bridged by relay threads; `agent_path` and `client_path` are the ends.

    Faults apply per direction: `to_agent` corrupts client->agent bytes, `to_client`
    agent->client bytes; `baud` paces both directions like a real line. Use as a context
    manager, or call start() and close().
    """

    def __init__(
        self, *, to_agent: FaultInjector | None = None, to_client: FaultInjector | None = None, baud: int | None = None
    ) -> None:
        if baud is not None and baud <= 0:
            raise ValueError(f"baud must be positive, got {baud}")
        self.to_agent = to_agent or FaultInjector()
        self.to_client = to_client or FaultInjector()
        #: when set, each direction is paced like a real 8N1 line: 10 bits per byte
        self.bytes_per_s = None if baud is None else baud / 10.0
        self._agent_master, self._agent_slave, self.agent_path = _open_raw_pty()
        self._client_master, self._client_slave, self.client_path = _open_raw_pty()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.relayed = {"to_agent": 0, "to_client": 0}

    def start(self) -> PtyLink:
        """Start relaying in both directions."""
        for src, dst, faults, name in (
            (self._client_master, self._agent_master, self.to_agent, "to_agent"),
            (self._agent_master, self._client_master, self.to_client, "to_client"),
        ):
            thread = threading.Thread(target=self._relay, args=(src, dst, faults, name), daemon=True, name=f"ptylink-{name}")
            thread.start()
            self._threads.append(thread)
        return self

    def _relay(self, src: int, dst: int, faults: FaultInjector, name: str) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(src, 1 << 16)
            except OSError:
                return
            if not data:
                continue
            self.relayed[name] += len(data)
            data = faults.apply(data)
            if self.bytes_per_s is not None:
                self._stop.wait(len(data) / self.bytes_per_s)
            view = memoryview(data)
            while view and not self._stop.is_set():
                try:
                    written = os.write(dst, view)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                view = view[written:]

    def close(self) -> None:
        """Stop the relays and close every descriptor."""
        self._stop.set()
        for thread in self._threads:
            thread.join(1.0)
        for fd in (self._agent_master, self._agent_slave, self._client_master, self._client_slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
