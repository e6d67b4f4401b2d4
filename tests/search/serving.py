"""A daemon for the tests that talk HTTP to it: an app served by uvicorn in a thread, or a real
`widthwise serve` process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from tests.support.procs import read_line
from widthwise.search import daemon

#: how each entry point starts the daemon: the search package's own, and the `widthwise` CLI's subcommand
SERVE_ENTRY_POINTS = {
    "search": ("import sys; from widthwise.search.cli_serve import serve; serve(sys.argv[1:])", ()),
    "widthwise": ("from widthwise.profiler.cli import main; main()", ("serve",)),
}


@contextmanager
def running(app: object, **client_kwargs: object) -> Iterator[httpx.Client]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield a client for it."""
    sock = daemon.bind_socket("127.0.0.1", 0)
    server = daemon.make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "daemon did not start"
        time.sleep(0.01)
    client = httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30, **client_kwargs)
    try:
        yield client
    finally:
        client.close()
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def serve_process(folder: Path, stderr_path: Path, *, entry: str = "search",
                  preexec_fn: Callable[[], None] | None = None,
                  client_timeout: float = 30.0) -> Iterator[tuple[subprocess.Popen, httpx.Client, str]]:
    """`serve --tables folder --port 0` in its own process (its stderr in `stderr_path`); yields the
    process, a client for it and the line it printed on starting. Killed on the way out: a graceful
    shutdown would wait for a long computation."""
    code, subcommand = SERVE_ENTRY_POINTS[entry]
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", code, *subcommand, "--tables", str(folder), "--port", "0",
                                 "--log-level", "warning"], stdout=subprocess.PIPE, stderr=stderr, text=True,
                                preexec_fn=preexec_fn)
    try:
        line = read_line(proc, 60)
        if "http://" not in line:
            proc.wait(10)
            pytest.fail(f"the daemon did not start (exit {proc.returncode}): {stderr_path.read_text()[-2000:]}")
        address = line.split("http://", 1)[1].split()[0]
        with httpx.Client(base_url=f"http://{address}", timeout=client_timeout) as client:
            yield proc, client, line
    finally:
        proc.kill()
        proc.wait(30)
