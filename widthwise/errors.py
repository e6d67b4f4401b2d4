"""The host's typed errors: every error shown to a user carries a `code` and the `field` it names.

`code` is a stable name for what went wrong (a class attribute, so a caller can branch on it
without parsing messages); `field` is the input the error is about (an option, a JSON key, a
table entry), set where the error is raised. The CLI turns these into exit statuses with one
table (EXIT_STATUS, applied by `cli_errors`), the daemon into HTTP statuses with its own.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Mapping, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class WidthwiseError(Exception):
    """Base of the host's user-facing errors (the agent's own are device_agents.errors.AgentError)."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_json(self) -> dict:
        """The error as a JSON object: code, field, message, and any details."""
        return {"code": self.code, "field": self.field, "message": self.message, **self.details}


class UsageError(WidthwiseError):
    """A command-line value that cannot be used as given (exit status 2, as click's own usage errors)."""

    code = "usage"


#: error code -> the CLI's exit status for it. A class whose code is not listed takes the status
#: of its nearest base class that is; everything else exits 1.
EXIT_STATUS: dict[str, int] = {
    "error": 1,
    "usage": 2,  # a bad option value (click's BadParameter exits 2 too)
    "collect_incomplete": 1,  # the agent died or went away mid-collection; the db is consistent
    "interrupted": 130,  # Ctrl-C or SIGTERM, as a shell reports a SIGINT death
}


def status_of(error: WidthwiseError, table: Mapping[str, int]) -> int:
    """`table`'s status for the error's code, or for the nearest base class's code it lists;
    table["error"] otherwise. The CLI's exit statuses and the daemon's HTTP statuses are such tables."""
    for cls in type(error).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in table:
            return table[code]
    return table["error"]


def exit_status(error: WidthwiseError) -> int:
    """The exit status the CLI ends with for `error` (see EXIT_STATUS)."""
    return status_of(error, EXIT_STATUS)


def error_line(error: BaseException, agent_url: str | None = None) -> tuple[str, int]:
    """(one line, exit status) of an error that reaches the CLI; ValueError for any other exception.

    A WidthwiseError is its message; the agent's own errors (device_agents.errors.AgentError)
    are `agent URL: code: message`; an OSError names the file and the system's reason.
    """
    from widthwise.device_agents.errors import AgentError  # noqa: PLC0415  (the bottom layer; cheap)

    if isinstance(error, WidthwiseError):
        return error.message, exit_status(error)
    if isinstance(error, AgentError):
        prefix = f"agent {agent_url}: " if agent_url else ""
        return f"{prefix}{error.code}: {error.message}", EXIT_STATUS["error"]
    if isinstance(error, OSError):
        where = getattr(error, "filename", None)
        return (f"{where}: " if where else "") + str(error.strerror or error), EXIT_STATUS["error"]
    raise ValueError(f"not a user-facing error: {type(error).__name__}")


#: The exit status of a command whose reader went away (`widthwise pareto ... | head`): a shell's for SIGPIPE.
EXIT_BROKEN_PIPE = 141


def _quiet_broken_pipe() -> None:
    """Stop quietly when the reader of our output has gone: no error line, and no second one from
    the interpreter's last flush of stdout (pointed at the null device first)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test runner's)
        pass
    raise SystemExit(EXIT_BROKEN_PIPE)


def cli_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a click command's function: a typed error becomes one line on stderr and its exit status.

    Typed errors are WidthwiseError, the agent's AgentError and OSError (see `error_line`); a
    command that talks to an agent names its URL parameter `agent_url`, and the line names it.
    """
    import click  # noqa: PLC0415  (the host's CLI only; the daemon imports this module without it)
    from widthwise.device_agents.errors import AgentError  # noqa: PLC0415

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            _quiet_broken_pipe()
        except (WidthwiseError, AgentError, OSError) as exc:
            url = kwargs.get("agent_url")
            message, status = error_line(exc, url if isinstance(url, str) else None)
            error = click.ClickException(message)
            error.exit_code = status
            raise error from None

    return wrapper
