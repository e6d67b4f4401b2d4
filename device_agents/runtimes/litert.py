"""LiteRT (the successor of TensorFlow Lite), from the `ai-edge-litert` package.

Runs .tflite models with the LiteRT Interpreter; shared loading and timing code lives
in tflite_common. Works with numpy 2.
"""

from __future__ import annotations

from .tflite_common import TfliteRuntime

RUNTIME = TfliteRuntime("litert", "ai_edge_litert.interpreter", "ai-edge-litert")
