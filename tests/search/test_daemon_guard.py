"""The daemon's front door: loopback rules, token files, and the ASGI guard (auth, body cap)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from widthwise.search.daemon_guard import DaemonConfigError, GuardMiddleware, check_bind, is_loopback, token_from_file

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False),
    ("example.org", False), ("", False),
])
def test_non_loopback_hosts_require_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    check_bind(host, TOKEN)
    if loopback:
        check_bind(host, None)
    else:
        with pytest.raises(DaemonConfigError, match="token"):
            check_bind(host, None)


def test_token_file_is_read_by_the_shared_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    path.chmod(0o600)
    assert token_from_file(path) == TOKEN.encode()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="widthwise.daemon"):
        assert token_from_file(path) == TOKEN.encode()
    assert "chmod 600" in caplog.text
    for bad in ("short\n", "fifteen-chars-x\n", "two words here-and-more-text\n"):
        path.write_text(bad)
        with pytest.raises(DaemonConfigError, match="at least 16") as refused:
            token_from_file(path)
        assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    path.write_bytes(bytes(range(1, 40)))
    with pytest.raises(DaemonConfigError, match="printable"):
        token_from_file(path)
    with pytest.raises(DaemonConfigError, match="cannot read"):
        token_from_file(tmp_path / "missing")


class Recorder:
    """An inner ASGI app that records what reached it and answers 200 with the body's length."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    async def __call__(self, scope: dict, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append(body)
        payload = json.dumps({"got": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})


def call(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, dict, dict]:
    """Drive one HTTP request through an ASGI app; returns (status, headers, JSON body)."""
    scope = {"type": "http", "method": "POST", "path": "/v1/query", "headers": headers, "client": ("10.1.2.3", 5555)}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
    asyncio.run(app(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), json.loads(body)


def test_bearer_token_checked_before_the_app_runs(caplog: pytest.LogCaptureFixture) -> None:
    inner = Recorder()
    guard = GuardMiddleware(inner, token=TOKEN, max_body=1000)
    with caplog.at_level(logging.WARNING, logger="widthwise.daemon"):
        for header in (None, b"Bearer wrong-token-0123456789", b"Basic " + TOKEN.encode(), TOKEN.encode(),
                       b"Bearer " + TOKEN.encode()[:-1]):
            headers = [] if header is None else [(b"authorization", header)]
            status, head, body = call(guard, headers, [b"{}"])
            assert status == 401 and head[b"www-authenticate"] == b"Bearer" and "token" in body["detail"]
    assert inner.calls == [], "no work done for a refused request"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 5 and all("10.1.2.3" in r and TOKEN not in r for r in refusals)
    for header in (b"Bearer " + TOKEN.encode(), b"bearer " + TOKEN.encode()):
        assert call(guard, [(b"authorization", header)], [b"{}"])[0] == 200
    assert len(inner.calls) == 2


def test_no_token_means_no_auth_check() -> None:
    inner = Recorder()
    assert call(GuardMiddleware(inner, token=None, max_body=1000), [], [b"{}"])[0] == 200


def test_body_cap_with_and_without_content_length() -> None:
    inner = Recorder()
    guard = GuardMiddleware(inner, token=None, max_body=100)
    assert call(guard, [(b"content-length", b"101")], [b"x" * 101])[0] == 413
    assert call(guard, [(b"content-length", b"lots")], [b"x"])[0] == 400
    assert call(guard, [], [b"x" * 60, b"y" * 60])[0] == 413, "chunked bodies are counted as they come"
    assert inner.calls == []
    status, _, body = call(guard, [], [b"x" * 50, b"y" * 50])
    assert status == 200 and body == {"got": 100} and inner.calls == [b"x" * 50 + b"y" * 50]
    assert call(guard, [(b"content-length", b"100")], [b"z" * 100])[0] == 200


def test_work_slots_run_in_threads_and_refuse_beyond_the_queue() -> None:
    import threading

    from widthwise.search.daemon_guard import Busy, WorkSlots

    slots = WorkSlots(1, 1)
    release = threading.Event()
    loop_thread: list[int] = []

    async def scenario() -> list[object]:
        loop_thread.append(threading.get_ident())
        first = asyncio.ensure_future(slots.run(lambda: (release.wait(30), threading.get_ident())[1]))
        second = asyncio.ensure_future(slots.run(lambda: threading.get_ident()))
        await asyncio.sleep(0.05)
        assert slots.admitted == 2
        with pytest.raises(Busy, match="1 work slots are busy"):
            await slots.run(lambda: None)
        release.set()
        return [await first, await second]
    ran_on = asyncio.run(scenario())
    assert loop_thread[0] not in ran_on, "the work ran in worker threads, not on the event loop"
    assert slots.admitted == 0
    with pytest.raises(ValueError):
        WorkSlots(0, 1)
