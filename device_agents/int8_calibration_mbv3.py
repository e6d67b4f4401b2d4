"""The numpy forward of the MobileNet-V3 block kinds, for int8 calibration (int8_calibration).

Roles, the names the TFLite builder gives the tensors it quantises by them:
  `<b>.ex`, `<b>.dw`     the expansion and the depthwise after their activation
                         (`.lin` suffixed: an h-swish's input)
  `<b>.se.reduce`        the squeeze-excitation's first 1x1 after its ReLU
  `<b>.se.relu6`         relu6(second 1x1 + 3), bounded by 6
  `<b>.se.gate`          the hard-sigmoid gate relu6(x + 3) / 6, bounded by 1
  `<b>.se`               the hidden tensor times its gate
  `<b>.pw`               an mb_block's linear projection (its residual Add is `<b>.add`)
  `<b>.mix`, `<b>.logits` pool_mix_fc's hidden dense after its activation, and its output
"""

from __future__ import annotations

import numpy as np

from .int8_calibration_ops import Observed, activate, depthwise, observe, pointwise, register_forward, relu6
from .spaces import BlockSpec
from .weights import BlockWeights

SE_GATE_BOUND = 1.0


def squeeze_excite(b: BlockSpec, wts: BlockWeights, z: np.ndarray, seen: Observed) -> np.ndarray:
    """z times its gate: pool, 1x1 + ReLU, 1x1, hard-sigmoid (relu6(x + 3) / 6), broadcast over H, W."""
    pooled = z.mean(axis=(1, 2), keepdims=True)
    reduced = pointwise(pooled, wts["se_w1"][:, :, 0, 0])
    reduced += wts["se_b1"]
    reduced = activate(reduced, "relu", seen, f"{b.name}.se.reduce")
    gate = pointwise(reduced, wts["se_w2"][:, :, 0, 0])
    gate += wts["se_b2"]
    gate += np.float32(3.0)
    relu6(gate)
    seen[f"{b.name}.se.relu6"] = (0.0, float(gate.max(initial=0.0)), 6.0)
    gate /= np.float32(6.0)
    seen[f"{b.name}.se.gate"] = (0.0, float(gate.max(initial=0.0)), SE_GATE_BOUND)
    out = z * gate
    observe(seen, f"{b.name}.se", out)
    return out


def expand_depthwise_se(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    """The expansion 1x1 and the depthwise, each with the block's activation, then SE if the block has it."""
    y = pointwise(x, wts["ex_w"][:, :, 0, 0])
    y += wts["ex_b"]
    y = activate(y, b.activation, seen, f"{b.name}.ex")
    z = activate(depthwise(y, wts["dw_w"], wts["dw_b"], b.stride), b.activation, seen, f"{b.name}.dw")
    return squeeze_excite(b, wts, z, seen) if b.se else z


@register_forward("mb_expand")
def _mb_expand(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    return expand_depthwise_se(b, wts, x, seen)


@register_forward("mb_block")
def _mb_block(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    z = pointwise(expand_depthwise_se(b, wts, x, seen), wts["pw_w"][:, :, 0, 0])
    z += wts["pw_b"]
    observe(seen, f"{b.name}.pw", z)
    return z  # the residual Add of the block's input follows (int8_calibration.forward)


@register_forward("identity")
def _identity(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    return x


@register_forward("pool_mix_fc")
def _pool_mix_fc(b: BlockSpec, wts: BlockWeights, x: np.ndarray, seen: Observed) -> np.ndarray:
    mixed = x.mean(axis=(1, 2)) @ wts["w1"].T
    mixed += wts["b1"]
    mixed = activate(mixed, b.activation, seen, f"{b.name}.mix")
    logits = mixed @ wts["w2"].T + wts["b2"]
    observe(seen, f"{b.name}.logits", logits)
    return logits
