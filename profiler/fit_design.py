"""The linear system of a latency fit: one unknown per (block, in-width, out-width) term.

A configuration's latency is a constant plus one term per block of the chain; this module
numbers those terms, builds the sparse 0/1 design matrix of sampled configurations, the
per-term features of the structured prior (MACs, activation and weight sizes, a constant)
and the pairs of neighbouring terms that monotonicity compares.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    error naming it, never a guess (tests/device_agents/test_spaces.py checks the six registries)."""
    counter = ACTIVATION_COUNTERS.get(block.kind)
    if counter is None:
        raise UnknownSpace(
            f"no activation counter for block kind {block.kind!r} in profiler.fit_design; "
            f"it knows {', '.join(sorted(ACTIVATION_COUNTERS))}",
            kind=block.kind,
        )
    return counter(block)


@register_activations("conv")
def _conv_activations(b: BlockSpec) -> tuple[int, int]:
    return b.cin * b.in_hw * b.in_hw, b.cout * b.out_hw * b.out_hw


@register_activations("dwsep")
def _dwsep_activations(b: BlockSpec) -> tuple[int, int]:
    # the depthwise output (cin channels at the output resolution) is read again by the 1x1
    mid = b.cin * b.out_hw * b.out_hw
    return b.cin * b.in_hw * b.in_hw + mid, mid + b.cout * b.out_hw * b.out_hw


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
#: the block with both widths rounded up to a multiple of T: kernels work on whole SIMD
#: tiles, so a width just past a tile boundary costs like the next full tile.
FEATURES = ("macs", "act_in", "act_out", "weights", "one", "macs_tile16", "macs_tile32")
TILES = (16, 32)


