"""Collection under the faults real boards and lines produce, on real processes.

A serial line that flips, drops and inserts bytes between two pseudo-terminals; an agent
that stops answering in the middle of a request (SIGSTOP); in each case nothing corrupt
is stored, nothing is lost, and the run either finishes or says how far it got and
resumes to exactly the samples asked for.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from widthwise.device_agents.errors import AgentAuthError
from widthwise.device_agents.protocol import Frame, encode_header, encode_raw_frame
from widthwise.device_agents.spaces import make_space
from widthwise.profiler.agent_client import connect
from widthwise.profiler.collect import CollectIncomplete, CollectSettings, collect
from tests.support.ptylink import FaultInjector, PtyLink
from widthwise.profiler.sampling import make_sampler
from tests.support.procs import read_line

REPO = Path(__file__).resolve().parents[2]
SPACE_PARAMS = {"resolution": 32, "levels": 4}
FAST_TIMING = {"warmup": 1, "repeat": 4, "min_repeat_ms": 2.0}


def _settings(db: Path, samples: int) -> CollectSettings:
    return CollectSettings(
        space="mobilenet_v1", samples=samples, db=str(db), space_params=SPACE_PARAMS, timing=FAST_TIMING,
        reference_every=5, retime_outliers=False,
    )


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT id, kind, slot, widths, times_ms, stats FROM samples ORDER BY id"
        ).fetchall()


def _assert_every_row_is_sound(db: Path, samples: int) -> None:
    """Each stored sample has its planned widths and timings consistent with its own statistics."""
    plan = make_sampler("coverage", make_space("mobilenet_v1", SPACE_PARAMS), seed=0).plan(samples)
    rows = _rows(db)
    sample_rows = [r for r in rows if r[1] == "sample"]
    assert sorted(r[2] for r in sample_rows) == list(range(samples)), "a slot is missing or duplicated"
    for _id, _kind, slot, widths, times_ms, stats in rows:
        times = np.array(json.loads(times_ms))
        st = json.loads(stats)
        assert len(times) == st["count"] and np.all(np.isfinite(times)) and np.all(times > 0)
        assert st["min"] == pytest.approx(times.min()) and st["median"] == pytest.approx(np.median(times))
        if slot is not None:
            assert json.loads(widths) == list(plan[slot])
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_collection_over_a_corrupting_serial_line_stores_nothing_corrupt_and_finishes(tmp_path):
    db = tmp_path / "serial.sqlite"
    to_agent = FaultInjector(flip_rate=2e-4, drop_rate=5e-5, insert_rate=5e-5, seed=11)
    to_client = FaultInjector(flip_rate=1e-4, drop_rate=3e-5, insert_rate=3e-5, seed=12)
    with PtyLink(to_agent=to_agent, to_client=to_client) as link:
        agent = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--serial", link.agent_path, "--baud", "115200"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
        )
        try:
            assert "serving serial://" in read_line(agent, 60)
            with connect(f"serial://{link.client_path}?baud=115200", timeout=4, retries=8) as client:
                summary = collect(client, _settings(db, 16), progress=False)
        finally:
            agent.terminate()
            agent.wait(10)
    assert summary["complete"] and summary["samples"] == 16
    touched, back = sum(vars(to_agent.counts()).values()), sum(vars(to_client.counts()).values())
    stats = client.stats
    print(f"serial faults injected: to agent {to_agent.counts()}, to client {to_client.counts()}; client {stats}")
    assert touched > 0 and back > 0, f"the line injected too few faults to prove anything: {touched} {back}"
    # every byte towards the client is part of a frame, so each damaged one was seen and rejected by
    # the client's decoder: at least one rejection, and no more rejections than damaged bytes
    assert 0 < stats.crc_rejected <= back
    # the agent's `bad_frame` reports are about damaged requests: no more of them than damaged bytes
    assert stats.agent_frame_errors <= touched
    # each resend answers one rejection or one agent report, and there was at least one
    assert 0 < stats.resends <= stats.crc_rejected + stats.agent_frame_errors
    assert stats.auth_failures == 0
    _assert_every_row_is_sound(db, 16)


def test_an_agent_that_stops_answering_times_out_is_retried_then_reported_and_resume_completes(tmp_path, start_tcp_agent):
    db = tmp_path / "stall.sqlite"
    proc, port = start_tcp_agent()
    stopped_at: list[float] = []

    def freeze_after_four() -> None:
        while proc.poll() is None:
            try:
                done = sum(1 for r in _rows(db) if r[1] == "sample") if db.exists() else 0
            except sqlite3.OperationalError:
                done = 0
            if done >= 4:
                os.kill(proc.pid, signal.SIGSTOP)  # alive, connected, silent: the worst case for a client
                stopped_at.append(time.monotonic())
                return
            time.sleep(0.01)

    threading.Thread(target=freeze_after_four, daemon=True).start()
    timeout, retries = 1.5, 2
    try:
        with connect(f"tcp://127.0.0.1:{port}", timeout=timeout, retries=retries) as client:
            with pytest.raises(CollectIncomplete, match="AgentTimeout") as info:
                collect(client, _settings(db, 20), progress=False)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()
    assert stopped_at, "the agent was never frozen"
    # the request in flight was tried exactly 1 + retries times, each try ended by its timeout
    # (the frozen agent's kernel still accepts the reconnects; their challenges time out), then reported
    assert client.stats.last_attempts == retries + 1
    assert client.stats.timeouts >= retries + 1 and client.stats.reconnects >= retries
    stopped = info.value.summary
    assert stopped["complete"] is False and 4 <= stopped["samples"] < 20
    before = _rows(db)

    proc, port = start_tcp_agent()
    try:
        with connect(f"tcp://127.0.0.1:{port}", timeout=30) as client:
            resumed = collect(client, _settings(db, 20), progress=False)
    finally:
        proc.kill()
        proc.wait()
    assert resumed["complete"] and resumed["samples"] == 20
    assert resumed["new"] == 20 - stopped["samples"]
    assert _rows(db)[: len(before)] == before, "a stored row changed on resume"
    _assert_every_row_is_sound(db, 20)


def test_a_collector_killed_mid_run_leaves_a_db_that_resumes_exactly(tmp_path):
    """SIGKILL the `widthwise collect` process itself while it writes; the same command then completes."""
    db = tmp_path / "killed.sqlite"
    cmd = [sys.executable, "-m", "widthwise.profiler.cli", "collect", "--agent", "local", "--resolution", "32", "--levels", "4",
           "--samples", "24", "--db", str(db), "--timing", "repeat=4", "--timing", "min_repeat_ms=2",
           "--reference-every", "5", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, "collect finished before it could be killed"
            assert time.monotonic() < deadline, "collect made no progress"
            try:
                if db.exists() and sum(1 for r in _rows(db) if r[1] == "sample") >= 5:
                    break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the collector and its local agent, no clean-up at all
        proc.wait()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = [r for r in _rows(db) if r[1] == "sample"]
    assert sorted(r[2] for r in kept) == list(range(len(kept)))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["samples"] == 24 and summary["new"] == 24 - len(kept)
    _assert_every_row_is_sound(db, 24)


def _made_up_timings(frame: Frame) -> bytes | None:
    """A relay's forgery: every measurement answer with half its timings (the agent's tag kept as it was)."""
    body = frame.header.get("body")
    if frame.header.get("type") != "result" or not isinstance(body, dict) or "times_ms" not in body:
        return None
    fake = {**body, "times_ms": [t / 2 for t in body["times_ms"]],
            "stats": {k: (v / 2 if k != "count" else v) for k, v in body["stats"].items()}}
    return encode_raw_frame(encode_header({**frame.header, "body": fake}), frame.payload)


def test_a_relay_that_forges_timings_is_refused_and_nothing_is_stored(tmp_path, start_tcp_agent, frame_relay):
    """A fake agent relays a real agent's nonce and handshake, then answers with made-up timings."""
    token = "relay-test-token-0123456789"
    token_file = tmp_path / "agent.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    proc, port = start_tcp_agent("--token-file", str(token_file))
    relay = frame_relay(port, _made_up_timings)
    db = tmp_path / "forged.sqlite"
    with connect(f"tcp://127.0.0.1:{relay.port}", token=token, timeout=30, retries=1) as client:
        assert client.hello()["protocol"]["auth_required"] is True  # the handshake went through the relay intact
        with pytest.raises(CollectIncomplete, match="AgentAuthError") as info:
            collect(client, _settings(db, 4), progress=False)
    assert isinstance(info.value.__cause__, AgentAuthError)
    assert relay.altered >= 1 and client.stats.auth_failures >= 1
    assert info.value.summary["samples"] == 0
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
