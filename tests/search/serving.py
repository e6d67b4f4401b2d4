"""A daemon app served by uvicorn on a free loopback port in a thread, for the tests that talk HTTP to it."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx

from widthwise.search import daemon


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
