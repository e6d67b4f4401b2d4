"""Per-layer width marginals of the chain's Gibbs distribution, by sum-product in log space.

p(widths) is proportional to exp(-(cost + gamma * latency) / T). As the temperature T falls
the distribution narrows towards the Lagrangian optimum: the adaptive sampling distribution
a supernet's training uses to spend its steps on the widths the budget will pick.
"""

from __future__ import annotations

import numpy as np

from .chain import Chain


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True)), axis=axis)


def log_potentials(chain: Chain, gamma: float, temperature: float) -> list[np.ndarray]:
    """Per block, the log potential -(cost + gamma * latency) / T."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return [-(c + gamma * t) / temperature for c, t in zip(chain.cost, chain.latency)]


def marginals(chain: Chain, gamma: float, temperature: float) -> list[np.ndarray]:
    """Per layer, the probability of each width choice (each row sums to 1)."""
    logs = log_potentials(chain, gamma, temperature)
    forward = [logs[0][0]]
    for m in logs[1:-1]:
        forward.append(_logsumexp(forward[-1][:, None] + m, axis=0))
    backward = [logs[-1][:, 0]]
    for m in reversed(logs[1:-1]):
        backward.append(_logsumexp(m + backward[-1][None, :], axis=1))
    backward.reverse()
    out = []
    for alpha, beta in zip(forward, backward):
        joint = alpha + beta
        joint = joint - _logsumexp(joint, axis=0)
        probs = np.exp(joint)
        out.append(probs / probs.sum())
    return out

