"""`widthwise query`, `widthwise pareto`, `widthwise marginals`: the search from the command line.

Every failure the user can fix (a broken table, a costs file of the wrong shape, a budget
below the fastest configuration, a NaN budget) is a typed error, printed as one line on
stderr with its exit status by `widthwise.errors.cli_errors`. `--json` prints exactly the
body the daemon answers the same request with (`answers.answer_*`, `answers.encode`).
The human output shows a configuration in the table's variable order and, for a table whose
variables carry groups (a tree such as mobilenet_v2), per stage (`grouped`, `widths_line`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import click

from widthwise.errors import cli_errors

from .answers import Answer, answer_marginals, answer_pareto, answer_query, encode
from .engine import Searcher, make_objective
from .errors import ObjectiveError, PlotUnavailable
from .front_limits import DEFAULT_MAX_SEARCH_SECONDS, FrontLimits
from .objectives import NAMED_OBJECTIVES
from .table import Table, load_table
from .table_store import table_name


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
            f"objective: {spec!r} is neither one of {', '.join(NAMED_OBJECTIVES)} nor an existing costs file",
            field="objective",
        )
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ObjectiveError(f"{spec}: cannot read the costs file ({exc})", field="objective") from None
    except json.JSONDecodeError as exc:
        raise ObjectiveError(f"{spec}: not valid JSON ({exc.msg} at line {exc.lineno})", field="objective") from None


def _read_loss_samples(path: str) -> list:
    """Loss samples from a JSON-lines file, one `[[w...], loss]` per line (blank lines skipped)."""
    samples = []
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ObjectiveError(f"{path}: cannot read the loss samples ({exc})", field="loss_samples") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ObjectiveError(f"{path}: line {number} is not valid JSON ({exc.msg})", field="loss_samples") from None
    return samples


def _searcher(table_path: str, objective: str, loss_samples: str | None,
              max_search_seconds: float = DEFAULT_MAX_SEARCH_SECONDS) -> tuple[str, Searcher]:
    """The table's name (as the daemon serves it) and a Searcher over it and the objective."""
    table = load_table(table_path)
    samples = _read_loss_samples(loss_samples) if loss_samples else None
    limits = FrontLimits(max_search_seconds=max_search_seconds)
    return table_name(table_path), Searcher(table, make_objective(table, _read_objective(objective), samples), limits)


def _search_seconds_option(fn: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--max-search-seconds", type=click.FloatRange(0, 600), default=DEFAULT_MAX_SEARCH_SECONDS,
        show_default=True, help="Time bound of the exact search within --max-params (then: approximate answer, "
                                "or for pareto an error).",
    )(fn)


def _objective_options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option(
        "--loss-samples",
        type=click.Path(dir_okay=False),
        default=None,
        help="JSON lines of [[w_0, ..., w_L-1], loss] logged by a supernet; fitted to per-variable costs.",
    )(fn)
    fn = click.option(
        "--objective",
        default="flops",
        show_default=True,
        help="flops (maximise MACs, a proxy), params, or a widthwise-costs/1 JSON file.",
    )(fn)
    return click.option(
        "--table", "table_path", required=True, type=click.Path(dir_okay=False),
        help="A latency table file (widthwise-table/1 or /2)."
    )(fn)


def _shown(value: int | str) -> int | str:
    """A value as printed: a label as it is, a width as an int."""
    return value if isinstance(value, str) else int(value)


def grouped(values: Sequence[int | str], names: Sequence[str],
            groups: Sequence[str]) -> list[tuple[str, int | str | None, list[tuple[str, int | str]]]]:
    """The configuration by group, in order of first appearance: (group, the value of the variable
    named like the group or None, the group's other variables as (name within the group, value)).
    Values are widths, or labels where the caller shows an option's label ("k5e4", "skip")."""
    out: dict[str, tuple[list[int | str], list[tuple[str, int | str]]]] = {}
    for name, group, value in zip(names, groups, values):
        own, rest = out.setdefault(group, ([], []))
        if name == group:
            own.append(_shown(value))
        else:
            rest.append((name[len(group) + 1:] if name.startswith(group + ".") else name, _shown(value)))
    return [(group, own[0] if own else None, rest) for group, (own, rest) in out.items()]


def widths_line(values: Sequence[int | str], names: Sequence[str], groups: Sequence[str], sep: str = " ") -> str:
    """The widths on one line: plain (joined by `sep`) for a table without groups; else per group
    `stage2 24 [96 144]`, the group's own width then its blocks' expansions (or option labels,
    `stage2 24 [k5e4 k3e6 skip]`) in brackets, by block."""
    if not any(groups):
        return sep.join(str(_shown(v)) for v in values)
    cells = []
    for group, own, rest in grouped(values, names, groups):
        parts = [group, *([str(own)] if own is not None else []),
                 *([f"[{' '.join(str(v) for _, v in rest)}]"] if rest else [])]
        cells.append(" ".join(parts))
    return " | ".join(cells)


def widths_lines(values: Sequence[int], names: Sequence[str], groups: Sequence[str],
                 labels: Sequence[str] | None = None) -> list[str]:
    """The widths of a query answer: the flat list, then (with groups) one line per group naming
    every block, with its option's label where `labels` are given."""
    lines = [f"widths      {' '.join(str(int(w)) for w in values)}"]
    if any(groups):
        for group, own, rest in grouped(values if labels is None else labels, names, groups):
            blocks = "  ".join(f"{name} {value}" for name, value in rest)
            lines.append(f"  {group:<10}{'' if own is None else own:<6}{blocks}".rstrip())
    return lines


