"""A real agent process with a token, attacked as a hostile peer on the lab network would.

Each test starts `python -m widthwise.device_agents serve --token-file ...` and speaks raw frames to
it over real sockets: requests relayed, replayed, reordered or altered under a valid tag;
a huge frame announced before authentication; idle unauthenticated connections; a flood of
connections from one address; a flood of bad frames against the log; a version 1 peer.
(The fake agent that forges answers for the host is in tests/profiler/test_collect_faults.py.)
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from widthwise.device_agents.auth import ZERO_TAG, SessionKey, new_nonce, seal, verify_answer
from widthwise.device_agents.protocol import MAGIC, PREAUTH_MAX_FRAME, Frame, FrameDecoder, encode_frame, encode_raw_frame, request_header

REPO = Path(__file__).resolve().parents[2]
TOKEN = b"hostile-peer-test-token-0123"
#: generous bounds on how long the agent may take to react; no test asserts a lower bound
REPLY_S = 30.0


@pytest.fixture
def agent(tmp_path: Path):
    """A real agent with a token on a free loopback port: (process, port, log file)."""
    token_file = tmp_path / "agent.token"
    token_file.write_bytes(TOKEN + b"\n")
    token_file.chmod(0o600)
    port_file, log_path = tmp_path / "port", tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file),
             "--token-file", str(token_file)],
            stdout=subprocess.DEVNULL, stderr=log, cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield proc, int(port_file.read_text()), log_path
    finally:
        proc.kill()
        proc.wait()


class Wire:
    """One raw connection to the agent, optionally from another loopback source address."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(REPLY_S)
        self.sock.connect(("127.0.0.1", port))
        self.decoder = FrameDecoder()

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def receive(self) -> Frame:
        """The next frame from the agent (AssertionError if it closes first)."""
        while True:
            for event in self.decoder.events():
                assert isinstance(event, Frame), event
                return event
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the agent closed the connection"
            self.decoder.feed(chunk)

    def ask(self, raw: bytes) -> Frame:
        self.send(raw)
        return self.receive()

    def ask_until(self, raw: bytes, request_id: int) -> Frame:
        """Send, then skip frames until the answer with `request_id` (all earlier ones are handled then)."""
        self.send(raw)
        while (frame := self.receive()).header.get("id") != request_id:
            pass
        return frame

    def closed_by_agent(self, within: float) -> bool:
        """Whether the agent closes the connection within `within` seconds (frames before are skipped)."""
        self.sock.settimeout(within)
        try:
            while self.sock.recv(1 << 16):
                pass
        except socket.timeout:
            return False
        except ConnectionResetError:
            pass
        return True

    def handshake(self) -> SessionKey:
        """Challenge (the answer's tag checked) and authenticate with counter 1."""
        client_nonce = new_nonce()
        answer = self.ask(encode_frame(request_header("challenge", 1, {"versions": [2], "cnonce": client_nonce})))
        key = SessionKey(TOKEN, answer.header["body"]["nonce"], client_nonce)
        verify_answer(key, 0, ZERO_TAG, answer, "agent")
        assert self.ask(signed(key, 1, request_header("authenticate", 2))).header["type"] == "result"
        return key

    def close(self) -> None:
        self.sock.close()


def signed(key: SessionKey, seq: int, header: dict, payload: bytes = b"") -> bytes:
    head, region = seal({**header, "seq": seq}, payload, lambda h, p: key.request_tag(seq, h, p))
    return encode_raw_frame(head, region)


def error_of(frame: Frame) -> tuple[str, str]:
    assert frame.header["type"] == "error", frame.header
    return frame.header["error"]["code"], frame.header["error"]["message"]


def test_a_request_relayed_from_another_connection_is_refused(agent) -> None:
    _, port, _ = agent
    victim, attacker = Wire(port), Wire(port)
    victim_key = victim.handshake()
    attacker.handshake()  # the attacker's own session: another pair of nonces
    captured = signed(victim_key, 2, request_header("hello", 7))
    code, message = error_of(attacker.ask(captured))
    assert code == "unauthorized" and "wrong token or altered request" in message
    assert victim.ask(captured).header["type"] == "result"  # on its own connection it is fine