def _round_up(width: int, tile: int) -> int:
    return -(-width // tile) * tile


@dataclass(frozen=True)
class TermLayout:
    """How the unknowns of a space are numbered: block k's (i, j) term is offsets[k] + i*n_out + j."""

    space: Space
    offsets: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]
    macs: np.ndarray
    params: np.ndarray
    features: np.ndarray
    block_of_term: np.ndarray

    @property
    def num_terms(self) -> int:
        return int(self.offsets[-1] + self.shapes[-1][0] * self.shapes[-1][1])

    @property
    def num_blocks(self) -> int:
        return len(self.shapes)

    def term_indices(self, widths: np.ndarray) -> np.ndarray:
        """(N, L+1) term numbers of N configurations; ValueError naming a width off the grid."""
        widths = np.asarray(widths, dtype=np.int64).reshape(-1, self.space.num_layers)
        n = widths.shape[0]
        level = np.empty((n, self.space.num_layers + 2), dtype=np.int64)
        level[:, 0] = 0
        level[:, -1] = 0
        for k, layer in enumerate(self.space.layers):
            grid = np.asarray(layer.choices, dtype=np.int64)
            pos = np.searchsorted(grid, widths[:, k])
            pos_clipped = np.minimum(pos, len(grid) - 1)
            bad = grid[pos_clipped] != widths[:, k]
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"width {int(widths[row, k])} of layer {k} ({layer.name}) is not one of its "
                    f"choices {list(layer.choices)}"
                )
            level[:, k + 1] = pos_clipped
        out = np.empty((n, self.num_blocks), dtype=np.int64)
        for k, (_, n_out) in enumerate(self.shapes):
            out[:, k] = self.offsets[k] + level[:, k] * n_out + level[:, k + 1]
        return out

    def design(self, widths: np.ndarray) -> sp.csr_matrix:
        """The sparse (N, P) 0/1 matrix whose row sums the terms of a configuration."""
        idx = self.term_indices(widths)
        n = idx.shape[0]
        rows = np.repeat(np.arange(n), idx.shape[1])
        data = np.ones(idx.size)
        return sp.csr_matrix((data, (rows, idx.ravel())), shape=(n, self.num_terms))

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """A flat per-term vector as one (n_in, n_out) matrix per block."""
        return [
            np.asarray(values[o : o + a * b]).reshape(a, b) for o, (a, b) in zip(self.offsets, self.shapes)
        ]

    def prior_basis(self) -> sp.csr_matrix:
        """(P, blocks x features) block-diagonal basis: each block's own features, scaled to max 1."""
        cols = self.features.shape[1]
        rows = np.repeat(np.arange(self.num_terms), cols)
        cidx = (self.block_of_term[:, None] * cols + np.arange(cols)[None, :]).ravel()
        basis = sp.csr_matrix(
            (self.features.ravel(), (rows, cidx)), shape=(self.num_terms, self.num_blocks * cols)
        )
        basis.eliminate_zeros()
        scale = np.asarray(abs(basis).max(axis=0).todense()).ravel()
        scale[scale == 0] = 1.0
        return sp.csr_matrix(basis @ sp.diags(1.0 / scale))

    def block_kinds(self) -> tuple[str, ...]:
        """The kind of each block of the chain (conv, dwsep, pool_fc, ...)."""
        space = self.space
        return tuple(
            space.block_at(k, space.block_in_choices(k)[0], space.block_out_choices(k)[0]).kind
            for k in range(self.num_blocks)
        )

    def shared_prior_basis(self) -> sp.csr_matrix:
        """(P, kinds x features) basis whose features are pooled over all blocks of one kind, scaled
        to max 1: one coefficient per (kind, feature), so no single block's cost can drift alone."""
        kinds = self.block_kinds()
        kind_index = {kind: i for i, kind in enumerate(dict.fromkeys(kinds))}
        kind_of_term = np.asarray([kind_index[kinds[b]] for b in self.block_of_term], dtype=np.int64)
        cols = self.features.shape[1]
        rows = np.repeat(np.arange(self.num_terms), cols)
        cidx = (kind_of_term[:, None] * cols + np.arange(cols)[None, :]).ravel()
        basis = sp.csr_matrix(
            (self.features.ravel(), (rows, cidx)), shape=(self.num_terms, len(kind_index) * cols)
        )
        basis.eliminate_zeros()
        scale = np.asarray(abs(basis).max(axis=0).todense()).ravel()
        scale[scale == 0] = 1.0
        return sp.csr_matrix(basis @ sp.diags(1.0 / scale))

    def monotone_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(smaller, larger) term numbers of neighbours differing by one step of in- or out-width."""
        lo, hi = [], []
        for o, (a, b) in zip(self.offsets, self.shapes):
            grid = o + np.arange(a * b).reshape(a, b)
            lo.append(grid[:-1, :].ravel())
            hi.append(grid[1:, :].ravel())
            lo.append(grid[:, :-1].ravel())
            hi.append(grid[:, 1:].ravel())
        return np.concatenate(lo).astype(np.int64), np.concatenate(hi).astype(np.int64)


def term_layout(space: Space) -> TermLayout:
    """Number the unknowns of a space and compute each term's exact counts and features."""
    offsets, shapes = [], []
    macs, params, feats, owner = [], [], [], []
    pos = 0
    for k in range(space.num_layers + 1):
        ins, outs = space.block_in_choices(k), space.block_out_choices(k)
        offsets.append(pos)
        shapes.append((len(ins), len(outs)))
        pos += len(ins) * len(outs)
        for cin in ins:
            for cout in outs:
                block = space.block_at(k, cin, cout)
                m, p = block_counts(block)
                a_in, a_out = block_activations(block)
                tiled = [block_counts(space.block_at(k, _round_up(cin, t), _round_up(cout, t)))[0] for t in TILES]
                macs.append(m)
                params.append(p)
                feats.append((m, a_in, a_out, p, 1.0, *tiled))
                owner.append(k)
    return TermLayout(
        space=space,
        offsets=tuple(offsets),
        shapes=tuple(shapes),
        macs=np.asarray(macs, dtype=np.float64),
        params=np.asarray(params, dtype=np.float64),
        features=np.asarray(feats, dtype=np.float64),
        block_of_term=np.asarray(owner, dtype=np.int64),
    )
