"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.command()
def fit() -> None:
    """Not implemented yet."""
    raise click.ClickException("'fit' is not implemented yet")

@click.command()
def predict() -> None:
    """Not implemented yet."""
    raise click.ClickException("'predict' is not implemented yet")

@click.command()
def validate() -> None:
    """Not implemented yet."""
    raise click.ClickException("'validate' is not implemented yet")

