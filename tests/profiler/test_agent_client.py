"""The host client against real agent processes: TCP loopback, a pty serial line, `local`.

(URL parsing and the local agent subprocess on their own: test_agent_endpoint.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from widthwise.device_agents.errors import (
    AgentAuthError,
    AgentConnectionError,
    AgentTimeout,
    AuthError,
    BadModel,
    BadRequest,
    BadWidths,
    FrameTooLarge,
    ProtocolVersionError,
    UnknownSpace,
)
from widthwise.device_agents.protocol import FrameDecoder, encode_frame
from widthwise.profiler.agent_client import AgentClient, connect
from tests.support.ptylink import PtyLink
from tests.support.procs import read_line

REPO = Path(__file__).resolve().parents[2]
TOKEN = "client-test-token-1234"
TINY_SPEC = {"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14}
QUICK = {"warmup": 0, "repeat": 2, "number": 1}


def start_agent(tmp: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port_file = tmp / f"port-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"agent did not start: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def tcp_agent(tmp_path_factory):
    proc, port = start_agent(tmp_path_factory.mktemp("agent"))
    yield f"tcp://127.0.0.1:{port}"
    stop(proc)


def test_hello_and_bench_over_tcp(tcp_agent: str) -> None:
    with connect(tcp_agent, timeout=60) as client:
        hello = client.hello()
        assert hello["protocol"]["version"] == 2 and hello["cores"] >= 1 and "onnxruntime" in hello["runtimes"]
        result = client.bench_spec(TINY_SPEC, timing=QUICK)
        assert len(result["times_ms"]) == 2 and result["stats"]["count"] == 2
        assert result["stats"]["min"] <= result["stats"]["median"]


def test_typed_errors_come_back_and_the_agent_keeps_serving(tcp_agent: str) -> None:
    with connect(tcp_agent, timeout=60) as client:
        with pytest.raises(BadWidths, match="14 searchable layers, got 3"):
            client.bench_spec({"space": "mobilenet_v1", "widths": [8, 8, 8]}, timing=QUICK)
        with pytest.raises(BadWidths, match="must be positive"):
            client.bench_spec({**TINY_SPEC, "widths": [8] * 13 + [-8]}, timing=QUICK)
        with pytest.raises(UnknownSpace, match="resnet"):
            client.bench_spec({"space": "resnet", "widths": [8]}, timing=QUICK)
        with pytest.raises(BadModel):
            client.bench_model(b"this is not an onnx model", fmt="onnx", timing=QUICK)
        with pytest.raises(BadRequest, match="bogus"):
            client.bench_spec(TINY_SPEC, timing={"bogus": 1})
        assert client.bench_spec(TINY_SPEC, timing=QUICK)["stats"]["count"] == 2


def test_a_model_over_the_agents_cap_is_refused_before_sending(tmp_path: Path) -> None:
    proc, port = start_agent(tmp_path, "--max-frame-bytes", "65536")
    try:
        with connect(f"tcp://127.0.0.1:{port}", timeout=30) as client:
            assert client.protocol["max_frame_bytes"] == 65536
            with pytest.raises(FrameTooLarge, match="65536"):
                client.bench_model(b"\x00" * 100_000, fmt="onnx")
            assert client.hello()["protocol"]["max_frame_bytes"] == 65536
    finally:
        stop(proc)


def test_token_agent_refuses_missing_and_wrong_tokens(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc, port = start_agent(tmp_path, "--token-file", str(token_file))
    url = f"tcp://127.0.0.1:{port}"
    try:
        with pytest.raises(AuthError, match="requires a token"):
            connect(url, timeout=30)
        # the agent's first answer already fails the tag check under another token
        with pytest.raises(AgentAuthError, match="wrong token"):
            connect(url, token="a-wrong-token-value", timeout=30)
        with connect(url, token=TOKEN, timeout=30) as client:
            assert client.hello()["protocol"]["auth_required"] is True
            assert client.stats.auth_failures == 0 and client.stats.requests == 1
    finally:
        stop(proc)


def test_a_client_with_a_token_refuses_an_agent_whose_answers_it_cannot_verify(tcp_agent: str) -> None:
    with pytest.raises(AgentAuthError, match="carries no tag"):
        connect(tcp_agent, token=TOKEN, timeout=30)


def test_a_version_1_agent_is_named_as_such() -> None:
    """A server answering the challenge as a version 1 agent does: the host names both versions."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            decoder = FrameDecoder()
            while not list(decoder.events()) and (chunk := conn.recv(65536)):
                decoder.feed(chunk)
            error = {"code": "protocol_version", "message": "no common protocol version: peer speaks [2], agent speaks [1]",
                     "details": {"offered": [2], "supported": [1]}, "retryable": False}
            conn.sendall(encode_frame({"v": 1, "id": 1, "type": "error", "error": error}))

    threading.Thread(target=answer_once, daemon=True).start()
    try:
        with pytest.raises(ProtocolVersionError, match=r"agent speaks \[1\].*same widthwise version"):
            connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=10, retries=0)
    finally:
        listener.close()


