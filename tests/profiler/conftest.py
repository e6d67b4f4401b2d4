"""Fixtures shared by the profiler tests that need a real agent process of their own."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from widthwise.device_agents.protocol import Frame, FrameDecoder, encode_raw_frame

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def start_tcp_agent(tmp_path: Path) -> Callable[..., tuple[subprocess.Popen, int]]:
    """Start `python -m widthwise.device_agents serve` on a free loopback port: returns (process, port).

    A test may kill, freeze or restart its agents itself; any still running at the end are killed.
    """
    started: list[subprocess.Popen] = []

    def start(*extra: str) -> tuple[subprocess.Popen, int]:
        port_file = tmp_path / f"port-{time.monotonic_ns()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )
        started.append(proc)
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "agent did not start"
            time.sleep(0.05)
        return proc, int(port_file.read_text())

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class FrameRelay:
    """A real TCP server between a client and a real agent: bytes to the agent pass as they are,
    frames back pass through `alter` (which returns the bytes to send instead, or None to pass
    the frame on unchanged). The agent's nonce reaches the client through it, as through any relay.
    """

    def __init__(self, agent_port: int, alter: Callable[[Frame], bytes | None]) -> None:
        self.agent_port = agent_port
        self.alter = alter
        self.altered = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            agent = socket.create_connection(("127.0.0.1", self.agent_port), timeout=10)
            self._sockets += [client, agent]
            threading.Thread(target=self._pump_up, args=(client, agent), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(agent, client), daemon=True).start()

    @staticmethod
    def _pump_up(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass

    def _pump_down(self, src: socket.socket, dst: socket.socket) -> None:
        decoder = FrameDecoder()
        try:
            src.settimeout(None)
            while data := src.recv(1 << 16):
                decoder.feed(data)
                for event in decoder.events():
                    if not isinstance(event, Frame):
                        continue
                    replaced = self.alter(event)
                    self.altered += replaced is not None
                    dst.sendall(replaced if replaced is not None else encode_raw_frame(event.head, event.payload))
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def frame_relay() -> Callable[..., FrameRelay]:
    """Start FrameRelay(agent_port, alter) servers; all are closed at the end."""
    relays: list[FrameRelay] = []

    def start(agent_port: int, alter: Callable[[Frame], bytes | None]) -> FrameRelay:
        relays.append(FrameRelay(agent_port, alter))
        return relays[-1]

    yield start
    for relay in relays:
        relay.close()
