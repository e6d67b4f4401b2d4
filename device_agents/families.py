"""The chain families: MobileNet-V1 and the factorised-embedding text classifier.

Each is a chain of L searchable layers and L+1 blocks: block 0 maps the fixed input
channels to layer 0's width, block k maps layer k-1's width to layer k's, and block L
maps layer L-1's width to the fixed output.
"""

from __future__ import annotations

import math
from typing import Sequence

from .block_kinds import BlockTemplate
from .errors import BadRequest
from .space_model import LayerSpec, Space, chain_templates

#: (kind, stride, base width) of MobileNet-V1's 14 searchable layers (stem + 13 dw-separable).
MOBILENET_V1_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv", 2, 32),
    ("dwsep", 1, 64),
    ("dwsep", 2, 128),
    ("dwsep", 1, 128),
    ("dwsep", 2, 256),
    ("dwsep", 1, 256),
    ("dwsep", 2, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 2, 1024),
    ("dwsep", 1, 1024),
)


def width_grid(base: int, levels: int, lo: float = 0.2, hi: float = 1.5, multiple: int = 8) -> tuple[int, ...]:
    """`base × linspace(lo, hi, levels)` rounded to multiples of `multiple` (≥ it), de-duplicated."""
    if levels < 1:
        raise BadRequest(f"levels must be at least 1, got {levels}")
    if levels == 1:
        mults = [hi]
    else:
        mults = [lo + (hi - lo) * i / (levels - 1) for i in range(levels)]
    out: list[int] = []
    for m in mults:
        w = max(multiple, int(math.floor(base * m / multiple + 0.5)) * multiple)
        if w not in out:
            out.append(w)
    return tuple(out)


def same_out(hw: int, stride: int) -> int:
    """The output size of a SAME-padded convolution with this stride."""
    return -(-hw // stride)


def mobilenet_v1(resolution: int = 224, levels: int = 14) -> Space:
    """MobileNet-V1 with 14 searchable widths, the family of the method's paper."""
    if resolution < 8:
        raise BadRequest(f"resolution must be at least 8, got {resolution}")
    layers, templates = [], []
    hw = resolution
    for k, (kind, stride, base) in enumerate(MOBILENET_V1_LAYERS):
        name = "conv0" if kind == "conv" else f"dwsep{k}"
        out_hw = same_out(hw, stride)
        layers.append(LayerSpec(name, base, width_grid(base, levels)))
        templates.append(BlockTemplate(name, kind, stride=stride, kernel=3, in_hw=hw, out_hw=out_hw))
        hw = out_hw
    templates.append(BlockTemplate("classifier", "pool_fc", in_hw=hw, out_hw=1))
    return Space(
        name="mobilenet_v1",
        params=(("resolution", resolution), ("levels", levels)),
        input_channels=3,
        output_channels=1000,
        input_shape=(1, 3, resolution, resolution),
        input_dtype="float32",
        layers=tuple(layers),
        templates=chain_templates(templates, 3, 1000),
        resolution=resolution,
    )


TEXT_RANKS = (10, 20, 30, 40, 50, 75, 100, 150, 200, 300)
TEXT_HIDDEN = (64, 128, 192, 256, 384, 512)


def text_lowrank(
    vocab: int = 100_000,
    dim: int = 300,
    tokens: int = 32,
    classes: int = 20,
    ranks: Sequence[int] = TEXT_RANKS,
    hidden: Sequence[int] = TEXT_HIDDEN,
) -> Space:
    """A text classifier whose embedding is factorised: the rank r and hidden width h vary."""
    for key, val in (("vocab", vocab), ("dim", dim), ("tokens", tokens), ("classes", classes)):
        if val < 1:
            raise BadRequest(f"{key} must be positive, got {val}")
    for key, seq in (("ranks", ranks), ("hidden", hidden)):
        if not seq or any(int(v) != v or v < 1 for v in seq) or list(seq) != sorted(set(seq)):
            raise BadRequest(f"{key} must be a strictly increasing list of positive integers, got {list(seq)}")
    attrs = (("vocab", vocab), ("dim", dim), ("tokens", tokens))
    return Space(
        name="text_lowrank",
        params=(
            ("vocab", vocab),
            ("dim", dim),
            ("tokens", tokens),
            ("classes", classes),
            ("ranks", list(ranks)),
            ("hidden", list(hidden)),
        ),
        input_channels=vocab,
        output_channels=classes,
        input_shape=(1, tokens),
        input_dtype="int64",
        layers=(
            LayerSpec("rank", dim, tuple(int(r) for r in ranks)),
            LayerSpec("hidden", 256, tuple(int(h) for h in hidden)),
        ),
        templates=chain_templates(
            (
                BlockTemplate("embedding", "embedding"),
                BlockTemplate("projection", "proj_dense"),
                BlockTemplate("classifier", "dense"),
            ),
            vocab,
            classes,
        ),
        attrs=attrs,
    )
