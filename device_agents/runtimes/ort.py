"""ONNX Runtime on the CPU, configured for steady single-model timing.

Intra-op threads are set explicitly, inter-op to one with sequential execution, and the
worker threads do not spin between runs (spinning would burn the other cores and make
the next measurement depend on the previous one). Graph optimisation stays on, as in a
deployment.

Sent model bytes reach this module only after device_agents.model_check has refused any
tensor stored as external data: onnxruntime (1.32 checked) has no session option that
refuses external initializers, so that check is the only line. Error texts are escaped
and cut (clip_text) before they are forwarded.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import BadModel, BadRequest, BenchFailed, RuntimeUnavailable, clip_text
from . import InputSpec, Runtime, Session

try:
    import onnxruntime as _ort
except ImportError as exc:  # the board has another runtime; the registry reports why
    _ort = None
    _IMPORT_ERROR = f"onnxruntime is not installed ({exc})"
else:
    _IMPORT_ERROR = ""

#: onnxruntime's tensor type string -> numpy dtype name
ORT_TYPES: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}

#: the `graph_optimization` option -> onnxruntime's level name
GRAPH_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

KNOWN_OPTIONS = ("delegate", "graph_optimization")
#: characters of a runtime's error text forwarded to the client (escaped and cut by clip_text)
ERROR_TEXT_LIMIT = 2048


def _concrete_shape(shape: object) -> tuple[int, ...]:
    """A symbolic or unknown dimension (batch 'N', None) is timed at 1."""
    dims = shape if isinstance(shape, (list, tuple)) else ()
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in dims)


class OrtSession(Session):
    """An onnxruntime InferenceSession with its input specs and the settings it runs with."""

    def __init__(self, session: "_ort.InferenceSession", info: dict) -> None:
        self._session = session
        self.info = info
        self.inputs = []
        for node_arg in session.get_inputs():
            dtype = ORT_TYPES.get(node_arg.type)
            if dtype is None:
                raise BadModel(f"model input {node_arg.name} has unsupported type {node_arg.type}", input=node_arg.name)
            self.inputs.append(InputSpec(node_arg.name, _concrete_shape(node_arg.shape), dtype))
        self._output_names = [o.name for o in session.get_outputs()]
        # what the model computes in: its first floating-point input's type (else its first input's)
        floats = [i.dtype for i in self.inputs if i.dtype.startswith("float")]
        self.info.setdefault("dtype", floats[0] if floats else (self.inputs[0].dtype if self.inputs else None))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(self._output_names, feeds if isinstance(feeds, dict) else dict(feeds))
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise BenchFailed(clip_text(f"onnxruntime failed to run the model: {exc}", ERROR_TEXT_LIMIT)) from exc


class OrtRuntime(Runtime):
    """The `onnxruntime` runtime: ONNX models on the CPU execution provider."""

    name = "onnxruntime"
    model_format = "onnx"

    def version(self) -> str:
        if _ort is None:
            raise RuntimeUnavailable(_IMPORT_ERROR, runtime=self.name)
        return str(_ort.__version__)

    def session_options(self, threads: int, options: Mapping[str, object]) -> "_ort.SessionOptions":
        """SessionOptions for timing: explicit threads, sequential, no spinning."""
        unknown = sorted(set(options) - set(KNOWN_OPTIONS))
        if unknown:
            raise BadRequest(
                f"unknown onnxruntime option {unknown[0]!r}; known: {', '.join(KNOWN_OPTIONS)}", option=unknown[0]
            )
        delegate = options.get("delegate")
        if delegate not in (None, "none", "cpu"):
            raise RuntimeUnavailable(
                f"onnxruntime here runs on the CPU only; delegate {delegate!r} is not available", delegate=delegate
            )
        level = options.get("graph_optimization", "all")
        if level not in GRAPH_OPT_LEVELS:
            raise BadRequest(
                f"option graph_optimization must be one of {', '.join(GRAPH_OPT_LEVELS)}, got {level!r}",
                option="graph_optimization",
            )
        so = _ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = _ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(_ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[str(level)])
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3  # errors only: warnings would go to the agent's stderr
        return so

    def load(self, model: bytes, *, threads: int = 1, options: Mapping[str, object] | None = None) -> Session:
        self.version()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise BadRequest(f"threads must be a positive integer, got {threads!r}", field="threads")
        opts = dict(options or {})
        so = self.session_options(threads, opts)
        try:
            session = _ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # InvalidProtobuf, Fail, InvalidGraph...: all mean "cannot load this"
            message = clip_text(f"onnxruntime cannot load the model: {exc}", ERROR_TEXT_LIMIT)
            raise BadModel(message, runtime=self.name) from exc
        info = {
            "threads": threads,
            "delegate": None,
            "graph_optimization": str(opts.get("graph_optimization", "all")),
        }
        return OrtSession(session, info)


RUNTIME = OrtRuntime()
