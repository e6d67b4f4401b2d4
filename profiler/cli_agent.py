"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.group()
def agent() -> None:
    """Not implemented yet."""
    raise click.ClickException("'agent' is not implemented yet")

@click.command()
def bench() -> None:
    """Not implemented yet."""
    raise click.ClickException("'bench' is not implemented yet")

