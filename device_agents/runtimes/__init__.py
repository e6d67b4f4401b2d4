"""Registry from runtime name to its implementation, one module per runtime.

A runtime module is imported only when asked for, so a board that has ONNX Runtime but
no LiteRT (or the reverse) never fails on the missing one: it is simply not available.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import RuntimeUnavailable


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, concrete shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class Session(ABC):
    """A loaded model, ready to run; `info` says how it runs (threads, delegate, ...)."""

    inputs: list[InputSpec]
    info: dict

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one inference and return the outputs."""


class Runtime(ABC):
    """An inference runtime: loads model bytes of its `model_format` into a Session."""

    name: str = ""
    model_format: str = ""  # "onnx" or "tflite"

    @abstractmethod
    def version(self) -> str:
        """The runtime library's version string."""

    @abstractmethod
    def load(self, model: bytes, *, threads: int = 1, options: Mapping[str, object] | None = None) -> Session:
        """Load model bytes; raise BadModel if they are not a valid model of this format."""


#: runtime name -> module (relative to this package, so the agent bundle finds it too) that defines
#: `RUNTIME`, an instance of Runtime.
RUNTIME_MODULES: dict[str, str] = {
    "onnxruntime": ".ort",
    "litert": ".litert",
    "tflite": ".tflite_rt",
}

_loaded: dict[str, Runtime] = {}
_failed: dict[str, str] = {}


def get_runtime(name: str) -> Runtime:
    """The runtime of that name, or RuntimeUnavailable saying why it cannot be used here."""
    if name in _loaded:
        return _loaded[name]
    module_name = RUNTIME_MODULES.get(name)
    if module_name is None:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; known: {', '.join(RUNTIME_MODULES)}", runtime=name)
    if name in _failed:
        raise RuntimeUnavailable(f"runtime {name} is not usable here: {_failed[name]}", runtime=name)
    try:
        runtime = importlib.import_module(module_name, __name__).RUNTIME
        runtime.version()
    except RuntimeUnavailable as exc:
        _failed[name] = exc.message
        raise
    except Exception as exc:  # an import of a broken wheel can raise anything
        _failed[name] = f"{type(exc).__name__}: {exc}"
        raise RuntimeUnavailable(f"runtime {name} is not usable here: {_failed[name]}", runtime=name) from exc
    _loaded[name] = runtime
    return runtime


def available_runtimes() -> dict[str, str]:
    """Name -> version of every runtime that imports and works on this board."""
    out = {}
    for name in RUNTIME_MODULES:
        try:
            out[name] = get_runtime(name).version()
        except RuntimeUnavailable:
            pass
    return out


def unavailable_runtimes() -> dict[str, str]:
    """Name -> reason for every runtime that is known but not usable here."""
    available_runtimes()
    return dict(_failed)
