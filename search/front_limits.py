"""Caps on the size of a Pareto front while it is being built (points, and memory estimated from them).

An objective whose costs run opposite to latency makes almost every configuration
Pareto-optimal, so the exact front grows by the number of choices at every variable. Every
front the search builds checks these caps at each step of its elimination (a variable's
message to its parent, or one child merged at a parent), before the step's candidates are
allocated (memory) and after they are pruned (points), so a hopeless build stops early with
memory still bounded and says how far it got (step k of n, and the variable).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Points a partial front may hold at any step. Real tables stay far below: the shipped
#: MobileNet-V1 table peaks at about 39,000 partial points (3,083 on its final front).
DEFAULT_MAX_POINTS = 200_000
#: Estimated working memory one front build may use (MiB). The shipped table's exact front
#: needs about 70 MiB; its two-budget (max_params) searches up to about 650 MiB.
DEFAULT_MAX_MEMORY_MB = 1024

#: Seconds the exact two-budget (max_params) search may run before the Lagrangian answers instead.
DEFAULT_MAX_SEARCH_SECONDS = 2.0
#: Candidate prefixes one step of the exact two-budget search may hold (bounds its memory).
DEFAULT_MAX_SEARCH_CANDIDATES = 4_000_000

#: Estimated bytes per candidate of one step while it is pruned (the candidate arrays, the
#: binned pre-filter and the sort; measured about 140 bytes with tracemalloc).
BYTES_PER_CANDIDATE = 160
#: Estimated bytes per kept point of every step so far (back-pointers and state, int64 each).
BYTES_PER_KEPT_POINT = 16

MIB = 1024 * 1024


class FrontLimitExceeded(RuntimeError):
    """A front passed a cap while being built; names the cap, its value and how far the build got.

    `block` of `blocks` counts the elimination's steps (the JSON keeps those names); `at` names
    the variable of the step.
    """

    def __init__(self, kind: str, limit: float, reached: float, block: int, blocks: int, what: str,
                 at: str = "") -> None:
        unit = " MiB (estimated)" if kind == "memory" else " points"
        where = f" ({at})" if at else ""
        super().__init__(
            f"the {what} passes the {kind} limit at step {block} of {blocks}{where}: "
            f"{reached:,.0f}{unit} > {limit:,.0f}{unit.replace(' (estimated)', '')}"
        )
        self.kind = kind
        self.limit = limit
        self.reached = reached
        self.block = block
        self.blocks = blocks
        self.what = what

    def to_json(self) -> dict:
        return {"kind": self.kind, "limit": self.limit, "reached": self.reached,
                "block": self.block, "blocks": self.blocks}


@dataclass(frozen=True)
class FrontLimits:
    """The caps one front build checks; `max_points` None checks memory only.

    `max_search_seconds` and `max_search_candidates` bound the exact two-budget search (past
    them a query answers approximately, a two-budget front refuses).
    """

    max_points: int | None = DEFAULT_MAX_POINTS
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
    max_search_seconds: float = DEFAULT_MAX_SEARCH_SECONDS
    max_search_candidates: int = DEFAULT_MAX_SEARCH_CANDIDATES

    def __post_init__(self) -> None:
        if self.max_points is not None and self.max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")
        if not self.max_memory_mb > 0:
            raise ValueError(f"max_memory_mb must be > 0, got {self.max_memory_mb}")
        if not 0 <= self.max_search_seconds < float("inf"):
            raise ValueError(f"max_search_seconds must be finite and >= 0, got {self.max_search_seconds}")
        if self.max_search_candidates < 1:
            raise ValueError(f"max_search_candidates must be >= 1, got {self.max_search_candidates}")

    def memory_only(self) -> "FrontLimits":
        """The same memory cap without the points cap (for fronts that are never returned whole)."""
        return replace(self, max_points=None)

    def before_step(self, candidates: int, kept_so_far: int, block: int, blocks: int, what: str,
                    at: str = "") -> None:
        """Refuse a step whose candidates (with the points kept so far) would pass the memory cap."""
        estimate = (candidates * BYTES_PER_CANDIDATE + kept_so_far * BYTES_PER_KEPT_POINT) / MIB
        if estimate > self.max_memory_mb:
            raise FrontLimitExceeded("memory", self.max_memory_mb, estimate, block, blocks, what, at)

    def after_step(self, points: int, block: int, blocks: int, what: str, at: str = "") -> None:
        """Refuse a partial set that holds more points than the cap."""
        if self.max_points is not None and points > self.max_points:
            raise FrontLimitExceeded("points", self.max_points, points, block, blocks, what, at)


DEFAULT_LIMITS = FrontLimits()
