"""Load on the query daemon: queries/s and latency percentiles from concurrent keep-alive clients.

Starts `widthwise serve` as a subprocess on a free loopback port over a synthetic 14-layer,
14-level MobileNet-V1 table (or --tables DIR), warms the exact front, then drives POST
/v1/query with budgets spread over the front from `--clients` connections (asyncio, raw
HTTP/1.1 keep-alive, split over `--procs` processes) for `--duration` seconds. `--soak 60`
runs the same load for 60 s and reports the server's resident memory before and after.

Targets (issue 4 and 6): >= 2,000 q/s and p99 <= 20 ms from 32 clients; in a soak, no
error and resident memory growth <= 10 %. The figures are printed as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the repository root, for the test fixtures in tests.support (synthetic tables, the pty link)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

TARGET_QPS = 2000.0
TARGET_P99_MS = 20.0
TARGET_RSS_GROWTH = 0.10


def start_daemon(tables_dir: Path) -> tuple[subprocess.Popen, str]:
    """`widthwise serve --port 0` as a subprocess; returns it and its host:port."""
    code = "import sys; from widthwise.search.cli_serve import serve; serve(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, "--tables", str(tables_dir), "--port", "0",
                             "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    line = read_line_within(proc, 60.0)
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"daemon did not start: {line!r}")
    return proc, line.split("http://", 1)[1].split()[0]


def read_line_within(proc: subprocess.Popen, timeout: float) -> str:
    """The child's next stdout line, or "" (the child killed) if none comes within `timeout` s."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            return ""
    return proc.stdout.readline()


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc (s)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait_s(pid: int) -> float:
    """Time the process's threads spent runnable but waiting for a CPU, from /proc schedstat (s)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def http_post(address: str, path: str, payload: dict | None) -> tuple[int, dict]:
    """One plain request, POST with a payload or GET without (setup and warm-up only)."""
    import http.client

    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    if payload is None:
        conn.request("GET", path)
    else:
        conn.request("POST", path, json.dumps(payload), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read() or b"null")
    conn.close()
    return response.status, body


def encode(address: str, path: str, payload: dict | bytes) -> bytes:
    """One HTTP/1.1 keep-alive POST, pre-encoded."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def http_get(address: str, path: str) -> tuple[int, dict]:
    return http_post(address, path, None)


def request_mix(address: str, table: str, budgets: list[float], method: str, mix: bool,
                choices: list[int], min_latency: float) -> list[tuple[bytes, int]]:
    """(request, expected status) pairs: budget queries, and with `mix` the other endpoints and errors."""
    out = [(encode(address, "/v1/query", {"table": table, "budget_ms": b, "method": method}), 200) for b in budgets]
    if not mix:
        return out
    rng = np.random.default_rng(0)
    extra = []
    for k, budget in enumerate(budgets[::4]):
        extra.append((encode(address, "/v1/marginals", {"table": table, "budget_ms": budget, "temperature": 0.5}), 200))
        unary = [[float(v) for v in rng.random(n)] for n in choices]
        costs = {"format": "widthwise-costs/1", "unary": unary}
        extra.append((encode(address, "/v1/query", {"table": table, "budget_ms": budget, "method": "lagrangian",
                                                    "objective": costs}), 200))
    extra += [
        (encode(address, "/v1/query", b'{"table": "%s", "budget_ms": NaN}' % table.encode()), 422),
        (encode(address, "/v1/query", {"table": table, "budget_ms": -1}), 422),
        (encode(address, "/v1/query", {"table": "no-such-table", "budget_ms": 5}), 404),
        (encode(address, "/v1/query", {"table": table, "budget_ms": min_latency / 2}), 409),
    ]
    merged = []
    for i, item in enumerate(out):
        merged.append(item)
        if i % 2 == 1 and extra:
            merged.append(extra.pop())
    return merged + extra


async def _client(address: str, requests: list[tuple[bytes, int]], offset: int, deadline: float,
                  latencies: list[float], errors: list[str]) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    i = offset
    try:
        while time.perf_counter() < deadline:
            request, expected = requests[i % len(requests)]
            i += 1
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != expected:
                errors.append(f"HTTP {status} (expected {expected})")
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


def _load_process(address: str, requests: list[tuple[bytes, int]], clients: int, offset: int, duration: float,
                  queue: multiprocessing.Queue) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> None:
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(_client(address, requests, offset + 7 * c, deadline, latencies, errors)
                               for c in range(clients)))
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    asyncio.run(main())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    queue.put((np.asarray(latencies, dtype=np.float64).tobytes(), errors[:20], len(errors), cpu))


