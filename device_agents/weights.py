"""Deterministic weights for a space's blocks, in one canonical layout for every builder.

Timing does not care what the weights are, only that they are finite and of sensible
scale; so they are slices of one cached random pool (scaled by fan-in) rather than fresh
random numbers per element, which keeps building a 1.5x MobileNet fast. The ONNX and the
TFLite builders take the same arrays, so the same seed gives the same network in both.

Canonical layouts (each builder transposes to its format's layout):
  conv:       w [cout, cin, k, k], b [cout]
  dwsep:      dw_w [cin, 1, k, k], dw_b [cin], pw_w [cout, cin, 1, 1], pw_b [cout]
  ir_dwproject: as dwsep (the 1x1 projection is linear)
  ir_expand:  ex_w [hidden, cin, 1, 1], ex_b [hidden], dw_w [hidden, 1, k, k], dw_b [hidden]
  ir_project: pw_w [cout, hidden, 1, 1], pw_b [cout]
  mb_expand:  as ir_expand, then with `se` (s = se_width(hidden)):
              se_w1 [s, hidden, 1, 1], se_b1 [s], se_w2 [hidden, s, 1, 1], se_b2 [hidden]
  mb_block:   as mb_expand, then pw_w [cout, hidden, 1, 1], pw_b [cout]
  identity:   nothing
  pool_fc:    w [cout, cin], b [cout]
  pool_mix_fc: w1 [hidden, cin], b1 [hidden], w2 [cout, hidden], b2 [cout]
  embedding:  table [vocab, cout]
  proj_dense: proj [cin, dim], w [cout, dim], b [cout]
  dense:      w [cout, cin], b [cout]
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np

from .block_kinds import se_width
from .errors import UnknownSpace
from .spaces import BlockSpec, kind_registry

POOL_SIZE = 1 << 20

BlockWeights = dict[str, np.ndarray]
WeightMaker = Callable[[BlockSpec, "_Slicer"], BlockWeights]
WEIGHT_MAKERS: dict[str, WeightMaker] = {}


@functools.lru_cache(maxsize=4)
def _pool(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(POOL_SIZE).astype(np.float32)


class _Slicer:
    """Hands out arrays cut from the pool at offsets that differ per block and tensor."""

    def __init__(self, seed: int, block_index: int) -> None:
        self.pool = _pool(seed)
        self.offset = (block_index * 7919 + seed * 104729) % POOL_SIZE

    def normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        n = math.prod(shape)
        start = self.offset % POOL_SIZE
        self.offset += n + 9973
        scale = np.float32(std)
        if start + n <= POOL_SIZE:
            return (self.pool[start : start + n] * scale).reshape(shape)
        # the pool read cyclically from `start`, scaled straight into the result: one pass
        out = np.empty(n, dtype=np.float32)
        done, src = 0, start
        while done < n:
            take = min(n - done, POOL_SIZE - src)
            np.multiply(self.pool[src : src + take], scale, out=out[done : done + take])
            done += take
            src = 0
        return out.reshape(shape)


register_weights = kind_registry(WEIGHT_MAKERS)  # @register_weights("kind"): the weight maker of a kind


def block_weights(block: BlockSpec, seed: int = 0) -> BlockWeights:
    """The weights of one block, in the canonical layout above (float32)."""
    maker = WEIGHT_MAKERS.get(block.kind)
    if maker is None:
        raise UnknownSpace(f"no weights for block kind {block.kind!r}")
    return maker(block, _Slicer(seed, block.index))


def _he(fan_in: int) -> float:
    return math.sqrt(2.0 / max(1, fan_in))


@register_weights("conv")
def _conv(b: BlockSpec, s: _Slicer) -> BlockWeights:
    fan_in = b.cin * b.kernel * b.kernel
    return {"w": s.normal((b.cout, b.cin, b.kernel, b.kernel), _he(fan_in)), "b": s.normal((b.cout,), 0.05)}


@register_weights("dwsep")
def _dwsep(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {
        "dw_w": s.normal((b.cin, 1, b.kernel, b.kernel), _he(b.kernel * b.kernel)),
        "dw_b": s.normal((b.cin,), 0.05),
        "pw_w": s.normal((b.cout, b.cin, 1, 1), _he(b.cin)),
        "pw_b": s.normal((b.cout,), 0.05),
    }


@register_weights("ir_dwproject")
def _ir_dwproject(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {
        "dw_w": s.normal((b.cin, 1, b.kernel, b.kernel), _he(b.kernel * b.kernel)),
        "dw_b": s.normal((b.cin,), 0.05),
        "pw_w": s.normal((b.cout, b.cin, 1, 1), math.sqrt(1.0 / b.cin)),  # linear: no ReLU gain
        "pw_b": s.normal((b.cout,), 0.05),
    }


@register_weights("ir_expand")
def _ir_expand(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {
        "ex_w": s.normal((b.hidden, b.cin, 1, 1), _he(b.cin)),
        "ex_b": s.normal((b.hidden,), 0.05),
        "dw_w": s.normal((b.hidden, 1, b.kernel, b.kernel), _he(b.kernel * b.kernel)),
        "dw_b": s.normal((b.hidden,), 0.05),
    }


@register_weights("ir_project")
def _ir_project(b: BlockSpec, s: _Slicer) -> BlockWeights:
    # linear, and scaled down a little more on residual blocks so that the sums stay of unit scale
    std = math.sqrt((0.5 if b.residual else 1.0) / b.cin)
    return {"pw_w": s.normal((b.cout, b.cin, 1, 1), std), "pw_b": s.normal((b.cout,), 0.05)}


def _expand_depthwise_se(b: BlockSpec, s: _Slicer) -> BlockWeights:
    """The expansion 1x1 and depthwise of an inverted residual, and its squeeze-excitation if any."""
    out = _ir_expand(b, s)
    if b.se:
        squeeze = se_width(b.hidden)
        out["se_w1"] = s.normal((squeeze, b.hidden, 1, 1), _he(b.hidden))
        out["se_b1"] = s.normal((squeeze,), 0.05)
        out["se_w2"] = s.normal((b.hidden, squeeze, 1, 1), math.sqrt(1.0 / squeeze))
        out["se_b2"] = s.normal((b.hidden,), 0.05)
    return out


@register_weights("mb_expand")
def _mb_expand(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return _expand_depthwise_se(b, s)


@register_weights("mb_block")
def _mb_block(b: BlockSpec, s: _Slicer) -> BlockWeights:
    out = _expand_depthwise_se(b, s)
    out["pw_w"] = s.normal((b.cout, b.hidden, 1, 1), math.sqrt(0.5 / b.hidden))  # linear, before the residual Add
    out["pw_b"] = s.normal((b.cout,), 0.05)
    return out


@register_weights("identity")
def _identity(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {}


@register_weights("pool_mix_fc")
def _pool_mix_fc(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {
        "w1": s.normal((b.hidden, b.cin), _he(b.cin)),
        "b1": s.normal((b.hidden,), 0.05),
        "w2": s.normal((b.cout, b.hidden), math.sqrt(1.0 / b.hidden)),
        "b2": s.normal((b.cout,), 0.05),
    }


@register_weights("pool_fc")
def _pool_fc(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {"w": s.normal((b.cout, b.cin), math.sqrt(1.0 / b.cin)), "b": s.normal((b.cout,), 0.05)}


@register_weights("embedding")
def _embedding(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {"table": s.normal((b.attr("vocab"), b.cout), 1.0)}


@register_weights("proj_dense")
def _proj_dense(b: BlockSpec, s: _Slicer) -> BlockWeights:
    dim = b.attr("dim")
    return {
        "proj": s.normal((b.cin, dim), math.sqrt(1.0 / b.cin)),
        "w": s.normal((b.cout, dim), _he(dim)),
        "b": s.normal((b.cout,), 0.05),
    }


@register_weights("dense")
def _dense(b: BlockSpec, s: _Slicer) -> BlockWeights:
    return {"w": s.normal((b.cout, b.cin), math.sqrt(1.0 / b.cin)), "b": s.normal((b.cout,), 0.05)}
