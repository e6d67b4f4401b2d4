"""The stages and blocks of a spec: each block mistake is refused naming its stage, block and field."""

from __future__ import annotations

from tests.support.space_specs import block_of, refused


def test_each_field_mistake_names_stage_block_and_field():
    refused(lambda s: block_of(s, 2, 1).update(kernel=4),
             'stage 3 block 2 (stage2.block2): field "kernel": must be an odd integer from 1 to 11, got 4')
    refused(lambda s: block_of(s, 2, 1).update(kind="resblock"),
             "stage 3 block 2: field \"kind\": unknown block kind 'resblock'")
    refused(lambda s: block_of(s, 2, 1).update(colour="red"), 'stage 3 block 2: field "colour": unknown; an '
                                                               "inverted_residual block takes kind, name, kernel")
    refused(lambda s: block_of(s, 0, 0).pop("kernel"), 'stage 1 block 1 (stem): field "kernel": is missing')
    refused(lambda s: block_of(s, 0, 0).pop("out"), 'stage 1 block 1 (stem): field "out": is missing')
    refused(lambda s: block_of(s, 2, 0).update(stride=9), 'field "stride": must be an integer from 1 to 4, got 9')
    refused(lambda s: block_of(s, 2, 0).update(activation="gelu"), 'field "activation": must be one of relu6, relu')
    refused(lambda s: block_of(s, 2, 0).update(expand="nothing"), "field \"expand\": names no variable: 'nothing'")
    refused(lambda s: s.pop("input"), 'field "input": is missing')
    refused(lambda s: s.update(format="widthwise-space/9"), "field \"format\": must be 'widthwise-space/1'")
    refused(lambda s: s.update(extra=1), 'field "extra": unknown; a spec takes format, name, input')
    refused(lambda s: s["input"].update(shape=[1, 3, 224, 112]), 'field "shape": must be square')
    refused(lambda s: block_of(s, 2, 1).update(name="stage2.block1"),
             'block stage2.block1.expand: field "name": is the name of an earlier block too')


def test_a_tie_the_residual_contradicts_isrefused():
    refused(lambda s: block_of(s, 2, 1).update(out="stage3"),
             'stage 3 block 2 (stage2.block2): field "residual": the Add needs the block\'s input and output widths '
             "tied and stride 1, but its input is variable 'stage2' and its output variable 'stage3'")
    refused(lambda s: block_of(s, 2, 1).update(stride=2), "field \"residual\": the Add needs the block's input and "
                                                         "output widths tied and stride 1, but its stride is 2")


def test_option_mistakes_are_named():
    refused(lambda s: s["variables"][1]["options"].update(kernel=[3, 4]), 'field "kernel": must be odd integers',
             name="ofa_mbv3")
    refused(lambda s: block_of(s, 1, 0).pop("expand_base"), 'stage 2 block 1 (stage1.block1): field "expand_base": '
                                                           "a block with options and no residual needs expand_base",
             name="ofa_mbv3")
    refused(lambda s: block_of(s, 1, 0).update(options="stage1.block3"),
             "field \"options\": variable 'stage1.block3' can skip the block, but only a residual block", name="ofa_mbv3")
    refused(lambda s: block_of(s, 1, 1).update(kernel=3), 'field "kernel": comes from the block\'s options',
             name="ofa_mbv3")
    refused(lambda s: block_of(s, 1, 1).update(options="stage1"), "field \"options\": must name an option variable; "
                                                                 "'stage1' is not one", name="ofa_mbv3")
    refused(lambda s: s["variables"][1].update(options=[{"keep": 0, "kernel": 3}]),
             'field "keep": a skipped block (keep 0) takes no kernel or expand', name="ofa_mbv3")
