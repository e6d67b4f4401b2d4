"""Shared-token authentication of protocol version 2: tagged requests and tagged answers.

A session starts with a `challenge` that exchanges two fresh nonces (the client's and the
agent's). From then on every request and every answer carries a 32-byte HMAC-SHA256 tag
after its payload: a request's tag covers both nonces, a strictly increasing counter, the
header bytes exactly as framed and a SHA-256 of the payload; an answer's tag covers the
same plus the tag of the request it answers. PROTOCOL.md gives the bytes. The token never
crosses the wire. This authenticates, it does not encrypt: tunnel it on a hostile network.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import AgentAuthError, AuthError, clip_text
from .protocol import MAX_REQUEST_ID, Frame, encode_header, encode_raw_frame

NONCE_BYTES = 16
MIN_TOKEN_BYTES = 16
TAG_BYTES = 32
#: The value of a header's `mac` field: the last TAG_BYTES of the payload region are the tag.
MAC_SCHEME = "hmac-sha256"
#: The request tag an answer binds to when there is none (the challenge answer).
ZERO_TAG = bytes(TAG_BYTES)
REQUEST_LABEL = b"WW2Q"
ANSWER_LABEL = b"WW2A"
_NONCE_RE = re.compile(r"[0-9a-f]{32}")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class ConfigError(ValueError):
    """A server setting is unusable (missing token for a public bind, unreadable token file)."""


def load_token(path: str | os.PathLike[str]) -> bytes:
    """The shared token in a file, for agent, host and daemon alike; ConfigError naming the file and the rule.

    Surrounding ASCII whitespace is stripped; what remains must be at least 16 bytes of
    printable ASCII without whitespace (the daemon receives it in an HTTP header).
    """
    p = Path(path)
    try:
        raw = p.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {p}: {exc.strerror or exc}") from exc
    rule = f"a token is at least {MIN_TOKEN_BYTES} bytes of printable ASCII without whitespace"
    bad = next((i for i, b in enumerate(raw) if not 0x21 <= b <= 0x7E), None)
    if bad is not None:
        what = "whitespace" if raw[bad] in b" \t\n\r\x0b\x0c" else f"the non-printable byte 0x{raw[bad]:02x}"
        raise ConfigError(
            f"token file {p} holds {what} at offset {bad}: {rule} (it travels in an HTTP header to the daemon); "
            "encode a binary secret first, e.g. head -c 32 /dev/urandom | base64 > FILE"
        )
    if len(raw) < MIN_TOKEN_BYTES:
        raise ConfigError(f"token file {p} holds {len(raw)} bytes; {rule}")
    return raw


def token_file_is_private(path: str | os.PathLike[str]) -> bool:
    """Whether no one but the owner may read the token file (POSIX permissions)."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    return not (mode & (stat.S_IRWXG | stat.S_IRWXO))


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_for_bind(host: str, token: bytes | None) -> None:
    """Refuse a non-loopback bind without a token (ConfigError naming the host)."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host}: a bind beyond loopback needs --token-file "
            "(a shared secret that clients must prove)"
        )


def new_nonce() -> str:
    """A fresh random nonce: 32 lowercase hex digits."""
    return secrets.token_hex(NONCE_BYTES)


def is_nonce(value: object) -> bool:
    """Whether `value` is a nonce as the wire carries it (32 lowercase hex digits)."""
    return isinstance(value, str) and _NONCE_RE.fullmatch(value) is not None


def mac_input(label: bytes, keys: tuple[str, str], seq: int, request_tag: bytes | None, head: bytes, payload: bytes) -> bytes:
    """The exact bytes a tag is the HMAC of (PROTOCOL.md section 4)."""
    agent_nonce, client_nonce = keys
    parts = [label, agent_nonce.encode("ascii"), client_nonce.encode("ascii"), _U64.pack(seq)]
    if request_tag is not None:
        parts.append(request_tag)
    parts += [_U32.pack(len(head)), head, hashlib.sha256(payload).digest()]
    return b"".join(parts)


@dataclass(frozen=True)
class SessionKey:
    """The token and the two nonces of one session: everything a tag depends on besides the message."""

    token: bytes
    agent_nonce: str
    client_nonce: str

    def request_tag(self, seq: int, head: bytes, payload: bytes) -> bytes:
        """The tag of a request with counter `seq`, header bytes `head` and payload `payload`."""
        message = mac_input(REQUEST_LABEL, (self.agent_nonce, self.client_nonce), seq, None, head, payload)
        return hmac.new(self.token, message, hashlib.sha256).digest()

    def answer_tag(self, seq: int, request_tag: bytes, head: bytes, payload: bytes) -> bytes:
        """The tag of an answer to the request (`seq`, `request_tag`)."""
        message = mac_input(ANSWER_LABEL, (self.agent_nonce, self.client_nonce), seq, request_tag, head, payload)
        return hmac.new(self.token, message, hashlib.sha256).digest()


def seal(header: dict, payload: bytes, tag_of: Callable[[bytes, bytes], bytes]) -> tuple[bytes, bytes]:
    """(header bytes, payload region) of a tagged frame: `mac` set in the header, the tag after the payload."""
    head = encode_header({**header, "mac": MAC_SCHEME})
    return head, bytes(payload) + tag_of(head, payload)


def split_tag(frame: Frame) -> tuple[bytes, bytes | None]:
    """(payload, tag) of a frame; tag None when the header announces none. AuthError if the `mac` field is wrong."""
    scheme = frame.header.get("mac")
    if scheme is None:
        return frame.payload, None
    if scheme != MAC_SCHEME:
        raise AuthError(f"unknown 'mac' scheme: this side knows only {MAC_SCHEME!r}")
    if len(frame.payload) < TAG_BYTES:
        raise AuthError(f"a tagged frame needs {TAG_BYTES} tag bytes after its payload, got {len(frame.payload)}")
    return frame.payload[:-TAG_BYTES], frame.payload[-TAG_BYTES:]


def claimed_counter(header: dict) -> int | None:
    """The request's `seq` when it is a valid counter (1 .. 2^53 - 1), else None."""
    seq = header.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX_REQUEST_ID:
        return seq
    return None


