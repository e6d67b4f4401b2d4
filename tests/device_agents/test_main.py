"""The agent's command line as a real process: refusals at start, and a serial line on a pty."""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time
import tty
import zlib
from pathlib import Path

from widthwise.device_agents.protocol import MAGIC, Frame, FrameDecoder, encode_frame, request_header
from tests.support.procs import read_line

REPO = Path(__file__).resolve().parents[2]


def run_agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "widthwise.device_agents", "serve", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_process_refuses_a_public_bind_without_a_token() -> None:
    result = run_agent("--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr and "--token-file" in result.stderr


def test_process_refuses_an_unreadable_or_short_token(tmp_path: Path) -> None:
    result = run_agent("--token-file", str(tmp_path / "missing"), "--port", "0")
    assert result.returncode == 2 and "cannot read token file" in result.stderr
    short = tmp_path / "short"
    short.write_text("fifteen-bytes-x\n")
    result = run_agent("--token-file", str(short), "--port", "0")
    assert result.returncode == 2 and "holds 15 bytes" in result.stderr and "at least 16 bytes" in result.stderr
    binary = tmp_path / "binary"
    binary.write_bytes(bytes(range(256)))
    result = run_agent("--token-file", str(binary), "--port", "0")
    assert result.returncode == 2 and "non-printable byte 0x00" in result.stderr and "base64" in result.stderr
    result = run_agent("--max-frame-bytes", "100", "--port", "0")
    assert result.returncode == 2 and "--max-frame-bytes must be at least 4096" in result.stderr


def test_process_on_a_pty_answers_bad_bytes_with_error_frames_and_keeps_serving() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--serial", os.ttyname(slave)],
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
        assert "serving serial://" in read_line(proc, 60)
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
