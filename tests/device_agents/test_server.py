"""The server: dispatch, error frames for every failure, auth, caps; it keeps serving throughout.

Most tests run a real TCP server in a thread with a small handler table; the last ones
start `python -m widthwise.device_agents serve` as a real process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widthwise.device_agents.auth import (
    ZERO_TAG,
    ConfigError,
    SessionKey,
    new_nonce,
    require_token_for_bind,
    seal,
    verify_answer,
)
from widthwise.device_agents.connections import Connection, ServerConfig
from widthwise.device_agents.errors import ERRORS_BY_CODE, AgentAuthError, BadWidths
from widthwise.device_agents.protocol import Frame, encode_frame, encode_raw_frame, request_header
from widthwise.device_agents.server import AgentServer
from widthwise.device_agents.transport import FrameChannel, open_tcp
from tests.support.frames import decode_all

TOKEN = b"s3cret-token-for-tests"
REPO = Path(__file__).resolve().parents[2]


class Handlers(dict):
    """A handler table that counts calls, so tests can prove that no work was done."""

    def __init__(self) -> None:
        super().__init__(hello=self.hello, echo=self.echo, widths=self.widths, crash=self.crash, spill=self.spill)
        self.calls: list[str] = []

    def hello(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        self.calls.append("hello")
        return {"agent_version": "test"}, b""

    def echo(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        self.calls.append("echo")
        return {"n": len(payload), "id_seen": header["id"]}, payload[::-1]

    def widths(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        self.calls.append("widths")
        raise BadWidths("space toy has 2 searchable layers, got 3 widths")

    def crash(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        self.calls.append("crash")
        raise ZeroDivisionError("boom")

    def spill(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        self.calls.append("spill")
        raise ValueError("\x1b[31m" + "secret-looking text " * 1000)


def start_server(token: bytes | None = None, max_frame_bytes: int | None = None):
    handlers = Handlers()
    server = AgentServer(handlers, ServerConfig(token=token, max_frame_bytes=max_frame_bytes, frame_timeout_s=0.3))
    bound: list[int] = []
    thread = threading.Thread(target=server.serve_tcp, kwargs={"on_bound": bound.append}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not bound and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bound, "the test server did not bind within 30 s"
    return server, handlers, bound[0], thread


@pytest.fixture
def agent():
    server, handlers, port, thread = start_server()
    yield handlers, port
    server.stop()
    thread.join(2)


@pytest.fixture
def secure_agent():
    server, handlers, port, thread = start_server(token=TOKEN)
    yield handlers, port
    server.stop()
    thread.join(2)


def ask(channel: FrameChannel, header: dict, payload: bytes = b"") -> Frame:
    """Send one request and return the first frame answered (skipping nothing)."""
    channel.send(header, payload)
    event = channel.receive(5)
    assert isinstance(event, Frame), event
    return event


def exchange_raw(channel: FrameChannel, raw: bytes) -> Frame:
    channel.stream.write_all(raw)
    event = channel.receive(5)
    assert isinstance(event, Frame), event
    return event


def test_hello_carries_the_protocol_fields(agent) -> None:
    _, port = agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    reply = ask(channel, request_header("hello", 1))
    assert reply.header["type"] == "result" and reply.header["id"] == 1
    proto = reply.header["body"]["protocol"]
    assert proto["version"] == 2 and proto["supported"] == [2] and proto["auth_required"] is False
    assert proto["max_frame_bytes"] == 256 << 20


def test_payloads_round_trip_and_ids_are_echoed(agent) -> None:
    _, port = agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    reply = ask(channel, request_header("echo", 77), b"abcdef")
    assert reply.header["body"] == {"n": 6, "id_seen": 77}
    assert reply.payload == b"fedcba"


def test_every_failure_is_an_error_frame_and_the_server_keeps_serving(agent) -> None:
    handlers, port = agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    cases = [
        (request_header("widths", 1), "bad_widths", "got 3 widths"),
        (request_header("nope", 2), "bad_request", "unknown request type 'nope'"),
        (request_header("crash", 3), "agent_error", "ZeroDivisionError"),
        ({"v": 2, "id": "x", "type": "hello"}, "bad_request", "request id"),
        ({"v": 2, "id": 4, "type": 5}, "bad_request", "'type' must be a string"),
        ({"v": 9, "id": 5, "type": "hello"}, "protocol_version", "no common protocol version"),
        ({"v": 1, "id": 5, "type": "hello"}, "protocol_version", "the peer speaks version 1, this side speaks version 2"),
        ({"v": "1", "id": 5, "type": "hello"}, "bad_request", "'v' must be an integer"),
    ]
    for header, code, text in cases:
        reply = ask(channel, header)
        assert reply.header["type"] == "error"
        assert reply.header["error"]["code"] == code and text in reply.header["error"]["message"]
    assert ask(channel, request_header("echo", 6), b"ok").payload == b"ko"


def test_an_internal_error_is_escaped_and_cut_before_it_leaves_the_agent(agent) -> None:
    handlers, port = agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    message = ask(channel, request_header("spill", 1)).header["error"]["message"]
    assert message.startswith("internal error in the agent: ValueError: \\x1b[31m")
    assert "\x1b" not in message and len(message) < 2200 and "characters cut" in message
    assert handlers.calls == ["spill"]


def test_garbage_and_corrupt_frames_get_error_frames(agent) -> None:
    handlers, port = agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    reply = exchange_raw(channel, b"GET / HTTP/1.1\r\n\r\n")
    assert reply.header["error"]["code"] == "bad_frame" and reply.header["id"] is None
    corrupt = bytearray(encode_frame(request_header("echo", 1), b"12345"))
    corrupt[-7] ^= 0xFF
    reply = exchange_raw(channel, bytes(corrupt))
    assert reply.header["error"]["code"] == "bad_frame" and reply.header["error"]["retryable"] is True
    # a truncated frame: the server gives up on it after its frame timeout (0.3 s here)
    reply = exchange_raw(channel, encode_frame(request_header("echo", 2), b"xyz")[:-3])
    assert "truncated" in reply.header["error"]["message"]
    assert reply.header["error"]["details"]["dropped"] == len(encode_frame(request_header("echo", 2), b"xyz")) - 3
    assert ask(channel, request_header("echo", 3), b"ab").payload == b"ba"
    assert "echo" in handlers.calls


def test_oversize_frame_is_refused_and_the_connection_stays_usable() -> None:
    server, handlers, port, thread = start_server(max_frame_bytes=8192)
    try:
        channel = FrameChannel(open_tcp("127.0.0.1", port))
        big = encode_frame(request_header("echo", 1), b"\x00" * 20000)
        reply = exchange_raw(channel, big)
        assert reply.header["error"]["code"] == "frame_too_large"
        assert "8192" in reply.header["error"]["message"]
        reply = ask(channel, request_header("echo", 2), b"fits")
        assert reply.payload == b"stif"
        assert handlers.calls == ["echo"]
    finally:
        server.stop()
        thread.join(2)


def test_a_resent_request_gets_the_cached_answer_without_new_work(agent) -> None:
    handlers, port = agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    first = ask(channel, request_header("echo", 10), b"once")
    again = ask(channel, request_header("echo", 10), b"once")
    assert again.header == first.header and again.payload == first.payload
    assert handlers.calls.count("echo") == 1
    ask(channel, request_header("echo", 11), b"twice")
    assert handlers.calls.count("echo") == 2
    # the same id with other content (another client on a shared serial line) is new work
    assert ask(channel, request_header("echo", 11), b"other").payload == b"rehto"
    assert handlers.calls.count("echo") == 3
    # and a challenge starts a new session: nothing is answered from the old one
    ask(channel, request_header("challenge", 12))
    ask(channel, request_header("echo", 11), b"other")
    assert handlers.calls.count("echo") == 4


def signed(key: SessionKey, seq: int, header: dict, payload: bytes = b"") -> bytes:
    """A request frame tagged under `key` with counter `seq` (PROTOCOL.md section 4)."""
    head, region = seal({**header, "seq": seq}, payload, lambda h, p: key.request_tag(seq, h, p))
    return encode_raw_frame(head, region)


def handshake(channel: FrameChannel, token: bytes = TOKEN) -> SessionKey:
    """Challenge (checking the answer's tag) and authenticate with counter 1; the session key."""
    client_nonce = new_nonce()
    reply = ask(channel, request_header("challenge", 1, {"versions": [2], "cnonce": client_nonce}))
    assert reply.header["body"]["protocol"]["auth_required"] is True
    key = SessionKey(token, reply.header["body"]["nonce"], client_nonce)
    verify_answer(key, 0, ZERO_TAG, reply, "agent")
    answer = exchange_raw(channel, signed(key, 1, request_header("authenticate", 2)))
    assert answer.header["type"] == "result", answer.header
    return key


def test_auth_refuses_unsigned_and_wrongly_signed_requests_without_work(secure_agent) -> None:
    handlers, port = secure_agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    reply = ask(channel, request_header("hello", 1))
    assert reply.header["error"]["code"] == "unauthorized" and "challenge" in reply.header["error"]["message"]
    client_nonce = new_nonce()
    nonce = ask(channel, request_header("challenge", 2, {"cnonce": client_nonce})).header["body"]["nonce"]
    key = SessionKey(TOKEN, nonce, client_nonce)
    # before `authenticate`, even a correctly signed hello is refused: it would reveal the device
    reply = exchange_raw(channel, signed(key, 1, request_header("hello", 3)))
    assert reply.header["error"]["code"] == "unauthorized" and "not authenticated" in reply.header["error"]["message"]
    wrong = SessionKey(b"not-the-token-but-long-enough", nonce, client_nonce)
    reply = exchange_raw(channel, signed(wrong, 1, request_header("authenticate", 4)))
    assert reply.header["error"]["code"] == "unauthorized" and "wrong token" in reply.header["error"]["message"]
    assert exchange_raw(channel, signed(key, 1, request_header("authenticate", 5))).header["type"] == "result"
    reply = ask(channel, request_header("hello", 6))
    assert reply.header["error"]["code"] == "unauthorized" and "no tag" in reply.header["error"]["message"]
    assert handlers.calls == []
    request = signed(key, 2, request_header("echo", 7), b"in")
    assert verify_answer(key, 2, request[-36:-4], exchange_raw(channel, request), "agent") == b"ni"
    assert handlers.calls == ["echo"]


def test_answers_are_tagged_for_their_request_only(secure_agent) -> None:
    handlers, port = secure_agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    key = handshake(channel)
    frame = signed(key, 5, request_header("echo", 9), b"abc")
    request_tag = frame[-36:-4]
    answer = exchange_raw(channel, frame)
    assert answer.header["mac"] == "hmac-sha256" and answer.payload[:3] == b"cba"
    assert verify_answer(key, 5, request_tag, answer, "agent") == b"cba"
    for seq, tag, other_key in [(4, request_tag, key), (5, ZERO_TAG, key), (5, request_tag, SessionKey(TOKEN, key.agent_nonce, new_nonce()))]:
        with pytest.raises(AgentAuthError, match="fails authentication"):
            verify_answer(other_key, seq, tag, answer, "agent")
    forged = Frame({**answer.header, "body": {"n": 0, "id_seen": 9}}, answer.payload, answer.head.replace(b'"n":3', b'"n":0'))
    with pytest.raises(AgentAuthError, match="wrong token, or not the agent"):
        verify_answer(key, 5, request_tag, forged, "agent")


def test_an_exact_resend_of_the_last_request_is_answered_from_memory_and_older_ones_are_refused(secure_agent) -> None:
    handlers, port = secure_agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    key = handshake(channel)
    first = signed(key, 2, request_header("echo", 10), b"once")
    answer = exchange_raw(channel, first)
    again = exchange_raw(channel, first)  # as after a corrupted answer on a serial line: not a replay of work
    assert (again.head, again.payload) == (answer.head, answer.payload) and answer.header["type"] == "result"
    assert handlers.calls == ["echo"]
    assert exchange_raw(channel, signed(key, 3, request_header("echo", 11), b"twice")).header["type"] == "result"
    for frame in (first, signed(key, 3, request_header("echo", 12), b"again"), signed(key, 1, request_header("echo", 13))):
        reply = exchange_raw(channel, frame)
        assert reply.header["error"]["code"] == "replayed_request" and "not above 3" in reply.header["error"]["message"]
    assert handlers.calls == ["echo", "echo"]


def test_a_resent_challenge_keeps_its_session_and_a_new_one_starts_another(secure_agent) -> None:
    handlers, port = secure_agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    challenge = encode_frame(request_header("challenge", 1, {"cnonce": new_nonce()}))
    first = exchange_raw(channel, challenge)
    again = exchange_raw(channel, challenge)  # resent before its answer came: the same nonce, the same session
    assert again.header["body"]["nonce"] == first.header["body"]["nonce"]
    renewed = ask(channel, request_header("challenge", 2, {"cnonce": new_nonce()}))
    assert renewed.header["body"]["nonce"] != first.header["body"]["nonce"]
    assert exchange_raw(channel, challenge).header["body"]["nonce"] not in (first.header["body"]["nonce"], renewed.header["body"]["nonce"])


def test_a_nonce_does_not_carry_over_to_another_connection(secure_agent) -> None:
    handlers, port = secure_agent
    first = FrameChannel(open_tcp("127.0.0.1", port))
    key = handshake(first)
    second = FrameChannel(open_tcp("127.0.0.1", port))
    handshake(second)
    stolen = signed(key, 2, request_header("echo", 2), b"x")
    reply = exchange_raw(second, stolen)
    assert reply.header["error"]["code"] == "unauthorized" and "wrong token or altered" in reply.header["error"]["message"]
    assert handlers.calls == []


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="0.0.0.0"):
        require_token_for_bind("0.0.0.0", None)
    with pytest.raises(ConfigError):
        AgentServer({}, ServerConfig()).serve_tcp("0.0.0.0", 0)
    require_token_for_bind("127.0.0.1", None)
    require_token_for_bind("::1", None)
    require_token_for_bind("0.0.0.0", TOKEN)


