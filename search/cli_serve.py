"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.command()
def serve() -> None:
    """Not implemented yet."""
    raise click.ClickException("'serve' is not implemented yet")

