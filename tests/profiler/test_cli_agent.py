"""`widthwise agent ...` and `widthwise bench` against a real agent process, and the bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from widthwise.device_agents.errors import AgentError

from widthwise.device_agents.protocol import PROTOCOL_VERSION
from widthwise.profiler.agent_client import connect
from widthwise.profiler.cli import main
from tests.support.procs import read_line

REPO = Path(__file__).resolve().parents[2]
TINY = ["--space", "mobilenet_v1", "--resolution", "32", "--runs", "2", "--warmup", "0"]


def wait_for_port(proc: subprocess.Popen, port_file: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"agent did not start (status {proc.poll()})")
        time.sleep(0.05)
    return int(port_file.read_text())


@pytest.fixture(scope="module")
def agent_url(tmp_path_factory):
    port_file = tmp_path_factory.mktemp("cli-agent") / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )
    yield f"tcp://127.0.0.1:{wait_for_port(proc, port_file)}"
    proc.terminate()
    proc.wait(10)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_bench_json_gives_the_agents_response(agent_url: str) -> None:
    result = run("bench", "--agent", agent_url, *TINY, "--widths", ",".join(["8"] * 14), "--any-widths", "--json")
    assert result.exit_code == 0, result.output
    response = json.loads(result.output)
    assert len(response["times_ms"]) == 2 and response["runtime"]["threads"] == 1


def test_bench_human_output_is_a_short_stats_table(agent_url: str) -> None:
    result = run("bench", "--agent", agent_url, *TINY, "--widths", ",".join(["16"] * 14), "--any-widths",
                 "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "median" in result.output and "p90" in result.output and "onnxruntime" in result.output
    assert len(result.output.splitlines()) <= 8


def test_bench_defaults_to_the_base_widths(agent_url: str) -> None:
    result = run("bench", "--agent", agent_url, *TINY, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model_bytes"] > 10_000_000  # the 1.0 network's weights


@pytest.mark.parametrize(
    "args, message",
    [
        (["--widths", "8,8,8"], "space mobilenet_v1 has 14 searchable layers, got 3 widths"),
        (["--widths", ",".join(["8"] * 13 + ["0"]), "--any-widths"], "must be positive"),
        (["--widths", ",".join(["8"] * 14)], "width 8 of layer 1 (dwsep1) is not one of its choices"),
        (["--widths", "8,eight"], "item 1 ('eight') is not an integer"),
        (["--space", "resnet", "--widths", "8"], "unknown space 'resnet'"),
    ],
)
def test_bad_bench_input_is_one_usage_line(agent_url: str, args: list[str], message: str) -> None:
    result = run("bench", "--agent", agent_url, "--resolution", "32", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bench_times_a_mobilenet_v2_given_by_name(agent_url: str) -> None:
    from widthwise.device_agents.spaces import make_space

    space = make_space("mobilenet_v2", {"resolution": 32, "levels": 4})
    smallest = {v.name: v.choices[0] for v in space.layers}
    flat = run("bench", "--agent", agent_url, *TINY[2:], "--space", "mobilenet_v2", "--levels", "4",
               "--widths", ",".join(str(smallest[v.name]) for v in space.layers), "--json")
    named = run("bench", "--agent", agent_url, *TINY[2:], "--space", "mobilenet_v2", "--levels", "4",
                "--widths-json", json.dumps(smallest), "--json")
    assert flat.exit_code == 0 and named.exit_code == 0, flat.output + named.output
    # one network either way: the same bytes, built from the same flat configuration
    assert json.loads(flat.output)["model_bytes"] == json.loads(named.output)["model_bytes"]
    base = run("bench", "--agent", agent_url, *TINY[2:], "--space", "mobilenet_v2", "--json")
    assert json.loads(base.output)["model_bytes"] > 4 * json.loads(named.output)["model_bytes"]


def test_bench_times_a_space_file_on_a_real_agent(agent_url: str) -> None:
    spec_file = REPO / "docs" / "spaces" / "mcu_vww.json"
    base = run("bench", "--agent", agent_url, "--space-file", str(spec_file), "--runs", "2", "--warmup", "0", "--json")
    smallest = run("bench", "--agent", agent_url, "--space-file", str(spec_file), "--runs", "2", "--warmup", "0",
                   "--widths", "8,16,48,16,48,48,24,72,72,128")
    assert base.exit_code == 0 and smallest.exit_code == 0, base.output + smallest.output
    assert json.loads(base.output)["stats"]["count"] == 2
    assert "model     mcu_vww widths 8,16,48,16,48,48,24,72,72,128" in smallest.output
    off_grid = run("bench", "--agent", agent_url, "--space-file", str(spec_file), "--widths", "9,16,48,16,48,48,24,72,72,128")
    assert off_grid.exit_code == 2 and "width 9 of variable 0 (stem) is not one of its choices [8, 16, 24]" in off_grid.output


def test_bench_model_file_and_a_file_that_is_not_a_model(agent_url: str, tmp_path: Path) -> None:
    with connect(agent_url) as client:
        assert client.hello()  # the agent is up
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"definitely not protobuf")
    result = run("bench", "--agent", agent_url, "--model", str(bogus))
    assert result.exit_code != 0 and "bad_model" in result.output
    from widthwise.device_agents.build_onnx import build_onnx  # the other team's builder gives a real model
    from widthwise.device_agents.spaces import make_space

    space = make_space("mobilenet_v1", {"resolution": 32})
    real = tmp_path / "tiny.onnx"
    real.write_bytes(build_onnx(space, [8] * 14))
    result = run("bench", "--agent", agent_url, "--model", str(real), "--runs", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["model_bytes"] == real.stat().st_size


def test_agent_info(agent_url: str) -> None:
    result = run("agent", "info", "--agent", agent_url, "--json")
    assert result.exit_code == 0, result.output
    hello = json.loads(result.output)
    assert hello["protocol"]["version"] == PROTOCOL_VERSION and len(hello["fingerprint"]) >= 16
    human = run("agent", "info", "--agent", agent_url)
    assert "fingerprint" in human.output and "onnxruntime" in human.output
    onnx_row = next(line for line in human.output.splitlines() if line.startswith("block kinds  onnx:"))
    assert onnx_row.split(":", 1)[1].strip().split(", ") == hello["block_kinds"]["onnx"]


def test_unreachable_agent_and_bad_url_are_one_line_errors() -> None:
    result = run("agent", "info", "--agent", "tcp://127.0.0.1:1", "--timeout", "2")
    assert result.exit_code != 0 and "connection" in result.output
    result = run("bench", "--agent", "ftp://x:1")
    assert result.exit_code != 0 and "unknown agent URL" in result.output


def test_agent_serve_refuses_public_bind_without_token() -> None:
    result = run("agent", "serve", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2


def test_bundle_runs_as_a_separate_process(tmp_path: Path) -> None:
    pyz = tmp_path / "widthwise-agent.pyz"
    result = run("agent", "bundle", "-o", str(pyz))
    assert result.exit_code == 0, result.output
    listing = subprocess.run(
        [sys.executable, "-c", f"import zipfile; print('\\n'.join(zipfile.ZipFile({str(pyz)!r}).namelist()))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    assert "__main__.py" in listing and "device_agents/protocol.py" in listing and "device_agents/PROTOCOL.md" in listing
    assert not any(name.startswith(("profiler/", "search/")) or "__pycache__" in name for name in listing)
    assert "flatbuffers/__init__.py" in listing  # for building TFLite models on the board
    # started from elsewhere, with the bundle as the only source of device_agents on its path
    workdir = tmp_path / "board"
    workdir.mkdir()
    port_file = workdir / "port"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [sys.executable, str(pyz), "serve", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir, env=env,
    )
    try:
        port = wait_for_port(proc, port_file)
        with connect(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            assert client.hello()["agent_version"]
            assert client.bench_spec(
                {"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14},
                timing={"warmup": 0, "repeat": 2, "number": 1},
            )["stats"]["count"] == 2
    finally:
        proc.terminate()
        proc.wait(10)
    where = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import device_agents; print(device_agents.__file__)", str(pyz)],
        capture_output=True, text=True, check=True, cwd=workdir, env=env, timeout=60,
    ).stdout
    assert str(pyz) in where


def test_widthwise_agent_serve_runs_a_real_agent(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("widthwise")), "agent", "serve", "--port", "0", "--port-file", str(port_file),
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
    )
    try:
        port = wait_for_port(proc, port_file)
        assert f"listening on tcp://127.0.0.1:{port}" in read_line(proc, 60)
        with connect(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            assert client.hello()["protocol"]["version"] == PROTOCOL_VERSION
    finally:
        proc.terminate()
        proc.wait(10)


def test_agent_serve_help_is_the_agents_own_parser() -> None:
    result = run("agent", "serve", "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("usage: device_agents serve")  # argparse's help, not click's
    for flag in ("--max-macs", "--max-memory-mb", "--max-request-seconds", "--exit-with-stdin", "--max-frame-bytes",
                 "--token-file", "--serial", "--port-file", "--inject-drift", "--log-level"):
        assert flag in result.output


def test_agent_serve_reports_a_bad_option_like_the_agent() -> None:
    result = run("agent", "serve", "--no-such-flag")
    assert result.exit_code == 2 and "unrecognized arguments: --no-such-flag" in result.output
    result = run("agent", "serve", "--max-macs", "0", "--port", "0")
    assert result.exit_code == 2 and "--max-macs must be at least 1" in result.output


def test_agent_serve_passes_every_flag_through(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("widthwise")), "agent", "serve", "--port", "0", "--port-file", str(port_file),
         "--exit-with-stdin", "--max-macs", "100000", "--log-level", "WARNING"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, text=True,
    )
    try:
        port = wait_for_port(proc, port_file)
        assert "listening on" in read_line(proc, 60)
        with connect(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            with pytest.raises(AgentError) as exc:  # 123,408 MACs at 32: above the cap the flag set
                client.bench_spec({"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14})
        assert exc.value.code == "limit_exceeded" and exc.value.details["limit"] == 100_000
        proc.stdin.close()  # --exit-with-stdin reached the agent: it ends when its stdin does
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