def drive(address: str, requests: list[tuple[bytes, int]], clients: int, procs: int, duration: float) -> dict:
    """Run the load; return counts, rate and latency percentiles (ms)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    shares = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    workers = [ctx.Process(target=_load_process, args=(address, requests, n, 1000 * p, duration, queue))
               for p, n in enumerate(shares) if n]
    started = time.perf_counter()
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    lat = np.concatenate([np.frombuffer(r[0]) for r in results]) * 1000.0
    error_count = sum(r[2] for r in results)
    client_cpu = sum(r[3] for r in results)
    samples = [e for r in results for e in r[1]][:5]
    return {
        "requests": int(lat.size), "seconds": duration, "wall_seconds": elapsed,
        "qps": lat.size / duration, "errors": error_count, "error_samples": samples, "client_cpu_s": client_cpu,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p90_ms": float(np.percentile(lat, 90)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "max_ms": float(lat.max()) if lat.size else float("nan"),
    }


def prepare_tables(directory: Path | None) -> tuple[Path, str, tempfile.TemporaryDirectory | None]:
    """The tables folder and the table to query: a synthetic MobileNet-V1 one unless given."""
    if directory is not None:
        names = sorted(p.stem for p in directory.glob("*.json") if not p.name.startswith("."))
        if not names:
            raise SystemExit(f"no tables in {directory}")
        return directory, names[0], None
    from tests.support.synthetic import mobilenet_v1_table

    holder = tempfile.TemporaryDirectory(prefix="widthwise-bench-")
    mobilenet_v1_table(seed=0).save(Path(holder.name) / "mobilenet_v1.json")
    return Path(holder.name), "mobilenet_v1", holder


def verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, help="tables folder (default: a synthetic MobileNet-V1 table)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help="soak mode: this many seconds of load, with resident memory before and after")
    parser.add_argument("--method", default="exact", choices=["exact", "lagrangian", "greedy"])
    parser.add_argument("--budgets", type=int, default=64, help="distinct budgets cycled through")
    parser.add_argument("--mix", action="store_true",
                        help="mix in marginals, inline-objective queries and requests that must fail (422/404/409)")
    args = parser.parse_args(argv)
    duration = args.soak if args.soak is not None else args.duration

    tables_dir, table, holder = prepare_tables(args.tables)
    proc, address = start_daemon(tables_dir)
    try:
        t0 = time.perf_counter()
        status, front = http_post(address, "/v1/pareto", {"table": table})
        if status != 200:
            raise SystemExit(f"pareto failed: {status} {front}")
        warm_ms = (time.perf_counter() - t0) * 1000
        lo, hi = front["front"][0]["latency_ms"], front["front"][-1]["latency_ms"]
        budgets = [float(b) for b in np.linspace(lo, hi * 1.05, args.budgets)]
        http_post(address, "/v1/query", {"table": table, "budget_ms": budgets[0], "method": args.method})
        status, tables = http_get(address, "/v1/tables")
        choices = [len(c) for c in next(t for t in tables["tables"] if t["name"] == table)["space"]["choices"]]
        requests = request_mix(address, table, budgets, args.method, args.mix, choices, lo)
        drive(address, requests, args.clients, args.procs, 1.0)   # warm connections and code paths
        rss_before, cpu_before, wait_before = rss_kib(proc.pid), cpu_seconds(proc.pid), run_queue_wait_s(proc.pid)
        result = drive(address, requests, args.clients, args.procs, duration)
        rss_after, cpu_after, wait_after = rss_kib(proc.pid), cpu_seconds(proc.pid), run_queue_wait_s(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        if holder is not None:
            holder.cleanup()

    growth = (rss_after - rss_before) / rss_before
    print(f"daemon load: table {table!r} ({len(front['front'])} front points, first /v1/pareto {warm_ms:.0f} ms), "
          f"method {args.method}{' with the mixed requests' if args.mix else ''}, {args.clients} clients over {args.procs} process(es), {duration:.0f} s, "
          f"{os.cpu_count()} cores shared with the server")
    print(f"  requests {result['requests']}  errors {result['errors']}  "
          f"throughput {result['qps']:.0f} q/s (target >= {TARGET_QPS:.0f}: {verdict(result['qps'] >= TARGET_QPS)}, "
          f"ratio {result['qps'] / TARGET_QPS:.2f})")
    print(f"  latency ms: p50 {result['p50_ms']:.2f}  p90 {result['p90_ms']:.2f}  p99 {result['p99_ms']:.2f}  "
          f"max {result['max_ms']:.2f}  (p99 target <= {TARGET_P99_MS:.0f}: "
          f"{verdict(result['p99_ms'] <= TARGET_P99_MS)}, ratio {result['p99_ms'] / TARGET_P99_MS:.2f})")
    print(f"  server RSS: before {rss_before / 1024:.1f} MiB  after {rss_after / 1024:.1f} MiB  "
          f"growth {growth * 100:+.1f} % (target <= {TARGET_RSS_GROWTH * 100:.0f} %: "
          f"{verdict(growth <= TARGET_RSS_GROWTH)})")
    busy = cpu_after - cpu_before
    print(f"  server CPU: {busy:.1f} s over {duration:.0f} s ({busy / duration * 100:.0f} % of one core), "
          f"{busy / max(result['requests'], 1) * 1e6:.0f} us of server CPU per request; load generator "
          f"{result['client_cpu_s']:.1f} s, {result['client_cpu_s'] / max(result['requests'], 1) * 1e6:.0f} us per request")
    print(f"  server waited {wait_after - wait_before:.1f} s of the {duration:.0f} s runnable but without a CPU "
          f"(other processes on the machine); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if result["error_samples"]:
        print(f"  first errors: {result['error_samples']}")
    ok = result["errors"] == 0 and (args.soak is None or growth <= TARGET_RSS_GROWTH)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
