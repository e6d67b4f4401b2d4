"""Options several commands share, declared once: the space, a configuration, how to reach an agent.

A configuration has one syntax everywhere (`bench`, `predict`, and any command that takes
`--widths`): integers, one per variable of the space in the space's variable order,
separated by commas and/or spaces; or `--widths-json`, an object from variable name to
width. Every mistake in one (a wrong count, an off-grid width, a missing, unknown or
repeated name) is a UsageError naming the variable: one line and exit status 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar

import click

from widthwise.device_agents.errors import AgentError
from widthwise.device_agents.space_spec import MAX_SPEC_BYTES, SPEC_FORMAT, load_spec_text
from widthwise.device_agents.spaces import SPACES, Space, make_space
from widthwise.errors import UsageError

F = TypeVar("F", bound=Callable[..., object])
#: a spec file is read up to this many bytes (its compact JSON is capped at MAX_SPEC_BYTES)
MAX_SPEC_FILE_BYTES = 4 * MAX_SPEC_BYTES

#: the help text of every `--widths` option: the syntax is documented here and only here.
WIDTHS_HELP = ("One width per variable of the space, in its variable order, separated by commas or spaces "
               "(32,16,24 or '32 16 24'). The order: mobilenet_v1 its 14 layers; mobilenet_v2 stem, then per "
               "stage its first block's expansion (stages 2-7), the stage width and the later blocks' "
               "expansions, then head (`widthwise bench --space S --list-variables` prints it)")
WIDTHS_JSON_HELP = ("The widths as a JSON object from variable name to width, e.g. "
                    "'{\"stem\": 32, \"stage1\": 16, ...}': every variable exactly once (instead of --widths)")


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


def parse_widths_json(text: str) -> list[tuple[str, object]]:
    """`--widths-json` as (name, value) pairs in the order given (repeats kept, so they can be named)."""
    try:
        pairs = json.loads(text, object_pairs_hook=lambda items: items)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--widths-json is not valid JSON ({exc.msg} at character {exc.pos})",
                         field="--widths-json") from None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        raise UsageError("--widths-json must be a JSON object from variable name to width", field="--widths-json")
    return pairs


def widths_option(*, required: bool = False, default_help: str = "") -> Callable[[F], F]:
    """`--widths` (the one syntax's help, plus what happens when it is left out) and `--widths-json`;
    the command resolves them with `configuration` (exactly one of the two)."""
    def deco(fn: F) -> F:
        fn = click.option("--widths-json", default=None, metavar="JSON", help=WIDTHS_JSON_HELP + ".")(fn)
        suffix = "; required unless --widths-json is given" if required else ""
        return click.option("--widths", type=WidthList(), default=None,
                            help=WIDTHS_HELP + suffix + (f"; {default_help}" if default_help else "") + ".")(fn)
    return deco


def _named_values(names: Sequence[str], pairs: Sequence[tuple[str, object]]) -> list[object]:
    """The values of `--widths-json` in variable order; a missing, unknown or repeated name is named."""
    index = {name: k for k, name in enumerate(names)}
    seen: dict[str, object] = {}
    for name, value in pairs:
        if name not in index:
            raise UsageError(f"--widths-json: unknown variable {name!r}; the variables are {', '.join(names)}",
                             field="--widths-json")
        if name in seen:
            raise UsageError(f"--widths-json: variable {name!r} is given twice", field="--widths-json")
        seen[name] = value
    missing = [name for name in names if name not in seen]
    if missing:
        raise UsageError(f"--widths-json: missing variable{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                         field="--widths-json")
    return [seen[name] for name in names]


def check_widths(names: Sequence[str], choices: Sequence[Sequence[int]], values: Sequence[object], *,
                 what: str, noun: str = "variable", field: str = "--widths") -> list[int]:
    """`values` as ints: one per variable, each an integer among its variable's choices; else a
    UsageError naming the variable (`what` names the space or table in the count message)."""
    if len(values) != len(names):
        listing = f" ({', '.join(names)})" if noun == "variable" else ""
        raise UsageError(f"{what} has {len(names)} {noun}s{listing}, got {len(values)} widths", field=field)
    out = []
    for k, (name, grid, value) in enumerate(zip(names, choices, values)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"width of {noun} {k} ({name}) is not an integer: {value!r}", field=field)
        if value not in grid:
            raise UsageError(f"width {value} of {noun} {k} ({name}) is not one of its choices {list(grid)}",
                             field=field)
        out.append(value)
    return out


def configuration(widths: list[int] | None, widths_json: str | None, names: Sequence[str], *,
                  required: bool = True) -> list[object] | None:
    """The flat configuration `--widths` or `--widths-json` gives (exactly one; None when neither and
    not `required`), in variable order; not yet checked against the grid."""
    if widths is not None and widths_json is not None:
        raise UsageError("give the widths once: --widths or --widths-json, not both", field="--widths")
    if widths_json is not None:
        return _named_values(names, parse_widths_json(widths_json))
    if widths is None and required:
        raise UsageError("no widths given: pass --widths or --widths-json", field="--widths")
    return None if widths is None else list(widths)


def space_configuration(space: Space, widths: list[int] | None, widths_json: str | None, *,
                        on_grid: bool = True) -> list[int] | None:
    """`configuration` for a space, checked by the space's own rules (`Space.validate_widths`) as a UsageError."""
    values = configuration(widths, widths_json, [layer.name for layer in space.layers], required=False)
    if values is None:
        return None
    try:
        return list(space.validate_widths(values, on_grid=on_grid))
    except AgentError as exc:
        raise UsageError(exc.message, field="--widths-json" if widths_json is not None else "--widths") from None


def variable_lines(names: Sequence[str], choices: Sequence[Sequence[int]], groups: Sequence[str] = ()) -> list[str]:
    """One line per variable, in configuration order: index, name, group, choices."""
    groups = list(groups) or [""] * len(names)
    width = max((len(n) for n in names), default=4)
    return [f"{k:>3}  {name:<{width}}  {group:<8}  {','.join(map(str, grid))}"
            for k, (name, grid, group) in enumerate(zip(names, choices, groups))]


# --- the space ---------------------------------------------------------------------------------

def parse_assignments(pairs: Sequence[str], what: str) -> dict[str, object]:
    """`key=value` options into a dict; values are JSON when they parse (numbers, lists), else text."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=what)
        if key in out:
            raise click.BadParameter(f"{key} given twice", param_hint=what)
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _spaces_help() -> str:
    described = [f"{name} ({', '.join(f.param_types) or 'no parameters'})" for name, f in sorted(SPACES.items())]
    return "Search space, with the parameters it takes: " + "; ".join(described) + "."


DEFAULT_SPACE = "mobilenet_v1"


def space_options(*, default: str = DEFAULT_SPACE) -> Callable[[F], F]:
    """`--space` or `--space-file`, `--resolution`, `--levels` and `--space-param KEY=VALUE`: every
    space's parameters, resolved with `space_choice` (the command's arguments `space`, `space_file`)."""
    def deco(fn: F) -> F:
        fn = click.option("--space-param", "space_param", multiple=True, metavar="KEY=VALUE",
                          help="Any other parameter of the space (repeatable; JSON values), e.g. vocab=50000 "
                               "or 'ranks=[8,16]' for text_lowrank.")(fn)
        fn = click.option("--levels", type=int, default=None,
                          help="Width choices per variable (mobilenet_v1, mobilenet_v2, ofa_mbv3; default 14).")(fn)
        fn = click.option("--resolution", type=int, default=None,
                          help="Input resolution (mobilenet_v1, mobilenet_v2, ofa_mbv3; default 224).")(fn)
        fn = click.option("--space-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
                          help=f"A space written as a {SPEC_FORMAT} spec file (docs/spaces.md), instead of --space; "
                               "it fixes its own input and grids.")(fn)
        return click.option("--space", default=None, help=_spaces_help() + f" Default {default}.")(fn)
    return deco


def space_params(resolution: int | None, levels: int | None, pairs: Sequence[str]) -> dict[str, object]:
    """The space parameters the options give (`--resolution`/`--levels` only when set)."""
    params = parse_assignments(pairs, "--space-param")
    for key, value in (("resolution", resolution), ("levels", levels)):
        if value is not None:
            if key in params:
                raise click.BadParameter(f"{key} given both as --{key} and --space-param", param_hint="--space-param")
            params[key] = value
    return params


def read_space_file(path: Path) -> dict[str, object]:
    """A spec file's object (size and nesting capped before JSON is parsed); a UsageError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_FILE_BYTES + 1)
        return load_spec_text(raw, str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", field="--space-file") from None
    except AgentError as exc:
        raise UsageError(exc.message, field="--space-file") from None


def space_choice(space: str | None, space_file: Path | None, resolution: int | None, levels: int | None,
                 pairs: Sequence[str], *, default: str = DEFAULT_SPACE) -> tuple[str, dict[str, object]]:
    """(space name, parameters) the space options give: a built-in space and its parameters, or the
    space of `--space-file` as (its name, {"spec": its object}); the two ways exclude each other."""
    if space_file is None:
        return space or default, space_params(resolution, levels, pairs)
    given = [flag for flag, value in (("--space", space), ("--resolution", resolution), ("--levels", levels),
                                      ("--space-param", pairs)) if value not in (None, ())]
    if given:
        raise UsageError(f"--space-file describes the whole space; drop {', '.join(given)}", field="--space-file")
    spec = read_space_file(space_file)
    name = spec.get("name")
    return (name if isinstance(name, str) else ""), {"spec": spec}


def open_space(name: str, params: Mapping[str, object]) -> Space:
    """The space by the agent's rules; an unknown space or parameter, or a spec's mistake, is a UsageError
    naming it."""
    try:
        return make_space(name, dict(params))
    except AgentError as exc:
        if "spec" in params:
            field = "--space-file"
        else:
            field = "--space" if exc.code == "unknown_space" else "--space-param"
        raise UsageError(exc.message, field=field) from None


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
