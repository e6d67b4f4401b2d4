"""Options several commands share, declared once: how to reach an agent, and a width list.

A width list has one syntax everywhere (`bench`, `predict`, and any command that takes
`--widths`): integers, one per searchable layer, separated by commas and/or spaces.
"""

from __future__ import annotations

import re
from typing import Callable, TypeVar

import click

from widthwise.errors import UsageError

F = TypeVar("F", bound=Callable[..., object])

#: the help text of every `--widths` option: the syntax is documented here and only here.
WIDTHS_HELP = "One width per searchable layer, separated by commas or spaces (32,16,24 or '32 16 24')"


def parse_widths(text: str) -> list[int]:
    """A width list (see WIDTHS_HELP) as integers; UsageError naming the item that is not one."""
    items = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not items:
        raise UsageError("no widths given", field="--widths")
    out = []
    for k, item in enumerate(items):
        try:
            out.append(int(item))
        except ValueError:
            raise UsageError(f"item {k} ({item!r}) is not an integer", field="--widths") from None
    return out


class WidthList(click.ParamType):
    """The click type of `--widths`: parse_widths, a bad item reported as a usage error (exit 2)."""

    name = "widths"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return parse_widths(str(value))
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


def widths_option(*, required: bool = False, default_help: str = "") -> Callable[[F], F]:
    """The `--widths` option, with the one syntax's help (plus what happens when it is left out)."""
    return click.option("--widths", type=WidthList(), required=required,
                        help=WIDTHS_HELP + (f"; {default_help}" if default_help else "") + ".")


def agent_options(fn: F) -> F:
    """`--agent`, `--token-file`, `--timeout`: every command that talks to an agent takes them
    (the URL arrives as `agent_url`, which the one-line error of `cli_errors` names)."""
    fn = click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
                      help="Seconds to wait for one answer.")(fn)
    fn = click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                      help="File holding the agent's shared token (an agent that listens beyond loopback needs one).")(fn)
    fn = click.option("--agent", "agent_url", default="local", show_default=True,
                      help="tcp://HOST:PORT, serial:///dev/ttyUSB0?baud=115200, or local (an agent subprocess here).")(fn)
    return fn
