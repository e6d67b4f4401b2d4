"""Every error the profiler raises to a user: a WidthwiseError with its `code`, `field` set where raised.

One module, so the codes the CLI maps to exit statuses (widthwise.errors.EXIT_STATUS) are
seen together; each module re-exports the errors it raises under their usual names.
"""

from __future__ import annotations

import json

from widthwise.device_agents.auth import ConfigError
from widthwise.errors import UsageError, WidthwiseError

__all__ = [
    "AgentUrlError", "BadEnergy", "BadWeightsFile", "CollectError", "CollectIncomplete", "CollectInterrupted", "FactorizeError",
    "FitError", "IdentityMismatch", "NotAMatrix", "OutputError", "PlanMismatch", "RankOutOfRange", "SpaceMismatch",
    "StoreError", "TokenFileError", "UnknownMethod", "UnknownSampler", "UsageError",
]


class TokenFileError(WidthwiseError, ConfigError):
    """The agent's token file cannot be used (the agent's own ConfigError, typed for the host)."""

    code = "token_file"


class AgentUrlError(WidthwiseError):
    """An agent URL that names no agent this host can reach (unknown scheme, no port, bad baud)."""

    code = "agent_url"


class OutputError(WidthwiseError):
    """A result could not be written where asked."""

    code = "output"


# --- collection ---------------------------------------------------------------------------------


class UnknownSampler(WidthwiseError, ValueError):
    """The sampling strategy asked for is not registered."""

    code = "unknown_sampler"


class CollectError(WidthwiseError):
    """The collection cannot start or go on (bad settings, an agent that cannot serve them)."""

    code = "collect"


class CollectIncomplete(WidthwiseError):
    """The loop stopped early (a dead agent, a failed write); `summary` says how far it got."""

    code = "collect_incomplete"

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message, summary=summary)
        self.summary = summary


class CollectInterrupted(CollectIncomplete):
    """The loop was interrupted (Ctrl-C, SIGTERM); everything measured so far is stored."""

    code = "interrupted"


# --- the sample store -----------------------------------------------------------------------------


class StoreError(WidthwiseError):
    """The db cannot be used as asked (missing, corrupt, or a write that would duplicate)."""

    code = "store"


class IdentityMismatch(StoreError):
    """The db belongs to another space, device or runtime setting than the one asked for."""

    code = "identity_mismatch"

    def __init__(self, path: str, field: str, stored: object, requested: object) -> None:
        super().__init__(
            f"{path} was collected with {field}={json.dumps(stored)}, but this run has "
            f"{field}={json.dumps(requested)}; use another --db or the same settings",
            field=field,
        )
        self.stored, self.requested = stored, requested


class PlanMismatch(StoreError):
    """The stored plan disagrees with the plan this run computed for the same slot."""

    code = "plan_mismatch"


# --- the fit ------------------------------------------------------------------------------------------


class FitError(WidthwiseError, ValueError):
    """The samples cannot be fitted or compared as asked; the message says why."""

    code = "fit"


class SpaceMismatch(FitError):
    """Samples and table describe different spaces."""

    code = "space_mismatch"


# --- factorisation ------------------------------------------------------------------------------------


class FactorizeError(WidthwiseError, ValueError):
    """A factorisation request that cannot be carried out; the message says why."""

    code = "factorize"


class NotAMatrix(FactorizeError):
    """The weights are not a finite, real, 2-D array."""

    code = "not_a_matrix"


class RankOutOfRange(FactorizeError):
    """The rank is not an integer in [1, min(m, n)]."""

    code = "rank_out_of_range"


class BadEnergy(FactorizeError):
    """The energy share is not a number in (0, 1]."""

    code = "bad_energy"


class BadWeightsFile(FactorizeError):
    """The weights file is missing, unreadable or not a NumPy .npy file."""

    code = "bad_weights_file"


class UnknownMethod(FactorizeError):
    """The SVD method is not one of SVD_METHODS."""

    code = "unknown_method"
