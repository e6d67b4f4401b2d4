"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.command()
def run() -> None:
    """Not implemented yet."""
    raise click.ClickException("'run' is not implemented yet")

