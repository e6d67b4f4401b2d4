"""What the two TFLite runtimes (LiteRT and tflite_runtime) share: loading and running.

Both expose the same `Interpreter` class, so one Runtime implementation serves both; each
runtime module only names the package its interpreter comes from. The bytes are checked
structurally first (tflite_check) so a corrupt file is a BadModel, never a crash. Threads
are set explicitly; the XNNPACK delegate is the interpreters' default and option
{"delegate": "none"} turns it off; whether it actually took part is read back from the
execution plan and reported in Session.info["delegate"].
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType
from typing import Mapping

import numpy as np

from ..errors import BadModel, BadRequest, BenchFailed, RuntimeUnavailable
from . import InputSpec, Runtime, Session
from .tflite_check import check_tflite

KNOWN_OPTIONS = ("delegate",)
DELEGATES = ("xnnpack", "none")
DELEGATE_NODE = "DELEGATE"


def _option_delegate(options: Mapping[str, object]) -> str:
    """The delegate asked for (default xnnpack); unknown keys or values are BadRequest."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise BadRequest(f"unknown TFLite option {unknown[0]!r}; known: {', '.join(KNOWN_OPTIONS)}", option=unknown[0])
    delegate = options.get("delegate", "xnnpack")
    if delegate is None:
        delegate = "xnnpack"
    if delegate not in DELEGATES:
        raise BadRequest(f"option delegate must be one of {', '.join(DELEGATES)}, got {delegate!r}", option="delegate")
    return str(delegate)


class TfliteSession(Session):
    """A TFLite Interpreter with tensors allocated, its input specs and how it runs."""

    def __init__(self, interpreter: object, info: dict) -> None:
        self._it = interpreter
        self.info = info
        details = interpreter.get_input_details()
        self.inputs = [
            InputSpec(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name) for d in details
        ]
        self._input_index = {d["name"]: d["index"] for d in details}
        self._outputs = [d["index"] for d in interpreter.get_output_details()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        missing = sorted(set(self._input_index) - set(feeds))
        if missing:
            raise BadRequest(f"no value for model input {missing[0]!r}", input=missing[0])
        try:
            for name, index in self._input_index.items():
                self._it.set_tensor(index, feeds[name])
            self._it.invoke()
            return [self._it.get_tensor(i) for i in self._outputs]
        except (ValueError, RuntimeError) as exc:
            raise BenchFailed(f"the TFLite interpreter failed to run the model: {exc}") from exc


class TfliteRuntime(Runtime):
    """A runtime whose Interpreter comes from `module` (distribution `dist` gives its version)."""

    model_format = "tflite"

    def __init__(self, name: str, module: str, dist: str) -> None:
        self.name = name
        self._module_name = module
        self._dist = dist
        self._module: ModuleType | None = None

    def interpreter_module(self) -> ModuleType:
        """The imported interpreter module, or RuntimeUnavailable with the import's reason."""
        if self._module is None:
            try:
                self._module = importlib.import_module(self._module_name)
            except Exception as exc:  # a wheel built for another numpy raises ImportError or AttributeError
                reason = f"{type(exc).__name__}: {exc}".strip()
                raise RuntimeUnavailable(f"{self._module_name} cannot be imported: {reason}", runtime=self.name) from exc
        return self._module

    def version(self) -> str:
        self.interpreter_module()
        try:
            return importlib.metadata.version(self._dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def load(self, model: bytes, *, threads: int = 1, options: Mapping[str, object] | None = None) -> Session:
        module = self.interpreter_module()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BadRequest(f"threads must be a positive integer, got {threads!r}", field="threads")
        delegate = _option_delegate(dict(options or {}))
        check_tflite(model)
        resolver = module.OpResolverType.AUTO if delegate == "xnnpack" else (
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        try:
            interpreter = module.Interpreter(
                model_content=bytes(model), num_threads=threads, experimental_op_resolver_type=resolver
            )
            _fix_dynamic_inputs(interpreter)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BadModel(f"{self.name} cannot load the model: {exc}", runtime=self.name) from exc
        partitions = sum(1 for op in interpreter._get_ops_details() if op.get("op_name") == DELEGATE_NODE)
        info: dict = {
            "threads": threads,
            "delegate": "xnnpack" if partitions else None,
            "delegate_requested": delegate,
            "delegate_partitions": partitions,
            "dtype": _model_dtype(interpreter),
        }
        if delegate == "xnnpack" and not partitions:
            info["warnings"] = ["the XNNPACK delegate was requested but took no operator; timed without it"]
        return TfliteSession(interpreter, info)


def _fix_dynamic_inputs(interpreter: object) -> None:
    """Give every dynamic (-1) input dimension the size 1, as a timed batch of one."""
    for d in interpreter.get_input_details():
        signature = d.get("shape_signature")
        if signature is not None and any(int(x) < 0 for x in signature):
            interpreter.resize_tensor_input(d["index"], [max(1, int(x)) for x in signature])


def _model_dtype(interpreter: object) -> str:
    """'int8' when the model holds quantised int8 tensors, else 'float32'."""
    for t in interpreter.get_tensor_details():
        if np.dtype(t["dtype"]) == np.int8:
            return "int8"
    return "float32"
