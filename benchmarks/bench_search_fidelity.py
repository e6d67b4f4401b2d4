"""Search fidelity: are the configurations the exact search picks as fast as the table says?

Random held-out samples measure a table where the data are; the search goes where the
table's errors make a configuration look cheap (an optimiser's curse). This benchmark fits
each method on one db, asks the exact search for the best configuration at ~8 budgets across
the table's range (objectives flops and params), re-times every picked configuration on a
local agent (ONNX Runtime, one thread), each interleaved with the 1.0x reference
configuration, and prints predicted against measured latency and the share within 5 % / 10 %.
Beside the picks it times `--control` configurations the fits held out (random draws of the
db), in the same shuffled order: their error is what the device's state today does to any
configuration, so picks' bias minus the control's is the optimiser's curse alone.

On a paired db (the collector's default) a measurement is what `widthwise run` re-times: the
median of per-run ratios to the db's pair reference, timed alternately run by run, times the
db's reference level R, the very scale the table was fitted on. On an unpaired db it is the
ratio min(picked) / min(reference) over interleaved rounds, times the reference's level on the
db's drift-normalised scale. Either way slow drift of a shared machine cancels.

    .venv/bin/python benchmarks/bench_search_fidelity.py --db runs/NAME.sqlite
    .venv/bin/python benchmarks/bench_search_fidelity.py            # collects a fresh db first
        [--methods pooled-prior,flops] [--budgets 8] [--control 20] [--rounds 6] [--clock thread_cpu|wall] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from widthwise.device_agents.spaces import Space
from widthwise.device_agents.timing import CLOCKS
from widthwise.profiler.agent_client import connect
from widthwise.profiler.collect import CollectSettings, collect, reference_widths
from widthwise.profiler.collect_timing import TimingPolicy, timed_bench
from widthwise.profiler.fit import fit_table, split_holdout
from widthwise.profiler.fit_solvers import METHOD_ALIASES, METHODS, resolve_method
from widthwise.profiler.store import SampleStore
from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective
from widthwise.search.table import Table

OBJECTIVES = ("flops", "params")
#: search per fit method: a straight line in MACs gives every configuration of equal MACs the
#: same latency, so its exact Pareto front holds nearly every configuration; greedy answers it
SEARCH_FOR_METHOD = {"flops": "greedy"}


def load_or_collect(args: argparse.Namespace):
    """(training data, reference level on the data's scale or None, the pair reference's widths and the
    timing settings when the db is paired, else None) from --db, collecting it if absent."""
    db = Path(args.db)
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        settings = CollectSettings(
            space="mobilenet_v1", samples=args.samples, db=str(db),
            space_params={"resolution": args.resolution, "levels": args.levels},
            seed=args.seed, runtime="onnxruntime", threads=1,
        )
        started = time.monotonic()
        with connect("local") as client:
            collect(client, settings, progress=not args.json)
        print(f"collected {db} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    with SampleStore(str(db)) as store:
        data = store.training_data(args.statistic)
        if store.paired:
            return data, store.reference_level_ms(), (store.meta["reference_widths"], store.meta["timing"])
        trend = store.drift_trend(args.statistic)
    return data, (None if trend.empty else float(math.exp(trend.log_scale))), None


def budgets_across(table: Table, count: int) -> list[float]:
    """`count` budgets spread from just above the fastest to just below the widest configuration."""
    fastest = Searcher(table, make_objective(table, "flops")).min_latency_ms
    fastest = float(fastest() if callable(fastest) else fastest)
    widest = table.predict([max(c) for c in table.choices])
    lo, hi = fastest + 0.08 * (widest - fastest), widest - 0.05 * (widest - fastest)
    return [round(float(b), 3) for b in np.linspace(lo, hi, count)]


def picks_of(table: Table, budgets: list[float], search: str = "exact") -> list[dict]:
    """The search's answer for every objective and budget (infeasible budgets skipped)."""
    rows = []
    for objective in OBJECTIVES:
        searcher = Searcher(table, make_objective(table, objective))
        for budget in budgets:
            try:
                answer = searcher.query(budget, method=search)
            except InfeasibleBudget:
                continue
            rows.append({"objective": objective, "budget_ms": budget, "widths": tuple(answer.widths),
                         "predicted_ms": float(answer.latency_ms), "search": search})
    return rows


