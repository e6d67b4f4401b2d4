"""`python3 widthwise-agent.pyz serve ...` on a board, `python -m widthwise.device_agents serve ...` on the host (argparse: no click there)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Sequence

from . import __version__
from .auth import ConfigError, is_loopback, load_token, require_token_for_bind, token_file_is_private
from .errors import AgentError
from .limits import DEFAULT_LIMITS, Limits, with_overrides
from .protocol import MIN_MAX_FRAME

DEFAULT_PORT = 7345


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line."""
    parser = argparse.ArgumentParser(prog="device_agents", description="widthwise device agent")
    parser.add_argument("--version", action="version", version=f"widthwise device agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve timing requests over TCP or a serial line")
    add_serve_arguments(serve)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `serve` (shared with the zipapp bundle)."""
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port; 0 picks a free one (default 7345)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --token-file)")
    parser.add_argument("--token-file", help="file holding the shared token that clients must prove")
    parser.add_argument("--serial", metavar="DEV", help="serve this serial device instead of TCP")
    parser.add_argument("--baud", type=int, default=115200, help="serial baud rate (default 115200)")
    parser.add_argument("--port-file", help="write the bound TCP port to this file once listening")
    parser.add_argument(
        "--inject-drift",
        type=float,
        default=0.0,
        metavar="RATE",
        help="testing aid: slow every timed run by RATE x run time per minute of agent uptime",
    )
    parser.add_argument("--max-frame-bytes", type=int, help="frame size cap (default 256 MiB on TCP, 16 MiB on serial)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    defaults = DEFAULT_LIMITS
    parser.add_argument(
        "--max-macs", type=int, default=defaults.max_macs, metavar="N",
        help=f"refuse networks of more multiply-accumulates per run (default {defaults.max_macs:,})",
    )
    parser.add_argument(
        "--max-memory-mb", type=int, default=defaults.max_memory_bytes // 2**20, metavar="MB",
        help="refuse networks whose estimated weights plus peak activations exceed this "
        f"(default {defaults.max_memory_bytes // 2**20}; fits a 1 GiB board)",
    )
    parser.add_argument(
        "--max-request-seconds", type=float, default=defaults.max_request_s, metavar="S",
        help="cap on a request's timing.max_total_s, enforced inside the timing loop "
        f"(default {defaults.max_request_s:g})",
    )
    parser.add_argument(
        "--exit-with-stdin",
        action="store_true",
        help="exit when standard input closes (how a host that started this agent stops it, even if it dies)",
    )


def exit_when_stdin_closes() -> None:
    """Watch stdin in a daemon thread and end the process when it reaches end of file."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="stdin-watch").start()


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The caps on work per request that --max-macs, --max-memory-mb and --max-request-seconds set."""
    if args.max_macs < 1:
        raise ConfigError(f"--max-macs must be at least 1, got {args.max_macs}")
    if args.max_memory_mb < 1:
        raise ConfigError(f"--max-memory-mb must be at least 1, got {args.max_memory_mb}")
    if not 0 < args.max_request_seconds < float("inf"):
        raise ConfigError(f"--max-request-seconds must be a positive number, got {args.max_request_seconds}")
    return with_overrides(
        max_macs=args.max_macs, max_memory_bytes=args.max_memory_mb * 2**20, max_request_s=args.max_request_seconds
    )


def serve(args: argparse.Namespace) -> int:
    """Start the server the parsed options describe; returns the exit status."""
    from .connections import ServerConfig  # noqa: PLC0415
    from .server import AgentServer  # noqa: PLC0415
    from .transport import write_port_file  # noqa: PLC0415

    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s agent %(levelname)s %(message)s", stream=sys.stderr
    )
    log = logging.getLogger("device_agents")
    if args.max_frame_bytes is not None and args.max_frame_bytes < MIN_MAX_FRAME:
        raise ConfigError(f"--max-frame-bytes must be at least {MIN_MAX_FRAME}, got {args.max_frame_bytes}")
    if args.inject_drift < 0:
        raise ConfigError(f"--inject-drift must be >= 0, got {args.inject_drift}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    caps = limits_from_args(args)
    if args.exit_with_stdin:
        exit_when_stdin_closes()
    token = load_token(args.token_file) if args.token_file else None
    if args.token_file and not token_file_is_private(args.token_file):
        log.warning("token file %s is readable by other users; consider chmod 600", args.token_file)
    if args.serial is None:
        require_token_for_bind(args.host, token)
        if not is_loopback(args.host):
            log.warning("listening beyond loopback on %s: every request must prove the token", args.host)

    from . import handlers  # noqa: PLC0415  (imports the runtimes; after the cheap checks)

    handlers.configure(inject_drift_per_min=args.inject_drift, caps=caps)
    server = AgentServer(handlers.HANDLERS, ServerConfig(token=token, max_frame_bytes=args.max_frame_bytes))
    if args.serial is not None:
        def opened() -> None:
            print(f"widthwise agent serving serial://{args.serial}?baud={args.baud}", flush=True)

        server.serve_serial(args.serial, args.baud, on_open=opened)
        return 0

    def announce(port: int) -> None:
        if args.port_file:
            write_port_file(args.port_file, port)
        print(f"widthwise agent listening on tcp://{args.host}:{port}", flush=True)

    server.serve_tcp(args.host, args.port, on_bound=announce)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m widthwise.device_agents` on the host and of the zipapp bundle on a board."""
    args = build_parser().parse_args(argv)
    try:
        return serve(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
