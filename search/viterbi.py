"""Min-sum Viterbi over a chain of pairwise blocks, vectorised per block: O(L K^2).

`min_sum` solves one chain of matrices; `LagrangianViterbi` solves `cost + gamma * latency`
for many gammas over the same chain, with the blocks stacked and padded once so that one
pass costs two numpy operations per block. `compiled_kernels` gives the numba versions
(`search.viterbi_jit`) when numba imports; these numpy passes stay the fallback and the reference.
"""

from __future__ import annotations

import os
import threading
from types import ModuleType
from typing import Sequence

import numpy as np

#: Environment variable choosing the compiled kernels: "auto" (when numba imports), "on" or "off".
JIT_ENV = "WIDTHWISE_JIT"
JIT_MODES = ("auto", "on", "off")
#: The kernels module once looked up ("module": the module or None, "error": why not).
_kernels: dict[str, object] = {}
_kernels_lock = threading.Lock()


class JitUnavailable(RuntimeError):
    """The compiled kernels were required (WIDTHWISE_JIT=on or compiled=True) but numba did not import."""


def jit_mode() -> str:
    """The compiled-kernel policy from WIDTHWISE_JIT (default "auto"); ValueError naming a bad value."""
    mode = os.environ.get(JIT_ENV, "auto").strip().lower() or "auto"
    if mode not in JIT_MODES:
        raise ValueError(f"{JIT_ENV}={mode!r} is not one of {', '.join(JIT_MODES)}")
    return mode


def _load_kernels() -> dict[str, object]:
    """Import the numba kernels and run them once on a tiny chain (compiling, or loading the on-disk cache).

    Any failure, at import or at compilation, leaves the numpy path in use and keeps the reason.
    """
    try:
        from . import viterbi_jit
    except (ImportError, OSError) as exc:  # no numba on this platform, or llvmlite cannot load
        return {"module": None, "error": exc}
    weights = np.zeros((4, 2, 2, 2))
    shapes = np.array([[1, 2], [2, 1]], dtype=np.int64)
    try:
        # The argument types of the real calls (float64 C arrays, int64 shapes, Python floats
        # and ints), so this compiles exactly the signatures later calls use.
        viterbi_jit.viterbi(weights, shapes, 1.0, False)
        viterbi_jit.bracket_walk(weights, shapes, 0.0, 1.0, 1e-9, 1e-10, 200)
    except Exception as exc:  # noqa: BLE001 - a numba or LLVM failure of any kind means: use numpy
        return {"module": None, "error": exc}
    return {"module": viterbi_jit}


def compiled_kernels(required: bool | None = None) -> ModuleType | None:
    """The numba kernels module, or None for the numpy path (numba missing, or WIDTHWISE_JIT=off).

    `required` True insists (JitUnavailable if numba does not import), False declines, None
    follows WIDTHWISE_JIT. numba is imported on first use only, so callers that never take
    the compiled path do not pay its import.
    """
    if required is None:
        mode = jit_mode()
        if mode == "off":
            return None
        required = mode == "on"
    elif not required:
        return None
    if "module" not in _kernels:
        with _kernels_lock:
            if "module" not in _kernels:
                _kernels.update(_load_kernels())
    module = _kernels["module"]
    if not isinstance(module, ModuleType):
        module = None
    if module is None and required:
        raise JitUnavailable(f"the compiled kernels (numba) are unavailable: {_kernels.get('error')}")
    return module


def min_sum(blocks: Sequence[np.ndarray]) -> tuple[float, tuple[int, ...]]:
    """Least total of one entry per block along the chain, and the arg-min states of the L layers.

    Block k has shape (K_{k-1}, K_k), the first has one row and the last one column.
    """
    value = np.asarray(blocks[0], dtype=np.float64)[0]
    back = []
    for m in blocks[1:]:
        total = value[:, None] + m
        arg = total.argmin(axis=0)
        value = total[arg, np.arange(total.shape[1])]
        back.append(arg)
    state, idx = 0, []
    for arg in reversed(back):
        state = int(arg[state])
        idx.append(state)
    return float(value[0]), tuple(reversed(idx))


class LagrangianViterbi:
    """Arg-min of `cost + gamma * latency` over one chain, for any gamma >= 0 (or latency alone)."""

    def __init__(self, latency: Sequence[np.ndarray], cost: Sequence[np.ndarray]) -> None:
        n = len(latency)
        k = max(max(m.shape) for m in latency)
        # One stack the compiled kernels take whole: latency, cost, latency where the cost is
        # finite, zeros. Padded entries: cost +inf and latency 0, so they stay +inf for every
        # finite gamma.
        self.weights = np.zeros((4, n, k, k))
        self._latency, self._cost, self._latency_only = self.weights[0], self.weights[1], self.weights[2]
        self._cost[...] = np.inf
        self.shapes = np.zeros((2, n), dtype=np.int64)
        for b, (t, c) in enumerate(zip(latency, cost)):
            self._cost[b, : t.shape[0], : t.shape[1]] = c
            self._latency[b, : t.shape[0], : t.shape[1]] = t
            self.shapes[:, b] = t.shape
        self._latency_only[...] = np.where(np.isinf(self._cost), np.inf, self._latency)
        self._start = np.full(k, np.inf)
        self._start[0] = 0.0
        self._layers = n - 1

    def _run(self, work: np.ndarray) -> tuple[int, ...]:
        """Forward min-sum pass in place over `work` (padded blocks), then backtrack."""
        value = self._start
        for b in range(self._layers + 1):
            block = work[b]
            np.add(block, value[:, None], out=block)
            value = block.min(axis=0)
        state, idx = 0, [0] * self._layers
        for b in range(self._layers, 0, -1):
            state = int(work[b][:, state].argmin())
            idx[b - 1] = state
        return tuple(idx)

    def solve(self, gamma: float, compiled: bool | None = False) -> tuple[int, ...]:
        """Choice indices minimising `cost + gamma * latency` (compiled: see `compiled_kernels`)."""
        kernels = compiled_kernels(compiled)
        if kernels is not None:
            return tuple(kernels.viterbi(self.weights, self.shapes, float(gamma), False).tolist())
        work = self._latency * gamma  # a fresh buffer per call keeps concurrent callers apart
        work += self._cost
        return self._run(work)

    def fastest(self, compiled: bool | None = False) -> tuple[int, ...]:
        """Choice indices of least latency (cost ignored; ties broken arbitrarily)."""
        kernels = compiled_kernels(compiled)
        if kernels is not None:
            return tuple(kernels.viterbi(self.weights, self.shapes, 1.0, True).tolist())
        return self._run(self._latency_only.copy())
