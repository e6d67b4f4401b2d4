"""Per-variable width marginals of a tree MRF's Gibbs distribution, by sum-product in log space.

p(widths) is proportional to exp(-(cost + gamma * latency) / T). As the temperature T falls
the distribution narrows towards the Lagrangian optimum: the adaptive sampling distribution
a supernet's training uses to spend its steps on the widths the budget will pick.

An upward pass (leaves towards the roots) gives each variable's inside belief and its
message to its parent; a downward pass gives each variable's outside belief, what the rest
of the tree says about it (its parent's whole belief less its own message). Both passes
take every variable of one height, or of one depth, in one batch over the tree's padded
stacks (`TreeMRF.stacked`), so a pass costs a few numpy operations per level, not per
variable. Log values are of the order of energy / T, and every result carries a rounding
error of that order times the float epsilon, whether sums or differences made it.
"""

from __future__ import annotations

import numpy as np

from .tree import TreeMRF

#: The most negative float: a row of log values with no finite entry is shifted by it, not by -inf.
_LOWEST = np.finfo(np.float64).min


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(values))) along `axis`, shifted by the maximum; -inf where every entry is -inf."""
    top = np.maximum.reduce(values, axis=axis)
    np.maximum(top, _LOWEST, out=top)
    shifted = values - np.expand_dims(top, axis)
    np.exp(shifted, out=shifted)
    out = np.log(np.add.reduce(shifted, axis=axis))
    out += top
    return out


def log_potentials(tree: TreeMRF, gamma: float, temperature: float) -> np.ndarray:
    """-(cost + gamma * latency) / T stacked as `TreeMRF.stacked` (rows 0..K-1 edges, row K unaries; -inf padding)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    latency, cost = tree.stacked
    logs = latency * gamma
    logs += cost
    logs *= -1.0 / temperature
    return logs


def _upward(tree: TreeMRF, logs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each variable's inside belief (its unary plus its children's messages) and its message to its parent."""
    inside = logs[:, -1].copy()
    up = np.full_like(inside, -np.inf)
    parent = np.asarray(tree.parent)
    for group in tree.levels[0]:
        if group.size == 1:  # one variable (every level of a chain): plain indexing is cheaper
            v = int(group[0])
            up[v] = _logsumexp(logs[v, :-1] + inside[v], axis=1)
            inside[tree.parent[v]] += up[v]
            continue
        up[group] = _logsumexp(logs[group, :-1] + inside[group][:, None, :], axis=2)
        np.add.at(inside, parent[group], up[group])
    return inside, up


def _downward(tree: TreeMRF, logs: np.ndarray, inside: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Each variable's outside belief: the parent's whole belief less the variable's own message, through the edge."""
    outside = np.where(np.isfinite(logs[:, -1]), 0.0, -np.inf)  # a root's: nothing beyond it
    parent = np.asarray(tree.parent)
    for group in tree.levels[1]:
        if group.size == 1:
            v = int(group[0])
            p = tree.parent[v]
            rows = len(tree.choices[p])
            context = outside[p, :rows] + inside[p, :rows]
            context -= up[v, :rows]
            outside[v] = _logsumexp(logs[v, :rows] + context[:, None], axis=0)
            continue
        above = parent[group]
        context = outside[above] + inside[above]
        finite = np.isfinite(context)  # padding stays -inf (-inf less -inf is no number)
        context[finite] -= up[group][finite]
        outside[group] = _logsumexp(logs[group, :-1] + context[:, :, None], axis=1)
    return outside


def marginals(tree: TreeMRF, gamma: float, temperature: float) -> list[np.ndarray]:
    """Per variable, the probability of each width choice (each row sums to 1)."""
    logs = log_potentials(tree, gamma, temperature)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf on padding is intended
        inside, up = _upward(tree, logs)
        joint = inside + _downward(tree, logs, inside, up)
    joint -= np.maximum(np.maximum.reduce(joint, axis=1), _LOWEST)[:, None]
    probs = np.exp(joint)
    probs /= np.add.reduce(probs, axis=1)[:, None]
    return [probs[v, :size] for v, size in enumerate(tree.sizes)]
