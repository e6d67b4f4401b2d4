"""The profiler's typed errors: a code each, a field where raised, and one exit table for the CLI."""

from __future__ import annotations

import inspect

import click
import pytest
from click.testing import CliRunner

from widthwise.device_agents.auth import ConfigError
from widthwise.device_agents.errors import BadWidths
from widthwise.errors import EXIT_STATUS, UsageError, WidthwiseError, cli_errors, exit_status
from widthwise.profiler import errors
from widthwise.profiler.cli import COMMANDS, main
from widthwise.profiler.collect import CollectSettings
from widthwise.profiler.errors import CollectIncomplete, CollectInterrupted, IdentityMismatch, TokenFileError

CLASSES = [getattr(errors, name) for name in errors.__all__]
WRAPPER_CODE = cli_errors(lambda: None).__code__  # every function cli_errors wraps runs this code


def test_every_profiler_error_is_a_widthwise_error_with_a_code_of_its_own() -> None:
    assert all(inspect.isclass(c) and issubclass(c, WidthwiseError) for c in CLASSES)
    codes = [c.__dict__.get("code") for c in CLASSES]
    assert None not in codes and len(set(codes)) == len(codes), codes


def test_the_exit_table_keeps_the_statuses_of_the_commands() -> None:
    summary = {"samples": 3}
    assert exit_status(CollectInterrupted("stopped", summary)) == 130 == EXIT_STATUS["interrupted"]
    assert exit_status(CollectIncomplete("stopped", summary)) == 1
    assert exit_status(UsageError("bad")) == 2
    assert exit_status(IdentityMismatch("x.sqlite", "threads", 1, 2)) == 1  # a store error: the default
    assert issubclass(TokenFileError, ConfigError)  # callers that caught the agent's ConfigError still do


def test_a_field_is_set_where_the_error_is_raised() -> None:
    with pytest.raises(errors.CollectError) as caught:
        CollectSettings(space="mobilenet_v1", samples=1, db="x", threads=2, clock="thread_cpu")
    assert caught.value.field == "clock" and caught.value.code == "collect"
    with pytest.raises(errors.CollectError) as caught:
        CollectSettings(space="mobilenet_v1", samples=1, db="x", timing={"number": -1})
    assert caught.value.field == "timing.number"
    assert IdentityMismatch("x.sqlite", "threads", 1, 2).field == "threads"


@click.command()
@click.option("--agent", "agent_url", default="tcp://board:7345")
@click.option("--what", type=click.Choice(["agent", "usage", "interrupted", "os", "other"]))
@cli_errors
def _fails(agent_url: str, what: str) -> None:
    if what == "agent":
        raise BadWidths("space mobilenet_v1 has 14 searchable layers, got 3 widths")
    if what == "usage":
        raise UsageError("give exactly one of --rank and --energy", field="--rank")
    if what == "interrupted":
        raise CollectInterrupted("collection stopped after 3 of 30 samples", {"samples": 3})
    if what == "os":
        raise FileNotFoundError(2, "No such file or directory", "/nowhere/table.json")
    raise RuntimeError("a bug is not a user error")


@pytest.mark.parametrize("what, status, line", [
    ("agent", 1, "Error: agent tcp://board:7345: bad_widths: space mobilenet_v1 has 14 searchable layers, got 3 widths"),
    ("usage", 2, "Error: give exactly one of --rank and --energy"),
    ("interrupted", 130, "Error: collection stopped after 3 of 30 samples"),
    ("os", 1, "Error: /nowhere/table.json: No such file or directory"),
])
def test_cli_errors_print_one_line_with_the_tables_status(what: str, status: int, line: str) -> None:
    result = CliRunner().invoke(_fails, ["--what", what])
    assert result.exit_code == status and result.output.strip() == line


def test_cli_errors_leave_other_exceptions_alone() -> None:
    result = CliRunner().invoke(_fails, ["--what", "other"])
    assert isinstance(result.exception, RuntimeError)


def test_every_profiler_command_goes_through_the_one_table() -> None:
    ctx = click.Context(main)
    pending = [main.get_command(ctx, name) for name in COMMANDS if COMMANDS[name].startswith("widthwise.profiler.")]
    checked = []
    while pending:
        command = pending.pop()
        if isinstance(command, click.Group):
            pending += [command.get_command(ctx, n) for n in command.list_commands(ctx)]
            continue
        if command.name == "serve" and command.callback.__module__.endswith("cli_agent"):
            continue  # `agent serve` hands every argument to the agent's own argparse and exits with its status
        assert command.callback.__code__ is WRAPPER_CODE, command.name
        checked.append(command.name)
    assert {"bench", "collect", "fit", "predict", "validate", "run", "factorize", "info", "bundle"} <= set(checked)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path) -> None:
    # `widthwise pareto --table T | head -1`: the pipe closes after one line; no "Broken pipe" line
    import subprocess
    import sys
    from pathlib import Path

    from widthwise.errors import EXIT_BROKEN_PIPE

    table = Path(__file__).resolve().parents[2] / "tables" / "example-epyc2-mobilenet_v1-224.json"
    widthwise = Path(sys.executable).with_name("widthwise")
    proc = subprocess.Popen([str(widthwise), "pareto", "--table", str(table)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_BROKEN_PIPE, err
    assert b"Broken pipe" not in err and b"Traceback" not in err, err
