"""Two agents at once: two `local` agents (each its own process and port) collect into two dbs.

Both collections must complete with exactly the samples asked for and no duplicated slot;
prints each one's wall time and count, and the SQLite check of each db. On two cores the
agents share the machine, so this checks isolation and completion, not speed.

    .venv/bin/python benchmarks/bench_two_agents.py [--samples 60] [--resolution 96] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time


from widthwise.profiler.agent_client import connect
from widthwise.profiler.collect import CollectSettings, collect


def _one(name: str, db: str, samples: int, resolution: int, seed: int, out: dict) -> None:
    started = time.monotonic()
    try:
        with connect("local") as client:
            port = getattr(getattr(client, "local", None), "port", None)
            settings = CollectSettings(
                space="mobilenet_v1",
                samples=samples,
                db=db,
                space_params={"resolution": resolution, "levels": 14},
                seed=seed,
            )
            summary = collect(client, settings, progress=False)
        out[name] = {"port": port, "summary": summary, "elapsed_s": round(time.monotonic() - started, 1)}
    except Exception as exc:  # reported, never swallowed: the benchmark fails below
        out[name] = {"error": f"{type(exc).__name__}: {exc}", "elapsed_s": round(time.monotonic() - started, 1)}


def _check_db(db: str, samples: int) -> dict:
    con = sqlite3.connect(db)
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        rows = con.execute("SELECT COUNT(*), COUNT(DISTINCT slot) FROM samples WHERE kind = 'sample'").fetchone()
    finally:
        con.close()
    return {"integrity": integrity, "samples": rows[0], "distinct_slots": rows[1], "ok": integrity == "ok" and rows[0] == rows[1] == samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict = {}
        threads = [
            threading.Thread(target=_one, args=(name, os.path.join(tmp, f"{name}.sqlite"), args.samples, args.resolution, seed, results))
            for seed, name in enumerate(("agent_a", "agent_b"))
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        for name in ("agent_a", "agent_b"):
            if "error" not in results[name]:
                results[name]["db"] = _check_db(os.path.join(tmp, f"{name}.sqlite"), args.samples)
    ok = all("error" not in r and r["db"]["ok"] and r["summary"]["complete"] for r in results.values())
    report = {"samples_each": args.samples, "resolution": args.resolution, "wall_s": round(wall, 1), "ok": ok, **results}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"two local agents, {args.samples} samples each at {args.resolution}: wall {wall:.1f} s")
        for name in ("agent_a", "agent_b"):
            r = results[name]
            if "error" in r:
                print(f"  {name}: FAILED after {r['elapsed_s']} s: {r['error']}")
            else:
                d = r["db"]
                print(f"  {name}: port {r['port']}, {d['samples']} samples in {r['elapsed_s']} s, "
                      f"distinct slots {d['distinct_slots']}, integrity {d['integrity']}")
        print("both complete" if ok else "NOT both complete")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
