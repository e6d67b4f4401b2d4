"""Every error the search raises to a user: a WidthwiseError with its `code`, `field` set where raised.

One module, so the codes and the HTTP statuses the daemon answers them with (`HTTP_STATUS`,
the one table) are seen together; the CLI's exit statuses come from
`widthwise.errors.EXIT_STATUS`. Each search module re-exports the errors it raises under
their usual names. Every class also subclasses the builtin it replaced (ValueError, ...),
so callers that caught that keep working.
"""

from __future__ import annotations

import math
from typing import Any

from widthwise.errors import WidthwiseError, status_of

__all__ = [
    "BadRequest", "Busy", "BodyTooLarge", "DaemonConfigError", "FrontLimitError", "HTTP_STATUS", "InfeasibleBudget",
    "InvalidRequest", "JitModeError", "JitUnavailable", "NonFiniteAnswer", "ObjectiveError", "PlotUnavailable", "QueryError",
    "ScheduleError", "TableError", "TableUnavailable", "Unauthorized", "UnknownTable", "WidthsError",
    "error_body", "http_status",
]


# --- inputs: tables, widths, objectives, queries ---------------------------------------------


class TableError(WidthwiseError, ValueError):
    """A table file is not a valid `widthwise-table/1` or `/2`; `field` is the path of the faulty entry."""

    code = "table_invalid"

    def __init__(self, field_path: str, problem: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field_path}: {problem}", field=field_path)
        self.problem = problem
        self.source = source


class WidthsError(WidthwiseError, ValueError):
    """A width configuration does not fit the table (wrong count, a width off a layer's grid)."""

    code = "bad_widths"


class ObjectiveError(WidthwiseError, ValueError):
    """An objective does not fit the table or cannot be built; `field` is objective or loss_samples."""

    code = "objective_invalid"


class QueryError(WidthwiseError, ValueError):
    """A query's parameters are invalid; `field` is budget_ms, max_params, method or temperature."""

    code = "invalid_query"


class FrontLimitError(QueryError):
    """A front the answer needs passes a size cap; `limit` says which cap, its value and how far it got."""

    code = "front_too_large"

    def __init__(self, message: str, *, field: str, limit: dict) -> None:
        super().__init__(message, field=field, limit=limit)
        self.limit = limit


class InfeasibleBudget(WidthwiseError, ValueError):
    """No configuration meets the budget; `min_latency_ms` (and `min_params`) say what would."""

    code = "infeasible_budget"

    def __init__(self, message: str, min_latency_ms: float, min_params: float | None = None, *,
                 field: str = "budget_ms") -> None:
        super().__init__(message, field=field, min_latency_ms=_finite_or_none(min_latency_ms),
                         min_params=_finite_or_none(min_params))
        self.min_latency_ms = min_latency_ms
        self.min_params = min_params


class NonFiniteAnswer(ObjectiveError):
    """An answer would hold a non-finite number (costs that overflow a float): it is never sent."""

    code = "non_finite_answer"


class PlotUnavailable(WidthwiseError):
    """A plot was asked for and matplotlib does not import."""

    code = "plot_unavailable"


class ScheduleError(WidthwiseError, ValueError):
    """A schedule parameter or a step is invalid; `field` names it."""

    code = "schedule_invalid"


class JitModeError(WidthwiseError, ValueError):
    """WIDTHWISE_JIT holds a value other than auto, on or off."""

    code = "jit_mode"


class JitUnavailable(WidthwiseError, RuntimeError):
    """The compiled kernels were required (WIDTHWISE_JIT=on or compiled=True) but numba did not import."""

    code = "jit_unavailable"


# --- the daemon ------------------------------------------------------------------------------


class DaemonConfigError(WidthwiseError, ValueError):
    """The daemon cannot start as configured (non-loopback without a token, bad token file)."""

    code = "daemon_config"


class InvalidRequest(WidthwiseError):
    """A request body the daemon's models refuse (malformed JSON, a missing, unknown or bad field)."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str, errors: list[dict]) -> None:
        super().__init__(message, field=field)
        self.errors = errors


class UnknownTable(WidthwiseError, LookupError):
    """No table of that name in the daemon's folder."""

    code = "unknown_table"


class TableUnavailable(WidthwiseError):
    """The table's file is broken and no good version of it was ever loaded."""

    code = "table_unavailable"


class Busy(WidthwiseError, RuntimeError):
    """Every work slot is taken and the queue in front of them is full."""

    code = "busy"


class BadRequest(WidthwiseError):
    """A request the HTTP layer cannot read (a Content-Length that is not a number)."""

    code = "bad_request"


class BodyTooLarge(WidthwiseError):
    """A request body over the daemon's cap, with or without Content-Length."""

    code = "body_too_large"


class Unauthorized(WidthwiseError):
    """A token is set and the request carries none, or a wrong one."""

    code = "unauthorized"


#: error code -> the daemon's HTTP status for it. A class whose code is not listed takes the
#: status of its nearest base class that is; every other typed error is a 422.
HTTP_STATUS: dict[str, int] = {
    "error": 422,
    "invalid_query": 422,
    "objective_invalid": 422,
    "invalid_request": 422,
    "infeasible_budget": 409,
    "unknown_table": 404,
    "table_unavailable": 503,
    "busy": 503,
    "body_too_large": 413,
    "bad_request": 400,
    "unauthorized": 401,
}

#: extra response headers per error code
HTTP_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {
    "busy": [(b"retry-after", b"1")],
    "unauthorized": [(b"www-authenticate", b"Bearer")],
}

#: codes whose body holds FastAPI's list of {loc, msg, type} under "detail" (clients parse it)
_VALIDATION_STATUS = 422


def http_status(error: WidthwiseError) -> int:
    """The HTTP status the daemon answers `error` with (see HTTP_STATUS)."""
    return status_of(error, HTTP_STATUS)


def error_body(error: WidthwiseError) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
    """(status, JSON body, extra headers) of an error: always `code`, `field` and `detail`.

    A 422's `detail` is a list of {loc, msg, type} (as FastAPI's own); any other's the message.
    """
    status = http_status(error)
    body: dict[str, Any] = {"code": error.code, "field": error.field}
    if isinstance(error, InvalidRequest):
        body["detail"] = error.errors
    elif status == _VALIDATION_STATUS:
        loc = ["body", *(error.field.split(".") if error.field else [])]
        body["detail"] = [{"loc": loc, "msg": error.message, "type": error.code}]
    else:
        body["detail"] = error.message
    body.update(error.details)
    return status, body, HTTP_HEADERS.get(error.code, [])


def _finite_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