class InterleavedTimer:
    """Ratios of configurations' minimum time to the reference's, timed in alternating rounds on an agent."""

    def __init__(self, client, space: Space, params: dict, clock: str, rounds: int, repeat: int) -> None:
        self.client, self.space, self.params = client, space, params
        self.timing = {"warmup": 2, "number": 1, "repeat": repeat, "threads": 1, "clock": clock}
        self.rounds = rounds
        self.reference = reference_widths(space)
        self.reference_min_ms: list[float] = []

    def _min_ms(self, widths) -> float:
        spec = {"space": self.space.name, "params": self.params, "widths": list(widths)}
        reply = self.client.bench_spec(spec, runtime="onnxruntime", timing=self.timing)
        return float(min(reply["times_ms"])) if reply.get("times_ms") else float(reply["stats"]["min"])

    def ratio(self, widths) -> float:
        """min over rounds of the configuration's time / min over the same rounds of the reference's."""
        mine, ref = [], []
        for _ in range(self.rounds):
            ref.append(self._min_ms(self.reference))
            mine.append(self._min_ms(widths))
        self.reference_min_ms.append(min(ref))
        return min(mine) / min(ref)


class PairedTimer:
    """Median ratios of configurations to a paired db's reference, each timed alternately with it
    run by run (the collector's and `widthwise run`'s measurement)."""

    def __init__(self, client, space: Space, params: dict, clock: str, reference: list[int], timing: dict) -> None:
        self.client, self.clock, self.reference = client, clock, list(reference)
        self.base = {"space": space.name, "params": params}
        self.policy = TimingPolicy(timing)
        self.reference_min_ms: list[float] = []

    def ratio(self, widths) -> float:
        body = timed_bench(self.client, {**self.base, "widths": list(widths)}, self.policy, runtime="onnxruntime",
                           threads=1, clock=self.clock, estimate_ms=None, pair_widths=self.reference)
        self.reference_min_ms.append(float(body["pair"]["ref_median_ms"]))
        return float(body["pair"]["ratio_median"])


