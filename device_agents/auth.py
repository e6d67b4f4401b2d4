"""Shared-token authentication: requests prove the token with an HMAC of a server nonce.

The token itself never crosses the wire. The agent hands out a fresh random nonce per
connection (per `challenge` on a serial line); each request then carries
HMAC-SHA256(token, "<nonce>|<id>|<type>") in hex. This authenticates, it does not
encrypt: on a hostile network, tunnel the connection (e.g. over SSH).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from pathlib import Path

from .errors import AuthError

NONCE_BYTES = 16
MIN_TOKEN_BYTES = 8


class ConfigError(ValueError):
    """A server setting is unusable (missing token for a public bind, unreadable token file)."""


def load_token(path: str | os.PathLike[str]) -> bytes:
    """The shared token from a file (surrounding whitespace stripped); ConfigError if unusable."""
    p = Path(path)
    try:
        raw = p.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {p}: {exc.strerror or exc}") from exc
    if len(raw) < MIN_TOKEN_BYTES:
        raise ConfigError(f"token file {p} holds {len(raw)} bytes; a token needs at least {MIN_TOKEN_BYTES}")
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
    """A fresh random server nonce, hex-encoded."""
    return secrets.token_hex(NONCE_BYTES)


def request_mac(token: bytes, nonce: str, request_id: int, request_type: str) -> str:
    """The hex HMAC-SHA256 a request carries in its `auth` field."""
    message = f"{nonce}|{request_id}|{request_type}".encode("utf-8")
    return hmac.new(token, message, hashlib.sha256).hexdigest()


def verify_request(token: bytes, nonce: str | None, header: dict) -> None:
    """Check a request's `auth` field against the token and the session nonce; AuthError if wrong."""
    if nonce is None:
        raise AuthError("this agent requires authentication: send a 'challenge' request first, then sign requests")
    mac = header.get("auth")
    if not isinstance(mac, str) or not mac:
        raise AuthError("this agent requires authentication: the request carries no 'auth' HMAC")
    expected = request_mac(token, nonce, header.get("id"), str(header.get("type")))  # type: ignore[arg-type]
    if not hmac.compare_digest(mac.lower().encode("ascii", "replace"), expected.encode("ascii")):
        raise AuthError("wrong token: the request's HMAC does not match this agent's token")
