"""An independent numpy reference of the MobileNet-V3 block kinds (NCHW, float64), from their definitions.

h-swish(x) = x * relu6(x + 3) / 6; the squeeze-excitation multiplies x by
relu6(W2 relu(W1 mean_hw(x) + b1) + b2 + 3) / 6. Builders are checked against this, not
against the agent's own calibration pass.
"""

from __future__ import annotations

import numpy as np

from widthwise.device_agents.block_kinds import BlockSpec
from widthwise.device_agents.network import Network, block_shapes
from widthwise.device_agents.weights import block_weights


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, group: int) -> np.ndarray:
    """NCHW convolution with TensorFlow SAME padding (the odd pixel at the end); depthwise when group > 1."""
    k, size = w.shape[-1], x.shape[2]
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    xp = np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2), (total // 2, total - total // 2)))
    patches = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    if group == 1:
        y = np.einsum("nchwij,ocij->nohw", patches, w)
    else:
        y = np.einsum("nchwij,cij->nchw", patches, w[:, 0])
    return y + b[None, :, None, None]


def relu6(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


def hswish(x: np.ndarray) -> np.ndarray:
    return x * relu6(x + 3.0) / 6.0


ACT = {"relu6": relu6, "relu": lambda x: np.maximum(x, 0.0), "hswish": hswish}


def squeeze_excite(x: np.ndarray, w: dict) -> np.ndarray:
    pooled = x.mean(axis=(2, 3), keepdims=True)
    reduced = np.maximum(conv2d(pooled, w["se_w1"], w["se_b1"], 1, 1), 0.0)
    gate = relu6(conv2d(reduced, w["se_w2"], w["se_b2"], 1, 1) + 3.0) / 6.0
    return x * gate


def expand_depthwise_se(b: BlockSpec, w: dict, x: np.ndarray) -> np.ndarray:
    act = ACT[b.activation]
    y = act(conv2d(x, w["ex_w"], w["ex_b"], 1, 1))
    z = act(conv2d(y, w["dw_w"], w["dw_b"], b.stride, b.hidden))
    return squeeze_excite(z, w) if b.se else z


def pool_mix_fc(b: BlockSpec, w: dict, x: np.ndarray) -> np.ndarray:
    mixed = ACT[b.activation](x.mean(axis=(2, 3)) @ w["w1"].T + w["b1"])
    return mixed @ w["w2"].T + w["b2"]


REFERENCE = {
    "conv": lambda b, w, x: ACT[b.activation](conv2d(x, w["w"], w["b"], b.stride, 1)),
    "ir_dwproject": lambda b, w, x: conv2d(ACT[b.activation](conv2d(x, w["dw_w"], w["dw_b"], b.stride, b.cin)),
                                           w["pw_w"], w["pw_b"], 1, 1),
    "ir_project": lambda b, w, x: conv2d(x, w["pw_w"], w["pw_b"], 1, 1),
    "mb_expand": expand_depthwise_se,
    "mb_block": lambda b, w, x: conv2d(expand_depthwise_se(b, w, x), w["pw_w"], w["pw_b"], 1, 1),
    "identity": lambda b, w, x: x,
    "pool_mix_fc": pool_mix_fc,
}


def reference_forward(blocks: list[BlockSpec] | tuple[BlockSpec, ...], x: np.ndarray, seed: int) -> np.ndarray:
    """The blocks on an NCHW input (residual Adds included), in float64."""
    inputs: dict[int, np.ndarray] = {}
    x = x.astype(np.float64)
    for b in blocks:
        inputs[b.index] = x
        x = REFERENCE[b.kind](b, block_weights(b, seed), x)
        if b.residual:
            x = x + inputs[b.residual_from]
    return x


def network_of(*blocks: BlockSpec) -> Network:
    """A Network of these blocks alone, fed the first block's input (residual sources inside it)."""
    return Network(" ".join(b.name for b in blocks), tuple(blocks), block_shapes(blocks[0])[0], "float32",
                   block_shapes(blocks[-1])[1])


#: one network per case: each MobileNet-V3 kind alone, with each activation and with and without SE
SINGLE_BLOCKS: dict[str, BlockSpec] = {
    "mb_expand k5 s2 hswish se": BlockSpec(0, "e", "mb_expand", 16, 48, 2, 5, 15, 8, hidden=48, activation="hswish",
                                           se=True),
    "mb_expand k3 s1 relu": BlockSpec(0, "e", "mb_expand", 8, 24, 1, 3, 9, 9, hidden=24, activation="relu"),
    "mb_block k7 relu se": BlockSpec(0, "m", "mb_block", 24, 24, 1, 7, 8, 8, hidden=72, residual_from=0,
                                     activation="relu", se=True),
    "mb_block k3 hswish": BlockSpec(0, "m", "mb_block", 16, 16, 1, 3, 6, 6, hidden=64, residual_from=0,
                                    activation="hswish"),
    "mb_block k5 relu6 se": BlockSpec(0, "m", "mb_block", 16, 16, 1, 5, 7, 7, hidden=48, residual_from=0, se=True),
    "identity": BlockSpec(0, "i", "identity", 24, 24, 1, 1, 8, 8),
    "pool_mix_fc hswish": BlockSpec(0, "c", "pool_mix_fc", 24, 10, 1, 1, 7, 1, hidden=40, activation="hswish"),
    "pool_mix_fc relu": BlockSpec(0, "c", "pool_mix_fc", 24, 10, 1, 1, 7, 1, hidden=40, activation="relu"),
    "conv k3 s2 hswish": BlockSpec(0, "stem", "conv", 3, 16, 2, 3, 17, 9, activation="hswish"),
    "ir_dwproject relu": BlockSpec(0, "f", "ir_dwproject", 16, 16, 1, 3, 9, 9, residual_from=0, activation="relu"),
}


def mixed_chain() -> tuple[BlockSpec, ...]:
    """A small network through every MobileNet-V3 kind: stem, a stage's first block, later blocks, a skip, the head."""
    return (
        BlockSpec(0, "stem", "conv", 3, 16, 2, 3, 30, 15, activation="hswish"),
        BlockSpec(1, "s.e", "mb_expand", 16, 48, 2, 5, 15, 8, hidden=48, activation="hswish", se=True),
        BlockSpec(2, "s.p", "ir_project", 48, 24, 1, 1, 8, 8),
        BlockSpec(3, "s.b2", "mb_block", 24, 24, 1, 7, 8, 8, hidden=72, residual_from=3, activation="relu", se=True),
        BlockSpec(4, "s.b3", "identity", 24, 24, 1, 1, 8, 8),
        BlockSpec(5, "c", "pool_mix_fc", 24, 10, 1, 1, 8, 1, hidden=40, activation="hswish"),
    )
