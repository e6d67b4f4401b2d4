"""What every bench answer carries besides its measurement (the body described in PROTOCOL.md, section 6)."""

from __future__ import annotations

from .runtimes import Runtime
from .timing import DriftInjector, TimingSettings


def finish_body(
    body: dict,
    *,
    runtime: Runtime,
    session: object,
    settings: TimingSettings,
    dtype: str | None,
    init_ms: float,
    model: bytes,
    drift: DriftInjector,
) -> dict:
    """Add to a measurement's JSON the session's warnings, the drift-injection notice,
    session-creation time, the runtime block and the model size."""
    body["warnings"].extend(str(w) for w in session.info.get("warnings", []))  # type: ignore[attr-defined]
    if drift.active:
        body["warnings"].append(f"drift injection is on ({drift.rate_per_min} per minute): a testing aid")
    body["init_ms"] = init_ms
    body["runtime"] = {
        "name": runtime.name,
        "version": runtime.version(),
        "threads": settings.threads,
        "dtype": dtype,
        "delegate": session.info.get("delegate"),  # type: ignore[attr-defined]
        "clock": settings.clock,
    }
    body["model_bytes"] = len(model)
    return body
