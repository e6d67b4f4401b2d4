"""What the store hands the fit: a space, sampled widths and their measured latencies.

One small frozen record keeps the collector (which owns SQLite and drift correction) and
the fitter (which owns the linear system) independent of each other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from widthwise.device_agents.spaces import Space


@dataclass(frozen=True)
class TrainingData:
    """N timed configurations of one space on one device and runtime setting.

    widths:      (N, V) integers, one per variable of the space (`space.layers` order), each
                 on its variable's grid.
    latency_ms:  (N,) the per-sample statistic (`statistic`), drift-normalised if asked.
    sample_ids:  (N,) the store's ids, so the fit can name outliers to re-time.
    identity:    device fingerprint and runtime settings (what the table's `device` and
                 `runtime` fields are written from).
    """

    space: Space
    widths: np.ndarray
    latency_ms: np.ndarray
    sample_ids: np.ndarray
    statistic: str = "min"
    identity: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.latency_ms)
        if self.widths.shape != (n, self.space.num_layers):
            raise ValueError(f"widths has shape {self.widths.shape}, expected ({n}, {self.space.num_layers})")
        if len(self.sample_ids) != n:
            raise ValueError(f"sample_ids has {len(self.sample_ids)} entries, expected {n}")

    def __len__(self) -> int:
        return len(self.latency_ms)

    def subset(self, mask: np.ndarray) -> "TrainingData":
        """The samples selected by a boolean mask or an index array (e.g. the share a fit held out)."""
        return TrainingData(
            self.space,
            self.widths[mask],
            self.latency_ms[mask],
            self.sample_ids[mask],
            self.statistic,
            self.identity,
        )
