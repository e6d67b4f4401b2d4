"""The options several commands share: one width syntax, documented in every `--widths` help."""

from __future__ import annotations

import click
import pytest

from widthwise.errors import UsageError
from widthwise.profiler.cli import COMMANDS, LazyGroup, main
from widthwise.profiler.cli_options import WIDTHS_HELP, WidthList, parse_widths


@pytest.mark.parametrize("text", ["32,16,24", "32 16 24", " 32, 16 ,24 ", "32,\t16\n24"])
def test_commas_and_spaces_are_one_syntax(text: str) -> None:
    assert parse_widths(text) == [32, 16, 24]


@pytest.mark.parametrize("text, message", [("8,eight", "item 1 ('eight') is not an integer"),
                                           ("8 8.5", "item 1 ('8.5') is not an integer"),
                                           (" , ", "no widths given")])
def test_a_bad_width_list_names_the_item(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        parse_widths(text)
    assert caught.value.field == "--widths"


def _commands(group: click.Group, ctx: click.Context) -> list[click.Command]:
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        out += _commands(command, ctx) if isinstance(command, click.Group) else [command]
    return out


def test_every_widths_option_parses_and_documents_the_one_syntax() -> None:
    ctx = click.Context(main)
    assert isinstance(main, LazyGroup)
    taking = [c.name for c in _commands(main, ctx) for p in c.params if p.name == "widths"]
    assert {"bench", "predict"} <= set(taking), taking
    for command in _commands(main, ctx):
        for param in command.params:
            if param.name == "widths":
                assert isinstance(param.type, WidthList), command.name
                assert param.help.startswith(WIDTHS_HELP), command.name
    assert set(COMMANDS) >= {"bench", "predict"}
