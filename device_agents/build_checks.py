"""Checks every builder makes on a network's blocks before building anything."""

from __future__ import annotations

from .block_kinds import ACTIVATIONS, BlockSpec
from .errors import UnknownSpace


def check_activation(b: BlockSpec) -> None:
    """UnknownSpace naming the block unless its activation is one every builder makes."""
    if b.activation not in ACTIVATIONS:
        raise UnknownSpace(f"block {b.index} ({b.name}): unknown activation {b.activation!r}; "
                           f"known: {', '.join(ACTIVATIONS)}", block=b.name, activation=b.activation)
