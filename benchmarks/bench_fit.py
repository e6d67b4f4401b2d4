"""Latency-table accuracy of every fit method on the same real timings, beside an isolated-block LUT.

Collects (or reuses) a training db and a fresh validation db from a local agent (ONNX
Runtime, one thread, `--space` mobilenet_v1 by default, mobilenet_v2 or ofa_mbv3, or a family of
one's own as `--space-file` a widthwise-space/1 spec, docs/spaces.md), fits every
method on the training db and prints, on the validation configurations: MAPE, share within
+-5 % and +-10 %, median signed error (bias), fit time, and the collection time. Targets:
mobilenet_v1 >= 95 % within 5 % and >= 99 % within 10 % from <= 300 samples in <= 2 min;
mobilenet_v2 the same shares from <= 500 samples in <= 4 min; ofa_mbv3 the same from <= 600
samples in <= 5 min. On ofa_mbv3 a validation configuration draws every option uniformly,
skips included (a stage's depth is then 2, 3 or 4, or a kept block 4 after a skipped 3,
which is the same network as depth 3).

Beside the fitted tables, the isolated-block lookup table (profiler.block_lut, `--lut`;
on by default for the trees, mobilenet_v2 and ofa_mbv3; an OFA MBConv block is one unit,
a skipped block 0 ms): each network block timed alone on the same agent and
clock, the times summed, as OFA- and ProxylessNAS-style latency LUTs do; filled on demand
for the validation configurations (what a full LUT predicts for them), its entries cached
in the out dir. Every fitted table is saved in the out dir too (`<training db>-<method>.json`).
`lut-<grouping>` is that sum; `lut-<grouping>-scaled` multiplies it by the
one ratio that puts the reference configuration on its measured level R (the LUT's bias
at one point removed), so what is left is the error a constant factor cannot fix.

`--source agent` (default) collects through a real local agent with the collector's
defaults: every run alternated with the pair reference (`pair_with`), the thread CPU clock,
values = median per-pair ratio x R; the validation db's ratios are converted with the
training db's R (as `widthwise validate` does with a table's reference).
`--source collect` uses `profiler.collect` unpaired, with the agent's wall-clock timings.
`--source thread-cpu` times in this process with the agent's builder and ONNX Runtime
runtime but reads the thread's CPU clock (valid with one intra-op thread, which runs on
the caller): on a machine whose cores other processes share, it shows what the fit can
do when contention is taken out of the measurement. Its caches are .npz files in runs/.

    .venv/bin/python benchmarks/bench_fit.py [--space mobilenet_v2] [--samples 300] [--val-samples 300]
        [--train-db runs/bench_fit/train.sqlite --val-db runs/bench_fit/val.sqlite] [--lut block,factor] [--json]
    .venv/bin/python benchmarks/bench_fit.py --space-file docs/spaces/mcu_vww.json --samples 150 --val-samples 100
    .venv/bin/python benchmarks/bench_fit.py --source thread-cpu [--cache runs/bench_fit/cpu]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

from widthwise.device_agents.spaces import Space, make_space
from widthwise.device_agents.statistics import FIT_STATISTICS
from widthwise.device_agents.timing import CLOCKS
from widthwise.profiler.agent_client import connect
from widthwise.profiler.dataset import TrainingData
from widthwise.profiler.collect import DEFAULT_TIMING, CollectSettings, collect
from widthwise.profiler.block_lut import GROUPINGS, BlockLUT
from widthwise.profiler.fit import fit_table, table_predictions
from widthwise.profiler.fit_solvers import METHOD_ALIASES, METHODS, resolve_method
from widthwise.profiler.store import SampleStore

ORDER = ("pooled-prior", "pooled-prior-monotone", "nnls-monotone", "nnls", "flops")
SPACES = ("mobilenet_v1", "mobilenet_v2", "ofa_mbv3")
#: per space: default training samples, and the target's sample and collection-time bounds
TARGETS = {"mobilenet_v1": (300, 300, 120), "mobilenet_v2": (500, 500, 240), "ofa_mbv3": (600, 600, 300)}
#: spaces whose isolated-block LUT is scored by default (the trees, where OFA-style LUTs are used)
LUT_SPACES = ("mobilenet_v2", "ofa_mbv3")
#: default training samples of a spec file's space (no target is set for a family of one's own)
SPEC_SAMPLES = 300


def collect_db(path: str, *, samples: int, seed: int, sampling: str, retime: bool, args: argparse.Namespace) -> float:
    """Collect (or finish) a db on a local agent; the wall-clock seconds it took."""
    paired = args.source == "agent"
    mode = {"pairing": True, "clock": args.clock, "pair_share": args.pair_share} if paired else {"pairing": False, "clock": "wall", "statistic": args.statistic}
    if args.target_ms is not None:
        mode["timing"] = {**DEFAULT_TIMING, "target_ms": args.target_ms}
    settings = CollectSettings(
        space=args.space,
        samples=samples,
        db=path,
        space_params=args.space_params,
        seed=seed,
        sampling=sampling,
        runtime="onnxruntime",
        threads=1,
        retime_outliers=retime,
        **mode,
    )
    started = time.monotonic()
    with connect("local") as client:
        summary = collect(client, settings, progress=not args.quiet)
    elapsed = time.monotonic() - started
    print(f"collected {path}: {summary['samples']} samples, {summary['references_total']} references, "
          f"{summary['retimed_total']} re-timed, {elapsed:.1f} s", file=sys.stderr)
    return elapsed


def _cpu_ms(session, feeds: dict) -> float:
    start = time.thread_time_ns()
    session.run(feeds)
    return (time.thread_time_ns() - start) / 1e6


def time_in_process(space: Space, plan: list, *, repeat: int, paired: bool, quiet: bool) -> tuple[np.ndarray, np.ndarray]:
    """Raw single-run times (ms, thread CPU clock) of each configuration, (N, repeat), and of
    the reference run just before each of them when `paired` (else zeros)."""
    from widthwise.device_agents.build_onnx import build_onnx
    from widthwise.device_agents.runtimes import get_runtime
    from widthwise.profiler.collect import reference_widths

    runtime = get_runtime("onnxruntime")

    def load(widths, seed):
        session = runtime.load(build_onnx(space, widths), threads=1)
        spec = session.inputs[0]
        feeds = {spec.name: np.random.default_rng(seed).standard_normal(spec.shape).astype(np.float32)}
        for _ in range(2):
            session.run(feeds)
        return session, feeds

    ref_session, ref_feeds = load(reference_widths(space), 0)
    runs, ref_runs = np.zeros((len(plan), repeat)), np.zeros((len(plan), repeat))
    for i, widths in enumerate(plan):
        session, feeds = load(widths, i)
        for k in range(repeat):
            if paired:
                ref_runs[i, k] = _cpu_ms(ref_session, ref_feeds)
            runs[i, k] = _cpu_ms(session, feeds)
        if not quiet and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(plan)} timed", file=sys.stderr)
    return runs, ref_runs


REDUCERS = {"min": np.min, "median": np.median, "mean": np.mean}


def reduce_timings(runs: np.ndarray, ref_runs: np.ndarray, statistic: str, pair_stat: str, nominal: float | None) -> np.ndarray:
    """Per-configuration value: the statistic of its runs, or (paired) its ratio to the reference's
    times `nominal`, the reference's typical value, so that sets timed apart share one unit."""
    reduce = REDUCERS[statistic]
    if not ref_runs.any():
        return reduce(runs, axis=1)
    if pair_stat == "pairwise":
        ratio = np.median(runs / ref_runs, axis=1)
    else:
        ratio = reduce(runs, axis=1) / reduce(ref_runs, axis=1)
    return ratio * (nominal if nominal is not None else float(np.median(reduce(ref_runs, axis=1))))