def claimed_bind(frame: Frame) -> tuple[int, bytes]:
    """The (counter, tag) a request claims, which the tag of its answer binds (0 and zeros when absent)."""
    try:
        tag = split_tag(frame)[1]
    except AuthError:
        tag = None
    return claimed_counter(frame.header) or 0, tag or ZERO_TAG


def sign_request(key: SessionKey, seq: int, header: dict, payload: bytes, max_frame_bytes: int) -> tuple[bytes, bytes]:
    """(frame bytes, tag) of a request with counter `seq`, tagged under `key`."""
    head, region = seal({**header, "seq": seq}, payload, lambda h, p: key.request_tag(seq, h, p))
    return encode_raw_frame(head, region, max_frame_bytes=max_frame_bytes), region[-TAG_BYTES:]


def verify_request(key: SessionKey, frame: Frame) -> tuple[int, bytes, bytes]:
    """(counter, payload, tag) of a request whose tag proves the token; AuthError if it does not."""
    payload, tag = split_tag(frame)
    if tag is None:
        raise AuthError("this agent requires authentication: the request carries no tag ('mac' field)")
    seq = claimed_counter(frame.header)
    if seq is None:
        raise AuthError(f"a signed request needs a counter 'seq' in 1..{MAX_REQUEST_ID}")
    if not hmac.compare_digest(tag, key.request_tag(seq, frame.head, payload)):
        raise AuthError("wrong token or altered request: the tag does not match this request's header and payload")
    return seq, payload, tag


def verify_answer(key: SessionKey, seq: int, request_tag: bytes, frame: Frame, peer: str) -> bytes:
    """The payload of an answer whose tag proves the token and binds it to the request; AgentAuthError if not."""
    try:
        payload, tag = split_tag(frame)
    except AuthError as exc:
        raise AgentAuthError(f"answer from {peer} fails authentication: {exc.message}") from None
    if tag is None:
        raise AgentAuthError(
            f"answer from {peer} carries no tag: the agent holds no token (or it is not the agent); "
            "its answers cannot be verified"
        )
    if not hmac.compare_digest(tag, key.answer_tag(seq, request_tag, frame.head, payload)):
        said = frame.header.get("error") if frame.header.get("type") == "error" else None
        note = f" (its unverified message: {clip_text(str(said.get('message')), 300)})" if isinstance(said, dict) else ""
        raise AgentAuthError(
            f"answer from {peer} fails authentication: wrong token, or not the agent (a relayed or altered answer){note}"
        )
    return payload