def _shown_labels(widths: Sequence[int], table: Table) -> list[int | str]:
    """A configuration as printed per group: option variables by label, widths as numbers."""
    if table.variables is None:
        return [int(w) for w in widths]
    return [var.label(w) if var.labels else int(w) for w, var in zip(widths, table.variables)]


def _answer_lines(answer: Answer, table: Table) -> list[str]:
    widths = table.canonical(answer.widths)
    lines = [
        *widths_lines(widths, table.variable_names, table.variable_groups, _shown_labels(widths, table)),
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
    if answer.dual_bound is not None and not answer.is_exact:
        gap = "n/a" if answer.gap_relative is None else f"{100 * answer.gap_relative:.3g} %"
        lines.append(f"approximate (gap {gap}: {answer.gap:.6g} above the dual bound {answer.dual_bound:.6g})")
    elif answer.dual_bound is not None and answer.method != "exact":
        lines.append("exact       (the Lagrangian's answer meets its dual bound)")
    return lines


@click.command()
@_objective_options
@click.option("--budget-ms", type=float, required=True, callback=_finite_non_negative, help="Latency budget (ms).")
@click.option(
    "--method", type=click.Choice(["exact", "lagrangian", "greedy"]), default="exact", show_default=True
)
@click.option("--max-params", type=float, default=None, callback=_finite_non_negative, help="Parameter budget.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (the daemon's /v1/query body).")
@_search_seconds_option
@cli_errors
def query(
    table_path: str,
    objective: str,
    loss_samples: str | None,
    budget_ms: float,
    method: str,
    max_params: float | None,
    as_json: bool,
    max_search_seconds: float,
) -> None:
    """The widths of least cost whose predicted latency is within the budget.

    The widths print in the table's variable order; a table whose variables have groups (a
    tree such as mobilenet_v2) prints them again per stage, naming each block's expansion.
    `--json` adds nothing the daemon's /v1/query body does not hold.
    """
    name, searcher = _searcher(table_path, objective, loss_samples, max_search_seconds)
    if as_json:
        click.echo(encode(answer_query(searcher, name, budget_ms, method, max_params)).decode())
        return
    click.echo("\n".join(_answer_lines(searcher.query(budget_ms, method, max_params), searcher.table)))
    click.echo(f"objective   {searcher.objective.description}")


def _write_csv(path: str, front: Sequence[Answer], table: Table) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["latency_ms", "cost", "params", "macs", *table.variable_names])
        for a in front:
            writer.writerow([repr(a.latency_ms), repr(a.cost), a.params, a.macs, *table.canonical(a.widths)])


def _plot(path: str, front: Sequence[Answer], title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib (pip install 'widthwise[plot]')", field="plot") from None
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
@click.option("--json", "as_json", is_flag=True, help="Print the front as JSON (the daemon's /v1/pareto body).")
@_search_seconds_option
@cli_errors
def pareto(
    table_path: str,
    objective: str,
    loss_samples: str | None,
    max_params: float | None,
    csv_path: str | None,
    plot_path: str | None,
    as_json: bool,
    max_search_seconds: float,
) -> None:
    """The exact Pareto front of (latency, cost): every configuration no other beats on both."""
    name, searcher = _searcher(table_path, objective, loss_samples, max_search_seconds)
    front = searcher.pareto(max_params)
    if csv_path:
        _write_csv(csv_path, front, searcher.table)
    if plot_path:
        _plot(plot_path, front, f"{searcher.table.space_name}: {searcher.objective.description}")
    if as_json:
        click.echo(encode(answer_pareto(searcher, name, max_params)).decode())
        return
    click.echo(f"{len(front)} Pareto-optimal configurations ({searcher.objective.description})")
    if not (csv_path or plot_path):
        table = searcher.table
        names, groups = table.variable_names, table.variable_groups
        blocks = "options" if any(v.labels for v in table.variables or ()) else "expansions"
        click.echo("latency_ms  cost        widths" + (f" (per group: its width [its blocks' {blocks}])"
                                                       if any(groups) else ""))
        for a in front:
            shown = _shown_labels(table.canonical(a.widths), table)
            click.echo(f"{a.latency_ms:<10.6g}  {a.cost:<10.6g}  {widths_line(shown, names, groups)}")


@click.command()
@_objective_options
@click.option("--budget-ms", type=float, required=True, callback=_finite_non_negative, help="Latency budget (ms).")
@click.option("--temperature", type=float, required=True, callback=_finite_non_negative, help="In cost units, > 0.")
@click.option("--json", "as_json", is_flag=True, help="Print the probabilities as JSON (the daemon's /v1/marginals body).")
@cli_errors
def marginals(
    table_path: str, objective: str, loss_samples: str | None, budget_ms: float, temperature: float, as_json: bool
) -> None:
    """Per-variable width probabilities of exp(-(cost + gamma * latency) / T), gamma set by the budget."""
    name, searcher = _searcher(table_path, objective, loss_samples)
    if as_json:
        click.echo(encode(answer_marginals(searcher, name, budget_ms, temperature)).decode())
        return
    table = searcher.table
    names = table.variable_names
    width = max([12, *(len(n) for n in names)])
    variables = table.variables or [None] * len(names)
    for layer, var, row in zip(names, variables, searcher.marginals(budget_ms, temperature)):
        cells = "  ".join(f"{w if var is None else var.label(w)}:{p:.3f}" for w, p in row.items())
        click.echo(f"{layer:<{width}} {cells}")
