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

from .budget import BUDGET_RTOL
from .errors import JitModeError, JitUnavailable

#: Environment variable choosing the compiled kernels: "auto" (when numba imports), "on" or "off".
JIT_ENV = "WIDTHWISE_JIT"
JIT_MODES = ("auto", "on", "off")
#: The kernels module once looked up ("module": the module or None, "error": why not).
_kernels: dict[str, object] = {}
_kernels_lock = threading.Lock()


def jit_mode() -> str:
    """The compiled-kernel policy from WIDTHWISE_JIT (default "auto"); JitModeError naming a bad value."""
    mode = os.environ.get(JIT_ENV, "auto").strip().lower() or "auto"
    if mode not in JIT_MODES:
        raise JitModeError(f"{JIT_ENV}={mode!r} is not one of {', '.join(JIT_MODES)}", field=JIT_ENV)
    return mode


def _load_kernels() -> dict[str, object]:
    """Import the numba kernels and run them once on a tiny chain (compiling, or loading the on-disk cache).

    Any failure, at import or at compilation, leaves the numpy path in use and keeps the reason.
    """
    try:
        from . import viterbi_jit
    except (ImportError, OSError) as exc:  # no numba on this platform, or llvmlite cannot load
        return {"module": None, "error": exc}
    tiny = LagrangianViterbi((np.zeros((1, 2)), np.zeros((2, 1))), (np.zeros((1, 2)), np.zeros((2, 1))))
    try:
        # The argument types of the real calls (float64 C arrays, int64 index, Python floats
        # and ints), so this compiles exactly the signatures later calls use.
        viterbi_jit.viterbi(tiny.flat, tiny.index, 1.0, False)
        viterbi_jit.bracket_walk(tiny.flat, tiny.index, 0.0, 1.0, BUDGET_RTOL, BUDGET_RTOL, 200)
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
        raise JitUnavailable(f"the compiled kernels (numba) are unavailable: {_kernels.get('error')}", field=JIT_ENV)
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
    """Arg-min of `cost + gamma * latency` over one chain, for any gamma >= 0 (or latency alone).

    Two layouts, each built on first use: padded (blocks, K, K) stacks for the numpy passes,
    and the flat one the compiled kernels read (`flat`, `index`).
    """

    def __init__(self, latency: Sequence[np.ndarray], cost: Sequence[np.ndarray]) -> None:
        self._blocks = (tuple(latency), tuple(cost))
        self._layers = len(self._blocks[0]) - 1
        self._padded: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._flat: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def flat(self) -> np.ndarray:
        """(2, entries): every block's latency (row 0) and cost (row 1), row-major, one block after another."""
        return self._flat_layout()[0]

    @property
    def index(self) -> np.ndarray:
        """(3, blocks) int64: each block's rows, columns, and offset into `flat`."""
        return self._flat_layout()[1]

    def _flat_layout(self) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is None:  # a race builds it twice, identically; the assignment is atomic
            latency, cost = self._blocks
            index = np.zeros((3, len(latency)), dtype=np.int64)
            index[:2] = np.array([m.shape for m in latency], dtype=np.int64).T
            sizes = index[0] * index[1]
            np.cumsum(sizes[:-1], out=index[2, 1:])
            flat = np.empty((2, int(sizes.sum())))
            np.concatenate([m.ravel() for m in latency], out=flat[0])
            np.concatenate([m.ravel() for m in cost], out=flat[1])
            self._flat = (flat, index)
        return self._flat

    def _padded_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Latency, cost, latency where the cost is finite, and the start values, padded to (blocks, K, K)."""
        if self._padded is None:
            latency, cost = self._blocks
            n = len(latency)
            k = max(max(m.shape) for m in latency)
            # Padded entries: cost +inf and latency 0, so they stay +inf for every finite gamma.
            padded_cost = np.full((n, k, k), np.inf)
            padded_latency = np.zeros((n, k, k))
            for b, (t, c) in enumerate(zip(latency, cost)):
                padded_cost[b, : t.shape[0], : t.shape[1]] = c
                padded_latency[b, : t.shape[0], : t.shape[1]] = t
            latency_only = np.where(np.isinf(padded_cost), np.inf, padded_latency)
            start = np.full(k, np.inf)
            start[0] = 0.0
            self._padded = (padded_latency, padded_cost, latency_only, start)
        return self._padded

    def _run(self, work: np.ndarray) -> tuple[int, ...]:
        """Forward min-sum pass in place over `work` (padded blocks), then backtrack."""
        value = self._padded_layout()[3]
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
            flat, index = self._flat_layout()
            return tuple(kernels.viterbi(flat, index, float(gamma), False).tolist())
        latency, cost = self._padded_layout()[:2]
        work = latency * gamma  # a fresh buffer per call keeps concurrent callers apart
        work += cost
        return self._run(work)

    def fastest(self, compiled: bool | None = False) -> tuple[int, ...]:
        """Choice indices of least latency (cost ignored; ties broken arbitrarily)."""
        kernels = compiled_kernels(compiled)
        if kernels is not None:
            flat, index = self._flat_layout()
            return tuple(kernels.viterbi(flat, index, 1.0, True).tolist())
        return self._run(self._padded_layout()[2].copy())
