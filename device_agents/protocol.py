"""The agent's wire format: CRC-checked frames of a JSON header and a binary payload.

One format for TCP and serial lines (PROTOCOL.md is the byte-level reference). The
streaming decoder never trusts a length it has not checked, so a corrupted or truncated
frame costs one error event and a resynchronisation on the next magic, never a hang.
No pickle: headers are JSON, payloads are opaque bytes.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterable

from .errors import AgentError, FrameError, FrameTooLarge, ProtocolVersionError

#: The four bytes that start every frame ("WWF" and the framing revision 1).
MAGIC = b"WWF\x01"
#: magic, header length, payload length, CRC32 of the 12 bytes before it; big-endian.
PREFIX = struct.Struct(">4sIII")
TRAILER = struct.Struct(">I")
OVERHEAD = PREFIX.size + TRAILER.size

#: A JSON header may never exceed this, whatever the frame cap.
MAX_HEADER_BYTES = 1 << 20
#: Default cap on header + payload bytes of one frame, per transport.
DEFAULT_MAX_FRAME_TCP = 256 << 20
DEFAULT_MAX_FRAME_SERIAL = 16 << 20
#: The smallest cap a server accepts (a hello answer must fit).
MIN_MAX_FRAME = 4096
#: Cap on header + payload of a frame that arrives before its connection has authenticated.
PREAUTH_MAX_FRAME = 64 << 10

#: Protocol versions this side speaks, and the one it prefers.
SUPPORTED_VERSIONS: tuple[int, ...] = (2,)
PROTOCOL_VERSION = max(SUPPORTED_VERSIONS)
#: Request ids and counters are integers in [0, MAX_REQUEST_ID] so a C peer can hold them in a double or int64.
MAX_REQUEST_ID = (1 << 53) - 1


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its JSON header (an object) and its payload bytes."""

    header: dict
    payload: bytes = b""
    #: the header's bytes exactly as framed (what a MAC covers); empty for a frame built in memory
    head: bytes = field(default=b"", compare=False, repr=False)

    @property
    def request_id(self) -> int | None:
        """The header's `id` when it is a valid request id, else None."""
        rid = self.header.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= MAX_REQUEST_ID:
            return rid
        return None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def encode_header(header: dict) -> bytes:
    """A header as compact UTF-8 JSON; NaN and infinities are refused (C peers cannot parse them)."""
    if not isinstance(header, dict):
        raise FrameError(f"a frame header must be a JSON object, got {type(header).__name__}")
    try:
        return json.dumps(header, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise FrameError(f"header cannot be encoded as JSON: {exc}") from exc


def encode_frame(header: dict, payload: bytes = b"", *, max_frame_bytes: int = DEFAULT_MAX_FRAME_TCP) -> bytes:
    """The bytes of one frame; FrameTooLarge if header + payload exceed the cap."""
    return encode_raw_frame(encode_header(header), payload, max_frame_bytes=max_frame_bytes)


def encode_raw_frame(head: bytes, payload: bytes = b"", *, max_frame_bytes: int = DEFAULT_MAX_FRAME_TCP) -> bytes:
    """One frame around header bytes already encoded (a MAC covers exactly these bytes)."""
    payload = bytes(payload)
    if len(head) > MAX_HEADER_BYTES:
        raise FrameTooLarge(
            f"frame header of {len(head)} bytes exceeds the {MAX_HEADER_BYTES}-byte header cap",
            size=len(head),
            cap=MAX_HEADER_BYTES,
        )
    size = len(head) + len(payload)
    if size > max_frame_bytes:
        raise FrameTooLarge(
            f"frame of {size} bytes exceeds the cap of {max_frame_bytes} bytes", size=size, cap=max_frame_bytes
        )
    lengths = struct.pack(">II", len(head), len(payload))
    prefix_crc = zlib.crc32(MAGIC + lengths)
    body_crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((MAGIC, lengths, struct.pack(">I", prefix_crc), head, payload, TRAILER.pack(body_crc)))


def parse_header(raw: bytes) -> dict:
    """Decode a header's bytes; FrameError if they are not a UTF-8 JSON object."""
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"frame header is not valid UTF-8 JSON: {exc}") from exc
    except RecursionError:
        raise FrameError("frame header is nested too deeply") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame header must be a JSON object, got {type(obj).__name__}")
    return obj