def summarise(errors: np.ndarray) -> dict:
    """Bias, MAPE and the shares within 5 % and 10 % of relative errors (fractions)."""
    if len(errors) == 0:
        return {"count": 0}
    return {"count": int(len(errors)), "bias": float(np.mean(errors)), "mape": float(np.mean(np.abs(errors))),
            "within_5pct": float(np.mean(np.abs(errors) <= 0.05)), "within_10pct": float(np.mean(np.abs(errors) <= 0.10))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="runs/bench_search_fidelity/train.sqlite", help="db to fit (collected if missing)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated fit methods")
    parser.add_argument("--budgets", type=int, default=8, help="budgets per objective")
    parser.add_argument("--control", type=int, default=20,
                        help="held-out configurations timed beside the picks (their error is the device's drift)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per configuration")
    parser.add_argument("--repeat", type=int, default=3, help="runs per round")
    parser.add_argument("--clock", default="thread_cpu", choices=tuple(CLOCKS))
    parser.add_argument("--statistic", default="min")
    parser.add_argument("--holdout", type=float, default=0.15)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--levels", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    unknown = [m for m in args.methods.split(",") if m and METHOD_ALIASES.get(m, m) not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join([*METHODS, *METHOD_ALIASES])}")
    methods = [resolve_method(m) for m in args.methods.split(",") if m]

    data, level, pairing = load_or_collect(args)
    space = data.space
    params = dict(space.to_json().get("params") or {})
    fits = {}
    for m in methods:
        started = time.monotonic()
        fits[m] = fit_table(data, holdout=args.holdout, seed=args.seed, method=m)
        print(f"fitted {m} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    budgets = budgets_across(fits[methods[0]].table, args.budgets)
    picks = {}
    for m in methods:
        started = time.monotonic()
        picks[m] = picks_of(fits[m].table, budgets, SEARCH_FOR_METHOD.get(m, "exact"))
        print(f"searched {m} ({SEARCH_FOR_METHOD.get(m, 'exact')}) in {time.monotonic() - started:.1f} s", file=sys.stderr)

    _, held = split_holdout(len(data), args.holdout, args.seed)
    control = [tuple(int(v) for v in data.widths[i]) for i in held[: args.control]]
    ratios, level, scale_note, timing_s = time_all(args, space, params, picks, control, level, pairing)
    result = {"db": args.db, "reference_level_ms": level, "scale": scale_note, "clock": args.clock,
              "budgets_ms": budgets, "timing_s": timing_s, "methods": {}}
    for m in methods:
        rows = [{**p, "widths": list(p["widths"]), "measured_ms": ratios[p["widths"]] * level} for p in picks[m]]
        for r in rows:
            r["error"] = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
        errors = np.array([r["error"] for r in rows])
        by_objective = {o: summarise(np.array([r["error"] for r in rows if r["objective"] == o])) for o in OBJECTIVES}
        table = fits[m].table
        control_errors = np.array([(table.predict(w) - ratios[w] * level) / (ratios[w] * level) for w in control])
        result["methods"][m] = {"holdout": fits[m].report, "picks": rows, "all": summarise(errors), **by_objective,
                                "control": summarise(control_errors)}
    if args.json:
        print(json.dumps(result, indent=1, default=float))
        return
    print_report(result)


def time_all(args: argparse.Namespace, space: Space, params: dict, picks: dict, control: list[tuple],
             level: float | None, pairing: tuple | None) -> tuple[dict, float, str, float]:
    """Every distinct picked or control configuration timed once, in a shuffled order so that drift
    favours no method: (ratio to the reference per configuration, level, where it came from, seconds)."""
    distinct = sorted({p["widths"] for rows in picks.values() for p in rows} | set(control))
    order = np.random.default_rng(args.seed).permutation(len(distinct))
    ratios: dict[tuple, float] = {}
    started = time.monotonic()
    with connect("local") as client:
        if pairing is not None:
            timer = PairedTimer(client, space, params, args.clock, *pairing)
        else:
            timer = InterleavedTimer(client, space, params, args.clock, args.rounds, args.repeat)
        for n, i in enumerate(order):
            ratios[distinct[i]] = timer.ratio(distinct[i])
            if not args.json and (n + 1) % 10 == 0:
                print(f"  timed {n + 1}/{len(distinct)}", file=sys.stderr)
    scale_note = "the paired db's reference level R" if pairing is not None else "db drift trend"
    if level is None:
        level, scale_note = float(np.median(timer.reference_min_ms)), "reference as timed now"
    return ratios, level, scale_note, round(time.monotonic() - started, 1)


def _line(name: str, s: dict) -> str:
    if not s.get("count"):
        return f"{name:>10}: no feasible picks"
    return (f"{name:>10}: n={s['count']:>2}  bias {100 * s['bias']:+6.1f} %  MAPE {100 * s['mape']:5.1f} %  "
            f"within 5 %: {100 * s['within_5pct']:5.1f} %  within 10 %: {100 * s['within_10pct']:5.1f} %")


def print_report(result: dict) -> None:
    print(f"db {result['db']}; measured = ratio to the reference ({result['clock']} clock) x "
          f"{result['reference_level_ms']:.3f} ms ({result['scale']}); timing took {result['timing_s']:.0f} s")
    for m, r in result["methods"].items():
        h = r["holdout"]
        search = r["picks"][0]["search"] if r["picks"] else "exact"
        print(f"\n== {m} ({search} search): random held-out MAPE {100 * h['mape']:.1f} %, within 5 % {100 * h['within_5pct']:.0f} %, "
              f"within 10 % {100 * h['within_10pct']:.0f} % (n={h['count']})")
        print(f"{'objective':>9} {'budget':>7} {'predicted':>9} {'measured':>9} {'error':>7}  widths")
        for p in r["picks"]:
            print(f"{p['objective']:>9} {p['budget_ms']:>7.2f} {p['predicted_ms']:>9.2f} {p['measured_ms']:>9.2f} "
                  f"{100 * p['error']:>+6.1f}%  {','.join(map(str, p['widths']))}")
        for name in ("flops", "params", "all", "control"):
            print(_line(name, r[name]))
        if r["all"].get("count") and r["control"].get("count"):
            print(f"{'curse':>10}: picks' bias minus the control's: {100 * (r['all']['bias'] - r['control']['bias']):+.1f} points")


if __name__ == "__main__":
    main()
