"""Byte streams and frame channels over real loopback sockets and real pseudo-terminals."""

from __future__ import annotations

import os
import socket
import time
import tty

import pytest

from widthwise.device_agents.errors import AgentConnectionError, AgentTimeout, FrameError, FrameTooLarge
from widthwise.device_agents.protocol import Frame, encode_frame
from widthwise.device_agents.transport import FrameChannel, default_cap, open_serial, open_tcp, write_port_file


@pytest.fixture
def tcp_pair():
    """A connected (client channel, server-side socket) pair over 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = open_tcp("127.0.0.1", port, timeout=5)
    server_sock, addr = listener.accept()
    listener.close()
    channel = FrameChannel(client, max_frame_bytes=1 << 20)
    yield channel, server_sock
    channel.close()
    server_sock.close()


def test_frames_cross_a_real_socket(tcp_pair) -> None:
    channel, peer = tcp_pair
    payload = os.urandom(300_000)  # several TCP segments
    peer.sendall(encode_frame({"v": 2, "id": 1, "type": "result", "body": {}}, payload))
    event = channel.receive(5)
    assert isinstance(event, Frame) and event.payload == payload
    channel.send({"v": 2, "id": 2, "type": "hello"})
    peer.settimeout(5)
    assert peer.recv(4) == b"WWF\x01"


def test_a_silent_peer_times_out_within_the_bound(tcp_pair) -> None:
    channel, _ = tcp_pair
    start = time.monotonic()
    with pytest.raises(AgentTimeout, match="no frame"):
        channel.receive(0.3)
    # the lower bound is the test's own timeout; the upper one only catches a timeout not honoured
    assert 0.25 < time.monotonic() - start < 0.3 + 10


def test_a_stalled_half_frame_is_reported_truncated(tcp_pair) -> None:
    channel, peer = tcp_pair
    raw = encode_frame({"v": 2, "id": 1, "type": "hello"})
    peer.sendall(raw[:-5])
    event = channel.receive(5, frame_timeout=0.2)
    assert isinstance(event, FrameError) and "truncated" in event.message
    peer.sendall(encode_frame({"v": 2, "id": 2, "type": "hello"}))
    frames = []
    deadline = time.monotonic() + 5
    while not frames and time.monotonic() < deadline:
        event = channel.receive(5, frame_timeout=0.2)
        if isinstance(event, Frame):
            frames.append(event)
    assert frames[0].request_id == 2


def test_peer_close_is_a_connection_error(tcp_pair) -> None:
    channel, peer = tcp_pair
    peer.close()
    with pytest.raises(AgentConnectionError, match="closed"):
        channel.receive(2)


def test_oversize_send_is_refused_before_any_byte(tcp_pair) -> None:
    channel, peer = tcp_pair
    with pytest.raises(FrameTooLarge):
        channel.send({"v": 2}, b"x" * 4096, max_frame_bytes=1024)
    peer.settimeout(0.2)
    with pytest.raises(socket.timeout):
        peer.recv(1)


def test_unreachable_agent_is_a_connection_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(AgentConnectionError, match="cannot connect"):
        open_tcp("127.0.0.1", port, timeout=2)


def test_serial_stream_over_a_pseudo_terminal() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    stream = open_serial(path, 115200)
    channel = FrameChannel(stream, max_frame_bytes=default_cap("serial"))
    try:
        os.write(master, b"\x00noise" + encode_frame({"v": 2, "id": 3, "type": "hello"}, b"abc"))
        first = channel.receive(5)
        assert isinstance(first, FrameError) and "skipped 6 bytes" in first.message
        frame = channel.receive(5)
        assert isinstance(frame, Frame) and frame.request_id == 3 and frame.payload == b"abc"
        channel.send({"v": 2, "id": 4, "type": "result", "body": {}})
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            got += os.read(master, 1024)
        assert got.startswith(b"WWF\x01")
        start = time.monotonic()
        with pytest.raises(AgentTimeout):
            channel.receive(0.2)
        assert time.monotonic() - start < 0.2 + 10  # only catches a timeout not honoured
    finally:
        channel.close()
        os.close(master)
        os.close(slave)


def test_missing_serial_device_is_a_connection_error(tmp_path) -> None:
    with pytest.raises(AgentConnectionError, match="cannot open serial line"):
        open_serial(str(tmp_path / "ttyNOPE"))


def test_caps_by_transport() -> None:
    assert default_cap("tcp") == 256 << 20
    assert default_cap("serial") == 16 << 20


def test_the_port_file_is_written_without_following_a_symlink(tmp_path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "port"
    # the temporary name an older agent used, planted as a symlink, and the target itself a symlink
    (tmp_path / f".port.{os.getpid()}.tmp").symlink_to(victim)
    target.symlink_to(victim)
    write_port_file(target, 4321)
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "4321\n"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted(["victim", "port", f".port.{os.getpid()}.tmp"])