def test_hello_is_refused_before_authentication(agent) -> None:
    _, port, _ = agent
    wire = Wire(port)
    code, message = error_of(wire.ask(encode_frame(request_header("hello", 1))))
    assert code == "unauthorized" and "challenge" in message
    wire.ask(encode_frame(request_header("challenge", 2, {"cnonce": new_nonce()})))
    code, message = error_of(wire.ask(encode_frame(request_header("hello", 3))))
    assert code == "unauthorized" and "not authenticated" in message


def test_a_replayed_request_is_refused_and_not_run_again(agent) -> None:
    _, port, _ = agent
    wire = Wire(port)
    key = wire.handshake()
    spec = {"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14}
    first = signed(key, 2, request_header("bench_spec", 3, {"spec": spec, "timing": {"warmup": 0, "repeat": 1, "number": 1}}))
    answer = wire.ask(first)
    assert answer.header["type"] == "result"
    # the exact last request again (a resend after a damaged answer): the remembered answer, byte for byte
    again = wire.ask(first)
    assert (again.head, again.payload) == (answer.head, answer.payload)
    assert wire.ask(signed(key, 3, request_header("hello", 4))).header["type"] == "result"
    code, message = error_of(wire.ask(first))  # now it is a replay
    assert code == "replayed_request" and "counter 2 is not above 3" in message


def test_a_reordered_counter_is_refused(agent) -> None:
    _, port, _ = agent
    wire = Wire(port)
    key = wire.handshake()
    later, earlier = signed(key, 5, request_header("hello", 10)), signed(key, 4, request_header("hello", 11))
    assert wire.ask(later).header["type"] == "result"
    code, message = error_of(wire.ask(earlier))
    assert code == "replayed_request" and "counter 4 is not above 5" in message


def test_a_body_swapped_under_a_valid_tag_is_refused(agent) -> None:
    _, port, _ = agent
    wire = Wire(port)
    key = wire.handshake()
    model = b"\x08\x07" + b"\x00" * 64
    head, region = seal({**request_header("bench_model", 5, {"format": "onnx"}), "seq": 2}, model,
                        lambda h, p: key.request_tag(2, h, p))
    tag = region[-32:]
    swapped_payload = encode_raw_frame(head, b"\x08\x07" + b"\xff" * 64 + tag)
    swapped_header = encode_raw_frame(head.replace(b'"format":"onnx"', b'"format":"tflite"'), region)
    for forged in (swapped_payload, swapped_header):
        code, message = error_of(wire.ask(forged))
        assert code == "unauthorized" and "altered" in message, message
    # the genuine one is still accepted: the refusals did not advance the counter
    code, _ = error_of(wire.ask(encode_raw_frame(head, region)))
    assert code == "bad_model"


def _prefix(header_len: int, payload_len: int) -> bytes:
    lengths = struct.pack(">II", header_len, payload_len)
    return MAGIC + lengths + struct.pack(">I", zlib.crc32(MAGIC + lengths))


def test_a_large_frame_before_authentication_is_refused_from_its_prefix_and_the_connection_closed(agent) -> None:
    _, port, _ = agent
    wire = Wire(port)
    wire.send(_prefix(100, 200 << 20))  # announces 200 MiB; not one body byte follows
    code, message = error_of(wire.receive())
    assert code == "frame_too_large" and str(PREAUTH_MAX_FRAME) in message
    assert wire.closed_by_agent(REPLY_S), "the agent kept the connection open for the body"
    # just above the pre-authentication cap is refused the same way, even after a challenge
    wire = Wire(port)
    wire.ask(encode_frame(request_header("challenge", 1, {"cnonce": new_nonce()})))
    wire.send(_prefix(100, PREAUTH_MAX_FRAME - 99))
    assert error_of(wire.receive())[0] == "frame_too_large" and wire.closed_by_agent(REPLY_S)
    # once authenticated, the full cap applies
    wire = Wire(port)
    key = wire.handshake()
    code, _ = error_of(wire.ask(signed(key, 2, request_header("bench_model", 3, {"format": "onnx"}), b"\x00" * (PREAUTH_MAX_FRAME * 2))))
    assert code == "bad_model"


def test_idle_unauthenticated_connections_are_closed(agent) -> None:
    _, port, _ = agent
    silent, challenged = Wire(port), Wire(port)
    challenged.ask(encode_frame(request_header("challenge", 1, {"cnonce": new_nonce()})))
    # the bound is 10 s after accept; 60 s is generous, and there is no lower bound
    assert silent.closed_by_agent(60) and challenged.closed_by_agent(60)


def test_a_flood_from_one_address_does_not_lock_out_another(agent) -> None:
    _, port, _ = agent
    flood: list[Wire] = []
    held = 0
    for _ in range(12):  # more than every slot of the agent, all from 127.0.0.2
        wire = Wire(port, source="127.0.0.2")
        flood.append(wire)
        try:  # a challenge answered proves the agent holds this connection
            wire.ask(encode_frame(request_header("challenge", 1, {"cnonce": new_nonce()})))
            held += 1
        except (AssertionError, ConnectionResetError):
            pass  # refused: closed at once
    assert 1 <= held < 12
    victim = Wire(port, source="127.0.0.1")
    key = victim.handshake()
    assert "fingerprint" in victim.ask(signed(key, 2, request_header("hello", 5))).header["body"]
    for wire in flood:
        wire.close()


def _log_lines(path: Path, skip: int) -> list[str]:
    return path.read_text(errors="replace").splitlines()[skip:]


def test_refused_frames_do_not_flood_the_log_and_peer_text_is_escaped(agent) -> None:
    _, port, log_path = agent
    wire = Wire(port)
    wire.handshake()
    before = len(_log_lines(log_path, 0))
    hostile_type = "\x1b]0;owned\x07\x1b[2J" + "A" * 5000
    corrupt = bytearray(encode_frame(request_header("hello", 9)))
    corrupt[-6] ^= 0x01  # body CRC mismatch: one refused frame each
    count = 300
    start = time.monotonic()
    for i in range(count):
        if i % 2:
            wire.send(bytes(corrupt))
        else:
            wire.send(encode_frame(request_header(hostile_type, 100 + i)))  # unsigned: refused
        wire.receive()  # each is answered with at least one error frame: keeps both sides in step
    wire.ask_until(encode_frame(request_header("hello", 99_999)), 99_999)  # everything before is handled
    elapsed = time.monotonic() - start
    lines = _log_lines(log_path, before)
    # the limiter lets a burst of 20 through, then one a second; a few lines of other kinds may join
    assert len(lines) <= 20 + elapsed + 5, f"{len(lines)} log lines for {count} refused frames in {elapsed:.1f} s"
    text = "\n".join(lines)
    assert "\x1b" not in text and "\x07" not in text
    assert all(len(line) < 1000 for line in lines)
    # what was held back is counted: after a pause, the next line that passes says so
    time.sleep(1.5)  # refills the bucket by at least one line
    wire.ask_until(encode_frame(request_header("hello", 99_998)), 99_998)
    assert "similar lines suppressed" in _log_lines(log_path, before + len(lines))[-1]


def test_a_version_1_peer_gets_an_error_naming_both_versions(agent) -> None:
    _, port, _ = agent
    wire = Wire(port)
    answer = wire.ask(encode_frame({"v": 1, "id": 1, "type": "challenge", "versions": [1]}))
    code, message = error_of(answer)
    assert code == "protocol_version"
    assert "the peer speaks version 1, this side speaks version 2" in message
    assert answer.header["error"]["details"] == {"offered": [1], "supported": [2]}
