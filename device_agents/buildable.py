"""Which block kinds this agent can build, per build target, from the per-kind registries.

A kind is buildable for a target when every registry a build walks has it: the exact
counter and the shapes (space model), the memory estimate (limits), the weight maker, the
target's block writer, and for int8 the calibration forward. `hello` lists them, and a
bench request whose space has a kind the target lacks is refused naming the kind, before
anything is built. A format whose builder cannot be imported on this board is absent.
"""

from __future__ import annotations

import functools
import importlib
from typing import Mapping, Sequence

from . import limits
from .block_kinds import BLOCK_COUNTERS
from .errors import BadRequest
from .network import BLOCK_SHAPES
from .space_model import Space
from .space_spec_checks import space_kinds

#: build target -> the (module, registry) pairs of its per-kind builders beyond the common ones
TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "onnx": ((".build_onnx", "EMITTERS"),),
    "tflite": ((".build_tflite", "BLOCK_WRITERS"),),
    "tflite_int8": ((".build_tflite", "BLOCK_WRITERS"), (".int8_calibration", "FORWARDS")),
}


def target_name(fmt: str, dtype: str) -> str:
    """The build target of a model format and element type ("tflite_int8" for int8)."""
    return fmt if dtype == "float32" else f"{fmt}_{dtype}"


@functools.lru_cache(maxsize=None)
def buildable_kinds() -> dict[str, tuple[str, ...]]:
    """Build target -> the sorted block kinds this agent can build for it (importable targets only)."""
    from .weights import WEIGHT_MAKERS

    common = set(BLOCK_COUNTERS) & set(BLOCK_SHAPES) & set(limits.ACTIVATIONS) & set(WEIGHT_MAKERS)
    out: dict[str, tuple[str, ...]] = {}
    for target, registries in TARGETS.items():
        kinds = set(common)
        try:
            for module_name, attr in registries:
                kinds &= set(getattr(importlib.import_module(module_name, __package__), attr))
        except ImportError:
            continue
        out[target] = tuple(sorted(kinds))
    return out


def check_buildable(space: Space, fmt: str, dtype: str,
                    kinds: Mapping[str, Sequence[str]] | None = None) -> None:
    """Refuse, naming the kind, a space with a block kind this agent cannot build as `fmt`/`dtype`;
    with `kinds` (a hello's `block_kinds`), the same check made by the host for that agent."""
    target = target_name(fmt, dtype)
    if target not in TARGETS:
        return  # a pairing no builder makes: its builder says why, in its own words
    known = (buildable_kinds() if kinds is None else kinds).get(target)
    if known is None:
        raise BadRequest(f"this agent cannot build {dtype} {fmt} networks (its builder is not installed)",
                         field="spec.dtype", target=target)
    missing = sorted(space_kinds(space) - set(known))
    if missing:
        raise BadRequest(
            f"this agent cannot build block kind {missing[0]!r} as {dtype} {fmt} (space {space.name}); it builds "
            f"{', '.join(known)}",
            field="spec.space", kind=missing[0], target=target,
        )
