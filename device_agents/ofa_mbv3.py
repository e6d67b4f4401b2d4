"""Once-for-All's MobileNet-V3-Large as a search space: kernel, expansion, depth and stage width.

The network at `resolution` (224 by default): a 3x3/2 stem convolution to 16 channels with
h-swish; a fixed first block (depthwise 3x3 with ReLU, linear 1x1 project to 16, residual
Add); five searchable stages (base width, first stride, activation, squeeze-excitation) =
(24, 2, relu, no), (40, 2, relu, yes), (80, 2, hswish, no), (112, 1, hswish, yes),
(160, 2, hswish, yes) of up to four inverted-residual blocks each; a 1x1 convolution to
960 with h-swish; global average pooling, a dense 960 -> 1280 with h-swish and a dense
1280 -> 1000 (`pool_mix_fc`). SAME padding throughout.

Variables, in configuration order: `stem` (one choice, 16); then per stage N
`stageN.block1` (an option), the stage width `stageN`, and `stageN.block2` to
`stageN.block4` (options); last `head` (one choice, 960). The two one-choice widths are
variables so that every block is a factor over one or two variables.

Grids: a stage width takes `width_grid(base, levels)` (base x linspace(0.2, 1.5, levels),
multiples of 8). An option variable's choices are codes with labels: blocks 1 and 2 of a
stage choose kernel in {3, 5, 7} x expansion in {3, 4, 6}, codes 0..8 = k3e3, k3e4, k3e6,
k5e3, ..., k7e6; blocks 3 and 4 add "skip" as code 0 (then k3e3 = 1 .. k7e6 = 9). Every
variable's smallest choice is thus the smallest network and its largest the largest.
The standard network (`base_widths`) is OFA's largest: every block k7e6, depth 4, the
base stage widths.

Factors: `conv` (the stem, unary on `stem`), `ir_dwproject` (the fixed first block, unary
on `stem`); per stage, the first block (input = the previous stage width, output = this
stage width, the stage's stride) is `mb_expand` (1x1 expand, depthwise, SE) over (previous
width, option) and `ir_project` over (option, stage width). Its hidden width is expand x
the previous stage's BASE width, so it does not depend on the previous width and the
graph stays a tree. A later block is one `mb_block` (a whole stride-1 inverted residual
with its Add; hidden = expand x the actual stage width) over (stage width, option); a
skipped block is an `identity` (no op, no cost). Then `conv` (the head, over (stage 5,
head)) and `pool_mix_fc` (unary on `head`). The stage widths form the spine; options are
leaves or sit between two widths.

Depth: OFA keeps a prefix of each stage's blocks (depth 2, 3 or 4). Blocks 3 and 4 of a
stage have the same geometry, so skipping block 3 while keeping block 4 is exactly the
network that keeps block 3 with block 4's option and skips block 4. Both configurations
are allowed; `Space.canonical` rewrites one to the prefix form, and every answer is
printed and returned in that form.
"""

from __future__ import annotations

from .block_kinds import BlockTemplate
from .errors import BadRequest
from .families import same_out, width_grid
from .space_model import LayerSpec, Space

#: (base width, first block's stride, activation, squeeze-excitation) of the five searchable stages.
OFA_MBV3_STAGES: tuple[tuple[int, int, str, bool], ...] = (
    (24, 2, "relu", False),
    (40, 2, "relu", True),
    (80, 2, "hswish", False),
    (112, 1, "hswish", True),
    (160, 2, "hswish", True),
)
STEM_WIDTH = 16
HEAD_WIDTH = 960
MIX_WIDTH = 1280
CLASSES = 1000
KERNELS = (3, 5, 7)
EXPANSIONS = (3, 4, 6)
BLOCKS_PER_STAGE = 4
#: blocks 1 .. FIXED_DEPTH of a stage always run; the later ones may be skipped
FIXED_DEPTH = 2

#: (kernel, expand) options in code order, kernel-major
KEPT_OPTIONS: tuple[tuple[tuple[str, int], ...], ...] = tuple(
    (("expand", e), ("keep", 1), ("kernel", k)) for k in KERNELS for e in EXPANSIONS
)
SKIP_OPTION: tuple[tuple[str, int], ...] = (("keep", 0),)


def option_variable(name: str, group: str, skippable: bool) -> LayerSpec:
    """An option variable over KEPT_OPTIONS (with "skip" as code 0 when skippable); base k7e6."""
    options = ((SKIP_OPTION,) if skippable else ()) + KEPT_OPTIONS
    codes = tuple(range(len(options)))
    return LayerSpec(name, codes[-1], codes, group, options=options)


def ofa_mbv3(resolution: int = 224, levels: int = 14) -> Space:
    """OFA's MobileNet-V3-Large with a width per stage and an option per block (module docstring)."""
    if resolution < 8:
        raise BadRequest(f"resolution must be at least 8, got {resolution}")
    layers: list[LayerSpec] = [LayerSpec("stem", STEM_WIDTH, (STEM_WIDTH,), "stem")]
    templates: list[BlockTemplate] = []
    hw = same_out(resolution, 2)
    templates.append(BlockTemplate("stem", "conv", 2, 3, resolution, hw, cin=3, cout_from=0, activation="hswish"))
    templates.append(BlockTemplate("first", "ir_dwproject", 1, 3, hw, hw, cin_from=0, cout_from=0, hidden_from=0,
                                   residual_from=1, activation="relu"))
    prev, prev_base = 0, STEM_WIDTH
    for index, (base, stride, act, se) in enumerate(OFA_MBV3_STAGES, start=1):
        group = f"stage{index}"
        first_opt = len(layers)
        layers.append(option_variable(f"{group}.block1", group, skippable=False))
        width = len(layers)
        layers.append(LayerSpec(group, base, width_grid(base, levels), group))
        out_hw = same_out(hw, stride)
        templates.append(BlockTemplate(f"{group}.block1.expand", "mb_expand", stride, 0, hw, out_hw, cin_from=prev,
                                       option_from=first_opt, expand_base=prev_base, activation=act, se=se))
        templates.append(BlockTemplate(f"{group}.block1.project", "ir_project", 1, 1, out_hw, out_hw,
                                       cout_from=width, option_from=first_opt, expand_base=prev_base,
                                       activation=act))
        for m in range(2, BLOCKS_PER_STAGE + 1):
            opt = len(layers)
            layers.append(option_variable(f"{group}.block{m}", group, skippable=m > FIXED_DEPTH))
            k = len(templates)
            templates.append(BlockTemplate(f"{group}.block{m}", "mb_block", 1, 0, out_hw, out_hw, cin_from=width,
                                           cout_from=width, option_from=opt, residual_from=k, activation=act, se=se))
        prev, prev_base, hw = width, base, out_hw
    head = len(layers)
    layers.append(LayerSpec("head", HEAD_WIDTH, (HEAD_WIDTH,), "head"))
    templates.append(BlockTemplate("head", "conv", 1, 1, hw, hw, cin_from=prev, cout_from=head, activation="hswish"))
    templates.append(BlockTemplate("classifier", "pool_mix_fc", in_hw=hw, out_hw=1, cin_from=head, hidden=MIX_WIDTH,
                                   cout=CLASSES, activation="hswish"))
    return Space(
        name="ofa_mbv3",
        params=(("resolution", resolution), ("levels", levels)),
        input_channels=3,
        output_channels=CLASSES,
        input_shape=(1, 3, resolution, resolution),
        input_dtype="float32",
        layers=tuple(layers),
        templates=tuple(templates),
        resolution=resolution,
    )
