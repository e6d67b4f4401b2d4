"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.command()
def collect() -> None:
    """Not implemented yet."""
    raise click.ClickException("'collect' is not implemented yet")

