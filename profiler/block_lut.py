"""The isolated-block latency lookup table: the baseline of OFA- and ProxylessNAS-style LUTs.

A LUT predicts a configuration's latency as the sum of its blocks' times, each block timed
alone on the agent (bench_spec `block`, device_agents/PROTOCOL.md): a network of only that
block, fed an input of the shape and width the whole network feeds it. An entry is keyed
by the block's position and its widths, so any configuration that gives a block the same
widths reuses the entry.

This LUT is filled on demand: an entry is timed the first time a configuration asked for
needs it, and kept (in memory, and in a JSON file when given one, so a later run resumes).
For the configurations asked for it predicts exactly what a LUT filled for every entry
would; it just never times the entries no one asks about.

Two unit sizes: `factor` times each latency factor alone (the space's blocks: an inverted
residual is two, its expansion and its projection), `block` times each network block
(an inverted residual's expansion and projection together, as OFA keys its MBConv blocks).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from widthwise.device_agents.spaces import Space

from .errors import IdentityMismatch

FORMAT = "widthwise-block-lut/1"
GROUPINGS = ("block", "factor")
#: per entry: a warm-up run, then 5 repeats of at least 2 ms each (isolated blocks are small, and
#: the thread CPU clock leaves out the time other processes take)
DEFAULT_TIMING: Mapping[str, object] = {"warmup": 1, "repeat": 5, "min_repeat_ms": 2.0, "threads": 1}
STATISTICS = ("median", "min", "mean")


def lut_units(space: Space, grouping: str = "block") -> tuple[tuple[int, int], ...]:
    """The runs of blocks a LUT times alone, as (first, count): each block (`factor`), or
    each network block, an expansion together with the projection that shares its hidden width."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    templates = space.templates
    units, k = [], 0
    while k < len(templates):
        t = templates[k]
        nxt = templates[k + 1] if k + 1 < len(templates) else None
        joined = (grouping == "block" and nxt is not None and nxt.kind == "ir_project" and (
            (t.kind == "ir_expand" and nxt.hidden_from == t.hidden_from)
            or (t.kind == "mb_expand" and t.option_from is not None and nxt.option_from == t.option_from)))
        units.append((k, 2 if joined else 1))
        k += 2 if joined else 1
    return tuple(units)


@dataclass
class LutStats:
    """What filling the LUT cost: entries timed by this process, their seconds, entries reused."""

    timed: int = 0
    seconds: float = 0.0
    reused: int = 0


@dataclass
class BlockLUT:
    """An isolated-block LUT of one space on one agent setting (module docstring)."""

    space: Space
    runtime: str = "onnxruntime"
    dtype: str = "float32"
    grouping: str = "block"
    clock: str = "thread_cpu"
    statistic: str = "median"
    timing: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULT_TIMING))
    path: str | None = None
    entries: dict[str, float] = field(default_factory=dict)
    stats: LutStats = field(default_factory=LutStats)

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        self.units = lut_units(self.space, self.grouping)
        if self.path and os.path.exists(self.path):
            self._load(self.path)

    # --- identity and persistence ---------------------------------------------------------------

    def identity(self) -> dict:
        """What the entries were timed for: a file of another identity is refused."""
        return {
            "space": self.space.name, "params": self.space.param_dict, "runtime": self.runtime, "dtype": self.dtype,
            "grouping": self.grouping, "clock": self.clock, "statistic": self.statistic, "timing": dict(self.timing),
        }

    def _load(self, path: str) -> None:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        stored = data.get("identity", {})
        for key, value in self.identity().items():
            if stored.get(key) != value:
                raise IdentityMismatch(path, key, stored.get(key), value)
        self.entries.update({str(k): float(v) for k, v in data.get("entries", {}).items()})

    def save(self) -> None:
        """Write the entries to `path` (atomically), when the LUT has one."""
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"format": FORMAT, "identity": self.identity(), "entries": self.entries}, fh, indent=0)
        os.replace(tmp, self.path)

    # --- entries --------------------------------------------------------------------------------

    def entry_key(self, unit: tuple[int, int], widths: Sequence[int]) -> str:
        """An entry's key: the unit's first block, and the (in, hidden, out) widths of its blocks,
        with the kernel of a block whose kernel an option sets."""
        first, count = unit
        blocks = self.space.blocks(widths)[first : first + count]
        opt = [self.space.templates[b.index].option_from is not None for b in blocks]
        return json.dumps([first, [[b.cin, b.hidden, b.cout] + ([b.kernel] if o else []) for b, o in zip(blocks, opt)]],
                          separators=(",", ":"))

    def _skipped(self, unit: tuple[int, int], widths: Sequence[int]) -> bool:
        """Whether every block of the unit is skipped (an `identity`: 0 ms, nothing to time)."""
        first, count = unit
        return all(b.kind == "identity" for b in self.space.blocks(widths)[first : first + count])

    def _time_entry(self, client, unit: tuple[int, int], widths: Sequence[int]) -> float:
        spec = {"space": self.space.name, "params": self.space.param_dict, "widths": [int(w) for w in widths],
                "dtype": self.dtype}
        timing = {**self.timing, "clock": self.clock}
        body = client.bench_spec(spec, runtime=self.runtime, timing=timing, block=unit[0], block_count=unit[1])
        return float(body["stats"][self.statistic])

    def entry_ms(self, client, unit: tuple[int, int], widths: Sequence[int]) -> float:
        """The isolated time of one unit with these widths: from the table, else timed now and kept
        (a skipped unit is 0 ms)."""
        if self._skipped(unit, widths):
            return 0.0
        key = self.entry_key(unit, widths)
        if key in self.entries:
            self.stats.reused += 1
            return self.entries[key]
        started = time.monotonic()
        ms = self._time_entry(client, unit, widths)
        self.stats.seconds += time.monotonic() - started
        self.stats.timed += 1
        self.entries[key] = ms
        return ms

    def breakdown(self, client, widths: Sequence[int]) -> list[float]:
        """Each unit's isolated ms for this configuration, in unit order."""
        widths = self.space.validate_widths([int(w) for w in widths])
        return [self.entry_ms(client, unit, widths) for unit in self.units]

    def predict(self, client, widths: Sequence[int]) -> float:
        """The LUT's latency of a configuration: the sum of its units' isolated times."""
        return float(sum(self.breakdown(client, widths)))

    def predict_many(self, client, configurations: Sequence[Sequence[int]], *, save_every: int = 25,
                     progress: bool = False) -> np.ndarray:
        """`predict` of each configuration; entries are saved every `save_every` configurations."""
        out = np.empty(len(configurations))
        try:
            for i, widths in enumerate(configurations):
                out[i] = self.predict(client, widths)
                if (i + 1) % save_every == 0:
                    self.save()
                    if progress:
                        print(f"  LUT: {i + 1}/{len(configurations)} configurations, {len(self.entries)} entries, "
                              f"{self.stats.seconds:.0f} s timing", file=sys.stderr, flush=True)
        finally:
            self.save()
        return out
