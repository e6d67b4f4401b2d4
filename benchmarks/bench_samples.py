"""The learning curve: held-out error of a fitted table against samples collected and device seconds.

For each case (a space, resolution, runtime and dtype on a local agent) one training db is
collected once with the collector's defaults (coverage sampling, seed 0, `--cap` samples)
and one validation db of fresh uniform configurations (seed 1000, `--val-samples`); both
are reused when they exist in `--out-dir`. Since samples are timed in plan order, the
table a collection of N samples would give is the fit on the db's first N samples: every
count of `--counts` is a prefix of the same db. Each prefix is scored on the validation
configurations (their ratios converted with the training db's reference level, as
`widthwise validate` does): MAPE, share within +-5 % and +-10 %. Device seconds are the
training db's wall-clock time from its first sample to the N-th (paired timing included).

`--prior CASE:OTHER` adds rows fitted with OTHER's full table (all `--cap` samples) as the
prior (`fit --prior`): another runtime or resolution of the same space. `--until-error E`
replays the collector's stop rule on each training db (its checks at the counts the rule
would check, the same estimator) and reports where it would stop. `--sampling` adds
training dbs drawn by another sampler (e.g. `--sampling coverage,variance`); with
`--interleave K` those are collected alternately, K samples at a time (no re-timing pass),
so that a change of load on the machine hits every sampler alike. `--picks 30,80` re-times
the exact search's answers of the tables fitted at those counts (`widthwise run`'s
re-timing), where the search's answers live.

    .venv/bin/python benchmarks/bench_samples.py --cases v1-224-ort --prior v1-224-ort:v1-160-ort \\
        --until-error 2% [--plot curve.png] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from widthwise.profiler.agent_client import connect
from widthwise.profiler.collect import CollectSettings, collect
from widthwise.profiler.fit import fit_table, table_predictions
from widthwise.profiler.fit_prior import table_prior
from widthwise.profiler.stopping import ErrorEstimator, StopRule, parse_error_target
from widthwise.profiler.fit_design import term_layout
from widthwise.profiler.store import SampleStore

COUNTS = (10, 20, 30, 50, 80, 120, 200, 300)


@dataclass(frozen=True)
class Case:
    """One collection setting: the space and its parameters, the runtime and dtype."""

    space: str
    params: dict
    runtime: str
    dtype: str = "float32"


CASES = {
    "v1-224-ort": Case("mobilenet_v1", {"resolution": 224, "levels": 14}, "onnxruntime"),
    "v1-160-ort": Case("mobilenet_v1", {"resolution": 160, "levels": 14}, "onnxruntime"),
    "v1-224-litert": Case("mobilenet_v1", {"resolution": 224, "levels": 14}, "litert"),
    "v1-224-litert-int8": Case("mobilenet_v1", {"resolution": 224, "levels": 14}, "litert", "int8"),
    "v1-160-litert": Case("mobilenet_v1", {"resolution": 160, "levels": 14}, "litert"),
    "v1-160-litert-int8": Case("mobilenet_v1", {"resolution": 160, "levels": 14}, "litert", "int8"),
    "text-ort": Case("text_lowrank", {}, "onnxruntime"),
    "v2-224-ort": Case("mobilenet_v2", {"resolution": 224, "levels": 14}, "onnxruntime"),
    "ofa-224-ort": Case("ofa_mbv3", {"resolution": 224, "levels": 14}, "onnxruntime"),
}


def db_path(out_dir: str, case: str, role: str, sampling: str = "coverage") -> str:
    tag = "" if sampling == "coverage" or role == "val" else f"-{sampling}"
    return os.path.join(out_dir, f"{case}{tag}-{role}.sqlite")


def ensure_db(path: str, case: Case, *, samples: int, seed: int, sampling: str, retime: bool, quiet: bool) -> None:
    """Collect (or finish) a db with the collector's defaults on a local agent."""
    settings = CollectSettings(space=case.space, samples=samples, db=path, space_params=case.params, seed=seed,
                               sampling=sampling, runtime=case.runtime, dtype=case.dtype, retime_outliers=retime)
    started = time.monotonic()
    with connect("local") as client:
        summary = collect(client, settings, progress=not quiet)
    if summary["new"]:
        print(f"collected {path}: {summary['samples']} samples ({summary['new']} new) in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)


def ensure_interleaved(out_dir: str, name: str, samplings: list[str], cap: int, chunk: int, quiet: bool) -> None:
    """The training dbs of several samplers collected alternately, `chunk` samples at a time, so
    that every sampler sees the same machine (load, temperature) in every stretch; no re-timing."""
    for upto in range(chunk, cap + chunk, chunk):
        for sampling in samplings:
            ensure_db(db_path(out_dir, name, "train", sampling), CASES[name], samples=min(upto, cap), seed=0,
                      sampling=sampling, retime=False, quiet=quiet)


def load(train_db: str, val_db: str, cap: int):
    """(training data of the first `cap` slots, device seconds per prefix, validation data on its scale)."""
    with SampleStore(train_db) as store:
        data = store.training_data("median")
        level = store.reference_level_ms()
        rows = sorted(store.rows("sample"), key=lambda r: r.slot)
    with SampleStore(val_db) as store:
        val = store.training_data("median", reference_level_ms=level)
    n = min(cap, len(data))
    data = data.subset(np.arange(n))
    wall = np.array([r.wall_time for r in rows[:n]])
    step = float(np.median(np.diff(wall))) if n > 1 else 0.0
    seconds = wall - wall[0] + step  # the first sample took about one step too
    return data, seconds, val


def errors(table, val) -> dict:
    pred = table_predictions(table, val.widths)
    rel = np.abs(pred - val.latency_ms) / val.latency_ms
    return {"mape": float(rel.mean()), "within_5pct": float(np.mean(rel <= 0.05)),
            "within_10pct": float(np.mean(rel <= 0.10))}


def curve(data, seconds, val, counts, prior=None) -> list[dict]:
    rows = []
    for n in counts:
        if n > len(data):
            break
        started = time.monotonic()
        table = fit_table(data.subset(np.arange(n)), holdout=0.0, prior=prior).table
        rows.append({"samples": n, "device_s": float(seconds[n - 1]), "fit_s": time.monotonic() - started,
                     **errors(table, val)})
    return rows


def retime_picks(case: Case, train_db: str, data, counts: list[int], prior=None) -> list[dict]:
    """The exact search's answers at 50/75/100 % of the 1.0x network's predicted latency, from the
    table fitted on each prefix, re-timed on a local agent paired with the table's reference
    (`widthwise run`'s re-timing): the error where the search's answers live."""
    from widthwise.profiler.fit import FitResult
    from widthwise.profiler.job import Fitted, default_budgets, retime_step, search_step

    with SampleStore(train_db) as store:
        level = store.reference_level_ms()
    settings = CollectSettings(space=case.space, samples=1, db=train_db, space_params=case.params,
                               runtime=case.runtime, dtype=case.dtype)
    rows = []
    with connect("local") as client:
        for n in counts:
            if n > len(data):
                break
            result = fit_table(data.subset(np.arange(n)), holdout=0.0, prior=prior)
            fitted = Fitted(FitResult(result.table, result.report, result.solution), level, True)
            answers = search_step(result.table, "flops", default_budgets(result.table, data.space))
            timed = retime_step(client, settings, case.runtime, fitted, answers).rows
            errs = [r["error_pct"] for r in timed if "error_pct" in r]
            rows.append({"samples": n, "errors_pct": errs, "mean_abs_pct": float(np.mean(np.abs(errs)))})
    return rows


def replay_rule(data, threshold: float, cap: int, prior=None) -> dict:
    """Where the collector's stop rule would stop on this db (the same checks, on its prefixes)."""
    rule = StopRule(threshold, cap=min(cap, len(data)))
    estimator = ErrorEstimator(term_layout(data.space), seed=0, prior=prior)
    for count in range(len(data) + 1):
        if rule.due(count):
            sub = data.subset(np.arange(count))
            if rule.record(count, estimator.estimate(sub.widths, sub.latency_ms)):
                break
    stopped = rule.history[-1][0] if rule.reason == "estimate" else min(cap, len(data))
    return {"threshold": threshold, "stopped_at": stopped, "reason": rule.reason or "cap",
            "history": [[n, round(e, 5)] for n, e in rule.history]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="v1-224-ort", help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--prior", default="", help="comma-separated CASE:PRIORCASE pairs (the prior case's full table)")
    parser.add_argument("--sampling", default="coverage", help="training samplers, comma-separated (coverage, uniform, ...)")
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)))
    parser.add_argument("--cap", type=int, default=300, help="training samples collected per case")
    parser.add_argument("--val-samples", type=int, default=200)
    parser.add_argument("--until-error", default=None, help="replay the stop rule at this target (e.g. 2%%)")
    parser.add_argument("--picks", default="", help="counts at which the search's picks are re-timed (e.g. 30,80,300)")
    parser.add_argument("--interleave", type=int, default=0,
                        help="collect the samplers' training dbs alternately, this many samples at a time")
    parser.add_argument("--out-dir", default="runs/bench_samples")
    parser.add_argument("--plot", default=None, help="write the learning curves to this PNG")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--long", action="store_true", help="one table row per count")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    pairs = [tuple(p.split(":")) for p in args.prior.split(",") if p]
    samplings = [s for s in args.sampling.split(",") if s]
    for name in cases + [x for p in pairs for x in p]:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; known: {', '.join(CASES)}")
    os.makedirs(args.out_dir, exist_ok=True)
    needed = list(dict.fromkeys(cases + [x for p in pairs for x in p]))
    for name in needed:
        if args.interleave and name in cases:
            ensure_interleaved(args.out_dir, name, samplings, args.cap, args.interleave, args.quiet)
        for sampling in samplings if name in cases else ["coverage"]:
            ensure_db(db_path(args.out_dir, name, "train", sampling), CASES[name], samples=args.cap, seed=0,
                      sampling=sampling, retime=not args.interleave, quiet=args.quiet)
        ensure_db(db_path(args.out_dir, name, "val"), CASES[name], samples=args.val_samples, seed=1000,
                  sampling="uniform", retime=False, quiet=args.quiet)
    target = None if args.until_error is None else parse_error_target(args.until_error)
    out = []
    for name in cases:
        for sampling in samplings:
            data, seconds, val = load(db_path(args.out_dir, name, "train", sampling), db_path(args.out_dir, name, "val"), args.cap)
            priors = [(None, None)] + [(other, None) for case, other in pairs if case == name and sampling == "coverage"]
            for other, _ in priors:
                prior = None
                if other is not None:
                    pdata, _, _ = load(db_path(args.out_dir, other, "train"), db_path(args.out_dir, other, "val"), args.cap)
                    prior = table_prior(fit_table(pdata, holdout=0.0).table, data.space, f"{other} ({len(pdata)} samples)")
                entry = {"case": name, "sampling": sampling, "prior": other, "validation": len(val),
                         "curve": curve(data, seconds, val, counts, prior)}
                if target is not None:
                    entry["until_error"] = replay_rule(data, target, args.cap, prior)
                if args.picks:
                    entry["picks"] = retime_picks(CASES[name], db_path(args.out_dir, name, "train", sampling), data,
                                                  [int(c) for c in args.picks.split(",")], prior)
                out.append(entry)
                if not args.quiet:
                    print(f"done: {name} {sampling} prior={other}", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print_table(out, counts, target, args.long)
    if args.plot:
        plot(out, args.plot)
    return 0


def print_pivot(out: list[dict]) -> None:
    """The compact table: a row per (case, sampling, prior), a column per count: within ±5 % (MAPE)."""
    counts = sorted({r["samples"] for e in out for r in e["curve"]})
    print("| case | sampling | prior | " + " | ".join(f"{n}" for n in counts) + " |")
    print("|---|---|---|" + "---:|" * len(counts))
    for e in out:
        cells = {r["samples"]: f"{100 * r['within_5pct']:.0f} % ({100 * r['mape']:.1f}; {r['device_s']:.0f} s)"
                 for r in e["curve"]}
        print(f"| {e['case']} | {e['sampling']} | {e['prior'] or '-'} | " + " | ".join(cells.get(n, "") for n in counts) + " |")
    print("\ncells: share of fresh configurations within ±5 % (MAPE %; device seconds to that count)")


def print_table(out: list[dict], counts: list[int], target: float | None, long: bool = False) -> None:
    """Markdown: the compact table (or with `long` a row per (case, sampling, prior) and count), the
    search's picks, the stop rule's replay."""
    if not long:
        print_pivot(out)
    else:
        print("| case | sampling | prior | samples | device s | MAPE | within ±5 % | within ±10 % |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
    for e in out if long else []:
        for r in e["curve"]:
            print(f"| {e['case']} | {e['sampling']} | {e['prior'] or '-'} | {r['samples']} | {r['device_s']:.1f} | "
                  f"{100 * r['mape']:.2f} % | {100 * r['within_5pct']:.1f} % | {100 * r['within_10pct']:.1f} % |")
    if any("picks" in e for e in out):
        print()
        print("| case | sampling | prior | samples | search's picks at 50/75/100 % of the 1.0x latency: predicted vs re-timed | mean abs |")
        print("|---|---|---|---:|---|---:|")
        for e in out:
            for r in e.get("picks", []):
                errs = ", ".join(f"{x:+.1f} %" for x in r["errors_pct"])
                print(f"| {e['case']} | {e['sampling']} | {e['prior'] or '-'} | {r['samples']} | {errs} | {r['mean_abs_pct']:.1f} % |")
    if target is None:
        return
    print()
    print(f"| case | sampling | prior | smallest count with MAPE < {100 * target:g} % | --until-error {100 * target:g} % stops at | ratio | estimate there |")
    print("|---|---|---|---:|---:|---:|---:|")
    for e in out:
        first = next((r["samples"] for r in e["curve"] if r["mape"] < target), None)
        rule = e["until_error"]
        est = rule["history"][-1][1] if rule["history"] else None
        ratio = f"{rule['stopped_at'] / first:.2f}" if first else "-"
        print(f"| {e['case']} | {e['sampling']} | {e['prior'] or '-'} | {first or '-'} | {rule['stopped_at']} ({rule['reason']}) | "
              f"{ratio} | {'-' if est is None else f'{100 * est:.2f} %'} |")


def plot(out: list[dict], path: str) -> None:
    """MAPE and share within 5 % against samples and against device seconds, one line per row of `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for e in out:
        label = f"{e['case']} {e['sampling']}" + (f" prior {e['prior']}" if e["prior"] else "")
        n = [r["samples"] for r in e["curve"]]
        s = [r["device_s"] for r in e["curve"]]
        axes[0].plot(n, [100 * r["mape"] for r in e["curve"]], marker="o", label=label)
        axes[1].plot(n, [100 * r["within_5pct"] for r in e["curve"]], marker="o", label=label)
        axes[2].plot(s, [100 * r["mape"] for r in e["curve"]], marker="o", label=label)
    axes[0].set(xscale="log", xlabel="samples", ylabel="held-out MAPE %")
    axes[1].set(xscale="log", xlabel="samples", ylabel="held-out within ±5 %")
    axes[2].set(xscale="log", xlabel="device seconds", ylabel="held-out MAPE %")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
