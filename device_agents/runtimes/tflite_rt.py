"""tflite_runtime, the standalone TFLite interpreter many boards ship.

Its 2.14 wheel is built against numpy 1 and fails to import under numpy 2
(`_ARRAY_API not found`); the runtime registry then lists it as unavailable with that
reason. Shared loading and timing code lives in tflite_common.
"""

from __future__ import annotations

from .tflite_common import TfliteRuntime

RUNTIME = TfliteRuntime("tflite", "tflite_runtime.interpreter", "tflite-runtime")
