"""Byte streams (TCP, serial through pyserial) and a frame channel over them.

Every read has a deadline: a peer that goes quiet costs a timeout, never a hung
process. `FrameChannel` joins a stream to the streaming decoder of protocol.py.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path

from .errors import AgentConnectionError, AgentError, AgentTimeout
from .protocol import DEFAULT_MAX_FRAME_SERIAL, DEFAULT_MAX_FRAME_TCP, Frame, FrameDecoder, encode_frame

READ_CHUNK = 1 << 16
MAX_READ_CHUNK = 1 << 22
#: How often a serial read wakes to check its deadline; data still returns at once.
SERIAL_POLL_S = 0.05


class ByteStream(ABC):
    """A bidirectional byte stream with bounded reads."""

    peer: str = "?"

    @abstractmethod
    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        """Up to max_bytes as soon as any arrive; b"" if none within timeout.

        Raises AgentConnectionError when the peer has closed the stream.
        """

    @abstractmethod
    def write_all(self, data: bytes) -> None:
        """Send every byte (AgentConnectionError or AgentTimeout if that fails)."""

    @abstractmethod
    def close(self) -> None:
        """Release the stream; idempotent."""


class TcpStream(ByteStream):
    """A connected TCP socket."""

    def __init__(self, sock: socket.socket, peer: str, write_timeout: float = 60.0) -> None:
        self.sock = sock
        self.peer = peer
        self.write_timeout = write_timeout
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 1e-3))
        try:
            data = self.sock.recv(max_bytes)
        except (socket.timeout, TimeoutError):
            return b""
        except OSError as exc:
            raise AgentConnectionError(f"connection to {self.peer} failed while reading: {exc}") from exc
        if not data:
            raise AgentConnectionError(f"connection closed by {self.peer}")
        return data

    def write_all(self, data: bytes) -> None:
        self.sock.settimeout(self.write_timeout)
        try:
            self.sock.sendall(data)
        except (socket.timeout, TimeoutError) as exc:
            raise AgentTimeout(f"sending to {self.peer} took longer than {self.write_timeout:g} s") from exc
        except OSError as exc:
            raise AgentConnectionError(f"connection to {self.peer} failed while sending: {exc}") from exc

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def open_tcp(host: str, port: int, timeout: float = 10.0) -> TcpStream:
    """Connect to host:port; AgentConnectionError if it cannot be reached within timeout."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise AgentConnectionError(f"cannot connect to tcp://{host}:{port}: {exc.strerror or exc}") from exc
    return TcpStream(sock, f"tcp://{host}:{port}")


class SerialStream(ByteStream):
    """A serial line opened through pyserial (8N1, raw, no flow control)."""

    def __init__(self, port: object, peer: str) -> None:
        self.port = port
        self.peer = peer

    def read_some(self, max_bytes: int, timeout: float) -> bytes:
        import serial  # noqa: PLC0415  (pyserial is only needed on serial paths)

        deadline = time.monotonic() + timeout
        try:
            while True:
                first = self.port.read(1)
                if first:
                    waiting = self.port.in_waiting
                    rest = self.port.read(min(waiting, max_bytes - 1)) if waiting and max_bytes > 1 else b""
                    return first + rest
                if time.monotonic() >= deadline:
                    return b""
        except (serial.SerialException, OSError) as exc:
            raise AgentConnectionError(f"serial line {self.peer} failed while reading: {exc}") from exc

    def write_all(self, data: bytes) -> None:
        import serial  # noqa: PLC0415

        try:
            self.port.write(data)
            self.port.flush()
        except serial.SerialTimeoutException as exc:
            raise AgentTimeout(f"writing to serial line {self.peer} timed out") from exc
        except (serial.SerialException, OSError) as exc:
            raise AgentConnectionError(f"serial line {self.peer} failed while writing: {exc}") from exc

    def close(self) -> None:
        try:
            self.port.close()
        except OSError:
            pass


def open_serial(device: str, baud: int = 115200, write_timeout: float = 60.0) -> SerialStream:
    """Open a serial device raw at `baud`; AgentConnectionError if it cannot be opened."""
    try:
        import serial  # noqa: PLC0415
    except ImportError as exc:
        raise AgentConnectionError("the serial transport needs pyserial (pip install pyserial)") from exc
    try:
        port = serial.Serial(
            device, baudrate=baud, timeout=SERIAL_POLL_S, write_timeout=write_timeout, exclusive=True
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise AgentConnectionError(f"cannot open serial line {device}: {exc}") from exc
    return SerialStream(port, f"serial://{device}")


class FrameChannel:
    """Frames over a byte stream: `send` a header and payload, `receive` the next event."""

    def __init__(self, stream: ByteStream, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_TCP) -> None:
        self.stream = stream
        self.max_frame_bytes = max_frame_bytes
        self.decoder = FrameDecoder(max_frame_bytes)
        self._last_byte = time.monotonic()

    @property
    def peer(self) -> str:
        return self.stream.peer

    def send(self, header: dict, payload: bytes = b"", *, max_frame_bytes: int | None = None) -> None:
        """Encode and write one frame (FrameTooLarge before any byte is sent if it is over the cap)."""
        cap = self.max_frame_bytes if max_frame_bytes is None else max_frame_bytes
        self.stream.write_all(encode_frame(header, payload, max_frame_bytes=cap))

    def receive(self, timeout: float, frame_timeout: float | None = None) -> Frame | AgentError:
        """The next frame or decode-error event.

        AgentTimeout if nothing arrives within `timeout`; a frame that stalls half-way for
        `frame_timeout` seconds is given up as truncated (an error event) and the stream
        resynchronises. AgentConnectionError if the peer closes.
        """
        deadline = time.monotonic() + timeout
        stall = timeout if frame_timeout is None else frame_timeout
        while True:
            event = self.decoder.next_event()
            if event is not None:
                return event
            now = time.monotonic()
            pending = self.decoder.buffered
            if pending and now - self._last_byte >= stall:
                truncated = self.decoder.truncate_front()
                if truncated is not None:
                    return truncated
            if now >= deadline:
                raise AgentTimeout(f"no frame from {self.peer} within {timeout:g} s", timeout_s=timeout)
            wait = deadline - now
            if pending:
                wait = min(wait, max(1e-3, stall - (now - self._last_byte)))
            want = min(MAX_READ_CHUNK, max(READ_CHUNK, self.decoder.bytes_wanted()))
            data = self.stream.read_some(want, wait)
            if data:
                self._last_byte = time.monotonic()
                self.decoder.feed(data)

    def close(self) -> None:
        self.stream.close()


def default_cap(transport: str) -> int:
    """The default frame cap of a transport kind ("tcp" or "serial")."""
    return DEFAULT_MAX_FRAME_SERIAL if transport == "serial" else DEFAULT_MAX_FRAME_TCP


def write_port_file(path: str | os.PathLike[str], port: int) -> None:
    """Write the bound port atomically: an exclusively created, unpredictable temporary file, then a rename.

    The temporary file is created with O_EXCL (never through a symlink) beside the target, and
    the rename replaces the target's directory entry (a symlink there is replaced, not followed).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(f"{port}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
