"""The linear system of a latency fit: one unknown per entry of every latency factor.

A configuration's latency is a constant plus one term per factor of the space (a block's
op over the one or two variables it reads: unary or pairwise). This module numbers those
terms, builds the sparse 0/1 design matrix of sampled configurations (one 1 per factor
per row), the per-term features of the structured prior (MACs, activation and weight
sizes, a constant, tiled MACs), the groups the prior pools its coefficients over, and
the pairs of neighbouring terms that monotonicity compares. A chain is the special case:
block k is factor k over layers (k-1, k), numbered exactly as per-block matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from widthwise.device_agents.errors import UnknownSpace
from widthwise.device_agents.spaces import BlockSpec, Space, block_counts, kind_registry

# --- activation sizes, one handler per block kind -------------------------------------------

ActivationCounter = Callable[[BlockSpec], tuple[int, int]]
ACTIVATION_COUNTERS: dict[str, ActivationCounter] = {}


#: @register_activations("kind"): the (input-side, output-side) activation counter of a kind
register_activations = kind_registry(ACTIVATION_COUNTERS)


def block_activations(block: BlockSpec) -> tuple[int, int]:
    """Elements a block reads and writes besides its weights (input side, output side).

    Every block kind of the spaces registers its own counter: a kind without one is an
    error naming it, never a guess (tests/device_agents/test_spaces.py checks the registries)."""
    counter = ACTIVATION_COUNTERS.get(block.kind)
    if counter is None:
        raise UnknownSpace(
            f"no activation counter for block kind {block.kind!r} in profiler.fit_design; "
            f"it knows {', '.join(sorted(ACTIVATION_COUNTERS))}",
            kind=block.kind,
        )
    return counter(block)


def _residual(b: BlockSpec) -> tuple[int, int]:
    """A residual Add's extra traffic: it reads the skip input and the op's output, writes the sum."""
    out = b.cout * b.out_hw * b.out_hw
    return (2 * out, out) if b.residual else (0, 0)


@register_activations("conv")
def _conv_activations(b: BlockSpec) -> tuple[int, int]:
    return b.cin * b.in_hw * b.in_hw, b.cout * b.out_hw * b.out_hw


@register_activations("dwsep")
def _dwsep_activations(b: BlockSpec) -> tuple[int, int]:
    # the depthwise output (cin channels at the output resolution) is read again by the 1x1
    mid = b.cin * b.out_hw * b.out_hw
    return b.cin * b.in_hw * b.in_hw + mid, mid + b.cout * b.out_hw * b.out_hw


@register_activations("ir_dwproject")
def _ir_dwproject_activations(b: BlockSpec) -> tuple[int, int]:
    # depthwise on cin, its output read again by the linear 1x1 projection, then the Add if any
    mid = b.cin * b.out_hw * b.out_hw
    add_in, add_out = _residual(b)
    return b.cin * b.in_hw * b.in_hw + mid + add_in, mid + b.cout * b.out_hw * b.out_hw + add_out


@register_activations("ir_expand")
def _ir_expand_activations(b: BlockSpec) -> tuple[int, int]:
    # the 1x1 expansion writes `hidden` channels at the input size, which the depthwise reads
    expanded = b.hidden * b.in_hw * b.in_hw
    return b.cin * b.in_hw * b.in_hw + expanded, expanded + b.hidden * b.out_hw * b.out_hw


@register_activations("ir_project")
def _ir_project_activations(b: BlockSpec) -> tuple[int, int]:
    add_in, add_out = _residual(b)
    return b.cin * b.in_hw * b.in_hw + add_in, b.cout * b.out_hw * b.out_hw + add_out


def _se_activations(hidden: int, hw: int) -> tuple[int, int]:
    """A squeeze-excitation's traffic: the pool and the gate's multiply read the hidden tensor,
    the multiply writes it."""
    x = hidden * hw * hw
    return 2 * x, x


@register_activations("mb_expand")
def _mb_expand_activations(b: BlockSpec) -> tuple[int, int]:
    a_in, a_out = _ir_expand_activations(b)
    s_in, s_out = _se_activations(b.hidden, b.out_hw) if b.se else (0, 0)
    return a_in + s_in, a_out + s_out


@register_activations("mb_block")
def _mb_block_activations(b: BlockSpec) -> tuple[int, int]:
    # the expansion, depthwise and SE of mb_expand, then the projection reads the hidden tensor
    a_in, a_out = _mb_expand_activations(b)
    add_in, add_out = _residual(b)
    return a_in + b.hidden * b.out_hw * b.out_hw + add_in, a_out + b.cout * b.out_hw * b.out_hw + add_out


@register_activations("identity")
def _identity_activations(b: BlockSpec) -> tuple[int, int]:
    return 0, 0


@register_activations("pool_mix_fc")
def _pool_mix_fc_activations(b: BlockSpec) -> tuple[int, int]:
    return b.cin * b.in_hw * b.in_hw + b.cin + b.hidden, b.hidden + b.cout


@register_activations("pool_fc")
def _pool_fc_activations(b: BlockSpec) -> tuple[int, int]:
    return b.cin * b.in_hw * b.in_hw + b.cin, b.cout


@register_activations("embedding")
def _embedding_activations(b: BlockSpec) -> tuple[int, int]:
    tokens = b.attr("tokens")
    return tokens, tokens * b.cout


@register_activations("proj_dense")
def _proj_dense_activations(b: BlockSpec) -> tuple[int, int]:
    tokens, dim = b.attr("tokens"), b.attr("dim")
    return tokens * b.cin, tokens * dim + dim + b.cout


@register_activations("dense")
def _dense_activations(b: BlockSpec) -> tuple[int, int]:
    return b.cin, b.cout


#: names of the prior's per-term features, in column order. `macs_tileT` counts the MACs of
#: the op with all its widths rounded up to a multiple of T: kernels work on whole SIMD
#: tiles, so a width just past a tile boundary costs like the next full tile.
FEATURES = ("macs", "act_in", "act_out", "weights", "one", "macs_tile16", "macs_tile32")
TILES = (16, 32)


def _round_up(width: int, tile: int) -> int:
    return -(-width // tile) * tile


def _tiled(op: BlockSpec, tile: int) -> BlockSpec:
    """The same op with its input, hidden and output widths rounded up to whole tiles."""
    return replace(op, cin=_round_up(op.cin, tile), cout=_round_up(op.cout, tile), hidden=_round_up(op.hidden, tile))


#: block kinds whose terms are fixed at 0 ms: not unknowns of the fit (a skipped block)
ZERO_KINDS = ("identity",)


def prior_group(op: BlockSpec) -> str:
    """The group whose terms share the prior's coefficients: the op kind, its kernel, its
    activation (when not the default ReLU6), a squeeze-excitation, and whether it ends with a
    residual Add (a 3x3 stem and a 1x1 head are both `conv`, but not alike)."""
    return (f"{op.kind}/k{op.kernel}" + ("" if op.activation == "relu6" else f"/{op.activation}")
            + ("/se" if op.se else "") + ("/add" if op.residual else ""))


@dataclass(frozen=True)
class TermLayout:
    """How the unknowns of a space are numbered: factor f's entry at choice indices (i, j) is
    offsets[f] + i * shapes[f][1] + j (a unary factor's entry i is offsets[f] + i).

    `groups` is each factor's prior group (of its first entry); `term_groups` each term's, since
    an option variable changes the kernel within a factor. `fixed` marks the terms held at 0 ms
    (`ZERO_KINDS`); `monotone_axes` says, per factor, along which axes monotonicity applies
    (not along an option variable's: its codes are not ordered)."""

    space: Space
    offsets: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    variables: tuple[tuple[int, ...], ...]
    groups: tuple[str, ...]
    macs: np.ndarray
    params: np.ndarray
    features: np.ndarray
    factor_of_term: np.ndarray
    term_groups: tuple[str, ...]
    fixed: np.ndarray
    monotone_axes: tuple[tuple[bool, ...], ...]

    @property
    def num_terms(self) -> int:
        return int(self.offsets[-1] + np.prod(self.shapes[-1]))

    @property
    def num_factors(self) -> int:
        return len(self.shapes)

    # a chain's factors are its blocks: the names the chain fit used
    num_blocks = num_factors

    @property
    def block_of_term(self) -> np.ndarray:
        return self.factor_of_term

    def levels(self, widths: np.ndarray) -> np.ndarray:
        """(N, V) choice indices of N configurations; ValueError naming a width off its variable's grid."""
        space = self.space
        widths = np.asarray(widths, dtype=np.int64).reshape(-1, space.num_layers)
        level = np.empty(widths.shape, dtype=np.int64)
        noun = "layer" if space.is_chain else "variable"
        for v, layer in enumerate(space.layers):
            grid = np.asarray(layer.choices, dtype=np.int64)
            pos = np.minimum(np.searchsorted(grid, widths[:, v]), len(grid) - 1)
            bad = grid[pos] != widths[:, v]
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"width {int(widths[row, v])} of {noun} {v} ({layer.name}) is not one of its "
                    f"choices {list(layer.choices)}"
                )
            level[:, v] = pos
        return level

    def term_indices(self, widths: np.ndarray) -> np.ndarray:
        """(N, F) term numbers of N configurations: the entry each factor takes."""
        level = self.levels(widths)
        out = np.empty((level.shape[0], self.num_factors), dtype=np.int64)
        for f, (offset, variables) in enumerate(zip(self.offsets, self.variables)):
            flat = np.zeros(level.shape[0], dtype=np.int64)
            for v in variables:
                flat = flat * len(self.space.layers[v].choices) + level[:, v]
            out[:, f] = offset + flat
        return out

    def design(self, widths: np.ndarray) -> sp.csr_matrix:
        """The sparse (N, P) 0/1 matrix whose row sums the terms of a configuration."""
        idx = self.term_indices(widths)
        n = idx.shape[0]
        rows = np.repeat(np.arange(n), idx.shape[1])
        data = np.ones(idx.size)
        if self.fixed.any():
            data[self.fixed[idx.ravel()]] = 0.0  # a fixed term adds its 0 ms: no unknown to fit
        return sp.csr_matrix((data, (rows, idx.ravel())), shape=(n, self.num_terms))

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """A flat per-term vector as one array per factor, one axis per variable."""
        return [np.asarray(values[o : o + int(np.prod(s))]).reshape(s) for o, s in zip(self.offsets, self.shapes)]

    def _pooled_basis(self, owner: np.ndarray, columns: int) -> sp.csr_matrix:
        """(P, columns x features) basis: each term's features in its owner's columns, scaled to max 1."""
        cols = self.features.shape[1]
        rows = np.repeat(np.arange(self.num_terms), cols)
        cidx = (owner[:, None] * cols + np.arange(cols)[None, :]).ravel()
        basis = sp.csr_matrix((self.features.ravel(), (rows, cidx)), shape=(self.num_terms, columns * cols))
        basis.eliminate_zeros()
        scale = np.asarray(abs(basis).max(axis=0).todense()).ravel()
        scale[scale == 0] = 1.0
        return sp.csr_matrix(basis @ sp.diags(1.0 / scale))

    def prior_basis(self) -> sp.csr_matrix:
        """(P, factors x features) block-diagonal basis: each factor's own features, scaled to max 1."""
        return self._pooled_basis(self.factor_of_term, self.num_factors)

    def factor_kinds(self) -> tuple[str, ...]:
        """The kind of each factor (conv, dwsep, ir_expand, pool_fc, ...)."""
        return tuple(f.kind for f in self.space.factors)

    block_kinds = factor_kinds

    def shared_prior_basis(self) -> sp.csr_matrix:
        """(P, groups x features) basis whose features are pooled over all factors of one prior
        group (`prior_group`), scaled to max 1: no single factor's cost can drift alone."""
        index = {g: i for i, g in enumerate(dict.fromkeys(self.term_groups))}
        group_of_term = np.asarray([index[g] for g in self.term_groups], dtype=np.int64)
        return self._pooled_basis(group_of_term, len(index))

    def monotone_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(smaller, larger) term numbers of neighbours one choice apart along a monotone axis of a factor."""
        lo, hi = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for o, shape, axes in zip(self.offsets, self.shapes, self.monotone_axes):
            grid = o + np.arange(int(np.prod(shape))).reshape(shape)
            for axis in (a for a in range(len(shape)) if axes[a]):
                lo.append(np.delete(grid, -1, axis=axis).ravel())
                hi.append(np.delete(grid, 0, axis=axis).ravel())
        return np.concatenate(lo).astype(np.int64), np.concatenate(hi).astype(np.int64)


def _factor_terms(space: Space, f: int) -> tuple[list[tuple[int, int]], list[tuple[float, ...]], list[str]]:
    """Exact (MACs, params), the prior's features and the prior group of every entry of factor f,
    row-major. A fixed (0 ms) entry has no features: nothing of the prior reaches it."""
    counts, feats, groups = [], [], []
    choices = space.factor_choices(f)
    for values in np.ndindex(*[len(c) for c in choices]):
        op = space.factor_op(f, [choices[a][i] for a, i in enumerate(values)])
        m, p = block_counts(op)
        counts.append((m, p))
        groups.append(prior_group(op))
        if op.kind in ZERO_KINDS:
            feats.append((0.0,) * len(FEATURES))
            continue
        a_in, a_out = block_activations(op)
        tiled = [block_counts(_tiled(op, t))[0] for t in TILES]
        feats.append((m, a_in, a_out, p, 1.0, *tiled))
    return counts, feats, groups


def term_layout(space: Space) -> TermLayout:
    """Number the unknowns of a space and compute each term's exact counts and features."""
    offsets, shapes, groups = [], [], []
    counts: list[tuple[int, int]] = []
    feats: list[tuple[float, ...]] = []
    owner: list[int] = []
    term_groups: list[str] = []
    for f, factor in enumerate(space.factors):
        offsets.append(len(counts))
        shapes.append(tuple(len(space.layers[v].choices) for v in factor.variables))
        c, x, g = _factor_terms(space, f)
        counts += c
        feats += x
        owner += [f] * len(c)
        term_groups += g
        groups.append(g[0])
    arr = np.asarray(counts, dtype=np.float64).reshape(-1, 2)
    return TermLayout(
        space=space,
        offsets=tuple(offsets),
        shapes=tuple(shapes),
        variables=tuple(f.variables for f in space.factors),
        groups=tuple(groups),
        macs=arr[:, 0].copy(),
        params=arr[:, 1].copy(),
        features=np.asarray(feats, dtype=np.float64),
        factor_of_term=np.asarray(owner, dtype=np.int64),
        term_groups=tuple(term_groups),
        fixed=np.asarray([g.split("/")[0] in ZERO_KINDS for g in term_groups], dtype=bool),
        monotone_axes=tuple(tuple(not space.layers[v].options for v in f.variables) for f in space.factors),
    )