# --- the real process ------------------------------------------------------------------


def test_process_logs_refusals_and_keeps_serving(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    token_file.chmod(0o600)
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file),
         "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        port = int(port_file.read_text())
        channel = FrameChannel(open_tcp("127.0.0.1", port))
        key = handshake(channel)
        wrong = SessionKey(b"guessed-token-guessed-token", key.agent_nonce, key.client_nonce)
        assert exchange_raw(channel, signed(wrong, 2, request_header("hello", 2))).header["error"]["code"] == "unauthorized"
        channel.stream.write_all(b"\xde\xad\xbe\xef" * 8)
        assert channel.receive(5).header["error"]["code"] == "bad_frame"
        body = exchange_raw(channel, signed(key, 3, request_header("hello", 3))).header["body"]
        assert body["protocol"]["auth_required"] is True and "fingerprint" in body
        channel.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # still accepting connections
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "refused hello request 2" in err and "wrong token" in err
    assert TOKEN.decode() not in err


def test_process_times_mobilenet_v2_alone_paired_and_int8(tmp_path: Path) -> None:
    """A real agent process builds and times the tree space on both runtimes; bad widths name the variable."""
    from widthwise.device_agents.spaces import make_space

    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    space = make_space("mobilenet_v2", {"resolution": 64, "levels": 4})
    spec = {"space": "mobilenet_v2", "params": {"resolution": 64, "levels": 4}, "widths": list(space.smallest())}
    timing = {"warmup": 1, "repeat": 3, "min_repeat_ms": 1, "number": 1, "clock": "thread_cpu"}
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        channel = FrameChannel(open_tcp("127.0.0.1", int(port_file.read_text())))
        hello = ask(channel, request_header("hello", 1)).header["body"]
        assert "mobilenet_v2" in hello["spaces"]
        wide = dict(spec, widths=list(space.base_widths()))
        answers = [
            ask(channel, request_header("bench_spec", 2, {"spec": spec, "timing": timing}), b""),
            ask(channel, request_header("bench_spec", 3, {"spec": wide, "pair_with": spec, "timing": timing}), b""),
            ask(channel, request_header("bench_spec", 4, {"spec": dict(spec, dtype="int8"), "runtime": "litert",
                                                          "timing": timing}), b""),
        ]
        bodies = [a.header.get("body") or pytest.fail(str(a.header)) for a in answers]
        assert all(len(b["times_ms"]) == 3 and b["stats"]["median"] > 0 for b in bodies)
        assert bodies[1]["pair"]["ratio_median"] > 1.0  # the base widths do more work than the smallest
        assert bodies[2]["runtime"]["name"] == "litert" and bodies[2]["runtime"]["dtype"] == "int8"
        bad = dict(spec, widths=list(space.smallest())[:-1])
        error = ask(channel, request_header("bench_spec", 5, {"spec": bad, "timing": timing}), b"").header["error"]
        assert error["code"] == "bad_widths" and "has 25 variables, got 24 widths, in the order stem," in error["message"]
        channel.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_process_times_every_mobilenet_v2_block_alone(tmp_path: Path) -> None:
    """A real agent process times each block of the tree space alone, fed its own input shape;
    the isolated times add up to a positive figure, and a bad block index names the field."""
    from widthwise.device_agents.network import isolated_network
    from widthwise.device_agents.spaces import make_space

    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    params = {"resolution": 32, "levels": 4}
    space = make_space("mobilenet_v2", params)
    widths = space.base_widths()
    spec = {"space": "mobilenet_v2", "params": params, "widths": list(widths)}
    timing = {"warmup": 1, "repeat": 3, "min_repeat_ms": 1, "clock": "thread_cpu"}
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        channel = FrameChannel(open_tcp("127.0.0.1", int(port_file.read_text())))
        total = 0.0
        for k in range(len(space.templates)):
            answer = ask(channel, request_header("bench_spec", 10 + k, {"spec": spec, "timing": timing, "block": k}))
            body = answer.header.get("body") or pytest.fail(str(answer.header))
            expected = list(isolated_network(space, widths, k).output_shape)
            assert body["block"]["first"] == k and body["block"]["output_shapes"] == [expected]
            assert body["stats"]["median"] > 0
            total += body["stats"]["median"]
        assert total > 0
        k = next(b.index for b in space.blocks(widths) if b.residual and b.residual_from < b.index)
        int8 = ask(channel, request_header("bench_spec", 90, {"spec": dict(spec, dtype="int8"), "runtime": "litert",
                                                               "timing": timing, "block": k})).header
        out = int8.get("body", {}).get("block", {}).get("output_shapes") or pytest.fail(str(int8))
        n, c, h, w = isolated_network(space, widths, k).output_shape
        assert out == [[n, h, w, c]] and int8["body"]["runtime"]["dtype"] == "int8"  # NHWC in TFLite
        error = ask(channel, request_header("bench_spec", 91, {"spec": spec, "timing": timing,
                                                               "block": len(space.templates)})).header["error"]
        assert error["code"] == "bad_request" and error["details"]["field"] == "block"
        channel.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["v", "id", "type", "auth", "versions", "spec", "x"]), json_values, max_size=6
    ).map(lambda h: {**h, "type": h.get("type", "echo")}),
    payload=st.binary(max_size=16),
    secure=st.booleans(),
)
def test_any_json_header_gets_an_encodable_answer(header: dict, payload: bytes, secure: bool) -> None:
    server = AgentServer(Handlers(), ServerConfig(token=TOKEN if secure else None))
    raw = server.answer(Connection("fuzz"), Frame(header, payload), 1 << 20)  # always a frame the server can send
    (frame,) = decode_all(raw)
    answer = frame.header
    assert answer["type"] in ("result", "error")
    if answer["type"] == "error":
        assert answer["error"]["code"] in ERRORS_BY_CODE
    if secure:  # nothing but the handshake before authentication
        assert answer["type"] == "error" or header.get("type") == "challenge"
