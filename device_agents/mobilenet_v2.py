"""MobileNet-V2 as a search space: stage widths tied by the residual Adds, one expansion per block.

The network is the standard one: a 3x3/2 stem convolution, seven stages of inverted-residual
blocks (t, c, n, s) below, a 1x1 convolution to 1280, global average pooling and a 1000-way
fully connected layer; ReLU6 after every convolution but the linear projections, SAME
padding. Every block after the first of a stage adds its input to its output, so all the
blocks of a stage share one output width: the stage width.

Variables, in configuration order: `stem`; then per stage the first block's expansion
`stageN.block1.expand` (when t > 1), the stage width `stageN`, and the expansion of each
later block `stageN.blockM.expand`; last `head`, the width of the final 1x1 convolution.

Choice grids (`levels` points each, rounded to multiples of 8, at least 8, de-duplicated):
  widths (stem, stages, head): base x linspace(0.2, 1.5, levels), base 32 for the stem,
    c for a stage and 1280 for the head, as MobileNet-V1's widths;
  expansions: t x base input width x linspace(0.2, 1.5, levels), plus the 1.0x point
    (t x base input width) when the linspace misses it, so that the standard network is
    always on the grid. A block's base input width is the previous stage's c (or the
    stem's 32) for a stage's first block, and its own stage's c for the others.

Latency factors (one per block kind below): `conv` (the stem, unary on `stem`; the head,
over (last stage, head)), `ir_dwproject` (the t=1 block: depthwise 3x3 and linear 1x1
project, over (input width, stage width)), `ir_expand` (1x1 expand and the strided 3x3
depthwise, over (input width, expansion)), `ir_project` (linear 1x1 project plus the
residual Add when the block has one, over (expansion, stage width)), `pool_fc` (unary on
`head`). The factor graph is a tree: the stage widths form the spine, a first block's
expansion sits between two stage widths, and a later block's expansion is a leaf.
"""

from __future__ import annotations

from .block_kinds import BlockTemplate
from .errors import BadRequest
from .families import same_out, width_grid
from .space_model import LayerSpec, Space

#: (expansion t, base width c, blocks n, first block's stride s) of the seven stages.
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_BASE = 32
HEAD_BASE = 1280
CLASSES = 1000


def expansion_grid(base: int, levels: int, multiple: int = 8) -> tuple[int, ...]:
    """`width_grid(base, levels)` with the 1.0x point (`base` rounded to the multiple) added, sorted."""
    one = max(multiple, int(base / multiple + 0.5) * multiple)
    return tuple(sorted(set(width_grid(base, levels, multiple=multiple)) | {one}))


class _SpaceWriter:
    """Collects variables and blocks in order, handing out their indices."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.layers: list[LayerSpec] = []
        self.templates: list[BlockTemplate] = []

    def width(self, name: str, base: int, group: str) -> int:
        self.layers.append(LayerSpec(name, base, width_grid(base, self.levels), group))
        return len(self.layers) - 1

    def expansion(self, name: str, base: int, group: str) -> int:
        self.layers.append(LayerSpec(name, base, expansion_grid(base, self.levels), group))
        return len(self.layers) - 1

    def block(self, template: BlockTemplate) -> int:
        self.templates.append(template)
        return len(self.templates) - 1


def _stage(w: _SpaceWriter, index: int, stage: tuple[int, int, int, int], cin_var: int, cin_base: int,
           hw: int) -> tuple[int, int]:
    """Add one stage's variables and blocks; returns (its width variable, its output size)."""
    t, c, n, s = stage
    group = f"stage{index}"
    first_expand = w.expansion(f"{group}.block1.expand", t * cin_base, group) if t > 1 else None
    width = w.width(group, c, group)
    later = [w.expansion(f"{group}.block{m}.expand", t * c, group) for m in range(2, n + 1)] if t > 1 else []
    for m in range(1, n + 1):
        stride = s if m == 1 else 1
        out_hw = same_out(hw, stride)
        src = cin_var if m == 1 else width
        name = f"{group}.block{m}"
        if t == 1:
            k = len(w.templates)
            w.block(BlockTemplate(name, "ir_dwproject", stride, 3, hw, out_hw, cin_from=src, cout_from=width,
                                  hidden_from=src, residual_from=-1 if m == 1 else k))
        else:
            hidden = first_expand if m == 1 else later[m - 2]
            k = w.block(BlockTemplate(f"{name}.expand", "ir_expand", stride, 3, hw, out_hw, cin_from=src,
                                      cout_from=hidden, hidden_from=hidden))
            w.block(BlockTemplate(f"{name}.project", "ir_project", 1, 1, out_hw, out_hw, cin_from=hidden,
                                  cout_from=width, hidden_from=hidden, residual_from=-1 if m == 1 else k))
        hw = out_hw
    return width, hw


def mobilenet_v2(resolution: int = 224, levels: int = 14) -> Space:
    """MobileNet-V2 with a width per stage and an expansion per block (module docstring)."""
    if resolution < 8:
        raise BadRequest(f"resolution must be at least 8, got {resolution}")
    w = _SpaceWriter(levels)
    stem = w.width("stem", STEM_BASE, "stem")
    hw = same_out(resolution, 2)
    w.block(BlockTemplate("stem", "conv", 2, 3, resolution, hw, cin=3, cout_from=stem))
    prev, prev_base = stem, STEM_BASE
    for index, stage in enumerate(MOBILENET_V2_STAGES, start=1):
        prev, hw = _stage(w, index, stage, prev, prev_base, hw)
        prev_base = stage[1]
    head = w.width("head", HEAD_BASE, "head")
    w.block(BlockTemplate("head", "conv", 1, 1, hw, hw, cin_from=prev, cout_from=head))
    w.block(BlockTemplate("classifier", "pool_fc", in_hw=hw, out_hw=1, cin_from=head, cout=CLASSES))
    return Space(
        name="mobilenet_v2",
        params=(("resolution", resolution), ("levels", levels)),
        input_channels=3,
        output_channels=CLASSES,
        input_shape=(1, 3, resolution, resolution),
        input_dtype="float32",
        layers=tuple(w.layers),
        templates=tuple(w.templates),
        resolution=resolution,
    )
