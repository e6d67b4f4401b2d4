"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.command()
def factorize() -> None:
    """Not implemented yet."""
    raise click.ClickException("'factorize' is not implemented yet")

