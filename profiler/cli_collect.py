"""`widthwise collect`: time planned width configurations on an agent into a SQLite db.

Stopped early, it prints how far it got and exits with the status of its error
(widthwise.errors.EXIT_STATUS: 130 interrupted, 1 an agent that went away).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from widthwise.errors import UsageError, cli_errors

from .agent_client import check_agent_builds, connect, token_from_file
from .cli_options import agent_options, open_space, parse_assignments, space_choice, space_options
from .collect import CLOCKS, DEFAULT_TIMING, DTYPES, TIMING_KEYS, CollectIncomplete, CollectSettings, resolve_runtime
from .collect import collect as run_collection
from .sampling import SAMPLER_MODULES
from .stopping import MIN_SAMPLES, ErrorTarget


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@click.command()
@agent_options
@space_options()
@click.option("--samples", type=click.IntRange(min=0), required=True,
              help="Configurations to measure in total (with --until-error: at most).")
@click.option("--until-error", type=ErrorTarget(), default=None, metavar="E",
              help="Stop before --samples once the table's cross-validated error (out-of-fold MAPE) is below E "
                   "(2% or 0.02) and no longer improving (docs/collect.md).")
@click.option("--min-samples", type=click.IntRange(min=10), default=MIN_SAMPLES, show_default=True,
              help="--until-error: samples before the first check.")
@click.option("--prior", "prior", type=click.Path(exists=True, dir_okay=False), default=None,
              help="--until-error: a table of the same space (another board, runtime or resolution) as the prior "
                   "of the checks' fits.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), required=True, help="SQLite db (created or resumed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling plan.")
@click.option("--sampling", type=click.Choice(sorted(SAMPLER_MODULES)), default="coverage", show_default=True)
@click.option("--runtime", default=None, help="Agent runtime (default: onnxruntime if the agent has it).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--delegate", default=None, help="TFLite delegate (xnnpack|none); part of the db identity.")
@click.option("--timing", "timing_params", multiple=True, metavar="KEY=VALUE",
              help=f"Override a timing setting ({', '.join(TIMING_KEYS)}); defaults {json.dumps(dict(DEFAULT_TIMING))}.")
@click.option("--reference-every", type=click.IntRange(min=1), default=15, show_default=True,
              help="Re-time the reference configuration after this many samples...")
@click.option("--reference-seconds", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="...or after this many seconds, whichever comes first.")
@click.option("--retime/--no-retime", default=True, show_default=True, help="Re-time the samples the fit flags as outliers.")
@click.option("--pairing/--no-pairing", default=True, show_default=True,
              help="Alternate every run with a fixed reference network and store the ratios (part of the db identity).")
@click.option("--pair-share", type=click.FloatRange(0.0, 2.0, min_open=True), default=1.0, show_default=True,
              help="Pair reference: each layer's width nearest this share of its base width (part of the db identity).")
@click.option("--clock", type=click.Choice(list(CLOCKS)), default=None,
              help="Agent clock (part of the db identity); default thread_cpu with one thread, else wall.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@cli_errors
def collect(
    agent_url: str, token_file: str | None, timeout: float, space: str | None, space_file: Path | None,
    resolution: int | None, levels: int | None,
    space_param: tuple[str, ...],
    samples: int, until_error: float | None, min_samples: int, prior: str | None, db: Path, seed: int, sampling: str,
    runtime: str | None, dtype: str, threads: int,
    delegate: str | None, timing_params: tuple[str, ...], reference_every: int, reference_seconds: float,
    retime: bool, pairing: bool, pair_share: float, clock: str | None, progress: bool | None, as_json: bool,
) -> None:
    """Measure width configurations of a space on an agent, one SQLite row per sample.

    Re-running the same command resumes: only the missing samples are measured. A db
    collected with another space (or another spec of the same name), device or runtime
    setting is refused, naming what differs.
    """
    if prior is not None and until_error is None:
        raise UsageError("--prior serves the checks of --until-error; give both (or pass --prior to `widthwise fit`)",
                         field="--prior")
    space, params = space_choice(space, space_file, resolution, levels, space_param)
    chosen = open_space(space, params)  # an unknown space or parameter: a usage error naming it, before any work
    timing = {**DEFAULT_TIMING, **parse_assignments(timing_params, "--timing")}
    token = token_from_file(token_file)
    if progress is None:
        progress = sys.stderr.isatty()
    settings = CollectSettings(
        space=space, samples=samples, db=str(db), space_params=params, seed=seed, sampling=sampling,
        runtime=runtime, dtype=dtype, threads=threads, delegate=delegate, timing=timing,
        reference_every=reference_every, reference_seconds=reference_seconds, retime_outliers=retime,
        pairing=pairing, clock=clock, pair_share=pair_share, until_error=until_error, min_samples=min_samples,
        prior=prior,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with connect(agent_url, token=token, timeout=timeout) as client:
            hello = client.hello()  # a block kind the agent lacks is refused before the db is created
            check_agent_builds(hello, chosen, resolve_runtime(hello, runtime)[0], dtype)
            summary = run_collection(client, settings, progress=progress)
    except CollectIncomplete as exc:
        if as_json:  # how far it got, before the error line
            click.echo(json.dumps(exc.summary, sort_keys=True))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(
            f"{summary['samples']} samples in {summary['db']} ({summary['new']} new this run, "
            f"{summary['references']} reference timings{' (paired)' if summary.get('pairing') else ''}, "
            f"{summary['retimed']} re-timed; "
            f"outliers: {summary['outlier_check']}) in {summary['elapsed_s']:.1f} s"
        )
        if "stop" in summary:
            click.echo(stop_line(summary["stop"]))


def stop_line(stop: dict) -> str:
    """Why a collection with --until-error stopped where it did (or that it has not yet)."""
    est = stop.get("estimate")
    shown = "no estimate yet" if est is None else f"cross-validated error {100 * est:.2f} %"
    goal = f"{100 * stop['threshold']:g} %"
    if stop.get("reason") == "estimate":
        return f"stopped at {stop['samples']} samples: {shown}, below {goal} and no longer improving"
    if stop.get("reason") == "cap":
        return f"stopped at the cap of {stop['cap']} samples: {shown} (goal {goal})"
    return f"not stopped yet at {stop['samples']} samples: {shown} (goal {goal})"
