"""Search spaces: the one definition of each network family, shared by builder, fit and search.

A space is data (device_agents.space_model): variables whose widths vary, and blocks in
computation order, each one latency factor over the one or two variables it reads. Every
block has a `kind`; builders (ONNX, TFLite) and the exact MAC/parameter counters
(device_agents.block_kinds) are registries keyed by that kind, so adding a family never
touches the solver or the search. The families: MobileNet-V1 and the text classifier
(chains, device_agents.families), MobileNet-V2 (a tree, device_agents.mobilenet_v2) and
Once-for-All's MobileNet-V3 (a tree with option variables, device_agents.ofa_mbv3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .block_kinds import (
    BLOCK_COUNTERS,
    BlockCounter,
    BlockSpec,
    BlockTemplate,
    block_counts,
    kind_registry,
    register_counter,
)
from .errors import BadRequest, UnknownSpace
from .families import MOBILENET_V1_LAYERS, TEXT_HIDDEN, TEXT_RANKS, mobilenet_v1, same_out, text_lowrank, width_grid
from .mobilenet_v2 import MOBILENET_V2_STAGES, expansion_grid, mobilenet_v2
from .ofa_mbv3 import OFA_MBV3_STAGES, ofa_mbv3
from .space_model import FactorSpec, LayerSpec, Space, chain_templates

__all__ = [
    "BLOCK_COUNTERS", "BlockCounter", "BlockSpec", "BlockTemplate", "FactorSpec", "LayerSpec",
    "MOBILENET_V1_LAYERS", "MOBILENET_V2_STAGES", "OFA_MBV3_STAGES", "SPACES", "Space", "SpaceFactory", "TEXT_HIDDEN",
    "TEXT_RANKS", "block_counts", "chain_templates", "expansion_grid", "kind_registry", "make_space",
    "mobilenet_v1", "mobilenet_v2", "ofa_mbv3", "register_counter", "same_out", "text_lowrank", "width_grid",
]


@dataclass(frozen=True)
class SpaceFactory:
    """A family's constructor with its parameter names and their types, for validation."""

    build: Callable[..., Space]
    param_types: Mapping[str, type] = field(default_factory=dict)
    doc: str = ""


SPACES: dict[str, SpaceFactory] = {
    "mobilenet_v1": SpaceFactory(mobilenet_v1, {"resolution": int, "levels": int}, "MobileNet-V1, 14 widths"),
    "mobilenet_v2": SpaceFactory(
        mobilenet_v2,
        {"resolution": int, "levels": int},
        "MobileNet-V2: 9 widths (stem, 7 stages, head) and 16 expansions, a tree",
    ),
    "ofa_mbv3": SpaceFactory(
        ofa_mbv3,
        {"resolution": int, "levels": int},
        "Once-for-All MobileNet-V3: 5 stage widths and 20 kernel/expansion/skip options, a tree",
    ),
    "text_lowrank": SpaceFactory(
        text_lowrank,
        {"vocab": int, "dim": int, "tokens": int, "classes": int, "ranks": list, "hidden": list},
        "factorised-embedding text classifier: rank and hidden width",
    ),
}


def make_space(name: str, params: Mapping[str, object] | None = None) -> Space:
    """Build a space by name; an unknown name or parameter is an error naming it.
    With params {"spec": obj}, the space a widthwise-space/1 spec describes (named `name`)."""
    if params and "spec" in params:
        from .space_spec import space_from_params  # noqa: PLC0415  (space_spec imports this module)

        return space_from_params(name, params)
    factory = SPACES.get(name)
    if factory is None:
        raise UnknownSpace(f"unknown space {name!r}; known: {', '.join(sorted(SPACES))}", space=name)
    kwargs: dict[str, object] = {}
    for key, value in (params or {}).items():
        expected = factory.param_types.get(key)
        if expected is None:
            raise BadRequest(
                f"space {name} has no parameter {key!r}; it takes {', '.join(factory.param_types)}", param=key
            )
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"space parameter {key} must be an integer, got {value!r}", param=key)
        if expected is list and not isinstance(value, (list, tuple)):
            raise BadRequest(f"space parameter {key} must be a list, got {value!r}", param=key)
        kwargs[key] = value
    return factory.build(**kwargs)
