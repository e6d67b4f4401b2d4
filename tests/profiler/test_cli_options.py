"""The options several commands share: one width syntax (by position or by name), every space's parameters."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from widthwise.device_agents.spaces import SPACES, make_space, width_grid
from widthwise.errors import UsageError
from widthwise.profiler.cli import COMMANDS, LazyGroup, main
from widthwise.profiler.cli_options import (WIDTHS_HELP, WidthList, check_widths, open_space, parse_widths,
                                            space_choice, space_configuration, space_params)


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
                assert "widths_json" in {p.name for p in command.params}, command.name
    assert set(COMMANDS) >= {"bench", "predict"}


# --- a configuration by position or by name, checked against the space --------------------------

V2 = make_space("mobilenet_v2", {"resolution": 32, "levels": 14})  # 14 levels: the 1.0x widths on the grid
NAMES = [v.name for v in V2.layers]
NOWHERE = ["--agent", "tcp://127.0.0.1:1"]  # every refusal below happens before any connection


def bench(*args: str):
    return CliRunner().invoke(main, ["bench", *NOWHERE, "--space", "mobilenet_v2", "--resolution", "32",
                                     "--levels", "14", *args])


def test_widths_json_gives_the_flat_list_in_variable_order() -> None:
    base = list(V2.base_widths())
    named = json.dumps(dict(reversed(list(zip(NAMES, base)))))  # any key order
    assert space_configuration(V2, None, named) == base
    assert space_configuration(V2, base, None) == base
    assert space_configuration(V2, None, None) is None


@pytest.mark.parametrize("args, message", [
    (["--widths", "8,8"], "space mobilenet_v2 has 25 variables, got 2 widths, in the order stem, stage1, "
                          "stage2.block1.expand, stage2,"),
    (["--widths-json", json.dumps({"stem": 8, "stem ": 8})], "unknown variable 'stem '"),
    (["--widths-json", '{"stem": 8, "stem": 24}'], "variable 'stem' is given twice"),
    (["--widths-json", '{"stem": 8}'], "missing variables stage1, stage2.block1.expand"),
    (["--widths-json", "[8, 8]"], "must be a JSON object from variable name to width"),
    (["--widths-json", "{"], "--widths-json is not valid JSON"),
    (["--widths", "8", "--widths-json", "{}"], "--widths or --widths-json, not both"),
])
def test_a_bad_configuration_is_one_usage_line_naming_the_variable(args: list[str], message: str) -> None:
    result = bench(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_off_grid_width_names_its_variable_unless_any_widths() -> None:
    values = dict(zip(NAMES, V2.base_widths()))
    values["stage3.block2.expand"] += 1
    off = json.dumps(values)
    result = bench("--widths-json", off)
    assert result.exit_code == 2
    assert f"width {values['stage3.block2.expand']} of variable 7 (stage3.block2.expand) is not one of its " \
           f"choices {list(V2.layers[7].choices)}" in result.output
    flat = bench("--widths", ",".join(str(values[n]) for n in NAMES))
    assert flat.exit_code == 2 and "variable 7 (stage3.block2.expand)" in flat.output
    # with --any-widths the configuration is accepted and the command goes on to the (absent) agent
    accepted = bench("--widths-json", off, "--any-widths")
    assert accepted.exit_code == 1 and "cannot connect" in accepted.output


def test_check_widths_names_the_table_variable() -> None:
    choices = [v.choices for v in V2.layers]
    with pytest.raises(UsageError, match=r"table has 25 variables \(stem, stage1,"):
        check_widths(NAMES, choices, [8], what="table")
    with pytest.raises(UsageError, match=r"width of variable 0 \(stem\) is not an integer: '8'"):
        check_widths(NAMES, choices, ["8", *V2.base_widths()[1:]], what="table")


def test_list_variables_prints_the_order_groups_and_choices() -> None:
    result = bench("--list-variables")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("mobilenet_v2: 25 variables, in --widths order")
    rows = [line.split() for line in lines[1:-1]]
    assert [r[1] for r in rows] == NAMES
    assert [r[2] for r in rows] == [v.group for v in V2.layers]
    assert [r[3] for r in rows] == [",".join(map(str, v.choices)) for v in V2.layers]
    assert lines[-1] == "1.0x widths: " + ",".join(map(str, V2.base_widths()))
    help_text = " ".join(CliRunner().invoke(main, ["bench", "--help"]).output.split())
    assert "mobilenet_v2 stem, then per stage its first block's expansion (stages 2-7)" in help_text


# --- the space and its parameters ------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--space", "resnet"], "unknown space 'resnet'; known: mobilenet_v1, mobilenet_v2, ofa_mbv3, text_lowrank"),
    (["--space", "text_lowrank", "--resolution", "64"], "space text_lowrank has no parameter 'resolution'"),
    (["--space", "mobilenet_v2", "--space-param", "depth=2"], "space mobilenet_v2 has no parameter 'depth'"),
    (["--space", "mobilenet_v2", "--levels", "0"], "levels must be at least 1"),
])
def test_an_unknown_space_or_parameter_is_named(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["bench", *NOWHERE, *args, "--list-variables"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_every_space_and_its_parameters_are_in_the_space_help() -> None:
    for command in ("bench", "collect", "run"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        for name, factory in SPACES.items():
            assert f"{name} ({', '.join(factory.param_types)})" in text, (command, name)
        assert "--space-param" in text and "--levels" in text


def test_space_params_merge_the_options_and_refuse_a_repeat() -> None:
    assert space_params(64, None, ("vocab=1000", "ranks=[8,16]")) == {"vocab": 1000, "ranks": [8, 16],
                                                                       "resolution": 64}
    with pytest.raises(click.BadParameter, match="levels given both"):
        space_params(None, 3, ("levels=4",))
    three = open_space("mobilenet_v2", {"levels": 3})
    assert three.num_layers == 25 and three.layers[0].choices == width_grid(32, 3)


# --- a space written as a spec file ----------------------------------------------------------------

SPEC_DIR = Path(__file__).resolve().parents[2] / "docs" / "spaces"


def test_space_file_gives_the_specs_name_and_the_spec_as_its_parameter() -> None:
    name, params = space_choice(None, SPEC_DIR / "mcu_vww.json", None, None, ())
    assert name == "mcu_vww" and params == {"spec": json.loads((SPEC_DIR / "mcu_vww.json").read_text())}
    assert open_space(name, params).num_layers == 10
    assert space_choice(None, None, None, None, ()) == ("mobilenet_v1", {})


def test_every_space_command_takes_a_space_file() -> None:
    for command in ("bench", "collect", "run"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert "--space-file FILE A space written as a widthwise-space/1 spec file" in text, command


def test_list_variables_of_a_space_file() -> None:
    result = CliRunner().invoke(main, ["bench", *NOWHERE, "--space-file", str(SPEC_DIR / "mobilenet_v2.json"),
                                       "--list-variables"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("mobilenet_v2: 25 variables") and [line.split()[1] for line in lines[1:-1]] == NAMES


@pytest.mark.parametrize("args, message", [
    (["--space", "mobilenet_v2"], "--space-file describes the whole space; drop --space"),
    (["--resolution", "96", "--levels", "3"], "--space-file describes the whole space; drop --resolution, --levels"),
])
def test_a_space_file_excludes_the_other_space_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["bench", *NOWHERE, "--space-file", str(SPEC_DIR / "mcu_vww.json"), *args,
                                       "--list-variables"])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("text, message", [
    ('{"format": ', "is not valid JSON"),
    ("[" * 50 + "]" * 50, "is nested deeper than 6 levels"),
    (" " * 300_000 + "{}", "is more than 262,144 bytes, the cap of a spec file"),
    (json.dumps({"format": "widthwise-space/1", "name": "x", "input": {"shape": [1, 3, 32, 32]},
                 "variables": [{"name": "a", "choices": [8]}],
                 "stages": [{"name": "s", "blocks": [{"kind": "conv", "kernel": 2, "out": "a"}]}]}),
     'space spec: stage 1 block 1 (s.block1): field "kernel": must be an odd integer from 1 to 11, got 2'),
])
def test_a_bad_space_file_is_one_usage_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.json"
    path.write_text(text)
    result = CliRunner().invoke(main, ["bench", *NOWHERE, "--space-file", str(path), "--list-variables"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
