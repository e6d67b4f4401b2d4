"""Host client of the device agent: a connection by URL, typed errors, retries, timeouts.

URLs and the `local` agent subprocess are profiler.agent_endpoint's. With a token, every request is tagged and every answer's tag is checked before anything in it is
used (PROTOCOL.md section 4): an answer that fails is an AgentAuthError. Errors
come back as the agent's typed classes; retryable ones (timeouts, dropped connections,
corrupt frames) are retried after a reconnect, since every request is idempotent.
`timeout` bounds the wait for each answer; a bench whose `timing.max_total_s` allows
itself longer gets that plus BENCH_MARGIN_S instead.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

from widthwise.device_agents import auth
from widthwise.device_agents.buildable import check_buildable
from widthwise.device_agents.errors import (
    AgentAuthError,
    AgentConnectionError,
    AgentError,
    AgentTimeout,
    AuthError,
    FrameTooLarge,
    ProtocolVersionError,
    clip_text,
    error_from_wire,
)
from widthwise.device_agents.protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS, Frame, encode_frame, request_header
from widthwise.device_agents.space_model import Space
from widthwise.device_agents.transport import ByteStream, FrameChannel, default_cap, open_serial, open_tcp

from .agent_endpoint import LocalAgent, parse_url
from .errors import TokenFileError

__all__ = ["AgentClient", "ClientStats", "LocalAgent", "connect", "parse_url", "token_from_file"]

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0
#: A half-received frame stalled this long is treated as truncated (TCP, serial).
FRAME_STALL_S = {"tcp": 10.0, "serial": 1.0}
#: Time allowed beyond a request's own `timing.max_total_s` for building and loading the network.
BENCH_MARGIN_S = 30.0
#: Resends of one request on the same connection after the agent reports an unreadable frame.
MAX_RESENDS = 3


@dataclass
class ClientStats:
    """What the client went through, for reliability tests and reports (counts since it was made)."""

    requests: int = 0  # calls of `request`
    attempts: int = 0  # tries of those requests (one per connection used); retries add to it
    last_attempts: int = 0  # tries of the latest request
    timeouts: int = 0  # tries that ended in AgentTimeout
    reconnects: int = 0  # connections opened after the first
    crc_rejected: int = 0  # frames from the agent this client's decoder rejected (CRC, truncation, garbage)
    agent_frame_errors: int = 0  # `bad_frame` errors the agent sent about our frames (id null)
    resends: int = 0  # identical resends of a request on the same connection
    auth_failures: int = 0  # answers that failed the tag check


class AgentClient:
    """A connection to one agent; a context manager. See module docstring for URLs."""

    def __init__(
        self,
        url: str,
        *,
        token: str | bytes | None = None,
        timeout: float = 120.0,
        retries: int = 2,
        local_agent_args: Sequence[str] = (),
        max_frame_bytes: int | None = None,
    ) -> None:
        self.url = url
        self.kind, self.params = parse_url(url)
        self.token = token.encode("utf-8") if isinstance(token, str) else token
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_frame_bytes = max_frame_bytes or default_cap("serial" if self.kind == "serial" else "tcp")
        self.frame_stall_s = FRAME_STALL_S["serial" if self.kind == "serial" else "tcp"]
        self.local = LocalAgent(local_agent_args) if self.kind == "local" else None
        self.stats = ClientStats()
        self._ids = itertools.count(1)
        self._channel: FrameChannel | None = None
        self._key: auth.SessionKey | None = None
        self._seq = 0
        self._client_nonce = ""
        self._connections = 0
        self.nonce: str | None = None
        self.protocol: dict = {}
        try:
            self._with_retries(self._connect)
        except BaseException:
            self.close()
            raise

    # --- connection -----------------------------------------------------------------------

    def _open_stream(self) -> ByteStream:
        """A fresh byte stream to the agent, by URL kind."""
        openers: dict[str, Callable[[], ByteStream]] = {
            "tcp": lambda: open_tcp(self.params["host"], self.params["port"], min(self.timeout, CONNECT_TIMEOUT_S)),
            "serial": lambda: open_serial(self.params["device"], self.params["baud"]),
            "local": self._open_local,
        }
        return openers[self.kind]()

    def _open_local(self) -> ByteStream:
        """Start the local agent if it is not running (again, if it died) and connect to it."""
        assert self.local is not None
        if not self.local.alive():
            self.local.start()
        return open_tcp("127.0.0.1", int(self.local.port), CONNECT_TIMEOUT_S)  # type: ignore[arg-type]

    def _connect(self) -> None:
        """Open a connection, run the challenge and, with a token, authenticate (both sides prove it)."""
        self._drop_channel()
        self._channel = FrameChannel(self._open_stream(), max_frame_bytes=self.max_frame_bytes)
        self.stats.reconnects += self._connections > 0
        self._connections += 1
        try:
            self._handshake()
        except BaseException:
            self._drop_channel()
            raise

    def _handshake(self) -> None:
        client_nonce = self._client_nonce = auth.new_nonce()
        self._key, self._seq = None, 0
        fields = {"versions": list(SUPPORTED_VERSIONS), "cnonce": client_nonce}
        try:
            body, _ = self._exchange("challenge", fields, b"")
        except ProtocolVersionError as exc:
            raise ProtocolVersionError(
                f"agent {self.url} cannot talk to this host: {exc.message}; run the same widthwise version on both "
                "(widthwise agent bundle)", **exc.details
            ) from None
        self.nonce = str(body.get("nonce"))
        self.protocol = dict(body.get("protocol") or {})
        if self.token is None:
            if self.protocol.get("auth_required"):
                raise AuthError(f"agent {self.url} requires a token: pass --token-file (or token=...)")
            return
        self._key = auth.SessionKey(self.token, self.nonce, client_nonce)
        self._exchange("authenticate", {}, b"")

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._key = None

    def close(self) -> None:
        """Close the connection (and stop a local agent)."""
        self._drop_channel()
        if self.local is not None:
            self.local.cleanup()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests -------------------------------------------------------------------------

    def _frame(self, rtype: str, rid: int, fields: dict, payload: bytes) -> tuple[bytes, int, bytes]:
        """(frame bytes, counter, tag) of a request; signed with the next counter when the session has a key."""
        header = request_header(rtype, rid, fields, version=int(self.protocol.get("version", PROTOCOL_VERSION)))
        cap = int(self.protocol.get("max_frame_bytes", self.max_frame_bytes))
        try:
            if self._key is None:
                return encode_frame(header, payload, max_frame_bytes=cap), 0, auth.ZERO_TAG
            frame, tag = auth.sign_request(self._key, self._seq + 1, header, payload, cap)
        except FrameTooLarge as exc:
            raise FrameTooLarge(
                f"{rtype} request of {exc.details.get('size')} bytes exceeds the agent's frame cap of {cap} bytes "
                "(agent option --max-frame-bytes)",
                **exc.details,
            ) from None
        self._seq += 1
        return frame, self._seq, tag

    def _exchange(
        self, rtype: str, fields: dict, payload: bytes, *, request_id: int | None = None, timeout: float | None = None,
    ) -> tuple[dict, bytes]:
        """Send one request and wait for the answer with its id, checking its tag (stale frames are skipped)."""
        channel = self._channel
        if channel is None:
            raise AgentConnectionError(f"not connected to {self.url}")
        rid = next(self._ids) if request_id is None else request_id
        frame_bytes, seq, tag = self._frame(rtype, rid, fields, payload)
        channel.stream.write_all(frame_bytes)
        resends = 0
        bound = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + bound
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeout(f"{rtype} request to {self.url} got no answer within {bound:g} s", timeout_s=bound)
            event = channel.receive(remaining, self.frame_stall_s)
            resend = False
            if not isinstance(event, Frame):  # rejected bytes may have been our answer
                self.stats.crc_rejected += 1
                resend = True
            elif event.header.get("id") is None and event.header.get("type") == "error":
                # the agent could not read some frame, perhaps ours (such errors answer no request: no tag)
                self.stats.agent_frame_errors += 1
                resend = error_from_wire(dict(event.header.get("error") or {})).retryable
            elif event.header.get("id") == rid:  # anything else is a late answer to an earlier attempt
                return self._accept(rtype, seq, tag, event)
            if resend and resends < MAX_RESENDS:  # the agent answers an exact resend from memory, not running it again
                resends += 1
                self.stats.resends += 1
                channel.stream.write_all(frame_bytes)

    def _accept(self, rtype: str, seq: int, tag: bytes, event: Frame) -> tuple[dict, bytes]:
        """The (body, payload) of the answer to our request, or its typed error; AgentAuthError if its tag fails.

        With a token every answer must prove it, except an error to the challenge itself
        (such as a version mismatch), which is raised as it came: nothing is kept from it.
        """
        header_in = event.header
        payload = event.payload
        if header_in.get("mac") == auth.MAC_SCHEME and len(payload) >= auth.TAG_BYTES:
            payload = payload[: -auth.TAG_BYTES]  # without a token the tag cannot be checked: it is only cut off
        if self.token is not None and not (rtype == "challenge" and header_in.get("type") == "error"):
            body = header_in.get("body")
            key = self._key or auth.SessionKey(  # the challenge answer: its nonce is in the body the tag covers
                self.token, str(body.get("nonce") if isinstance(body, dict) else ""), self._client_nonce)
            try:
                payload = auth.verify_answer(key, seq, tag, event, self.url)
            except AgentAuthError:
                self.stats.auth_failures += 1
                raise
        if header_in.get("type") == "error":
            raise error_from_wire(dict(header_in.get("error") or {}))
        body = header_in.get("body")
        if header_in.get("type") != "result" or not isinstance(body, dict):
            raise AgentError(f"malformed response from {self.url}: {clip_text(str(header_in), 200)}")
        return body, payload

    def _with_retries(self, attempt: Callable[[], T]) -> T:
        """Run attempt; on a retryable failure drop the connection and try again, up to `retries` times."""
        self.stats.last_attempts = 0
        for n in range(self.retries + 1):
            self.stats.attempts += 1
            self.stats.last_attempts += 1
            try:
                return attempt()
            except AgentError as exc:
                self.stats.timeouts += isinstance(exc, AgentTimeout)
                if not exc.retryable or n == self.retries:
                    raise
                self._drop_channel()
                time.sleep(min(2.0, 0.2 * (n + 1)))
        raise AssertionError("unreachable")

    def request(
        self, rtype: str, fields: dict | None = None, payload: bytes = b"", *, timeout: float | None = None
    ) -> tuple[dict, bytes]:
        """Send a request (resent with the same id on retry) and return (body, payload)."""
        rid = next(self._ids)
        self.stats.requests += 1

        def attempt() -> tuple[dict, bytes]:
            if self._channel is None:
                self._connect()
            return self._exchange(rtype, dict(fields or {}), payload, request_id=rid, timeout=timeout)

        return self._with_retries(attempt)

    def hello(self) -> dict:
        """Who the agent is: versions, runtimes, CPU, OS, fingerprint, protocol."""
        return self.request("hello")[0]

    def bench_spec(
        self,
        spec: dict,
        *,
        runtime: str | None = None,
        timing: dict | None = None,
        options: dict | None = None,
        pair_with: dict | None = None,
        block: int | None = None,
        block_count: int | None = None,
    ) -> dict:
        """Time a network the agent builds from a compact spec (space, params, widths, dtype, seed);
        with `pair_with`, alternate it run by run with that reference network (the `pair` block);
        with `block` (and `block_count`), time only that run of the network's blocks, alone."""
        fields = _without_none(
            {"spec": spec, "pair_with": pair_with, "runtime": runtime, "timing": timing, "options": options,
             "block": block, "block_count": block_count}
        )
        return self.request("bench_spec", fields, timeout=self._bench_timeout(timing))[0]

    def bench_model(
        self, model: bytes, *, fmt: str | None = None, runtime: str | None = None, timing: dict | None = None, options: dict | None = None
    ) -> dict:
        """Time a model sent as bytes (ONNX or TFLite)."""
        fields = _without_none({"format": fmt, "runtime": runtime, "timing": timing, "options": options})
        return self.request("bench_model", fields, bytes(model), timeout=self._bench_timeout(timing))[0]

    def _bench_timeout(self, timing: dict | None) -> float:
        """The answer bound of a bench: `timeout`, stretched when the request allows itself longer."""
        budget = (timing or {}).get("max_total_s")
        if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget > 0:
            return max(self.timeout, float(budget) + BENCH_MARGIN_S)
        return self.timeout


