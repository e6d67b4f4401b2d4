"""Blocks of a network and the exact MAC and parameter count of each block kind.

A block is one latency factor's op: a `BlockTemplate` is its kind, fixed geometry and the
wiring of its widths to the space's variables; a `BlockSpec` is the same block with its
widths resolved. Builders, weight makers, the int8 calibration pass and the counters below
are registries keyed by the block kind, so adding a family never touches the solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, TypeVar

from .errors import UnknownSpace


#: the non-linearities a block may use after its non-linear convolutions
ACTIVATIONS = ("relu6", "relu", "hswish")


def round_width(x: float, multiple: int = 8) -> int:
    """`x` rounded to the nearest multiple of `multiple` (halves up), at least `multiple`."""
    return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)


def se_width(hidden: int) -> int:
    """The squeeze width of a squeeze-excitation on `hidden` channels: hidden / 4 rounded to 8."""
    return round_width(hidden / 4)


def _se_counts(hidden: int) -> tuple[int, int]:
    """(MACs, params) of a squeeze-excitation: two 1x1s (with bias) on the pooled 1x1 tensor."""
    se = se_width(hidden)
    return 2 * hidden * se, hidden * se + se + se * hidden + hidden


@dataclass(frozen=True)
class BlockTemplate:
    """A block before widths are chosen: kind, fixed geometry, and where its widths come from.

    `cin_from`, `hidden_from` and `cout_from` are the indices of the variables giving the
    block's input, hidden (expansion) and output widths; None means the fixed `cin`,
    `hidden` or `cout` instead. `residual_from` is the index of the block whose input this
    block adds to its output (a residual Add), or -1. `activation` is the non-linearity after
    each non-linear conv ("relu6", "relu" or "hswish"); `se` adds a squeeze-excitation on the
    hidden tensor. `option_from` is the option variable choosing kernel, expansion and keep;
    with it, hidden = expand x `expand_base` (or x the actual input width when 0), rounded to 8.
    """

    name: str
    kind: str
    stride: int = 1
    kernel: int = 1
    in_hw: int = 1
    out_hw: int = 1
    cin_from: int | None = None
    cout_from: int | None = None
    hidden_from: int | None = None
    cin: int = 0
    cout: int = 0
    hidden: int = 0
    residual_from: int = -1
    activation: str = "relu6"
    se: bool = False
    option_from: int | None = None
    expand_base: int = 0

    def variables(self) -> tuple[int, ...]:
        """The variables the block depends on, in (input, hidden, option, output) order, each once."""
        out: list[int] = []
        for v in (self.cin_from, self.hidden_from, self.option_from, self.cout_from):
            if v is not None and v not in out:
                out.append(v)
        return tuple(out)


@dataclass(frozen=True)
class BlockSpec:
    """A block with its widths resolved: everything a builder or a counter needs.

    `hidden` is the expansion width of an inverted-residual block (0 for other kinds);
    `residual_from` is the index of the block whose input is added to this block's output
    (-1: no residual Add). `activation` and `se` as in `BlockTemplate`.
    """

    index: int
    name: str
    kind: str
    cin: int
    cout: int
    stride: int
    kernel: int
    in_hw: int
    out_hw: int
    attrs: tuple[tuple[str, int], ...] = ()
    hidden: int = 0
    residual_from: int = -1
    activation: str = "relu6"
    se: bool = False

    @property
    def residual(self) -> bool:
        """Whether the block ends with a residual Add of an earlier block's input."""
        return self.residual_from >= 0

    def attr(self, key: str) -> int:
        """A fixed integer attribute of the space (e.g. `vocab`, `dim`, `tokens`)."""
        return dict(self.attrs)[key]


# --- registries keyed by block kind --------------------------------------------------------

F = TypeVar("F", bound=Callable[..., object])


