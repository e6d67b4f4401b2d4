"""Fuzzing the frame decoder: no crash, no hang, every rejection an error the server can send.

Hypothesis drives 10,500 inputs through the decoder (random bytes, valid frames with
flipped, dropped and inserted bytes, and frames with hostile headers); a live agent then
gets a batch of garbage over a real socket and must answer each rejection with an error
frame and still serve the next request.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from widthwise.device_agents.errors import ERRORS_BY_CODE, AgentError
from widthwise.device_agents.protocol import (
    MAGIC,
    TRAILER,
    Frame,
    FrameDecoder,
    encode_frame,
    error_header,
    request_header,
)
from tests.support.frames import decode_all

CAP = 1 << 16
#: examples per fuzz test: 10,500 inputs in all, the same on every run (derandomized).
FUZZ_EXAMPLES = {
    "test_random_bytes": 3000,
    "test_random_bytes_around_a_magic": 1500,
    "test_corrupted_valid_frames": 3500,
    "test_well_framed_hostile_headers": 2500,
}


def fuzz(name: str) -> settings:
    """Deterministic settings (the same inputs on every run) with that test's example count."""
    return settings(
        max_examples=FUZZ_EXAMPLES[name],
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


def _valid_frames() -> list[bytes]:
    return [
        encode_frame(request_header("hello", 1)),
        encode_frame(request_header("bench_model", 7, {"format": "onnx"}), b"\x00\x01\x02" * 40),
        encode_frame({"v": 2, "id": 3, "type": "bench_spec", "spec": {"space": "mobilenet_v1", "widths": [8] * 14}}),
    ]


def _drain(decoder: FrameDecoder) -> list[Frame | AgentError]:
    """Every event, giving up on a stalled partial frame as the server does when the line goes quiet."""
    events: list[Frame | AgentError] = []
    for _ in range(100_000):  # a hang would be a decoder that neither consumes nor yields
        event = decoder.next_event()
        if event is None:
            if decoder.buffered == 0:
                return events
            event = decoder.truncate_front()
        events.append(event)
    raise AssertionError("decoder did not terminate")


def _check(data: bytes) -> None:
    decoder = FrameDecoder(CAP)
    decoder.feed(data)
    events = _drain(decoder)
    for event in events:
        assert isinstance(event, (Frame, AgentError))
        if isinstance(event, AgentError):
            assert event.code in ERRORS_BY_CODE
            # every rejection becomes an error frame that decodes back to the same code
            (answer,) = decode_all(encode_frame(error_header(None, event)))
            assert answer.header["type"] == "error" and answer.header["error"]["code"] == event.code
        else:
            assert isinstance(event.header, dict)
    # after anything at all, a clean frame is still understood
    good = _valid_frames()[0]
    decoder.feed(good)
    tail = _drain(decoder)
    assert isinstance(tail[-1], Frame) and tail[-1].header["type"] == "hello"


@fuzz("test_random_bytes")
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _check(data)


@fuzz("test_random_bytes_around_a_magic")
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_random_bytes_around_a_magic(before: bytes, after: bytes) -> None:
    _check(before + MAGIC + after)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    frames = _valid_frames()
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(frames), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "drop":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:]
    return bytes(data)


@fuzz("test_corrupted_valid_frames")
@given(_mutated())
def test_corrupted_valid_frames(data: bytes) -> None:
    _check(data)


def _framed(header_bytes: bytes, payload: bytes = b"", hlen: int | None = None, plen: int | None = None) -> bytes:
    hlen = len(header_bytes) if hlen is None else hlen
    plen = len(payload) if plen is None else plen
    prefix12 = struct.pack(">4sII", MAGIC, hlen, plen)
    prefix = prefix12 + struct.pack(">I", zlib.crc32(prefix12))
    body = header_bytes + payload
    return prefix + body + TRAILER.pack(zlib.crc32(body))


@fuzz("test_well_framed_hostile_headers")
@given(
    st.one_of(
        st.binary(max_size=80),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
            max_leaves=8,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    st.binary(max_size=32),
    st.sampled_from([None, 0, 1, CAP, CAP + 1, 2**32 - 1]),
)
def test_well_framed_hostile_headers(header: bytes, payload: bytes, fake_len: int | None) -> None:
    _check(_framed(header, payload, plen=fake_len))


# --- a live agent under garbage ---------------------------------------------------------------


@pytest.fixture()
def agent_port(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if port_file.exists() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                pytest.fail("agent exited at start")
            import time

            time.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        proc.kill()
        proc.wait()


def _read_frames_until_result(sock: socket.socket) -> list[Frame | AgentError]:
    decoder = FrameDecoder()
    events: list[Frame | AgentError] = []
    sock.settimeout(30)
    while True:
        chunk = sock.recv(65536)
        assert chunk, "agent closed the connection"
        decoder.feed(chunk)
        for event in decoder.events():
            events.append(event)
            if isinstance(event, Frame) and event.header.get("type") == "result":
                return events


def test_live_agent_answers_garbage_with_error_frames_and_keeps_serving(agent_port: int) -> None:
    import random

    rng = random.Random(7)
    valid = _valid_frames()[0]
    for round_ in range(40):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        if round_ % 3 == 0:  # a corrupted frame rather than pure noise
            frame = bytearray(_valid_frames()[2])
            frame[rng.randrange(len(frame))] ^= 0x10
            garbage = bytes(frame)
        with socket.create_connection(("127.0.0.1", agent_port), timeout=10) as sock:
            sock.sendall(garbage + valid)
            events = _read_frames_until_result(sock)
        answers = [e for e in events if isinstance(e, Frame)]
        assert all(isinstance(e, Frame) for e in events), "the agent sent bytes that are not frames"
        *errors, result = answers
        assert result.header["type"] == "result" and result.header["id"] == 1
        assert errors, f"round {round_}: the garbage was not answered with an error frame"
        assert all(f.header["type"] == "error" and f.header["error"]["code"] in ERRORS_BY_CODE for f in errors)
