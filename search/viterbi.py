"""Min-sum over a tree MRF for many gammas: the arg-min of `cost + gamma * latency`, O(sum K_parent K_v).

`LagrangianViterbi` lays one tree out once and then solves any gamma (or latency alone)
in one elimination pass, leaves towards the roots, and a backtrack from the roots; on a
chain this is the classic Viterbi pass. With the terms stacked and padded, a pass costs
about two numpy operations per variable. `compiled_kernels` gives the numba versions
(`search.viterbi_jit`) when numba imports; these numpy passes stay the fallback and the
reference, and both add the same numbers in the same order so that they agree bit for bit."""

from __future__ import annotations

import os
import threading
from types import ModuleType

import numpy as np

from .budget import BUDGET_RTOL
from .errors import JitModeError, JitUnavailable
from .tree import Terms, TreeMRF

#: Environment variable choosing the compiled kernels: "auto" (when numba imports), "on" or "off".
JIT_ENV = "WIDTHWISE_JIT"
JIT_MODES = ("auto", "on", "off")
#: The kernels module once looked up ("module": the module or None, "error": why not).
_kernels: dict[str, object] = {}
_kernels_lock = threading.Lock()

#: Rows of `LagrangianViterbi.index`, the integer layout the compiled kernels read.
SIZE, PARENT, ORDER, UNARY_OFF, EDGE_OFF = range(5)


def jit_mode() -> str:
    """The compiled-kernel policy from WIDTHWISE_JIT (default "auto"); JitModeError naming a bad value."""
    mode = os.environ.get(JIT_ENV, "auto").strip().lower() or "auto"
    if mode not in JIT_MODES:
        raise JitModeError(f"{JIT_ENV}={mode!r} is not one of {', '.join(JIT_MODES)}", field=JIT_ENV)
    return mode


def _tiny_tree() -> TreeMRF:
    """Two variables of two choices: what the kernels are compiled on before first use."""
    terms = Terms((np.zeros(2), np.zeros(2)), (np.zeros((2, 2)), None))
    return TreeMRF(((8, 16), (8, 16)), (1, -1), (0, 1), 0.0, terms, terms, None, None)


def _load_kernels() -> dict[str, object]:
    """Import the numba kernels and run them once on a tiny tree (compiling, or loading the on-disk cache).

    Any failure, at import or at compilation, leaves the numpy path in use and keeps the reason.
    """
    try:
        from . import viterbi_jit
    except (ImportError, OSError) as exc:  # no numba on this platform, or llvmlite cannot load
        return {"module": None, "error": exc}
    tiny = LagrangianViterbi(_tiny_tree())
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


class LagrangianViterbi:
    """Arg-min of `cost + gamma * latency` over one tree, for any gamma >= 0 (or latency alone).

    Two layouts, each built on first use: the tree's padded stacks (`TreeMRF.stacked`) for
    the numpy passes, and the flat one the compiled kernels read (`flat`, `index`). Both
    combine `latency * gamma + cost` per term, start each variable's belief at its unary, add
    it to the variable's edge and reduce into the parent's belief, in the same order, so that
    they agree bit for bit.
    """

    def __init__(self, tree: TreeMRF) -> None:
        self.tree = tree
        self._padded: tuple[np.ndarray, ...] | None = None
        self._flat: tuple[np.ndarray, np.ndarray] | None = None
        self._plan: tuple[tuple[int, int, bool, bool], ...] | None = None

    @property
    def flat(self) -> np.ndarray:
        """(2, entries): latency (row 0) and cost (row 1) of every unary, then of every edge, row-major."""
        return self._flat_layout()[0]

    @property
    def index(self) -> np.ndarray:
        """(5, variables) int64: size, parent (-1 at a root), the elimination order, and the offsets in
        `flat` of each variable's unary and of its edge (-1 at a root)."""
        return self._flat_layout()[1]

    def _flat_layout(self) -> tuple[np.ndarray, np.ndarray]:
        if self._flat is None:  # a race builds it twice, identically; the assignment is atomic
            tree = self.tree
            sizes, parent = tree.sizes, tree.parent
            latency, cost = list(tree.latency.unary), list(tree.cost.unary)
            unary_off, edge_off, offset = [], [-1] * len(sizes), 0
            for size in sizes:
                unary_off.append(offset)
                offset += size
            for v, p in enumerate(parent):
                if p >= 0:
                    edge_off[v] = offset
                    offset += sizes[p] * sizes[v]
                    latency.append(tree.latency.edge[v].ravel())
                    cost.append(tree.cost.edge[v].ravel())
            index = np.array([sizes, parent, tree.order, unary_off, edge_off], dtype=np.int64)
            flat = np.empty((2, offset))
            np.concatenate(latency, out=flat[0])
            np.concatenate(cost, out=flat[1])
            self._flat = (flat, index)
        return self._flat

    def _padded_layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tree's stacks (`TreeMRF.stacked`: rows 0..K-1 a variable's edge, row K its unary, +inf cost
        padding) and the latency-only stack, +inf where the cost is; also the plan `_run` follows."""
        if self._padded is None:
            tree = self.tree
            latency, cost = tree.stacked
            k = latency.shape[2]
            # Per non-root variable in elimination order: (v, parent, whether v's belief can be nonzero (it
            # has children or a nonzero unary), whether v's reduction may overwrite the parent's belief (v
            # is its first child and its unary is zero)). Skipping a zero term changes no sum.
            unary_cost = cost[:, k]
            zero = ~((latency[:, k] != 0) | ((unary_cost != 0) & np.isfinite(unary_cost))).any(axis=1)
            first: dict[int, int] = {}
            for v in tree.order:
                if tree.parent[v] >= 0:
                    first.setdefault(tree.parent[v], v)
            self._plan = tuple((v, p, v in first or not bool(zero[v]), first[p] == v and bool(zero[p]))
                               for v, p in ((v, tree.parent[v]) for v in tree.order) if p >= 0)
            self._padded = (latency, cost, np.where(np.isinf(cost), np.inf, latency))
        return self._padded

    def _run(self, work: np.ndarray) -> tuple[int, ...]:
        """Eliminate leaves towards the roots in place over `work` (each variable's belief starts at its
        unary, row K), then backtrack from the roots."""
        least = np.minimum.reduce
        belief = work[:, -1]
        for v, p, nonzero, overwrite in self._plan:
            block = work[v, :-1]
            if nonzero:
                np.add(block, belief[v], out=block)
            if overwrite:
                least(block, 1, out=belief[p])
            else:
                belief[p] += least(block, 1)
        idx = [0] * len(work)
        for v in self.tree.roots:
            idx[v] = int(belief[v].argmin())
        for v, p, _, _ in reversed(self._plan):
            idx[v] = int(work[v, idx[p]].argmin())
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
        """Choice indices of least latency (cost ignored; ties broken on the first state)."""
        kernels = compiled_kernels(compiled)
        if kernels is not None:
            flat, index = self._flat_layout()
            return tuple(kernels.viterbi(flat, index, 1.0, True).tolist())
        return self._run(self._padded_layout()[2].copy())
