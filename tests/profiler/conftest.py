"""Fixtures shared by the profiler tests that need a real agent process of their own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def start_tcp_agent(tmp_path: Path) -> Callable[..., tuple[subprocess.Popen, int]]:
    """Start `python -m device_agents serve` on a free loopback port: returns (process, port).

    A test may kill, freeze or restart its agents itself; any still running at the end are killed.
    """
    started: list[subprocess.Popen] = []

    def start(*extra: str) -> tuple[subprocess.Popen, int]:
        port_file = tmp_path / f"port-{time.monotonic_ns()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "device_agents", "serve", "--port", "0", "--port-file", str(port_file), *extra],
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
