"""The pty-bridged serial link: bytes cross it through pyserial, faults are seeded and counted."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from widthwise.profiler.agent_client import connect
from tests.support.ptylink import FaultInjector, PtyLink
from tests.support.procs import read_line

REPO = Path(__file__).resolve().parents[2]


def read_exactly(port: serial.Serial, n: int, timeout: float = 60.0) -> bytes:
    """Up to n bytes, reading until they are all there or `timeout` s have passed (a hang bound only)."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += port.read(n - len(got))
    return got


def test_bytes_cross_in_both_directions_unchanged() -> None:
    data = bytes(range(256)) * 64  # every byte value, including XON/XOFF and newlines
    with PtyLink() as link:
        agent = serial.Serial(link.agent_path, 115200, timeout=0.1)
        client = serial.Serial(link.client_path, 115200, timeout=0.1)
        try:
            client.write(data)
            assert read_exactly(agent, len(data)) == data
            agent.write(data[::-1])
            assert read_exactly(client, len(data)) == data[::-1]
        finally:
            agent.close()
            client.close()
    assert link.relayed == {"to_agent": len(data), "to_client": len(data)}


def test_fault_injector_is_reproducible_and_counts_what_it_does() -> None:
    data = bytes(range(256)) * 200
    first = FaultInjector(flip_rate=0.01, drop_rate=0.01, insert_rate=0.01, seed=7)
    second = FaultInjector(flip_rate=0.01, drop_rate=0.01, insert_rate=0.01, seed=7)
    out = first.apply(data)
    assert out == second.apply(data)
    counts = first.counts()
    assert counts.flipped > 0 and counts.dropped > 0 and counts.inserted > 0
    assert len(out) == len(data) - counts.dropped + counts.inserted
    # about 1 % each, over 51,200 bytes
    assert 300 < counts.flipped < 750 and 300 < counts.dropped < 750 and 300 < counts.inserted < 750
    assert FaultInjector().apply(data) == data
    with pytest.raises(ValueError, match="flip_rate"):
        FaultInjector(flip_rate=1.5)


def test_a_noisy_line_corrupts_bytes_between_the_ends() -> None:
    data = b"\x55" * 4000
    with PtyLink(to_agent=FaultInjector(flip_rate=0.02, seed=3)) as link:
        agent = serial.Serial(link.agent_path, 115200, timeout=0.1)
        client = serial.Serial(link.client_path, 115200, timeout=0.1)
        try:
            client.write(data)
            got = read_exactly(agent, len(data))
        finally:
            agent.close()
            client.close()
    flipped = sum(a != b for a, b in zip(got, data))
    assert len(got) == len(data) and flipped == link.to_agent.flipped > 0


def test_requests_complete_over_a_lossy_line() -> None:
    # a light version of the fault tests: bits flipped, bytes dropped and inserted both ways
    faults = dict(flip_rate=3e-4, drop_rate=3e-4, insert_rate=3e-4)
    with PtyLink(to_agent=FaultInjector(seed=11, **faults), to_client=FaultInjector(seed=12, **faults)) as link:
        proc = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--serial", link.agent_path, "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
        )
        try:
            assert "serving serial://" in read_line(proc, 60)
            spec = {"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14}
            with connect(f"serial://{link.client_path}", timeout=3, retries=8) as client:
                results = [client.bench_spec(spec, timing={"warmup": 0, "repeat": 2, "number": 1}) for _ in range(15)]
        finally:
            proc.terminate()
            proc.wait(10)
    assert all(r["stats"]["count"] == 2 for r in results)
    touched = link.to_agent.counts(), link.to_client.counts()
    assert sum(c.flipped + c.dropped + c.inserted for c in touched) > 0


def test_a_paced_link_moves_bytes_at_the_baud_rate() -> None:
    """The link waits len(chunk) / (baud / 10) s before it passes each chunk on, so the last byte
    cannot arrive before the whole 0.25 s; that lower bound is the link's own waiting and no
    load can shorten it (an unpaced pty takes well under a millisecond). No upper bound: a busy
    machine may only make it slower, and `read_exactly`'s generous deadline bounds a hang."""
    data = b"x" * 2400  # 0.25 s at 96,000 baud (9,600 bytes/s)
    with PtyLink(baud=96_000) as link:
        agent = serial.Serial(link.agent_path, 96_000, timeout=0.1)
        client = serial.Serial(link.client_path, 96_000, timeout=0.1)
        try:
            start = time.monotonic()
            client.write(data)
            got = read_exactly(agent, len(data), timeout=60.0)
            elapsed = time.monotonic() - start
        finally:
            agent.close()
            client.close()
    assert got == data and elapsed >= 0.2
    with pytest.raises(ValueError, match="baud"):
        PtyLink(baud=0)