def test_unreachable_agent_is_a_connection_error_after_retries() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(AgentConnectionError, match="cannot connect"):
        connect(f"tcp://127.0.0.1:{port}", timeout=2, retries=1)


def test_a_silent_agent_times_out_within_the_bound_and_is_retried() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept_forever() -> None:
        listener.settimeout(5)
        try:
            while True:
                accepted.append(listener.accept()[0])
        except OSError:
            pass

    threading.Thread(target=accept_forever, daemon=True).start()
    try:
        with pytest.raises(AgentTimeout, match="no answer within 0.4 s|no frame"):
            connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=0.4, retries=1)
        assert len(accepted) == 2  # one attempt and one retry, each ended by the 0.4 s bound
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_a_restarted_agent_is_reconnected_to(tmp_path: Path) -> None:
    proc, port = start_agent(tmp_path)
    client = connect(f"tcp://127.0.0.1:{port}", timeout=30, retries=3)
    try:
        assert client.hello()
        stop(proc)
        proc = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
        )
        assert client.bench_spec(TINY_SPEC, timing=QUICK)["stats"]["count"] == 2
    finally:
        client.close()
        stop(proc)


def test_local_agent_is_started_and_stopped() -> None:
    with connect("local", timeout=60) as client:
        assert isinstance(client, AgentClient) and client.url == "local"
        assert client.hello()["protocol"]["version"] == 2
        agent_proc = client.local.proc
        assert agent_proc.poll() is None
    assert agent_proc.poll() is not None


def test_hello_and_bench_over_a_serial_pty_link() -> None:
    with PtyLink() as link:
        proc = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--serial", link.agent_path, "--baud", "115200"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
        )
        try:
            assert "serving serial://" in read_line(proc, 60)  # the line is open: no byte gets flushed
            with connect(f"serial://{link.client_path}?baud=115200", timeout=30) as client:
                assert client.protocol["max_frame_bytes"] == 16 << 20
                assert "fingerprint" in client.hello()
                with pytest.raises(BadWidths):
                    client.bench_spec({**TINY_SPEC, "widths": [8]}, timing=QUICK)
                assert client.bench_spec(TINY_SPEC, timing=QUICK)["stats"]["count"] == 2
        finally:
            stop(proc)


