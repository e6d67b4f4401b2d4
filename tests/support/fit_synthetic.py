"""Synthetic timings with a known answer, for testing and benchmarking the fit.

A ground-truth table of factor entries (a chain's per-block matrices, or any tree of
factors) is generated from a cost model the fit's prior cannot express exactly (work
padded to tiles of 16 channels that the prior only approximates, a per-term perturbation), and
samples are drawn from it with multiplicative noise and occasional slow bursts, the way
timings on a shared machine look.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from widthwise.device_agents.spaces import Space

from widthwise.profiler.dataset import TrainingData
from widthwise.profiler.fit_design import TermLayout, block_activations, term_layout


@dataclass(frozen=True)
class GroundTruth:
    """The true per-term latencies (ms) and constant of a synthetic device."""

    layout: TermLayout
    term_ms: np.ndarray
    constant_ms: float

    def latency(self, widths: np.ndarray) -> np.ndarray:
        """Noise-free latency (ms) of each configuration (rows of widths)."""
        idx = self.layout.term_indices(widths)
        return self.constant_ms + self.term_ms[idx].sum(axis=1)


def make_ground_truth(
    space: Space, seed: int = 0, tile: int = 16, jitter: float = 0.01, pooled: bool = False
) -> GroundTruth:
    """A plausible device: MAC, memory and per-call costs, tile padding, a little per-term jitter.

    Costs are drawn per factor (a chain's factors are its blocks). `pooled`: every factor pays
    the same cost per MAC, element and call (no per-factor spread)."""
    rng = np.random.default_rng(seed)
    layout = term_layout(space)
    ms_per_gmac = 25.0 * rng.uniform(0.8, 1.2, size=layout.num_factors)
    ms_per_gelem = 150.0 * rng.uniform(0.5, 1.5, size=layout.num_factors)
    ms_per_call = 0.02 * rng.uniform(0.5, 1.5, size=layout.num_factors)
    if pooled:
        ms_per_gmac, ms_per_gelem, ms_per_call = (np.full(layout.num_factors, v) for v in (25.0, 150.0, 0.02))
    term = np.empty(layout.num_terms)
    t = 0
    for f in range(layout.num_factors):
        choices = space.factor_choices(f)
        for entry in np.ndindex(*[len(c) for c in choices]):
            op = space.factor_op(f, [choices[a][i] for a, i in enumerate(entry)])
            padded = replace(op, cin=_pad(op.cin, tile), cout=_pad(op.cout, tile), hidden=_pad(op.hidden, tile))
            act_in, act_out = block_activations(op)
            term[t] = (
                ms_per_gmac[f] * layout.features[t, 0] * 1e-9 * _tile_ratio(op, padded)
                + ms_per_gelem[f] * (act_in + act_out) * 1e-9
                + ms_per_call[f]
            )
            t += 1
    term *= 1.0 + jitter * rng.standard_normal(layout.num_terms)
    return GroundTruth(layout, np.maximum(term, 0.0), constant_ms=0.15)


def _pad(width: int, tile: int) -> int:
    return -(-width // tile) * tile


def _tile_ratio(block, padded) -> float:
    # pointwise work is done in whole tiles: MACs of the padded block over the true MACs
    true_macs = block.cin * block.cout
    return (padded.cin * padded.cout) / true_macs if true_macs else 1.0


def random_widths(space: Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """n configurations, each variable's value drawn uniformly from its choices."""
    cols = [rng.choice(np.asarray(layer.choices), size=n) for layer in space.layers]
    return np.stack(cols, axis=1).astype(np.int64)


@dataclass(frozen=True)
class SyntheticRun:
    """Noisy samples of a ground truth, and which sample ids got a burst."""

    data: TrainingData
    truth: GroundTruth
    burst_ids: tuple[int, ...]


def synthetic_samples(
    truth: GroundTruth,
    n: int,
    *,
    seed: int = 0,
    noise: float = 0.025,
    burst_rate: float = 0.04,
    burst_range: tuple[float, float] = (0.10, 0.40),
    statistic: str = "min",
) -> SyntheticRun:
    """n timed configurations: truth x lognormal(noise), a share `burst_rate` slowed by a burst."""
    rng = np.random.default_rng(seed)
    space = truth.layout.space
    widths = random_widths(space, n, rng)
    clean = truth.latency(widths)
    measured = clean * np.exp(noise * rng.standard_normal(n))
    bursts = rng.random(n) < burst_rate
    measured[bursts] *= 1.0 + rng.uniform(*burst_range, size=int(bursts.sum()))
    ids = np.arange(1, n + 1, dtype=np.int64)
    identity = {
        "device": {"name": "synthetic", "cpu": "model", "cores": 1, "os": "none"},
        "runtime": {"name": "synthetic", "version": "0", "threads": 1, "dtype": "float32"},
    }
    data = TrainingData(space, widths, measured, ids, statistic, identity)
    return SyntheticRun(data, truth, tuple(int(i) for i in ids[bursts]))
