"""Step schedules for training a slimmable or factorised network: CALR and the temperature.

Both are framework-free: a frozen dataclass holding the parameters, called with the step
number (0, 1, 2, ...) to get a float, so any training loop (PyTorch, JAX, NumPy) can use
them by setting its optimiser's learning rate or its sampler's temperature each step.

- `CyclicallyAnnealedLR` (CALR): each cycle rises linearly from `lr_min` to the cycle's
  peak and falls back, and the peak shrinks geometrically from one cycle to the next:
  peak(c) = lr_min + (lr_max − lr_min) · decay^c. Large early steps can leave a poor
  basin; smaller later ones keep the optimiser in a good valley once it has found one.
- `GeometricTemperature`: T(step) = T0 · (T_end / T0)^(step / steps), then T_end; the
  temperature at which the search's width marginals are sampled while a supernet trains.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass
from typing import Mapping, Union

from .errors import ScheduleError


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(f"{name} must be a finite number, got {value!r}", field=name)
    return float(value)


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise ScheduleError(f"{name} must be an integer, got {value!r}", field=name)
    number = int(value)  # accepts numpy integers too
    if number < minimum:
        raise ScheduleError(f"{name} must be at least {minimum}, got {number}", field=name)
    return number


def _step(step: object) -> int:
    return _integer("step", step, 0)


@dataclass(frozen=True)
class CyclicallyAnnealedLR:
    """CALR: triangular cycles of `cycle_steps` steps whose peak decays by `decay` per cycle.

    Within a cycle the first `cycle_steps // 2` steps climb linearly from lr_min to the
    peak (reached exactly), the rest descend linearly towards lr_min.
    """

    lr_min: float
    lr_max: float
    cycle_steps: int
    decay: float = 0.5

    def __post_init__(self) -> None:
        lo = _finite("lr_min", self.lr_min)
        hi = _finite("lr_max", self.lr_max)
        if lo < 0:
            raise ScheduleError(f"lr_min must be >= 0, got {lo}", field="lr_min")
        if hi <= lo:
            raise ScheduleError(f"lr_max ({hi}) must be greater than lr_min ({lo})", field="lr_max")
        _integer("cycle_steps", self.cycle_steps, 2)
        d = _finite("decay", self.decay)
        if not 0.0 < d < 1.0:
            raise ScheduleError(f"decay must be in (0, 1) so that every cycle's peak is lower, got {d}", field="decay")

    @property
    def rise_steps(self) -> int:
        """Steps from a cycle's start to its peak."""
        return self.cycle_steps // 2

    def peak(self, cycle: int) -> float:
        """The highest learning rate of a cycle: lr_min + (lr_max − lr_min) · decay^cycle."""
        c = _integer("cycle", cycle, 0)
        return self.lr_min + (self.lr_max - self.lr_min) * self.decay**c

    def __call__(self, step: int) -> float:
        s = _step(step)
        pos = s % self.cycle_steps
        up = self.rise_steps
        if pos <= up:
            frac = pos / up
        else:
            frac = (self.cycle_steps - pos) / (self.cycle_steps - up)
        return self.lr_min + (self.peak(s // self.cycle_steps) - self.lr_min) * frac


@dataclass(frozen=True)
class GeometricTemperature:
    """Temperature decaying geometrically from `t_start` to `t_end` over `steps`, then held."""

    t_start: float
    t_end: float
    steps: int

    def __post_init__(self) -> None:
        start = _finite("t_start", self.t_start)
        end = _finite("t_end", self.t_end)
        if end <= 0:
            raise ScheduleError(f"t_end must be positive, got {end}", field="t_end")
        if start < end:
            raise ScheduleError(f"t_start ({start}) must be at least t_end ({end}): the temperature anneals",
                                field="t_start")
        _integer("steps", self.steps, 1)

    def __call__(self, step: int) -> float:
        s = _step(step)
        if s >= self.steps:
            return float(self.t_end)
        return self.t_start * (self.t_end / self.t_start) ** (s / self.steps)


Schedule = Union[CyclicallyAnnealedLR, GeometricTemperature]

#: schedule kind (as written in a config) -> class.
SCHEDULES: dict[str, type] = {
    "calr": CyclicallyAnnealedLR,
    "geometric_temperature": GeometricTemperature,
}


def make_schedule(config: Mapping[str, object]) -> Schedule:
    """Build a schedule from {"kind": ..., parameters...}; an unknown kind or key is named."""
    if not isinstance(config, Mapping):
        raise ScheduleError(f"a schedule config must be an object, got {type(config).__name__}", field="config")
    params = dict(config)
    kind = params.pop("kind", None)
    cls = SCHEDULES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ScheduleError(f"unknown schedule kind {kind!r}; known: {', '.join(sorted(SCHEDULES))}", field="kind")
    fields = cls.__dataclass_fields__
    for key in params:
        if key not in fields:
            raise ScheduleError(f"schedule {kind} has no parameter {key!r}; it takes {', '.join(fields)}", field=key)
    missing = [
        name for name, f in fields.items() if name not in params and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ScheduleError(f"schedule {kind} is missing {', '.join(missing)}", field=missing[0])
    return cls(**params)


def schedule_to_json(schedule: Schedule) -> dict:
    """The config object that `make_schedule` turns back into this schedule (docs/lowrank.md: logged with a run)."""
    kind = next(name for name, cls in SCHEDULES.items() if isinstance(schedule, cls))
    return {"kind": kind, **asdict(schedule)}


def schedule_values(schedule: Schedule, steps: int) -> list[float]:
    """The schedule's values at steps 0 .. steps-1 (for plots and logs)."""
    return [schedule(s) for s in range(_integer("steps", steps, 0))]