@dataclass
class FrameDecoder:
    """Incremental decoder: feed bytes, then pull Frames or FrameError events until None.

    Resynchronisation rule: bytes before a magic are skipped (one event per run of them);
    a candidate frame that fails a check is abandoned by dropping its first byte and
    scanning for the next magic, so a frame hidden behind a corrupt one is still found.
    The body of an oversize frame is skipped the same way, without an event per chunk.
    """

    max_frame_bytes: int = DEFAULT_MAX_FRAME_TCP
    _buf: bytearray = field(default_factory=bytearray, repr=False)
    frames: int = 0
    errors: int = 0
    skipped_bytes: int = 0
    _quiet: int = field(default=0, repr=False)

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf)

    def bytes_wanted(self) -> int:
        """How many more bytes complete the frame at the front (at least 1)."""
        buf = self._buf
        if len(buf) < PREFIX.size or not buf.startswith(MAGIC):
            return max(1, PREFIX.size - len(buf))
        _, hlen, plen, crc = PREFIX.unpack_from(buf)
        if zlib.crc32(bytes(buf[:12])) != crc or not self._within_caps(hlen, plen):
            return 1
        return max(1, PREFIX.size + hlen + plen + TRAILER.size - len(buf))

    def _within_caps(self, hlen: int, plen: int) -> bool:
        return 2 <= hlen <= MAX_HEADER_BYTES and hlen + plen <= self.max_frame_bytes

    def _drop(self, n: int) -> None:
        del self._buf[:n]

    def _skip_to_magic(self) -> int:
        """Drop bytes up to the next magic (keeping a tail that may begin one); returns how many."""
        buf = self._buf
        start = buf.find(MAGIC)
        if start < 0:
            keep = next((k for k in (3, 2, 1) if len(buf) >= k and MAGIC.startswith(bytes(buf[-k:]))), 0)
            start = len(buf) - keep
        self._drop(start)
        self.skipped_bytes += start
        return start

    def _abandon(self, exc: AgentError) -> AgentError:
        """Give up the candidate frame at the front: drop its first byte, rescan for a magic."""
        self._drop(1)
        skipped = self._skip_to_magic()
        self._quiet = max(0, self._quiet - skipped)
        exc.details["dropped"] = 1 + skipped
        self.errors += 1
        return exc

    def _error(self, exc: AgentError) -> AgentError:
        self.errors += 1
        return exc

    def next_event(self) -> Frame | AgentError | None:
        """The next complete Frame, an error event for rejected bytes, or None if more bytes are needed."""
        buf = self._buf
        if not buf:
            return None
        if not buf.startswith(MAGIC):
            skipped = self._skip_to_magic()
            quiet = min(skipped, self._quiet)
            self._quiet -= quiet
            skipped -= quiet  # the body of a refused oversize frame was already reported
            if skipped == 0:
                return self.next_event() if quiet and buf.startswith(MAGIC) else None
            return self._error(FrameError(f"skipped {skipped} bytes that are not part of a frame (no magic)", skipped=skipped))
        if len(buf) < PREFIX.size:
            return None
        _, hlen, plen, crc = PREFIX.unpack_from(buf)
        if zlib.crc32(bytes(buf[:12])) != crc:
            return self._abandon(FrameError("frame prefix CRC mismatch (corrupt length fields)"))
        if hlen < 2:
            return self._abandon(FrameError(f"frame header length {hlen} is too small for a JSON object"))
        if hlen > MAX_HEADER_BYTES or hlen + plen > self.max_frame_bytes:
            # the body that follows is skipped like garbage, but silently: one error per frame
            cap = MAX_HEADER_BYTES if hlen > MAX_HEADER_BYTES else self.max_frame_bytes
            self._quiet = hlen + plen + TRAILER.size + PREFIX.size - 1
            return self._abandon(
                FrameTooLarge(
                    f"frame announces {hlen} header + {plen} payload bytes, above the cap of {cap} bytes",
                    size=hlen + plen,
                    cap=cap,
                )
            )
        end = PREFIX.size + hlen + plen
        if len(buf) < end + TRAILER.size:
            return None
        (body_crc,) = TRAILER.unpack_from(buf, end)
        body = memoryview(buf)[PREFIX.size : end]
        ok = zlib.crc32(body) == body_crc
        head = bytes(body[:hlen])
        payload = bytes(body[hlen:]) if ok else b""
        body.release()
        if not ok:
            return self._abandon(FrameError("frame body CRC mismatch (corrupt header or payload)"))
        self._drop(end + TRAILER.size)
        try:
            header = parse_header(head)
        except FrameError as exc:
            return self._error(exc)
        self.frames += 1
        self._quiet = 0
        return Frame(header, payload, head)

    def truncate_front(self) -> AgentError | None:
        """Give up on an incomplete frame at the front (its sender went quiet) and resynchronise."""
        if not self._buf:
            return None
        have, need = len(self._buf), len(self._buf) + self.bytes_wanted()
        return self._abandon(FrameError(f"truncated frame: received {have} of {need} bytes before the line went quiet"))

    def events(self) -> Iterable[Frame | AgentError]:
        """Every event the buffered bytes produce."""
        while (event := self.next_event()) is not None:
            yield event


# --- message helpers shared by server and client -----------------------------------------


def negotiate_version(offered: object) -> int:
    """The highest protocol version both sides speak; ProtocolVersionError if none."""
    if offered is None:
        return PROTOCOL_VERSION
    if isinstance(offered, int) and not isinstance(offered, bool):
        offered = [offered]
    if not isinstance(offered, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in offered):
        raise ProtocolVersionError(f"'versions' must be a list of integers, got {offered!r}")
    common = set(offered) & set(SUPPORTED_VERSIONS)
    if not common:
        spoken = ", ".join(str(v) for v in sorted(set(offered))) or "none"
        ours = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        note = ""
        if 1 in offered:
            note = (" (version 1 is the protocol of earlier widthwise agents and hosts, whose MAC did not bind the request "
                    "and whose answers were not authenticated: upgrade that side)")
        raise ProtocolVersionError(
            f"no common protocol version: the peer speaks version {spoken}, this side speaks version {ours}{note}",
            offered=sorted(set(offered)),
            supported=list(SUPPORTED_VERSIONS),
        )
    return max(common)


def result_header(request_id: int | None, body: dict, version: int = PROTOCOL_VERSION) -> dict:
    """The header of a successful response."""
    return {"v": version, "id": request_id, "type": "result", "body": body}


def error_header(request_id: int | None, error: AgentError, version: int = PROTOCOL_VERSION) -> dict:
    """The header of an error frame; `retryable` tells the client whether resending may help."""
    wire = error.to_wire()
    wire["retryable"] = bool(error.retryable)
    return {"v": version, "id": request_id, "type": "error", "error": wire}


def request_header(request_type: str, request_id: int, fields: dict | None = None, version: int = PROTOCOL_VERSION) -> dict:
    """The header of a request: protocol fields first, then the request's own fields."""
    header = {"v": version, "id": request_id, "type": request_type}
    for key, value in (fields or {}).items():
        if key in header:
            raise FrameError(f"request field {key!r} clashes with a protocol field")
        header[key] = value
    return header
