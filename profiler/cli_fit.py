"""`widthwise fit`, `predict` and `validate`: latency tables from a sample db, and their use.

Every failure the user can cause (a missing or corrupt table, an empty db, a db of another
space, a spec recorded in the db that no longer opens or that differs from the table's) ends as one line naming the problem and exit code 1 (`cli_errors`; a table's
TableError is a WidthwiseError like the store's and the fit's); a configuration that does
not fit the table (a wrong count, a width off the grid, a missing or unknown name) is a
usage error naming the variable, exit code 2.
"""

from __future__ import annotations

import json

import click

from widthwise.device_agents.statistics import FIT_STATISTICS
from widthwise.errors import cli_errors

from .cli_options import check_widths, configuration, widths_option
from .errors import OutputError, SpaceMismatch, StoreError


def _read_samples(db: str, statistic: str, reference: dict | None = None):
    """The db's training data; a paired db's ratios are converted with `reference`'s level
    (a table's pair reference) when it is the same reference on the same clock. A space the db
    records that no longer opens (an edited spec) is a StoreError naming the db and the field."""
    from widthwise.device_agents.errors import AgentError

    from .store import SampleStore

    with SampleStore(db) as store:
        level = None
        if reference is not None and store.paired:
            same = (list(reference.get("widths") or []) == list(store.meta.get("reference_widths") or [])
                    and reference.get("clock") == store.meta.get("clock"))
            level = float(reference["level_ms"]) if same else None
        try:
            return store.training_data(statistic, reference_level_ms=level)
        except AgentError as exc:
            raise StoreError(f"{db}: the space it records does not open: {exc.message}",
                             field="space_params") from None


def _check_same_spec(table_space: dict, db_params: object, db: str) -> None:
    """SpaceMismatch naming the first field in which a spec-file table's spec and the db's differ
    (the variables and grids alone can agree while a block's kernel or stride does not)."""
    from .store_schema import first_difference

    mine = table_space.get("params")
    if not isinstance(mine, dict) or not isinstance(db_params, dict) or ("spec" not in mine and "spec" not in db_params):
        return
    if mine != db_params:
        path, have, want = first_difference("space_params", db_params, mine)
        shown = path.replace("space_params.", "", 1)
        raise SpaceMismatch(f"{db} was collected with {shown}={have!r}, the table has {shown}={want!r}",
                            field=path)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _report_line(report: dict) -> str:
    if not report.get("count"):
        return "no held-out samples (use --holdout > 0 to measure the error)"
    return (
        f"MAPE {_pct(report['mape'])}, within 5 % {_pct(report['within_5pct'])}, "
        f"within 10 % {_pct(report['within_10pct'])}, RMSE {report['rmse_ms']:.3f} ms over {report['count']} samples"
    )


