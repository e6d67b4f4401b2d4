"""Agent URLs and the local agent subprocess, without a client in between."""

from __future__ import annotations

import socket

import pytest

from widthwise.device_agents.errors import AgentConnectionError
from widthwise.errors import WidthwiseError
from widthwise.profiler.agent_endpoint import LocalAgent, parse_url
from widthwise.profiler.errors import AgentUrlError


def test_parse_url() -> None:
    assert parse_url("local") == ("local", {})
    assert parse_url("tcp://10.0.0.2:7345") == ("tcp", {"host": "10.0.0.2", "port": 7345})
    assert parse_url("serial:///dev/ttyUSB0?baud=921600") == ("serial", {"device": "/dev/ttyUSB0", "baud": 921600})
    assert parse_url("serial:///dev/ttyACM1")[1]["baud"] == 115200
    for bad, text in [("tcp://host", "host and a port"), ("tcp://host:99999", "host and a port"), ("http://x:1", "unknown agent URL"),
                      ("serial:///dev/x?speed=1", "unknown parameter"), ("serial:///dev/x?baud=fast", "integer")]:
        with pytest.raises(AgentUrlError, match=text) as caught:
            parse_url(bad)
        assert isinstance(caught.value, WidthwiseError) and caught.value.field == "--agent"
        assert caught.value.code == "agent_url"


def test_a_local_agent_listens_on_loopback_and_is_gone_after_cleanup() -> None:
    agent = LocalAgent()
    try:
        port = agent.start()
        assert agent.alive() and port == agent.port
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
    finally:
        agent.cleanup()
    assert not agent.alive() and agent.proc is not None and agent.proc.returncode is not None
    assert not agent.workdir.exists()


def test_a_local_agent_that_cannot_start_says_why() -> None:
    agent = LocalAgent(["--no-such-option"])
    try:
        with pytest.raises(AgentConnectionError, match="local agent exited with status 2: .*no-such-option"):
            agent.start()
    finally:
        agent.cleanup()
