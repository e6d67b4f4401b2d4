"""Model formats and their network builders, and the cache of the last network built.

A builder turns a space and its widths into model bytes (ONNX or TFLite); each is imported
on first use, so a board without a format's dependencies still serves the others.
"""

from __future__ import annotations

import importlib
import json
import time
from collections import OrderedDict
from typing import Callable, Sequence

from .errors import BadRequest, RuntimeUnavailable
from .spaces import Space

Builder = Callable[..., bytes]  # (space, widths, *, dtype, seed, blocks=None) -> model bytes

#: model format -> (module relative to this package, function) of its builder; imported on first use
BUILDER_MODULES: dict[str, tuple[str, str]] = {
    "onnx": (".build_onnx", "build_onnx"),
    "tflite": (".build_tflite", "build_tflite"),
}
MODEL_FORMATS = tuple(BUILDER_MODULES)
MODEL_CACHE_SIZE = 1  # a board's memory is small; repeating the last spec is the common case

_model_cache: "OrderedDict[tuple, tuple[bytes, float]]" = OrderedDict()


def get_builder(fmt: str) -> Builder:
    """The network builder of a model format, or RuntimeUnavailable when it is not installed."""
    if fmt not in BUILDER_MODULES:
        raise BadRequest(f"unknown model format {fmt!r}; known: {', '.join(MODEL_FORMATS)}", field="format")
    module_name, attr = BUILDER_MODULES[fmt]
    try:
        module = importlib.import_module(module_name, __package__)
    except ImportError as exc:
        raise RuntimeUnavailable(f"this agent cannot build {fmt} networks: {exc}", format=fmt) from exc
    return getattr(module, attr)


def detect_format(model: bytes, declared: object = None) -> str:
    """The model format: as declared, else tflite when b"TFL3" sits at offset 4, else onnx."""
    if declared is not None:
        if declared not in MODEL_FORMATS:
            raise BadRequest(f"unknown model format {declared!r}; known: {', '.join(MODEL_FORMATS)}", field="format")
        return str(declared)
    return "tflite" if model[4:8] == b"TFL3" else "onnx"


def build_model(space: Space, widths: Sequence[int], fmt: str, dtype: str, seed: int,
                blocks: tuple[int, int] | None = None) -> tuple[bytes, float, bool]:
    """The model bytes, the ms it took to build them, and whether they came from the cache;
    with `blocks` = (first, count), of that run of blocks alone (device_agents.network)."""
    key = (space.name, json.dumps(space.param_dict, sort_keys=True), tuple(widths), fmt, dtype, seed, blocks)
    if key in _model_cache:
        _model_cache.move_to_end(key)
        model, build_ms = _model_cache[key]
        return model, build_ms, True
    builder = get_builder(fmt)
    start = time.perf_counter_ns()
    model = builder(space, widths, dtype=dtype, seed=seed) if blocks is None else builder(
        space, widths, dtype=dtype, seed=seed, blocks=blocks)
    build_ms = (time.perf_counter_ns() - start) / 1e6
    _model_cache[key] = (model, build_ms)
    while len(_model_cache) > MODEL_CACHE_SIZE:
        _model_cache.popitem(last=False)
    return model, build_ms, False
