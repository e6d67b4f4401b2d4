"""Where an agent is: agent URLs parsed into connection parameters, and the `local` agent subprocess.

URLs: `tcp://HOST:PORT`, `serial:///dev/ttyUSB0?baud=115200`, and `local`, which starts
`python -m widthwise.device_agents serve --port 0` as a subprocess on a free loopback port
and stops it on close (profiler.agent_client connects to it like to any TCP agent).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import SplitResult, parse_qs, urlsplit

from widthwise.device_agents.errors import AgentConnectionError

from .errors import AgentUrlError

LOCAL_START_TIMEOUT_S = 60.0


def _parse_tcp(url: str, parts: SplitResult) -> dict:
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise AgentUrlError(f"agent URL {url!r} needs a host and a port (0-65535): tcp://HOST:PORT", field="--agent")
    return {"host": parts.hostname, "port": port}


def _parse_serial(url: str, parts: SplitResult) -> dict:
    device = parts.path or parts.netloc
    if not device:
        raise AgentUrlError(f"agent URL {url!r} names no device: serial:///dev/ttyUSB0?baud=115200", field="--agent")
    query = parse_qs(parts.query)
    unknown = set(query) - {"baud"}
    if unknown:
        raise AgentUrlError(f"agent URL {url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; only baud",
                            field="--agent")
    try:
        baud = int(query.get("baud", ["115200"])[0])
    except ValueError:
        raise AgentUrlError(f"agent URL {url!r}: baud must be an integer", field="--agent") from None
    return {"device": device, "baud": baud}


#: URL scheme -> parser of the rest of the URL into connection parameters.
URL_PARSERS: dict[str, Callable[[str, SplitResult], dict]] = {"tcp": _parse_tcp, "serial": _parse_serial}


def parse_url(url: str) -> tuple[str, dict]:
    """Split an agent URL into its kind ("tcp", "serial", "local") and parameters."""
    if url == "local":
        return "local", {}
    parts = urlsplit(url)
    parser = URL_PARSERS.get(parts.scheme)
    if parser is None:
        raise AgentUrlError(f"unknown agent URL {url!r}: use tcp://HOST:PORT, serial:///DEV?baud=N or local", field="--agent")
    return parts.scheme, parser(url, parts)


class LocalAgent:
    """An agent subprocess on this machine, listening on a free loopback port."""

    def __init__(self, args: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.workdir = Path(tempfile.mkdtemp(prefix="widthwise-agent-"))
        self.port_file = self.workdir / "port"
        self.log_path = self.workdir / "agent.log"
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    def start(self) -> int:
        """Start the subprocess and wait for its port; AgentConnectionError if it does not come up."""
        self.port_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # -P, no PYTHONPATH and a private cwd: the installed widthwise is what runs, and nothing in the
        # user's working directory (a logging.py, a device_agents.py) is importable
        cmd = [sys.executable, "-P", "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(self.port_file),
               "--exit-with-stdin", *self.args]
        with open(self.log_path, "ab") as log:
            # the agent exits when this pipe closes, so it never outlives its host process
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env, cwd=self.workdir)
        deadline = time.monotonic() + LOCAL_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.port_file.exists():
                text = self.port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    return self.port
            if self.proc.poll() is not None:
                raise AgentConnectionError(f"local agent exited with status {self.proc.returncode}: {self.log_tail()}")
            time.sleep(0.02)
        self.stop()
        raise AgentConnectionError(f"local agent did not start within {LOCAL_START_TIMEOUT_S:g} s: {self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the agent's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def cleanup(self) -> None:
        """Stop the subprocess and remove its port file and log."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        """Terminate the subprocess (kill it if it does not exit within 5 s)."""
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
