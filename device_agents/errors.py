"""Typed errors of the agent: each carries a stable `code` that crosses the wire.

A failure is a class, never a bare string, so the host can react to what went wrong
(retry a corrupt frame, give up on a bad width list) without parsing messages.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent reports; `code` is its name on the wire."""

    code = "agent_error"
    retryable = False

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> dict:
        """The error as the JSON object an error frame carries."""
        out: dict = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class BadRequest(AgentError):
    """The request is well framed but its content is invalid (missing or wrong field)."""

    code = "bad_request"


class UnknownSpace(BadRequest):
    """The spec names a search space the agent does not define."""

    code = "unknown_space"


class BadWidths(BadRequest):
    """The width list has the wrong length or a width that is not a positive integer."""

    code = "bad_widths"


class BadModel(BadRequest):
    """The model bytes are not a model the chosen runtime can load."""

    code = "bad_model"


class RuntimeUnavailable(AgentError):
    """The requested runtime (or delegate, or dtype) is not usable on this board."""

    code = "runtime_unavailable"


class FrameError(AgentError):
    """A frame on the line is corrupt: bad magic, bad CRC, bad header, truncated."""

    code = "bad_frame"
    retryable = True


class FrameTooLarge(FrameError):
    """A frame announces a length above the configured cap."""

    code = "frame_too_large"
    retryable = False


class ProtocolVersionError(AgentError):
    """The peer speaks no protocol version this agent supports."""

    code = "protocol_version"


class AuthError(AgentError):
    """The request did not prove the shared token."""

    code = "unauthorized"


class AgentTimeout(AgentError):
    """A read or a request took longer than its bound."""

    code = "timeout"
    retryable = True


class BenchFailed(AgentError):
    """The runtime raised while the network was being timed."""

    code = "bench_failed"


class AgentConnectionError(AgentError):
    """The agent could not be reached, or the connection dropped mid-request."""

    code = "connection"
    retryable = True


#: Every error class by its wire code, so a client can re-raise the same type.
ERRORS_BY_CODE: dict[str, type[AgentError]] = {
    cls.code: cls
    for cls in (
        AgentError,
        BadRequest,
        UnknownSpace,
        BadWidths,
        BadModel,
        RuntimeUnavailable,
        FrameError,
        FrameTooLarge,
        ProtocolVersionError,
        AuthError,
        AgentTimeout,
        BenchFailed,
        AgentConnectionError,
    )
}


def error_from_wire(obj: dict) -> AgentError:
    """Rebuild the typed error an error frame describes (unknown codes become AgentError)."""
    cls = ERRORS_BY_CODE.get(str(obj.get("code")), AgentError)
    err = cls(str(obj.get("message", "agent error")), **dict(obj.get("details") or {}))
    return err


def clip_text(text: str, limit: int = 2048) -> str:
    """`text` made safe to log or forward: non-printable characters escaped, cut to `limit` characters."""
    escaped = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    if len(escaped) <= limit:
        return escaped
    kept = max(limit - 40, 0)  # room for the note below
    return escaped[:kept] + f"... [{len(escaped) - kept} characters cut]"


class LimitExceeded(BadRequest):
    """A request asks for more work than this agent's caps allow; `details` name the cap
    (`field`), its value (`limit`) and the value asked for (`value`)."""

    code = "limit_exceeded"

    def __init__(
        self, message: str, *, field: object = None, limit: object = None, value: object = None, **details: object
    ) -> None:
        super().__init__(message, field=field, limit=limit, value=value, **details)


class ExternalDataRefused(BadModel):
    """A model references data outside its own bytes (ONNX external data, TFLite buffers
    beyond the file); `details["tensor"]` names the refused tensor when the model names it."""

    code = "external_data"


ERRORS_BY_CODE[LimitExceeded.code] = LimitExceeded
ERRORS_BY_CODE[ExternalDataRefused.code] = ExternalDataRefused


# --- added with protocol version 2 (authenticated requests and answers) -------------------


class ReplayedRequest(AuthError):
    """A correctly signed request whose counter is not above the last one accepted on its connection."""

    code = "replayed_request"


class AgentAuthError(AuthError):
    """(Host side) an answer that does not prove the shared token: a wrong token, or not the agent."""

    code = "answer_unauthenticated"


ERRORS_BY_CODE.update({cls.code: cls for cls in (ReplayedRequest, AgentAuthError)})
