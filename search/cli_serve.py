"""`widthwise serve`: the query daemon over a folder of latency tables."""

from __future__ import annotations

import click

from widthwise.errors import cli_errors

from .errors import DaemonConfigError
from .front_limits import DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_POINTS, DEFAULT_MAX_SEARCH_SECONDS


@click.command()
@click.option("--tables", "tables_dir", required=True,
              type=click.Path(exists=True, file_okay=False, dir_okay=True),
              help="Folder of latency tables (widthwise-table/1 or /2); each NAME.json is served as table NAME.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback requires --token-file.")
@click.option("--port", default=8731, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one and prints it).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False),
              help="File holding the shared bearer token (at least 16 printable ASCII bytes); every "
                   "request must then send 'Authorization: Bearer <token>'.")
@click.option("--max-body-kb", default=1024, show_default=True, type=click.IntRange(1, 1024 * 1024),
              help="Largest request body accepted, in KiB.")
@click.option("--max-front-points", default=DEFAULT_MAX_POINTS, show_default=True, type=click.IntRange(1),
              help="Most points a partial exact front may hold while it is built (422 beyond).")
@click.option("--max-front-mb", default=DEFAULT_MAX_MEMORY_MB, show_default=True, type=click.IntRange(1),
              help="Most memory (MiB, estimated) one front build may use (422 beyond).")
@click.option("--max-search-seconds", default=DEFAULT_MAX_SEARCH_SECONDS, show_default=True,
              type=click.FloatRange(0, 600),
              help="Time bound of the exact two-budget (max_params) search; past it a query answers "
                   "approximately (with its gap) and a two-budget front is refused (422).")
@click.option("--work-slots", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Heavy computations run at once, each in a worker thread.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@cli_errors
def serve(tables_dir: str, host: str, port: int, token_file: str | None, max_body_kb: int,
          max_front_points: int, max_front_mb: int, max_search_seconds: float, work_slots: int,
          log_level: str) -> None:
    """Serve width search over HTTP/JSON: /healthz, /v1/tables, /v1/query, /v1/pareto,
    /v1/marginals; the OpenAPI schema at /openapi.json and /docs.

    Tables are loaded once and kept in memory; a file replaced in the folder is picked up
    without a restart, and a broken replacement is refused while the old table serves.
    """
    from . import daemon
    from .front_limits import FrontLimits

    token = daemon.token_from_file(token_file) if token_file else None
    daemon.check_bind(host, token)
    try:
        daemon.serve(tables_dir, host=host, port=port, token=token, max_body=max_body_kb * 1024,
                     log_level=log_level, limits=FrontLimits(max_front_points, max_front_mb, max_search_seconds),
                     work_slots=work_slots)
    except OSError as exc:
        raise DaemonConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}", field="port") from exc
