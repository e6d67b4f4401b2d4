"""The `widthwise` command: a click group whose subcommands live in their own modules.

Subcommands are imported only when used, so `widthwise --help` and a quick `predict`
do not pay for importing onnx, scipy or the HTTP stack.
"""

from __future__ import annotations

import importlib

import click

from . import __version__

#: command name -> "module:attribute" of the click command that implements it.
COMMANDS: dict[str, str] = {
    "agent": "widthwise.profiler.cli_agent:agent",
    "bench": "widthwise.profiler.cli_agent:bench",
    "collect": "widthwise.profiler.cli_collect:collect",
    "fit": "widthwise.profiler.cli_fit:fit",
    "predict": "widthwise.profiler.cli_fit:predict",
    "validate": "widthwise.profiler.cli_fit:validate",
    "run": "widthwise.profiler.cli_run:run",
    "factorize": "widthwise.profiler.cli_factorize:factorize",
    "query": "widthwise.search.cli:query",
    "pareto": "widthwise.search.cli:pareto",
    "marginals": "widthwise.search.cli:marginals",
    "serve": "widthwise.search.cli_serve:serve",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module the first time it is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="widthwise")
def main() -> None:
    """widthwise: measure a network family's latency on a board, fit per-layer latency
    tables, and search the layer widths that are best under a latency budget.

    A typical session: `widthwise agent serve` on the board (or `--agent local`),
    `widthwise collect`, `widthwise fit`, then `widthwise query` or `widthwise serve`.
    `widthwise run` does all of it on this machine.
    """


if __name__ == "__main__":
    main()
