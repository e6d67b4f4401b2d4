"""`widthwise run`: the whole job in one command: collect, fit, search, re-time.

It is what `make run` calls. Every step is the same code the separate commands use
(`collect`, `fit`, `query`), so the main job proves the pieces fit together; each step's
output lands in `--out` so nothing is lost if a later step fails.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import click

from widthwise.device_agents.errors import AgentError
from widthwise.device_agents.spaces import SPACES, make_space

#: Budgets used when none is given: these fractions of the predicted latency of the 1.0x
#: network (each width at its layer's choice nearest the base width).
DEFAULT_BUDGET_FRACTIONS = (0.5, 0.75, 1.0)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(message, err=True)


@click.command()
@click.option("--agent", "agent_url", default="local", show_default=True,
              help="Agent URL: tcp://HOST:PORT, serial:///dev/ttyUSB0?baud=115200, or local (an agent on this machine).")
@click.option("--token-file", type=click.Path(dir_okay=False), help="Shared token of an agent that listens beyond loopback.")
@click.option("--space", default="mobilenet_v1", show_default=True, type=click.Choice(sorted(SPACES)), help="Search space.")
@click.option("--resolution", type=int, default=224, show_default=True, help="Input resolution (mobilenet_v1).")
@click.option("--levels", type=int, default=14, show_default=True, help="Width levels per layer (mobilenet_v1).")
@click.option("--samples", type=int, default=300, show_default=True, help="Configurations to time (resumes an existing db).")
@click.option("--budget-ms", "budgets", type=float, multiple=True,
              help="Latency budget(s) to answer; default: 50, 75 and 100 % of the 1.0x network's predicted latency.")
@click.option("--objective", default="flops", show_default=True, help="What the search maximises: flops, params or a costs JSON file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Folder for the sample db and the fitted table.")
@click.option("--name", help="Base name of the db and table files (default: SPACE-RESOLUTION-RUNTIME).")
@click.option("--runtime", help="Runtime on the agent (default: onnxruntime when present).")
@click.option("--threads", type=int, default=1, show_default=True, help="Intra-op threads on the agent.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling plan.")
@click.option("--holdout", type=float, default=0.15, show_default=True, help="Share of samples held out to report accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout instead of the report.")
def run(
    agent_url: str,
    token_file: str | None,
    space: str,
    resolution: int,
    levels: int,
    samples: int,
    budgets: Sequence[float],
    objective: str,
    out_dir: str,
    name: str | None,
    runtime: str | None,
    threads: int,
    seed: int,
    holdout: float,
    as_json: bool,
) -> None:
    """Collect, fit and search on one agent, then re-time the answers.

    Collects SAMPLES timed configurations into OUT/NAME.sqlite (resuming when the db
    exists), fits OUT/NAME.json, reports its accuracy on held-out samples, finds the
    widths of least objective cost for each budget with the exact search, and times
    those widths on the agent to show measured against predicted latency.
    """
    from widthwise.device_agents.auth import ConfigError
    from widthwise.profiler.agents import connect, token_from_file
    from widthwise.profiler.collect import (CollectError, CollectIncomplete, CollectSettings, collect,
                                  reference_widths)
    from widthwise.profiler.collect_timing import TimingPolicy
    from widthwise.profiler.fit import FitError, fit_table, table_reference
    from widthwise.profiler.store import SampleStore, StoreError
    from widthwise.search.engine import InfeasibleBudget, Searcher, make_objective

    for b in budgets:
        if not math.isfinite(b) or b <= 0:
            raise click.BadParameter(f"budget must be a finite number > 0, got {b}", param_hint="--budget-ms")
    if samples < 20:
        raise click.BadParameter("at least 20 samples are needed to fit and hold some out", param_hint="--samples")
    params = {"resolution": resolution, "levels": levels} if space == "mobilenet_v1" else {}
    space_obj = make_space(space, params)
    quiet = as_json
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    try:
        client = connect(agent_url, token=token_from_file(token_file))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except AgentError as exc:
        raise click.ClickException(f"cannot reach agent {agent_url}: {exc}") from exc
    with client:
        try:
            hello = client.hello()
        except AgentError as exc:
            raise click.ClickException(f"agent {agent_url} does not answer: {exc}") from exc
        rt = runtime or ("onnxruntime" if "onnxruntime" in hello.get("runtimes", {}) else next(iter(hello.get("runtimes", {})), "?"))
        default_stem = f"{space}-{resolution}-{rt}" if space == "mobilenet_v1" else f"{space}-{rt}"
        stem = name or default_stem
        db_path, table_path = out / f"{stem}.sqlite", out / f"{stem}.json"
        _say(quiet, f"agent: {agent_url}  cpu: {hello.get('cpu')}  cores: {hello.get('cores')}  runtime: {rt}")

        # 1. collect (resumes)
        settings = CollectSettings(
            space=space, samples=samples, db=str(db_path), space_params=params, seed=seed,
            runtime=runtime, threads=threads,
        )
        _say(quiet, f"[1/4] collecting {samples} samples into {db_path}")
        try:
            collected = collect(client, settings, progress=not quiet)
        except CollectIncomplete as exc:
            raise click.ClickException(str(exc)) from exc
        except (CollectError, StoreError) as exc:
            raise click.ClickException(str(exc)) from exc

        # 2. fit
        _say(quiet, f"[2/4] fitting {table_path}")
        with SampleStore(str(db_path)) as store:
            data = store.training_data(settings.statistic)
            # the reference latency the samples are scaled to: paired, R (ratios x R); unpaired,
            # the level of the drift trend (None without references)
            table_level_ms = store.reference_level_ms()
            paired = store.paired
        try:
            result = fit_table(data, holdout=holdout, seed=seed)
        except FitError as exc:
            raise click.ClickException(f"cannot fit {db_path}: {exc}") from exc
        result.table.save(table_path)
        report = result.report

        # 3. search
        searcher = Searcher(result.table, make_objective(result.table, objective))
        if not budgets:
            base = result.table.predict(reference_widths(space_obj))
            budgets = tuple(round(base * f, 3) for f in DEFAULT_BUDGET_FRACTIONS)
        _say(quiet, f"[3/4] exact search for budgets {', '.join(f'{b:g} ms' for b in budgets)}")
        answers = []
        for b in budgets:
            try:
                answers.append((b, searcher.query(b, method="exact")))
            except InfeasibleBudget as exc:
                answers.append((b, exc))

        # 4. re-time the answers on the agent, with the reference beside them so the
        #    measurement can be put on the table's scale: paired, each answer alternated run by
        #    run with the table's pair reference (measured = ratio x table R); unpaired, the
        #    1.0x reference timed once and its drift factor applied
        _say(quiet, "[4/4] re-timing the chosen configurations on the agent")
        policy = TimingPolicy(settings.timing)  # the same repeat budget as each collected sample
        pair_ref = table_reference(result.table) if paired else None
        ref_widths = tuple(pair_ref["widths"]) if pair_ref else reference_widths(space_obj)
        ref_seen: list[float] = []

        def measure(widths: Sequence[int], estimate_ms: float | None) -> tuple[float, float]:
            """(raw statistic of the target in ms, the same on the table's scale)."""
            spec = {"space": space, "params": params, "widths": list(widths)}
            timing = {"threads": threads, "clock": settings.clock}
            if pair_ref is None:
                timing.update(policy.for_estimate(estimate_ms))
                raw = float(client.bench_spec(spec, runtime=runtime, timing=timing)["stats"][settings.statistic])
                return raw, raw
            pair_estimate = None if estimate_ms is None else estimate_ms + result.table.predict(ref_widths)
            timing.update(policy.for_estimate(pair_estimate))
            body = client.bench_spec(spec, pair_with={**spec, "widths": list(ref_widths)}, runtime=runtime, timing=timing)
            ref_seen.append(float(body["pair"]["ref_median_ms"]))
            return float(body["stats"]["median"]), float(body["pair"]["ratio_median"]) * float(pair_ref["level_ms"])

        if pair_ref is None:
            ref_now = measure(ref_widths, result.table.predict(ref_widths))[0]
        rows = []
        for b, ans in answers:
            if isinstance(ans, Exception):
                rows.append({"budget_ms": b, "error": str(ans), "min_latency_ms": ans.min_latency_ms})
                continue
            raw, on_scale = measure(ans.widths, ans.latency_ms)
            adjusted = on_scale if pair_ref else raw * (table_level_ms / ref_now if table_level_ms else 1.0)
            rows.append({
                "budget_ms": b,
                "widths": list(ans.widths),
                "predicted_ms": ans.latency_ms,
                "measured_ms": raw,
                "measured_adjusted_ms": adjusted,
                "error_pct": 100.0 * (ans.latency_ms - adjusted) / adjusted,
                "macs": ans.macs,
                "params": ans.params,
            })

    if pair_ref is not None:  # the reference's level now, from the pairs just timed
        ref_now = float(sorted(ref_seen)[len(ref_seen) // 2]) if ref_seen else float("nan")
    drift_factor = table_level_ms / ref_now if table_level_ms and ref_now == ref_now else 1.0
    summary = {
        "db": str(db_path),
        "table": str(table_path),
        "collect": collected,
        "fit": report,
        "answers": rows,
        "statistic": settings.statistic,
        "paired": paired,
        "clock": settings.clock,
        "reference": {"widths": list(ref_widths), "measured_ms": ref_now, "table_level_ms": table_level_ms,
                      "drift_factor": drift_factor, "paired": paired},
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=float))
        return
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    fit = s["fit"]
    echo = click.echo
    echo("")
    echo(f"samples db : {s['db']} ({s['collect']['samples']} samples, {s['collect']['new']} new, "
         f"{s['collect']['references_total']} {'paired reference timings' if s.get('paired') else 'reference re-timings'})")
    echo(f"table      : {s['table']}")
    echo(f"held-out   : {fit['count']} samples never used in the fit: MAPE {100 * fit['mape']:.2f} %, "
         f"within 5 %: {100 * fit['within_5pct']:.1f} %, within 10 %: {100 * fit['within_10pct']:.1f} %")
    if s.get("paired"):
        echo(f"statistic  : median of per-pair ratios to the reference x its level R ({s['clock']} clock)")
    else:
        echo(f"statistic  : per-sample {s['statistic']} of the repeats")
    echo("")
    ref = s["reference"]
    echo(f"drift      : the reference configuration now takes {ref['measured_ms']:.3f} ms, "
         f"{ref['table_level_ms'] or ref['measured_ms']:.3f} ms on the table's scale (factor {ref['drift_factor']:.3f})")
    if ref.get("paired"):
        echo("             adjusted = each answer's median ratio to the reference, timed alternately, x R")
    echo("")
    echo(f"{'budget ms':>10} {'predicted':>10} {'measured':>10} {'adjusted':>10} {'error':>8} {'MMACs':>8}  widths")
    for r in s["answers"]:
        if "error" in r:
            echo(f"{r['budget_ms']:>10.3f}  infeasible: smallest achievable latency is {r['min_latency_ms']:.3f} ms")
            continue
        macs = f"{r['macs'] / 1e6:.0f}" if r.get("macs") is not None else "-"
        echo(f"{r['budget_ms']:>10.3f} {r['predicted_ms']:>10.3f} {r['measured_ms']:>10.3f} {r['measured_adjusted_ms']:>10.3f} "
             f"{r['error_pct']:>+7.1f}% {macs:>8}  {','.join(map(str, r['widths']))}")
    echo(f"\ndone in {s['elapsed_s']:.0f} s")
