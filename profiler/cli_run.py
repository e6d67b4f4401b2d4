"""`widthwise run`: the whole job in one command: collect, fit, validate, search, re-time.

It is what `make run` calls. The steps are profiler.job's, each the same code the separate
commands use (`collect`, `fit`, `validate`, `query`); this module only reads the options
and prints the report. Every step's output lands in `--out`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import click

from widthwise.errors import cli_errors

from .cli_options import DEFAULT_SPACE, agent_options, space_choice, space_options, space_params
from .cli_collect import stop_line
from .stopping import RUN_UNTIL_ERROR, ErrorTarget


@click.command()
@agent_options
@space_options()
@click.option("--samples", type=int, default=None,
              help="Most configurations to time (resumes an existing db); default 300, 500 for mobilenet_v2 "
                   "and 500 for ofa_mbv3.")
@click.option("--until-error", type=ErrorTarget(), default=f"{100 * RUN_UNTIL_ERROR:g}%", show_default=True, metavar="E",
              help="Stop collecting once the table's cross-validated error is below E and no longer improving.")
@click.option("--all-samples", is_flag=True, help="Collect all --samples (no --until-error).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A table of the same space (another board, runtime or resolution) as the fit's prior.")
@click.option("--budget-ms", "budgets", type=float, multiple=True,
              help="Latency budget(s) to answer; default: 50, 75 and 100 % of the 1.0x network's predicted latency.")
@click.option("--objective", default="flops", show_default=True, help="What the search maximises: flops, params or a costs JSON file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Folder for the sample db and the fitted table.")
@click.option("--name", help="Base name of the db and table files (default: SPACE-RESOLUTION-RUNTIME).")
@click.option("--runtime", help="Runtime on the agent (default: onnxruntime when present).")
@click.option("--threads", type=int, default=1, show_default=True, help="Intra-op threads on the agent.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling plan.")
@click.option("--check-samples", type=click.IntRange(min=0), default=40, show_default=True,
              help="Fresh uniform configurations timed after the fit (OUT/NAME-check.sqlite) to score the table; 0: none.")
@click.option("--holdout", type=float, default=0.15, show_default=True, help="Share of samples held out to report accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout instead of the report.")
@cli_errors
def run(agent_url: str, token_file: str | None, timeout: float, space: str | None, space_file: Path | None,
        resolution: int | None, levels: int | None,
        space_param: tuple[str, ...], samples: int | None, until_error: float, all_samples: bool, prior: str | None,
        budgets: Sequence[float], objective: str, out_dir: str, name: str | None, runtime: str | None, threads: int,
        seed: int, check_samples: int, holdout: float, as_json: bool) -> None:
    """Collect, fit and search on one agent, then re-time the answers.

    Collects SAMPLES timed configurations into OUT/NAME.sqlite (resuming when the db
    exists), fits OUT/NAME.json, reports its accuracy on held-out samples, finds the
    widths of least objective cost for each budget with the exact search, and times
    those widths on the agent to show measured against predicted latency.
    """
    from .agent_client import connect, token_from_file  # noqa: PLC0415  (the heavy imports, once options are read)
    from .job import JobSettings, run_job  # noqa: PLC0415

    if space_file is not None:
        space, extra = space_choice(space, space_file, resolution, levels, space_param)
    else:
        space, extra = space or DEFAULT_SPACE, space_params(None, None, space_param)
    job = JobSettings(space=space, resolution=resolution, levels=levels, samples=samples, budgets=tuple(budgets),
                      objective=objective, out_dir=out_dir, name=name, runtime=runtime, threads=threads, seed=seed,
                      holdout=holdout, params=extra, until_error=None if all_samples else until_error, prior=prior,
                      check_samples=check_samples)
    started = time.monotonic()
    say = (lambda _: None) if as_json else (lambda message: click.echo(message, err=True))
    with connect(agent_url, token=token_from_file(token_file), timeout=timeout) as client:
        summary = run_job(client, job, say=say, progress=not as_json, started=started)
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=float))
        return
    for line in report_lines(summary):
        click.echo(line)


def report_lines(s: dict) -> list[str]:
    """The human report of a job's summary: the db, the held-out error, the answers against their re-timing
    (a tree's widths grouped by stage, `search.cli.widths_line`)."""
    from widthwise.search.cli import widths_line  # noqa: PLC0415  (the search is loaded by the job already)

    held, ref, stop = s["validate"], s["reference"], s["collect"].get("stop")
    lines = [
        "",
        f"samples db : {s['db']} ({s['collect']['samples']} samples, {s['collect']['new']} new, "
        f"{s['collect']['references_total']} {'paired reference timings' if s.get('paired') else 'reference re-timings'})",
        *([f"stopped    : {stop_line(stop)}"] if stop else []),
        f"table      : {s['table']}",
        *([prior_line(s["fit"]["prior"])] if s["fit"].get("prior") else []),
        f"held-out   : {held['count']} samples never used in the fit: MAPE {100 * held['mape']:.2f} %, "
        f"within 5 %: {100 * held['within_5pct']:.1f} %, within 10 %: {100 * held['within_10pct']:.1f} %",
        *([fresh_line(s["fresh"])] if s.get("fresh") else []),
        f"statistic  : median of per-pair ratios to the reference x its level R ({s['clock']} clock)" if s.get("paired")
        else f"statistic  : per-sample {s['statistic']} of the repeats",
        "",
        f"drift      : the reference configuration now takes {ref['measured_ms']:.3f} ms, "
        f"{ref['table_level_ms'] or ref['measured_ms']:.3f} ms on the table's scale (factor {ref['drift_factor']:.3f})",
    ]
    if ref.get("paired"):
        lines.append("             adjusted = each answer's median ratio to the reference, timed alternately, x R")
    groups = s.get("variable_groups") or []
    lines += ["", f"{'budget ms':>10} {'predicted':>10} {'measured':>10} {'adjusted':>10} {'error':>8} {'MMACs':>8}  widths"
              + (" (per group: its width [its blocks' expansions])" if any(groups) else "")]
    for r in s["answers"]:
        if "error" in r:
            lines.append(f"{r['budget_ms']:>10.3f}  infeasible: smallest achievable latency is {r['min_latency_ms']:.3f} ms")
            continue
        macs = f"{r['macs'] / 1e6:.0f}" if r.get("macs") is not None else "-"
        lines.append(f"{r['budget_ms']:>10.3f} {r['predicted_ms']:>10.3f} {r['measured_ms']:>10.3f} "
                     f"{r['measured_adjusted_ms']:>10.3f} {r['error_pct']:>+7.1f}% {macs:>8}  "
                     + widths_line(list((r.get("named_labels") or {}).values()) or r["widths"],
                                   list(r.get("named_widths") or ()), groups, sep=","))
    lines.append(f"\ndone in {s['elapsed_s']:.0f} s")
    return lines


def fresh_line(fresh: dict) -> str:
    """The table's error on the fresh configurations timed after the fit."""
    return (f"fresh      : {fresh['count']} configurations timed after the fit: MAPE {100 * fresh['mape']:.2f} %, "
            f"within 5 %: {100 * fresh['within_5pct']:.1f} %, within 10 %: {100 * fresh['within_10pct']:.1f} %")


def prior_line(prior: dict) -> str:
    """How far the fitted table departs from its prior table."""
    return (f"prior      : {prior['table']} x {prior['scale']:.3f}; entries depart from it by "
            f"{100 * prior['departure_median_abs']:.1f} % (median), {100 * prior['departure_p90_abs']:.1f} % (90th percentile)")
