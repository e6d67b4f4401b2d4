"""Checks the builders make before building: a block's activation must be one they make."""

import pytest

from widthwise.device_agents.block_kinds import ACTIVATIONS, BlockSpec
from widthwise.device_agents.build_checks import check_activation
from widthwise.device_agents.errors import UnknownSpace


def test_known_activations_pass_and_others_are_refused_naming_the_block():
    for activation in ACTIVATIONS:
        check_activation(BlockSpec(3, "stage1.block2", "mb_block", 8, 8, 1, 3, 4, 4, activation=activation))
    with pytest.raises(UnknownSpace, match=r"block 3 \(stage1.block2\): unknown activation 'HSwish'") as err:
        check_activation(BlockSpec(3, "stage1.block2", "mb_block", 8, 8, 1, 3, 4, 4, activation="HSwish"))
    assert err.value.details["block"] == "stage1.block2"
