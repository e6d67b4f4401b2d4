"""Does timing through the agent distort what it times? In-process vs TCP vs serial, interleaved.

MobileNet-V1 1.0 at 224 is timed with the same settings three ways, round-robin in one
run: by the agent's handler called in this process, by an agent process over TCP
loopback, and by an agent process over a pty-bridged serial line. Prints each way's
median (the median of the per-round medians) and the ratios to in-process; the target
is within 3 %. Both agent processes hold a token, so every request and answer carries its
protocol-2 tag, as on a lab network.

    .venv/bin/python benchmarks/bench_agent_overhead.py [--rounds 20] [--repeat 10]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# the repository root, for the test fixtures in tests.support (synthetic tables, the pty link)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from widthwise.device_agents import handlers
from widthwise.device_agents.protocol import PROTOCOL_VERSION
from widthwise.device_agents.spaces import make_space
from widthwise.profiler.agent_client import connect
from tests.support.ptylink import PtyLink

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0


def read_line_within(proc: subprocess.Popen, timeout: float) -> str:
    """The child's next stdout line, or "" if none comes within `timeout` seconds."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def start_tcp_agent(workdir: Path, token_file: Path) -> tuple[subprocess.Popen, int]:
    """An agent process with a token on a free loopback port."""
    port_file = workdir / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--port-file", str(port_file),
         "--token-file", str(token_file), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, cwd=REPO,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the TCP agent did not start")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def start_serial_agent(link: PtyLink, token_file: Path) -> subprocess.Popen:
    """An agent process with a token serving the agent end of the pty link."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--serial", link.agent_path, "--token-file", str(token_file),
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, cwd=REPO, text=True,
    )
    if "serving serial://" not in read_line_within(proc, START_TIMEOUT_S):
        proc.kill()
        raise SystemExit("the serial agent did not start")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (each way once per round)")
    parser.add_argument("--repeat", type=int, default=10, help="timed repeats per request")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    space = make_space("mobilenet_v1", {"resolution": args.resolution})
    spec = {"space": "mobilenet_v1", "params": {"resolution": args.resolution}, "widths": list(space.base_widths())}
    timing = {"warmup": 5, "repeat": args.repeat, "number": 0, "min_repeat_ms": 50.0, "threads": args.threads}

    def in_process() -> dict:
        header = {"v": PROTOCOL_VERSION, "id": 0, "type": "bench_spec", "spec": spec, "timing": timing}
        return handlers.HANDLERS["bench_spec"](header, b"")[0]

    with tempfile.TemporaryDirectory() as tmp, PtyLink() as link:
        token = secrets.token_urlsafe(32)
        token_file = Path(tmp) / "agent.token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        tcp_proc, port = start_tcp_agent(Path(tmp), token_file)
        serial_proc = start_serial_agent(link, token_file)
        try:
            with connect(f"tcp://127.0.0.1:{port}", token=token, timeout=600) as tcp, connect(
                f"serial://{link.client_path}?baud=115200", token=token, timeout=600
            ) as serial_client:
                ways = {
                    "in-process": in_process,
                    "tcp": lambda: tcp.bench_spec(spec, timing=timing),
                    "serial": lambda: serial_client.bench_spec(spec, timing=timing),
                }
                for run in ways.values():  # build, load and warm every path once, untimed
                    run()
                medians: dict[str, list[float]] = {name: [] for name in ways}
                minima: dict[str, list[float]] = {name: [] for name in ways}
                names = list(ways)
                for r in range(args.rounds):
                    order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
                    for name in order:
                        stats = ways[name]()["stats"]
                        medians[name].append(stats["median"])
                        minima[name].append(stats["min"])
        finally:
            for proc in (tcp_proc, serial_proc):
                proc.terminate()
                proc.wait(10)

    base = statistics.median(medians["in-process"])
    base_min = statistics.median(minima["in-process"])
    print(f"MobileNet-V1 1.0 @ {args.resolution}, {args.threads} thread(s), {args.rounds} interleaved rounds "
          f"of {args.repeat} repeats each")
    print(f"{'way':<11} {'median ms':>10} {'ratio':>7} {'min ms':>8} {'ratio':>7}   per-round medians")
    for name, values in medians.items():
        med, low = statistics.median(values), statistics.median(minima[name])
        print(f"{name:<11} {med:>10.3f} {med / base:>7.3f} {low:>8.3f} {low / base_min:>7.3f}   "
              f"{' '.join(f'{v:.2f}' for v in values)}")
    for name in ("tcp", "serial"):
        paired = [v / b for v, b in zip(medians[name], medians["in-process"])]
        print(f"{name}: median of per-round ratios (same round, adjacent in time) {statistics.median(paired):.3f}")
    worst = max(abs(statistics.median(medians[n]) / base - 1) for n in ("tcp", "serial"))
    print(f"largest deviation from in-process: {100 * worst:.1f} % (target: within 3 %)")


if __name__ == "__main__":
    main()