@click.command()
@click.option("--db", "db", required=True, type=click.Path(dir_okay=False), help="Sample db from `widthwise collect`.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Table file to write.")
@click.option("--holdout", default=0.15, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Share of samples held out to report the error (never used to fit).")
@click.option("--method", default="pooled-prior", show_default=True,  # checked by fit_table against fit_solvers.METHODS
              help="Fitting method: pooled-prior (factor terms pulled towards a per-kind prior, monotone "
                   "unless cross-validation finds the device is not), pooled-prior-monotone (the same, always "
                   "monotone), nnls-monotone (the AOWS paper's), nnls, or flops (a line in MACs); shipped and "
                   "pooled-prior-free are former names of pooled-prior, paper of nnls-monotone.")
@click.option("--statistic", default="min", show_default=True, type=click.Choice(FIT_STATISTICS),
              help="Per-sample statistic the table estimates (a paired db holds the median of its ratios).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the hold-out split and the CV folds.")
@click.option("--prior", "prior_path", default=None, type=click.Path(dir_okay=False),
              help="A table of the same space (another board, runtime, dtype, thread count or resolution) as the "
                   "fit's prior, scaled by one fitted factor: fewer samples suffice; the report says how far "
                   "this fit departs from it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@cli_errors
def fit(db: str, output: str, holdout: float, method: str, statistic: str, seed: int, prior_path: str | None,
        as_json: bool) -> None:
    """Fit a latency table from a sample db; report its held-out error.

    A chain space (mobilenet_v1, text_lowrank) gets a `widthwise-table/1` table, a tree
    space (mobilenet_v2) a `widthwise-table/2` table with one term per factor.
    """
    from .fit import fit_table
    from .fit_prior import load_prior

    data = _read_samples(db, statistic)
    prior = None if prior_path is None else load_prior(prior_path, data.space)
    result = fit_table(data, holdout=holdout, seed=seed, method=method, prior=prior)
    method = result.report["method"]
    result.table.save(output)
    if as_json:
        click.echo(json.dumps({"table": output, **result.report}, indent=1))
        return
    click.echo(f"wrote {output}: method {method}, {result.report['samples']} training samples, statistic {data.statistic}"
               + (" (median of per-pair ratios x the reference level)" if "reference" in result.table.extra else ""))
    click.echo(f"held out: {_report_line(result.report)}")
    if "prior" in result.report:
        p = result.report["prior"]
        click.echo(f"prior: {p['table']} x {p['scale']:.3f}; the fitted entries depart from it by "
                   f"{100 * p['departure_median_abs']:.1f} % (median), {100 * p['departure_p90_abs']:.1f} % "
                   f"(90th percentile) over {p['entries_compared']} entries the samples touch")


@click.command()
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False), help="Latency table file.")
@widths_option(required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the prediction as JSON.")
@cli_errors
def predict(table_path: str, widths: list[int] | None, widths_json: str | None, as_json: bool) -> None:
    """Predicted latency of a configuration, with its breakdown per factor (a chain's blocks).

    The widths follow the table's variable order (`--widths`) or name each variable
    (`--widths-json`); each must be one of its variable's choices.
    """
    from widthwise.search.table import FORMAT, load_table

    table = load_table(table_path)
    chain = table.format == FORMAT
    names = table.variable_names
    given = configuration(widths, widths_json, names)
    values = check_widths(names, table.choices, given, what="table", noun="layer" if chain else "variable",
                          field="--widths-json" if widths_json is not None else "--widths")
    idx = table.indices(values)
    parts = [(f, f.value(idx)) for f in table.factors]
    total = table.constant_ms + sum(ms for _, ms in parts)
    if as_json:
        factors = [{"name": f.name, "kind": f.kind, "variables": [names[v] for v in f.variables], "ms": ms}
                   for f, ms in parts]
        out = {"widths": values, "named_widths": dict(zip(names, values)), "latency_ms": total,
               "constant_ms": table.constant_ms, "factors": factors, "statistic": table.statistic}
        if chain:
            out["blocks"] = [{"name": f["name"], "ms": f["ms"]} for f in factors]
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"predicted latency: {total:.3f} ms ({table.statistic}, {table.runtime.get('name', 'unknown runtime')})")
    width = max([14, *(len(f.name) + 2 for f, _ in parts)])
    kinds = not chain and any(f.kind for f, _ in parts)
    click.echo(f"  {'constant':<{width}}{'':<14}{table.constant_ms:>9.3f} ms" if kinds
               else f"  {'constant':<{width}}{table.constant_ms:>9.3f} ms")
    for f, ms in parts:
        click.echo(f"  {f.name:<{width}}{f.kind:<14}{ms:>9.3f} ms" if kinds else f"  {f.name:<{width}}{ms:>9.3f} ms")


def _scatter(table, data, path: str) -> None:
    """Predicted against measured latency, one point per sample, with the +-5 % band."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise OutputError("--plot needs matplotlib: pip install 'widthwise[plot]'", field="--plot") from None
    from .fit import table_predictions

    pred = table_predictions(table, data.widths)
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = float(min(pred.min(), data.latency_ms.min())), float(max(pred.max(), data.latency_ms.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    ax.fill_between([lo, hi], [lo * 0.95, hi * 0.95], [lo * 1.05, hi * 1.05], color="grey", alpha=0.25, label="±5 %")
    ax.scatter(data.latency_ms, pred, s=8)
    ax.set_xlabel(f"measured ({data.statistic}) ms")
    ax.set_ylabel("predicted ms")
    ax.set_title(f"{table.space_name}: {len(pred)} samples")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False), help="Latency table file.")
@click.option("--db", "db", required=True, type=click.Path(dir_okay=False), help="Sample db to check against.")
@click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False), help="Write a predicted-vs-measured scatter plot (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@cli_errors
def validate(table_path: str, db: str, plot_path: str | None, as_json: bool) -> None:
    """The table's error on another db: MAPE, RMSE, share within 5 % and 10 %."""
    from widthwise.search.table import load_table

    from .fit import check_same_space, error_report, table_reference

    table = load_table(table_path)
    reference = table_reference(table)
    data = _read_samples(db, table.statistic, reference)
    check_same_space(table, data)
    _check_same_spec(table.space, data.identity.get("space", {}).get("params"), db)
    report = error_report(table, data)
    converted = data.identity.get("reference", {}).get("level_ms")
    if reference is not None and converted is not None:
        report["reference_level_ms"] = converted
        report["converted_with_table_reference"] = converted == float(reference["level_ms"])
    if plot_path:
        _scatter(table, data, plot_path)
    if as_json:
        click.echo(json.dumps({"table": table_path, "db": db, "plot": plot_path, **report}, indent=1))
        return
    click.echo(f"{table_path} on {db}: {_report_line(report)}")
    if report.get("converted_with_table_reference"):
        click.echo(f"paired: the db's ratios are converted with the table's reference level {report['reference_level_ms']:.3f} ms")
    if plot_path:
        click.echo(f"wrote {plot_path}")