def thread_cpu_data(args: argparse.Namespace) -> tuple[TrainingData, TrainingData, float, float, dict]:
    """Training (coverage plan), fresh validation (uniform plan) and a re-timing of the first
    validation configurations, timed in process and cached; the last is the measurement floor."""
    from widthwise.profiler.sampling import make_sampler

    space = make_space(args.space, args.space_params)
    tag = "paired" if args.paired else "plain"
    plans = {
        "train": make_sampler("coverage", space, seed=args.seed).plan(args.samples),
        "val": make_sampler("uniform", space, seed=args.seed + 1000).plan(args.val_samples),
    }
    plans["recheck"] = plans["val"][: args.recheck]
    raw, seconds = {}, {}
    for name, plan in plans.items():
        prefix = "" if args.space == "mobilenet_v1" else f"{args.space}-"  # mobilenet_v1 keeps its cache names
        shape = (f"r{args.resolution}-l{args.levels}" if args.space_file is None else  # two specs' caches differ
                 "spec" + hashlib.sha256(json.dumps(args.space_params, sort_keys=True).encode()).hexdigest()[:12])
        path = os.path.join(args.cache, f"{prefix}{name}-{shape}-n{len(plan)}-s{args.seed}-x{args.repeat}-{tag}.npz")
        if os.path.exists(path):
            cached = np.load(path)
            raw[name], seconds[name] = (cached["runs"], cached["ref_runs"]), float(cached["elapsed_s"])
            continue
        started = time.monotonic()
        raw[name] = time_in_process(space, plan, repeat=args.repeat, paired=args.paired, quiet=args.quiet)
        seconds[name] = time.monotonic() - started
        os.makedirs(args.cache, exist_ok=True)
        np.savez(path, runs=raw[name][0], ref_runs=raw[name][1], elapsed_s=seconds[name])
    nominal = None
    if args.paired:
        nominal = float(np.median(REDUCERS[args.statistic](raw["train"][1], axis=1)))
    values = {name: reduce_timings(*raw[name], args.statistic, args.pair_stat, nominal) for name in raw}
    identity = {
        "device": {"name": "this machine", "clock": "thread_cpu", "paired_reference": args.paired},
        "runtime": {"name": "onnxruntime", "threads": 1, "dtype": "float32"},
    }
    sets = [
        TrainingData(space, np.asarray(plans[n], dtype=np.int64), values[n], np.arange(1, len(plans[n]) + 1), args.statistic, identity)
        for n in ("train", "val")
    ]
    again = np.abs(values["recheck"] - values["val"][: args.recheck]) / values["val"][: args.recheck]
    floor = {
        "configurations": int(len(again)),
        "median_abs_diff": float(np.median(again)) if len(again) else None,
        "within_5pct": float(np.mean(again <= 0.05)) if len(again) else None,
    }
    return sets[0], sets[1], seconds["train"], seconds["val"], floor


