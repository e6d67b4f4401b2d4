"""Collection speed: N samples (reference re-timing included) on a local agent, against the budget.

The issue's budget is 300 samples at 224 with 14 levels, ONNX Runtime, one thread, in at
most 2 minutes. Prints the wall time, the rate, where each sample's time goes (median
build, session creation and timed repeats, from the agent's answers) and the ratio to
the budget. Timings on a shared machine are noisy: read them as one run's figures.

    .venv/bin/python benchmarks/bench_collect.py [--samples 300] [--resolution 224] [--db PATH] [--fit]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


from widthwise.profiler.agent_client import connect
from widthwise.profiler.collect import CLOCKS, DEFAULT_TIMING, CollectSettings, collect
from widthwise.profiler.store import SampleStore

BUDGET_S = 120.0


def fit_with_and_without_drift(db: str) -> dict:
    """The fit's held-out report on this db, raw and drift-normalised (same split)."""
    from widthwise.profiler.fit import fit_table

    out = {}
    with SampleStore(db) as store:
        if store.paired:  # the reference is timed inside every sample; ratios need no normalisation
            refs = np.array([r.pair_ref_ms for r in store.rows("sample")])
            out["reference_max_over_min"] = round(float(refs.max() / refs.min()), 3)
            report = fit_table(store.training_data()).report
            out.update({f"paired_{k}": round(float(report[k]), 3) for k in ("mape", "within_5pct", "within_10pct")})
            return out
        refs = np.array([min(r.times_ms) for r in store.rows("reference")])
        out["reference_max_over_min"] = round(float(refs.max() / refs.min()), 3)
        for normalise in (False, True):
            report = fit_table(store.training_data(normalise_drift=normalise)).report
            tag = "normalised" if normalise else "raw"
            for key in ("mape", "within_5pct", "within_10pct"):
                out[f"{tag}_{key}"] = round(float(report[key]), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--levels", type=int, default=14)
    parser.add_argument("--sampling", default="coverage")
    parser.add_argument("--db", default=None, help="keep the db here (default: a temporary file)")
    parser.add_argument("--fit", action="store_true", help="also fit the db with and without drift normalisation")
    parser.add_argument("--no-pairing", action="store_true", help="unpaired collection with periodic references")
    parser.add_argument("--clock", default=None, choices=tuple(CLOCKS), help="default: the collector's")
    parser.add_argument("--target-ms", type=float, default=None, help="timed ms per sample (default: the collector's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db = args.db or os.path.join(tmp.name, "bench.sqlite")
    if os.path.exists(db):
        parser.error(f"{db} exists: the benchmark measures a fresh collection")
    settings = CollectSettings(
        space="mobilenet_v1", samples=args.samples, db=db, sampling=args.sampling,
        space_params={"resolution": args.resolution, "levels": args.levels},
        pairing=not args.no_pairing, clock=args.clock,
        **({"timing": {**DEFAULT_TIMING, "target_ms": args.target_ms}} if args.target_ms else {}),
    )
    start = time.monotonic()
    with connect("local") as client:
        connected = time.monotonic()
        summary = collect(client, settings, progress=sys.stderr.isatty())
    total = time.monotonic() - start
    with SampleStore(db) as store:
        rows = store.rows()
        facts = store._db.execute("SELECT build_ms, init_ms, warmup, number, repeat, pair FROM samples ORDER BY id").fetchall()
    build = np.array([f[0] or 0.0 for f in facts])
    init = np.array([f[1] or 0.0 for f in facts])
    # timed ms per measurement: the target's repeats, plus the reference's in a paired one
    timed = np.array([(sum(r.times_ms) + (sum(json.loads(f[5])["ref_times_ms"]) if f[5] else 0.0)) * f[3]
                      for r, f in zip(rows, facts)])
    out = {
        "samples": summary["samples"],
        "references": summary["references"],
        "retimed": summary["retimed"],
        "agent_start_s": round(connected - start, 2),
        "collect_s": summary["elapsed_s"],
        "total_s": round(total, 2),
        "pairing": summary.get("pairing"),
        "clock": summary.get("clock"),
        "rate_per_s": round((summary["new"] + summary["retimed"] + (0 if summary.get("pairing") else summary["references"]))
                            / summary["elapsed_s"], 2),  # measurements per second (a paired one includes its reference)
        "median_build_ms": round(float(np.median(build)), 1),
        "median_session_ms": round(float(np.median(init)), 1),
        "median_timed_ms": round(float(np.median(timed)), 1),
        "budget_ratio": round(total / BUDGET_S, 2),
        "outlier_check": summary["outlier_check"],
    }
    if args.fit:
        out.update(fit_with_and_without_drift(db))
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>18}: {value}")
        print(f"{'budget':>18}: {BUDGET_S:.0f} s for 300 samples at 224 -> {'met' if total <= BUDGET_S else 'NOT met'} "
              f"({args.samples} samples at {args.resolution} here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
