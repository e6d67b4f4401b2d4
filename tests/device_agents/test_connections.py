"""Per-connection state, the caps on open connections, and the rate-limited log."""

import logging
import threading

import pytest

from widthwise.device_agents.connections import Connection, ConnectionSlots, LogLimiter, ServerConfig
from widthwise.device_agents.protocol import DEFAULT_MAX_FRAME_SERIAL, DEFAULT_MAX_FRAME_TCP, MIN_MAX_FRAME


def _held_thread(release: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=release.wait, args=(30,), daemon=True)
    thread.start()
    return thread


def test_a_new_connection_starts_unauthenticated_at_the_current_version():
    conn = Connection("10.0.0.1:5000")
    assert (conn.authenticated, conn.last_seq, conn.nonce, conn.last_answer) == (False, 0, None, None)


def test_slots_cap_one_address_and_all_addresses_and_free_up_when_a_connection_ends():
    slots = ConnectionSlots(max_connections=3, max_per_address=2)
    release, other = threading.Event(), threading.Event()
    try:
        for _ in range(2):
            assert slots.refusal("10.0.0.1") is None
            slots.add("10.0.0.1", _held_thread(release))
        assert "2 open from that address, 2 in all (limits 2, 3)" == slots.refusal("10.0.0.1")
        assert slots.refusal("10.0.0.2") is None  # another address still gets a slot
        slots.add("10.0.0.2", _held_thread(other))
        assert "0 open from that address, 3 in all" in slots.refusal("10.0.0.3")
        other.set()
        for thread in list(slots._active["10.0.0.2"]):
            thread.join(30)
        assert slots.refusal("10.0.0.3") is None  # the ended connection's slot is free again
    finally:
        release.set()
        other.set()


def test_frame_caps_default_per_transport_and_refuse_a_tiny_cap():
    assert ServerConfig().cap_for("tcp") == DEFAULT_MAX_FRAME_TCP
    assert ServerConfig().cap_for("serial") == DEFAULT_MAX_FRAME_SERIAL
    assert ServerConfig(max_frame_bytes=MIN_MAX_FRAME).cap_for("serial") == MIN_MAX_FRAME
    with pytest.raises(ValueError, match="at least"):
        ServerConfig(max_frame_bytes=MIN_MAX_FRAME - 1).cap_for("tcp")


def test_log_limiter_passes_a_burst_then_says_how_many_it_held_back(caplog):
    logger = logging.getLogger("widthwise.test.connections")
    limiter = LogLimiter(logger, burst=3, per_second=1e-9)  # no refill within the test
    with caplog.at_level(logging.INFO, logger=logger.name):
        for k in range(10):
            limiter.info("line %d", k)
    assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1", "line 2"]
    assert limiter.suppressed == 7
    limiter._tokens = 1.0  # one line's worth of refill
    with caplog.at_level(logging.INFO, logger=logger.name):
        limiter.warning("after")
    assert caplog.records[-1].getMessage() == "after [7 similar lines suppressed before this one]"
