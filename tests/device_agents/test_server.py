"""The server: dispatch, error frames for every failure, auth, caps; it keeps serving throughout.

Most tests run a real TCP server in a thread with a small handler table; the last ones
start `python -m device_agents serve` as a real process.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import tty
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agents.auth import ConfigError, request_mac, require_token_for_bind
from device_agents.errors import ERRORS_BY_CODE, BadWidths
from device_agents.protocol import MAGIC, Frame, FrameDecoder, encode_frame, request_header
from device_agents.server import AgentServer, ServerConfig, Session
from device_agents.transport import FrameChannel, open_tcp

TOKEN = b"s3cret-token-for-tests"
REPO = Path(__file__).resolve().parents[2]


class Handlers(dict):
    """A handler table that counts calls, so tests can prove that no work was done."""

    def __init__(self) -> None:
        super().__init__(hello=self.hello, echo=self.echo, widths=self.widths, crash=self.crash)
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


def start_server(token: bytes | None = None, max_frame_bytes: int | None = None):
    handlers = Handlers()
    server = AgentServer(handlers, ServerConfig(token=token, max_frame_bytes=max_frame_bytes, frame_timeout_s=0.3))
    bound: list[int] = []
    thread = threading.Thread(target=server.serve_tcp, kwargs={"on_bound": bound.append}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not bound and time.monotonic() < deadline:
        time.sleep(0.01)
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
    assert proto["version"] == 1 and proto["supported"] == [1] and proto["auth_required"] is False
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
        ({"v": 1, "id": "x", "type": "hello"}, "bad_request", "request id"),
        ({"v": 1, "id": 4, "type": 5}, "bad_request", "'type' must be a string"),
        ({"v": 9, "id": 5, "type": "hello"}, "protocol_version", "no common protocol version"),
        ({"v": "1", "id": 5, "type": "hello"}, "bad_request", "'v' must be an integer"),
    ]
    for header, code, text in cases:
        reply = ask(channel, header)
        assert reply.header["type"] == "error"
        assert reply.header["error"]["code"] == code and text in reply.header["error"]["message"]
    assert ask(channel, request_header("echo", 6), b"ok").payload == b"ko"


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


def _challenge(channel: FrameChannel) -> str:
    reply = ask(channel, request_header("challenge", 1, {"versions": [1]}))
    assert reply.header["body"]["protocol"]["auth_required"] is True
    return reply.header["body"]["nonce"]


def test_auth_refuses_unsigned_and_wrongly_signed_requests_without_work(secure_agent, caplog) -> None:
    handlers, port = secure_agent
    channel = FrameChannel(open_tcp("127.0.0.1", port))
    reply = ask(channel, request_header("hello", 1))
    assert reply.header["error"]["code"] == "unauthorized" and "challenge" in reply.header["error"]["message"]
    nonce = _challenge(channel)
    reply = ask(channel, request_header("hello", 2))
    assert reply.header["error"]["code"] == "unauthorized"
    wrong = request_header("hello", 3, {"auth": request_mac(b"not-the-token", nonce, 3, "hello")})
    reply = ask(channel, wrong)
    assert reply.header["error"]["code"] == "unauthorized" and "wrong token" in reply.header["error"]["message"]
    # a MAC for another request id (a replay) does not pass either
    replay = request_header("hello", 4, {"auth": request_mac(TOKEN, nonce, 3, "hello")})
    assert ask(channel, replay).header["error"]["code"] == "unauthorized"
    assert handlers.calls == []
    good = request_header("echo", 5, {"auth": request_mac(TOKEN, nonce, 5, "echo")})
    assert ask(channel, good, b"in").payload == b"ni"
    assert handlers.calls == ["echo"]


def test_a_nonce_does_not_carry_over_to_another_connection(secure_agent) -> None:
    handlers, port = secure_agent
    first = FrameChannel(open_tcp("127.0.0.1", port))
    nonce = _challenge(first)
    second = FrameChannel(open_tcp("127.0.0.1", port))
    _challenge(second)
    stolen = request_header("echo", 2, {"auth": request_mac(TOKEN, nonce, 2, "echo")})
    assert ask(second, stolen).header["error"]["code"] == "unauthorized"
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


def run_agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device_agents", "serve", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_process_refuses_a_public_bind_without_a_token() -> None:
    result = run_agent("--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr and "--token-file" in result.stderr


def test_process_refuses_an_unreadable_or_short_token(tmp_path: Path) -> None:
    result = run_agent("--token-file", str(tmp_path / "missing"), "--port", "0")
    assert result.returncode == 2 and "cannot read token file" in result.stderr
    short = tmp_path / "short"
    short.write_text("abc\n")
    result = run_agent("--token-file", str(short), "--port", "0")
    assert result.returncode == 2 and "at least 8" in result.stderr
    result = run_agent("--max-frame-bytes", "100", "--port", "0")
    assert result.returncode == 2 and "--max-frame-bytes must be at least 4096" in result.stderr


def test_process_logs_refusals_and_keeps_serving(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    token_file.chmod(0o600)
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_agents", "serve", "--port", "0", "--port-file", str(port_file),
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
        nonce = _challenge(channel)
        wrong = request_header("hello", 2, {"auth": request_mac(b"guessed-token", nonce, 2, "hello")})
        assert ask(channel, wrong).header["error"]["code"] == "unauthorized"
        channel.stream.write_all(b"\xde\xad\xbe\xef" * 8)
        assert channel.receive(5).header["error"]["code"] == "bad_frame"
        good = request_header("hello", 3, {"auth": request_mac(TOKEN, nonce, 3, "hello")})
        body = ask(channel, good).header["body"]
        assert body["protocol"]["auth_required"] is True and "fingerprint" in body
        channel.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # still accepting connections
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "refused hello request 2" in err and "wrong token" in err
    assert TOKEN.decode() not in err


def test_process_on_a_pty_answers_bad_bytes_with_error_frames_and_keeps_serving() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_agents", "serve", "--serial", os.ttyname(slave)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    decoder = FrameDecoder()

    def next_answer(timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = decoder.next_event()
            if isinstance(event, Frame):
                return event.header
            if select.select([master], [], [], 0.1)[0]:
                decoder.feed(os.read(master, 65536))
        raise AssertionError("no answer from the agent")

    try:
        assert "serving serial://" in proc.stdout.readline()
        os.write(master, b"AT+RESET\r\n")
        assert next_answer()["error"]["code"] == "bad_frame"
        lengths = struct.pack(">II", 100, 20 << 20)  # 20 MiB: above the 16 MiB serial cap
        os.write(master, MAGIC + lengths + struct.pack(">I", zlib.crc32(MAGIC + lengths)))
        answer = next_answer()
        assert answer["error"]["code"] == "frame_too_large" and str(16 << 20) in answer["error"]["message"]
        os.write(master, encode_frame(request_header("challenge", 1))[:-8])  # then the line goes quiet
        answer = next_answer()
        assert answer["error"]["code"] == "bad_frame" and "truncated" in answer["error"]["message"]
        os.write(master, encode_frame(request_header("hello", 2)))
        answer = next_answer(30)
        assert answer["id"] == 2 and answer["type"] == "result" and answer["body"]["protocol"]["max_frame_bytes"] == 16 << 20
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(master)
        os.close(slave)


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
    answer, out = server.respond(Session("fuzz"), Frame(header, payload), 1 << 20)
    assert answer["type"] in ("result", "error")
    encode_frame(answer, out)  # always a frame the server can send
    if answer["type"] == "error":
        assert answer["error"]["code"] in ERRORS_BY_CODE