def resolve_space(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`args.space` and `args.space_params` from --space (with --resolution, --levels) or --space-file
    (a spec fixes its own input and grids), by the CLI's rules; a mistake ends as a usage error."""
    from pathlib import Path

    from widthwise.errors import UsageError
    from widthwise.profiler.cli_options import open_space, space_choice

    if args.space_file is None:
        args.resolution = 224 if args.resolution is None else args.resolution
        args.levels = 14 if args.levels is None else args.levels
    try:
        args.space, args.space_params = space_choice(args.space, args.space_file and Path(args.space_file),
                                                     args.resolution, args.levels, ())
        args.resolution = open_space(args.space, args.space_params).resolution
    except UsageError as exc:
        parser.error(exc.message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--space", default=None, choices=SPACES, help="a built-in space (default mobilenet_v1)")
    which.add_argument("--space-file", default=None,
                       help="a widthwise-space/1 spec file (docs/spaces.md): a family of one's own")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"training samples (default: 300, mobilenet_v2 500, ofa_mbv3 600, a spec file {SPEC_SAMPLES})")
    parser.add_argument("--val-samples", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=None, help="built-in spaces (default 224)")
    parser.add_argument("--levels", type=int, default=None, help="built-in spaces (default 14)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--statistic", default="min", choices=FIT_STATISTICS)
    parser.add_argument("--train-db", default=None, help="reuse this training db (collected if missing)")
    parser.add_argument("--val-db", default=None, help="reuse this validation db (collected if missing)")
    parser.add_argument("--out-dir", default="runs/bench_fit")
    parser.add_argument("--methods", default=",".join(ORDER))
    parser.add_argument("--source", default="agent", choices=("agent", "collect", "thread-cpu"))
    parser.add_argument("--clock", default=None, choices=tuple(CLOCKS), help="agent: the agent's clock (default: the collector's)")
    parser.add_argument("--pair-share", type=float, default=1.0, help="agent: the pair reference's share of the base widths")
    parser.add_argument("--target-ms", type=float, default=None, help="agent/collect: timed ms per sample (default: the collector's)")
    parser.add_argument("--cache", default="runs/bench_fit/thread_cpu", help="thread-cpu: where timings are cached")
    parser.add_argument("--repeat", type=int, default=12, help="thread-cpu: timed runs per configuration")
    parser.add_argument("--paired", action="store_true", help="thread-cpu: alternate every run with the reference")
    parser.add_argument("--pair-stat", default="pairwise", choices=("ratio", "pairwise"),
                        help="thread-cpu --paired: statistic ratio, or median of per-pair ratios")
    parser.add_argument("--recheck", type=int, default=60, help="thread-cpu: re-time this many validation configurations")
    parser.add_argument("--lut", default=None,
                        help=f"isolated-block LUT unit sizes to score, from {', '.join(GROUPINGS)}, or none "
                             "(default: block for mobilenet_v2 and ofa_mbv3, none for mobilenet_v1 and a spec file)")
    parser.add_argument("--lut-val", type=int, default=None, help="score the LUT on the first N validation configurations")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    resolve_space(parser, args)
    if args.samples is None:
        args.samples = TARGETS[args.space][0] if args.space_file is None else SPEC_SAMPLES
    lut = args.lut if args.lut is not None else ("block" if args.space_file is None and args.space in LUT_SPACES else "none")
    args.lut = [] if lut == "none" else lut.split(",")
    for grouping in args.lut:
        if grouping not in GROUPINGS:
            parser.error(f"unknown LUT unit size {grouping!r}; known: {', '.join(GROUPINGS)}, none")
    methods = []
    for method in args.methods.split(","):
        try:
            methods.append(resolve_method(method))
        except KeyError:
            parser.error(f"unknown method {method!r}; known: {', '.join([*METHODS, *METHOD_ALIASES])}")
    out, train, val = measure(args, methods)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_report(out, args, train, val)
    return 0


def measure(args: argparse.Namespace, methods: list[str]) -> tuple[dict, TrainingData, TrainingData]:
    """Collect (or reuse) the training and validation data, fit every method; the figures."""
    floor = None
    if args.source == "thread-cpu":
        train, val, collect_s, val_s, floor = thread_cpu_data(args)
        train_db = val_db = args.cache
    else:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        train_db = args.train_db or os.path.join(args.out_dir, f"train-{stamp}.sqlite")
        val_db = args.val_db or os.path.join(args.out_dir, f"val-{stamp}.sqlite")
        collect_s = collect_db(train_db, samples=args.samples, seed=args.seed, sampling="coverage", retime=True, args=args)
        val_s = collect_db(val_db, samples=args.val_samples, seed=args.seed + 1000, sampling="uniform", retime=False, args=args)
        with SampleStore(train_db) as store:
            train = store.training_data(args.statistic)
            level = store.reference_level_ms() if store.paired else None
        with SampleStore(val_db) as store:
            val = store.training_data(args.statistic, reference_level_ms=level)  # level is ignored unpaired
    rows = []
    measured = np.asarray(val.latency_ms, dtype=np.float64)
    for method in methods:
        started = time.monotonic()
        result = fit_table(train, holdout=0.0, seed=args.seed, method=method)
        fit_s = time.monotonic() - started
        table_path = os.path.join(args.out_dir, f"{os.path.splitext(os.path.basename(train_db))[0]}-{method}.json")
        os.makedirs(args.out_dir, exist_ok=True)
        result.table.save(table_path)  # e.g. for benchmarks/bench_search.py --v2-table
        rows.append({"method": method, "fit_s": round(fit_s, 2), "table": table_path,
                     **score(table_predictions(result.table, val.widths), measured)})
    reference = None
    if args.source == "agent":  # the pair reference and its level R put the scaled LUT on the db's scale
        from widthwise.profiler.collect import pair_reference_widths
        reference = (pair_reference_widths(train.space, args.pair_share), level)
    luts = [score_lut(args, grouping, val, os.path.splitext(os.path.basename(val_db))[0], reference) for grouping in args.lut]
    for lut in luts:
        rows.extend(lut.pop("rows"))

    median_ms = float(np.median(val.latency_ms))
    out = {
        "space": args.space,
        "space_file": args.space_file,
        "train_db": train_db,
        "val_db": val_db,
        "train_samples": len(train),
        "val_samples": len(val),
        "statistic": train.statistic,
        "source": args.source,
        "collect_train_s": round(collect_s, 1),
        "collect_val_s": round(val_s, 1),
        "median_latency_ms": round(median_ms, 3),
        "load_average": os.getloadavg()[0],
        "methods": rows,
        "luts": luts,
        "repeatability": floor,
    }
    return out, train, val


def score(pred: np.ndarray, measured: np.ndarray) -> dict:
    """MAPE, shares within +-5 % and +-10 %, RMSE (as `widthwise fit` reports them) and the
    median signed error (pred / measured - 1: a LUT's systematic bias shows here)."""
    signed = (pred - measured) / measured
    rel = np.abs(signed)
    return {
        "mape": float(np.mean(rel)),
        "within_5pct": float(np.mean(rel <= 0.05)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "rmse_ms": float(np.sqrt(np.mean((pred - measured) ** 2))),
        "bias": float(np.median(signed)),
        "count": int(len(measured)),
    }


def score_lut(args: argparse.Namespace, grouping: str, val: TrainingData, tag: str,
              reference: tuple[tuple[int, ...], float | None] | None) -> dict:
    """Fill the isolated-block LUT for the validation configurations on a local agent; its rows
    (raw sum and, with a reference level, scaled to it) and what filling it cost."""
    count = len(val) if args.lut_val is None else min(args.lut_val, len(val))
    widths, measured = val.widths[:count], np.asarray(val.latency_ms[:count], dtype=np.float64)
    path = os.path.join(args.out_dir, f"lut-{tag}-{grouping}.json")
    lut = BlockLUT(val.space, grouping=grouping, clock=args.clock or "thread_cpu", path=path)
    cached = len(lut.entries)
    with connect("local") as client:
        pred = lut.predict_many(client, [tuple(int(w) for w in row) for row in widths], progress=not args.quiet)
        rows = [{"method": f"lut-{grouping}", "fit_s": None, **score(pred, measured)}]
        info = {"grouping": grouping, "path": path, "units": len(lut.units), "entries": len(lut.entries),
                "entries_cached": cached, "entries_timed": lut.stats.timed, "timing_s": round(lut.stats.seconds, 1),
                "configurations": count}
        if reference is not None and reference[1] is not None:
            ref_ms = lut.predict(client, reference[0])
            scale = reference[1] / ref_ms
            rows.append({"method": f"lut-{grouping}-scaled", "fit_s": None, **score(pred * scale, measured)})
            info.update(reference_lut_ms=round(ref_ms, 4), reference_level_ms=round(reference[1], 4),
                        scale=round(scale, 4))
    lut.save()
    print(f"LUT ({grouping}): {info['entries_timed']} entries timed in {info['timing_s']} s, {cached} cached, "
          f"{len(lut.units)} units per configuration", file=sys.stderr)
    return {**info, "rows": rows}


def print_report(out: dict, args: argparse.Namespace, train: TrainingData, val: TrainingData) -> None:
    """The human table of `measure`'s figures."""
    collect_s, val_s, median_ms, rows, floor = (out["collect_train_s"], out["collect_val_s"], out["median_latency_ms"],
                                                out["methods"], out["repeatability"])
    clock = {"thread-cpu": "thread CPU clock, in process", "collect": "wall clock, local agent",
             "agent": f"{train.identity['runtime'].get('clock')} clock, local agent, paired with the reference run by run"}[args.source]
    if args.source == "thread-cpu" and args.paired:
        clock += ", paired with the reference"
    shape = (f"@ {args.resolution}, {args.levels} levels" if args.space_file is None
             else f"(spec file {args.space_file}) @ {args.resolution}")
    print(f"{args.space} {shape}, onnxruntime, 1 thread, statistic={train.statistic}, {clock}")
    print(f"training: {len(train)} samples in {collect_s:.1f} s; validation: {len(val)} fresh configurations "
          f"in {val_s:.1f} s; median latency {median_ms:.2f} ms; load average {out['load_average']:.1f}")
    print(f"{'method':<20}{'MAPE':>8}{'<=5%':>8}{'<=10%':>8}{'bias':>8}{'RMSE ms':>9}{'fit s':>8}{'n':>5}")
    for r in rows:
        fit_s = f"{r['fit_s']:>8.2f}" if r["fit_s"] is not None else f"{'-':>8}"
        print(f"{r['method']:<20}{100 * r['mape']:>7.2f}%{100 * r['within_5pct']:>7.1f}%{100 * r['within_10pct']:>7.1f}%"
              f"{100 * r['bias']:>+7.2f}%{r['rmse_ms']:>9.3f}{fit_s}{r['count']:>5}")
    for lut in out["luts"]:
        line = (f"LUT, {lut['grouping']} units ({lut['units']} per configuration): {lut['entries']} entries for "
                f"{lut['configurations']} configurations, {lut['entries_timed']} timed in this run ({lut['timing_s']:.1f} s)")
        if "scale" in lut:
            line += (f"; the reference sums to {lut['reference_lut_ms']:.3f} ms alone against its level "
                     f"{lut['reference_level_ms']:.3f} ms (scale {lut['scale']:.3f})")
        print(line)
    if floor and floor["configurations"]:
        print(f"measurement floor: {floor['configurations']} validation configurations timed again differ by "
              f"{100 * floor['median_abs_diff']:.1f} % (median); {100 * floor['within_5pct']:.0f} % within 5 %")
    if args.space_file is None:
        _, most, seconds = TARGETS[args.space]
        print(f"target: >= 95 % within 5 %, >= 99 % within 10 %, from <= {most} samples collected in <= {seconds // 60} min")


if __name__ == "__main__":
    sys.exit(main())