def kind_registry(table: dict[str, F]) -> Callable[[str], Callable[[F], F]]:
    """`register(kind)` decorators filing functions in `table`: every per-block-kind registry's."""

    def register(kind: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            table[kind] = fn
            return fn

        return deco

    return register


# --- exact MAC and parameter counts, one handler per block kind -----------------------

BlockCounter = Callable[[BlockSpec], tuple[int, int]]
BLOCK_COUNTERS: dict[str, BlockCounter] = {}
register_counter = kind_registry(BLOCK_COUNTERS)  # @register_counter("kind"): the (MACs, params) counter of a kind


def block_counts(block: BlockSpec) -> tuple[int, int]:
    """Exact (MACs, params) of one block. MACs count convolution and matrix products only."""
    counter = BLOCK_COUNTERS.get(block.kind)
    if counter is None:
        raise UnknownSpace(f"no counter for block kind {block.kind!r}", kind=block.kind)
    return counter(block)


@register_counter("conv")
def _count_conv(b: BlockSpec) -> tuple[int, int]:
    # k×k convolution with bias (batch norm folded), then the block's activation.
    weights = b.kernel * b.kernel * b.cin * b.cout
    return b.out_hw * b.out_hw * weights, weights + b.cout


@register_counter("dwsep")
def _count_dwsep(b: BlockSpec) -> tuple[int, int]:
    # depthwise k×k on cin channels (+bias, ReLU6), then pointwise cin→cout (+bias, ReLU6).
    dw = b.kernel * b.kernel * b.cin
    pw = b.cin * b.cout
    return b.out_hw * b.out_hw * (dw + pw), dw + b.cin + pw + b.cout


@register_counter("ir_dwproject")
def _count_ir_dwproject(b: BlockSpec) -> tuple[int, int]:
    # an inverted residual with expansion 1: depthwise k×k on cin (+bias, ReLU6), then a
    # linear pointwise cin→cout (+bias); a residual Add costs no MACs and no parameters.
    dw = b.kernel * b.kernel * b.cin
    pw = b.cin * b.cout
    return b.out_hw * b.out_hw * (dw + pw), dw + b.cin + pw + b.cout


@register_counter("ir_expand")
def _count_ir_expand(b: BlockSpec) -> tuple[int, int]:
    # pointwise cin→hidden at the input resolution (+bias, ReLU6), then depthwise k×k with
    # the block's stride on the hidden channels (+bias, ReLU6); cout is the hidden width.
    expand = b.cin * b.hidden
    dw = b.kernel * b.kernel * b.hidden
    macs = b.in_hw * b.in_hw * expand + b.out_hw * b.out_hw * dw
    return macs, expand + b.hidden + dw + b.hidden


@register_counter("ir_project")
def _count_ir_project(b: BlockSpec) -> tuple[int, int]:
    # linear pointwise hidden→cout (+bias), then the residual Add when the block has one.
    project = b.cin * b.cout
    return b.out_hw * b.out_hw * project, project + b.cout


@register_counter("mb_expand")
def _count_mb_expand(b: BlockSpec) -> tuple[int, int]:
    # ir_expand with the block's activation, then a squeeze-excitation on the hidden tensor if `se`.
    macs, params = _count_ir_expand(b)
    if b.se:
        m, p = _se_counts(b.hidden)
        macs, params = macs + m, params + p
    return macs, params


@register_counter("mb_block")
def _count_mb_block(b: BlockSpec) -> tuple[int, int]:
    # a whole stride-1 inverted residual: expand, depthwise, SE if `se`, linear project (+bias);
    # the residual Add costs no MACs and no parameters.
    macs, params = _count_mb_expand(b)
    project = b.hidden * b.cout
    return macs + b.out_hw * b.out_hw * project, params + project + b.cout


@register_counter("identity")
def _count_identity(b: BlockSpec) -> tuple[int, int]:
    # a skipped block: its output is its input.
    return 0, 0


@register_counter("pool_mix_fc")
def _count_pool_mix_fc(b: BlockSpec) -> tuple[int, int]:
    # global average pooling, dense cin→hidden (+bias, activation), dense hidden→cout (+bias).
    return b.cin * b.hidden + b.hidden * b.cout, b.cin * b.hidden + b.hidden + b.hidden * b.cout + b.cout


@register_counter("pool_fc")
def _count_pool_fc(b: BlockSpec) -> tuple[int, int]:
    # global average pooling, then a fully connected cin→cout with bias (logits).
    return b.cin * b.cout, b.cin * b.cout + b.cout


@register_counter("embedding")
def _count_embedding(b: BlockSpec) -> tuple[int, int]:
    # a vocab×cout lookup table; a gather does no multiply-accumulate.
    return 0, b.attr("vocab") * b.cout


@register_counter("proj_dense")
def _count_proj_dense(b: BlockSpec) -> tuple[int, int]:
    # per-token projection cin→dim (no bias), mean over tokens, dense dim→cout (+bias, ReLU).
    dim, tokens = b.attr("dim"), b.attr("tokens")
    return tokens * b.cin * dim + dim * b.cout, b.cin * dim + dim * b.cout + b.cout


@register_counter("dense")
def _count_dense(b: BlockSpec) -> tuple[int, int]:
    # dense cin→cout with bias (logits).
    return b.cin * b.cout, b.cin * b.cout + b.cout
