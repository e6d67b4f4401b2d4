"""`widthwise query`, `widthwise pareto`, `widthwise marginals`: the search from the command line.

Every failure the user can fix (a broken table, a costs file of the wrong shape, a budget
below the fastest configuration, a NaN budget) is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Callable

import click

from .engine import Answer, InfeasibleBudget, ObjectiveError, QueryError, Searcher, make_objective
from .objectives import NAMED_OBJECTIVES
from .table import Table, TableError, load_table

#: Errors shown to the user as one line (the message already names what is wrong).
USER_ERRORS = (TableError, ObjectiveError, InfeasibleBudget, QueryError)


def _user_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn the search's typed errors into click's one-line error and exit status 1."""

    def run(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from None

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _finite_non_negative(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise click.BadParameter(f"must be a finite number >= 0, got {value}")
    return value


def _read_objective(spec: str) -> str | dict:
    """A named objective, or the parsed contents of a widthwise-costs/1 file."""
    if spec in NAMED_OBJECTIVES:
        return spec
    path = Path(spec)
    if not path.exists():
        raise ObjectiveError(
            f"objective: {spec!r} is neither one of {', '.join(NAMED_OBJECTIVES)} nor an existing costs file"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ObjectiveError(f"{spec}: cannot read the costs file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ObjectiveError(f"{spec}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _read_loss_samples(path: str) -> list:
    """Loss samples from a JSON-lines file, one `[[w...], loss]` per line (blank lines skipped)."""
    samples = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ObjectiveError(f"{path}: cannot read the loss samples ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ObjectiveError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
    return samples


def _searcher(table_path: str, objective: str, loss_samples: str | None) -> tuple[Table, Searcher]:
    table = load_table(table_path)
    samples = _read_loss_samples(loss_samples) if loss_samples else None
    return table, Searcher(table, make_objective(table, _read_objective(objective), samples))


def _objective_options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option(
        "--loss-samples",
        type=click.Path(dir_okay=False),
        default=None,
        help="JSON lines of [[w_0, ..., w_L-1], loss] logged by a supernet; fitted to per-layer costs.",
    )(fn)
    fn = click.option(
        "--objective",
        default="flops",
        show_default=True,
        help="flops (maximise MACs, a proxy), params, or a widthwise-costs/1 JSON file.",
    )(fn)
    return click.option(
        "--table", "table_path", required=True, type=click.Path(dir_okay=False), help="A widthwise-table/1 file."
    )(fn)


def _answer_lines(answer: Answer, table: Table) -> list[str]:
    lines = [
        f"widths      {' '.join(str(w) for w in answer.widths)}",
        f"latency_ms  {answer.latency_ms:.6g}",
        f"cost        {answer.cost:.6g}",
        f"method      {answer.method}",
    ]
    if answer.macs is not None:
        lines.append(f"macs        {answer.macs:.0f}")
    if answer.params is not None:
        lines.append(f"params      {answer.params:.0f}")
    if answer.gamma is not None:
        lines.append(f"gamma       {answer.gamma:.6g}")
    return lines


@click.command()
@_objective_options
@click.option("--budget-ms", type=float, required=True, callback=_finite_non_negative, help="Latency budget (ms).")
@click.option(
    "--method", type=click.Choice(["exact", "lagrangian", "greedy"]), default="exact", show_default=True
)
@click.option("--max-params", type=float, default=None, callback=_finite_non_negative, help="Parameter budget.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@_user_errors
def query(
    table_path: str,
    objective: str,
    loss_samples: str | None,
    budget_ms: float,
    method: str,
    max_params: float | None,
    as_json: bool,
) -> None:
    """The widths of least cost whose predicted latency is within the budget."""
    table, searcher = _searcher(table_path, objective, loss_samples)
    answer = searcher.query(budget_ms, method, max_params)
    if as_json:
        click.echo(json.dumps({**answer.to_json(), "objective": searcher.objective.description}))
    else:
        click.echo("\n".join(_answer_lines(answer, table)))
        click.echo(f"objective   {searcher.objective.description}")


def _write_csv(path: str, front: list[Answer], table: Table) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["latency_ms", "cost", "params", "macs", *table.layer_names])
        for a in front:
            writer.writerow([repr(a.latency_ms), repr(a.cost), a.params, a.macs, *a.widths])


def _plot(path: str, front: list[Answer], title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("--plot needs matplotlib (pip install 'widthwise[plot]')") from None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.step([a.latency_ms for a in front], [a.cost for a in front], where="post", marker=".", markersize=3)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("cost (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@_objective_options
@click.option("--max-params", type=float, default=None, callback=_finite_non_negative, help="Parameter budget.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write the front as CSV.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Plot cost against latency.")
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON.")
@_user_errors
def pareto(
    table_path: str,
    objective: str,
    loss_samples: str | None,
    max_params: float | None,
    csv_path: str | None,
    plot_path: str | None,
    as_json: bool,
) -> None:
    """The exact Pareto front of (latency, cost): every configuration no other beats on both."""
    table, searcher = _searcher(table_path, objective, loss_samples)
    front = searcher.pareto(max_params)
    if csv_path:
        _write_csv(csv_path, front, table)
    if plot_path:
        _plot(plot_path, front, f"{table.space_name}: {searcher.objective.description}")
    if as_json:
        click.echo(json.dumps([a.to_json() for a in front]))
        return
    click.echo(f"{len(front)} Pareto-optimal configurations ({searcher.objective.description})")
    if not (csv_path or plot_path):
        click.echo("latency_ms  cost        widths")
        for a in front:
            click.echo(f"{a.latency_ms:<10.6g}  {a.cost:<10.6g}  {' '.join(str(w) for w in a.widths)}")


@click.command()
@_objective_options
@click.option("--budget-ms", type=float, required=True, callback=_finite_non_negative, help="Latency budget (ms).")
@click.option("--temperature", type=float, required=True, callback=_finite_non_negative, help="In cost units, > 0.")
@click.option("--json", "as_json", is_flag=True, help="Print the probabilities as JSON.")
@_user_errors
def marginals(
    table_path: str, objective: str, loss_samples: str | None, budget_ms: float, temperature: float, as_json: bool
) -> None:
    """Per-layer width probabilities of exp(-(cost + gamma * latency) / T), gamma set by the budget."""
    table, searcher = _searcher(table_path, objective, loss_samples)
    probs = searcher.marginals(budget_ms, temperature)
    if as_json:
        layers = [{"name": n, "probs": {str(w): p for w, p in row.items()}} for n, row in zip(table.layer_names, probs)]
        click.echo(json.dumps({"budget_ms": budget_ms, "temperature": temperature, "layers": layers}))
        return
    for name, row in zip(table.layer_names, probs):
        cells = "  ".join(f"{w}:{p:.3f}" for w, p in row.items())
        click.echo(f"{name:<12} {cells}")
