"""Scaffolding: replaced by the module that implements these commands."""

import click

@click.command()
def query() -> None:
    """Not implemented yet."""
    raise click.ClickException("'query' is not implemented yet")

@click.command()
def pareto() -> None:
    """Not implemented yet."""
    raise click.ClickException("'pareto' is not implemented yet")

@click.command()
def marginals() -> None:
    """Not implemented yet."""
    raise click.ClickException("'marginals' is not implemented yet")