def _without_none(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def token_from_file(path: str | os.PathLike[str] | None) -> str | None:
    """The shared token held in a file, as `connect` takes it (None without a file).

    The same reader and checks as the agent's (`device_agents.auth.load_token`), so a token
    the agent would refuse is refused here too; TokenFileError (a ConfigError) names the file
    and the problem.
    """
    if path is None:
        return None
    try:
        return auth.load_token(path).decode("utf-8", "replace")
    except auth.ConfigError as exc:
        raise TokenFileError(str(exc), field="--token-file") from None


def connect(
    url: str,
    *,
    token: str | None = None,
    timeout: float = 120.0,
    retries: int = 2,
    local_agent_args: Sequence[str] = (),
) -> AgentClient:
    """Open a connection to the agent at `url` (see the module docstring for URL forms)."""
    return AgentClient(url, token=token, timeout=timeout, retries=retries, local_agent_args=local_agent_args)


def check_agent_builds(hello: Mapping[str, object], space: Space, runtime: str, dtype: str) -> None:
    """Refuse, before anything is sent or stored, a space with a block kind the agent that answered
    `hello` cannot build with `runtime` and `dtype` (the agent's own refusal, made early); an agent
    that does not list its kinds is left to refuse by itself."""
    kinds, formats = hello.get("block_kinds"), hello.get("runtime_formats")
    if not isinstance(kinds, Mapping) or not isinstance(formats, Mapping) or runtime not in formats:
        return
    check_buildable(space, str(formats[runtime]), dtype, kinds)