def test_serial_agent_with_a_token_checks_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with PtyLink() as link:
        proc = subprocess.Popen(
            [sys.executable, "-m", "widthwise.device_agents", "serve", "--serial", link.agent_path, "--token-file", str(token_file)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
        )
        try:
            assert "serving serial://" in read_line(proc, 60)
            url = f"serial://{link.client_path}"
            with pytest.raises(AuthError, match="requires a token"):
                connect(url, timeout=10)
            with connect(url, token=TOKEN, timeout=10) as client:
                assert client.hello()["protocol"]["auth_required"] is True
        finally:
            stop(proc)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_local_agent_does_not_outlive_a_killed_host() -> None:
    host = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from widthwise.profiler.agent_client import connect; c = connect('local', timeout=60); "
         "print(c.local.proc.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    agent_pid = int(read_line(host, 90))
    assert _running(agent_pid)
    host.kill()  # SIGKILL: no cleanup code runs in the host
    host.wait(10)
    deadline = time.monotonic() + 10
    while _running(agent_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(agent_pid)


def test_a_bench_that_allows_itself_longer_gets_a_longer_bound(tcp_agent: str) -> None:
    with connect(tcp_agent, timeout=5) as client:
        assert client._bench_timeout(None) == 5
        assert client._bench_timeout({"max_total_s": 2}) == 32
        assert client._bench_timeout({"max_total_s": 200}) == 230
        result = client.bench_spec(TINY_SPEC, timing={**QUICK, "max_total_s": 10})
        assert result["stats"]["count"] == 2


def test_bench_spec_paired_with_a_reference(tcp_agent: str) -> None:
    reference = {**TINY_SPEC, "widths": [16] * 14}
    with connect(tcp_agent, timeout=30) as client:
        answer = client.bench_spec(TINY_SPEC, timing=QUICK, pair_with=reference)
    pair = answer["pair"]
    assert len(pair["ref_times_ms"]) == len(pair["ratios"]) == answer["stats"]["count"]
    assert pair["ratio_median"] > 0 and pair["ref_median_ms"] > 0


def test_token_files_are_read_with_the_agents_checks(tmp_path: Path) -> None:
    from widthwise.device_agents.auth import ConfigError
    from widthwise.profiler.agent_client import token_from_file

    good = tmp_path / "good.token"
    good.write_text(f"  {TOKEN}\n")
    assert token_from_file(good) == TOKEN and token_from_file(None) is None
    short = tmp_path / "short.token"
    short.write_text("abc-fifteen-abc\n")
    with pytest.raises(ConfigError, match="short.token holds 15 bytes; a token is at least 16 bytes"):
        token_from_file(short)
    with pytest.raises(ConfigError, match="cannot read token file"):
        token_from_file(tmp_path / "missing.token")
    binary = tmp_path / "binary.token"
    binary.write_bytes(b"\x00\x9f" + bytes(range(200, 232)))
    with pytest.raises(ConfigError, match=r"binary.token holds the non-printable byte 0x00 at offset 0.*base64"):
        token_from_file(binary)
    spaced = tmp_path / "spaced.token"
    spaced.write_text("two halves of a token\n")
    with pytest.raises(ConfigError, match="spaced.token holds whitespace at offset 3"):
        token_from_file(spaced)


def test_the_local_agent_does_not_import_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """A logging.py or device_agents.py in the user's working directory never runs in the local agent."""
    marker = tmp_path / "imported-from-cwd"
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in ("logging", "device_agents"):
        (workdir / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write('{name}\\n')\n")
    monkeypatch.chdir(workdir)
    with connect("local", timeout=60) as client:
        assert client.hello()["protocol"]["version"] == 2
        assert "-P" in client.local.proc.args
    assert not marker.exists(), f"the local agent ran {marker.read_text()!r} from the working directory"


def test_check_agent_builds_refuses_a_kind_the_agent_does_not_list():
    from widthwise.device_agents.errors import BadRequest
    from widthwise.device_agents.handlers import HANDLERS
    from widthwise.device_agents.spaces import make_space
    from widthwise.profiler.agent_client import check_agent_builds

    hello = HANDLERS["hello"]({"type": "hello", "id": 1}, b"")[0]
    assert hello["runtime_formats"]["onnxruntime"] == "onnx"
    space = make_space("ofa_mbv3", {"resolution": 32})
    check_agent_builds(hello, space, "onnxruntime", "float32")
    older = {**hello, "block_kinds": {**hello["block_kinds"], "onnx": [k for k in hello["block_kinds"]["onnx"]
                                                                        if k != "mb_block"]}}
    with pytest.raises(BadRequest, match="cannot build block kind 'mb_block' as float32 onnx"):
        check_agent_builds(older, space, "onnxruntime", "float32")
    check_agent_builds(older, make_space("mobilenet_v2"), "onnxruntime", "float32")
    unlisted = {k: v for k, v in hello.items() if k != "block_kinds"}  # an agent from before kinds were listed
    check_agent_builds(unlisted, space, "onnxruntime", "float32")
