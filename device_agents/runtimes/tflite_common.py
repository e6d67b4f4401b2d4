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

from ..errors import BadModel, BadRequest, BenchFailed, RuntimeUnavailable, clip_text
from . import InputSpec, Runtime, Session
from .tflite_check import check_tflite

#: tflite_schema.smoke_model(), kept here so a board without `flatbuffers` can still check
#: its interpreter: a RESHAPE of a float [1, 4] input (a test keeps the two equal).
SMOKE_MODEL = bytes.fromhex(
    "1400000054464c33000000000000000000000000beffffff140000001c00000024000000280000000300000002000000"
    "8c0100007001000005000000736d6f6b65000000010000001c000000010000006c00000000000e001800140010000c00"
    "080004000e000000140000001c000000200000002400000028000000040000006d61696e00000000010000004c000000"
    "0100000001000000010000000000000003000000d4000000a0000000740000000c000e000d000000080004000c000000"
    "160000000100000000160e001400000010000c000b0004000e0000002400000000000011080000000c00000001000000"
    "0100000002000000000000000200000062ffffff040000000200000001000000040000000c00140010000f0008000400"
    "0c000000100000000100000000000002100000000500000073686170650000000100000002000000dcffffff0c000000"
    "000000000c00000001000000790000000200000001000000040000000c0010000c000b00000004000c0000000c000000"
    "000000000c00000001000000780000000200000001000000040000000000060008000400060000000400000008000000"
    "01000000040000000400040004000000"
)

KNOWN_OPTIONS = ("delegate",)
#: characters of a runtime's error text forwarded to the client (escaped and cut by clip_text)
ERROR_TEXT_LIMIT = 2048
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
            message = clip_text(f"the TFLite interpreter failed to run the model: {exc}", ERROR_TEXT_LIMIT)
            raise BenchFailed(message) from exc


class TfliteRuntime(Runtime):
    """A runtime whose Interpreter comes from `module` (distribution `dist` gives its version)."""

    model_format = "tflite"

    def __init__(self, name: str, module: str, dist: str) -> None:
        self.name = name
        self._module_name = module
        self._dist = dist
        self._module: ModuleType | None = None
        self._version: str | None = None

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
        if self._version is None:
            self._smoke_test(self.interpreter_module())
            try:
                self._version = importlib.metadata.version(self._dist)
            except importlib.metadata.PackageNotFoundError:
                self._version = "unknown"
        return self._version

    def _smoke_test(self, module: ModuleType) -> None:
        """Run SMOKE_MODEL once: a wheel built for another numpy imports but fails here."""
        try:
            it = module.Interpreter(
                model_content=SMOKE_MODEL,
                experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            it.allocate_tensors()
            x = np.arange(4, dtype=np.float32).reshape(1, 4)
            it.set_tensor(it.get_input_details()[0]["index"], x)
            it.invoke()
            ok = np.array_equal(it.get_tensor(it.get_output_details()[0]["index"]), x)
        except Exception as exc:  # SystemError, ImportError, AttributeError...: the wheel does not work here
            raise RuntimeUnavailable(
                f"{self._module_name} imports but cannot run a model under numpy {np.__version__}: "
                f"{_exception_chain(exc)}",
                runtime=self.name,
            ) from exc
        if not ok:
            raise RuntimeUnavailable(f"{self._module_name} runs a model but returns wrong values", runtime=self.name)

    def load(self, model: bytes, *, threads: int = 1, options: Mapping[str, object] | None = None) -> Session:
        self.version()
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
            # reading op and tensor details decodes names: a name that is not UTF-8 is a bad model
            partitions = _delegate_partitions(interpreter)
            dtype = _model_dtype(interpreter)
        except (ValueError, RuntimeError) as exc:  # UnicodeDecodeError is a ValueError
            message = clip_text(f"{self.name} cannot load the model: {exc}", ERROR_TEXT_LIMIT)
            raise BadModel(message, runtime=self.name) from exc
        info: dict = {
            "threads": threads,
            "delegate": "xnnpack" if partitions else None,
            "delegate_requested": delegate,
            "delegate_partitions": partitions,
            "dtype": dtype,
        }
        if delegate == "xnnpack" and not partitions:
            info["warnings"] = ["the XNNPACK delegate was requested but took no operator; timed without it"]
        return TfliteSession(interpreter, info)


def _delegate_partitions(interpreter: object) -> int:
    """How many delegate nodes the execution plan holds (0 when the interpreter cannot say)."""
    ops_details = getattr(interpreter, "_get_ops_details", None)  # both LiteRT and tflite_runtime have it
    if ops_details is None:
        return 0
    return sum(1 for op in ops_details() if op.get("op_name") == DELEGATE_NODE)


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


def _exception_chain(exc: BaseException) -> str:
    """'Type: message' of an exception and of its causes, innermost last."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}".strip())
        current = current.__cause__ or current.__context__
    return "; caused by ".join(parts)
