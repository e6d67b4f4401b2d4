"""Truncated SVD of a weight matrix into a lookup (U_r Σ_r) and a projection (V_rᵀ).

An embedding table or dense layer W (m × n) becomes two layers: W ≈ L @ P with
L = U_r Σ_r (m × r) and P = V_rᵀ (r × n), which stores r·(m + n) numbers instead of m·n.
The rank r is a width of the `text_lowrank` space, so the profiler and the search pick it.

Definitions used throughout (s_1 ≥ s_2 ≥ … are W's singular values):
- energy kept by rank r:  Σ_{i≤r} s_i² / Σ_i s_i²  (the share of ‖W‖_F² the factors keep);
- relative reconstruction error:  ‖W − L P‖_F / ‖W‖_F, measured on the factors themselves;
  for an exact truncated SVD it equals sqrt(Σ_{i>r} s_i²) / sqrt(Σ_i s_i²).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import BadEnergy, BadWeightsFile, FactorizeError, NotAMatrix, RankOutOfRange, UnknownMethod

__all__ = [
    "BadEnergy", "BadWeightsFile", "Factorization", "FactorizeError", "NotAMatrix", "RankOutOfRange", "SVD_METHODS",
    "UnknownMethod", "export_onnx", "factorize", "factorize_energy", "load_weights", "save_npz", "singular_values",
]

#: rows handled per chunk when streaming over a tall matrix (Gram matrix, residual).
ROW_CHUNK = 16_384
#: below this many entries a full dense SVD is cheap enough to always be used by "auto".
DENSE_MAX_ENTRIES = 4_000_000
NPY_MAGIC = b"\x93NUMPY"
#: a serialised ONNX protobuf must stay under 2 GiB (weights inline, no external data).
ONNX_MAX_BYTES = 2**31 - 2**24


@dataclass(frozen=True)
class Factorization:
    """The two factors of a rank-r truncated SVD and what they cost and lose."""

    lookup: np.ndarray  # U_r Σ_r, shape (m, r): the table a Gather reads
    projection: np.ndarray  # V_rᵀ, shape (r, n): the MatMul after the lookup
    singular_values: np.ndarray  # s_1..s_r, descending
    method: str
    rel_error: float  # ‖W − lookup @ projection‖_F / ‖W‖_F
    energy_kept: float  # Σ_{i≤r} s_i² / ‖W‖_F²
    seconds: float

    @property
    def rank(self) -> int:
        return int(self.projection.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.lookup.shape[0]), int(self.projection.shape[1])

    @property
    def params_original(self) -> int:
        m, n = self.shape
        return m * n

    @property
    def params_factored(self) -> int:
        m, n = self.shape
        return self.rank * (m + n)

    @property
    def saving(self) -> float:
        """Share of the parameters removed (negative when r·(m+n) exceeds m·n)."""
        return 1.0 - self.params_factored / self.params_original

    def summary(self) -> dict:
        """The JSON-ready figures of this factorisation (no arrays)."""
        m, n = self.shape
        return {
            "shape": [m, n],
            "rank": self.rank,
            "method": self.method,
            "params_original": self.params_original,
            "params_factored": self.params_factored,
            "saving": self.saving,
            "rel_error": self.rel_error,
            "energy_kept": self.energy_kept,
            "seconds": self.seconds,
        }


# --- input checks --------------------------------------------------------------------------


def as_matrix(weights: object) -> np.ndarray:
    """Check that `weights` is a finite real 2-D array; return it as float32 or float64."""
    arr = np.asarray(weights)
    if arr.ndim != 2:
        raise NotAMatrix(f"weights must be a 2-D matrix, got an array of shape {arr.shape} ({arr.ndim}-D)", field="weights")
    if arr.dtype.kind not in "biuf":
        raise NotAMatrix(f"weights must be real numbers, got dtype {arr.dtype}", field="weights")
    if 0 in arr.shape:
        raise NotAMatrix(f"weights matrix is empty (shape {arr.shape})", field="weights")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NotAMatrix("weights contain NaN or infinite values", field="weights")
    return arr


def check_rank(rank: object, shape: tuple[int, int]) -> int:
    """Check that a rank is an integer in [1, min(m, n)]."""
    top = min(shape)
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise RankOutOfRange(f"rank must be an integer, got {rank!r}", field="rank")
    if not 1 <= int(rank) <= top:
        raise RankOutOfRange(f"rank {rank} is out of range for a {shape[0]} x {shape[1]} matrix: use 1..{top}", field="rank")
    return int(rank)


def load_weights(path: str | Path) -> np.ndarray:
    """Read a 2-D matrix from a NumPy .npy file (never unpickling objects)."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise BadWeightsFile(f"{p}: not a .npy file (expected a NumPy array saved with numpy.save)", field="weights")
    try:
        with p.open("rb") as fh:
            head = fh.read(len(NPY_MAGIC))
    except OSError as exc:
        raise BadWeightsFile(f"{p}: cannot read: {exc.strerror or exc}", field="weights") from None
    if head != NPY_MAGIC:
        raise BadWeightsFile(f"{p}: not a .npy file (no NumPy header)", field="weights")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise BadWeightsFile(f"{p}: unreadable .npy file: {exc}", field="weights") from None
    return as_matrix(arr)


# --- spectrum and energy -------------------------------------------------------------------


def _gram(a: np.ndarray) -> np.ndarray:
    """AᵀA of the narrower side in float64, accumulated over row chunks to bound memory."""
    if a.shape[0] < a.shape[1]:
        a = a.T
    n = a.shape[1]
    g = np.zeros((n, n))
    for start in range(0, a.shape[0], ROW_CHUNK):
        chunk = np.asarray(a[start : start + ROW_CHUNK], dtype=np.float64)
        g += chunk.T @ chunk
    return g


def singular_values(weights: np.ndarray) -> np.ndarray:
    """All min(m, n) singular values of a matrix, descending.

    Small matrices use LAPACK directly; tall or wide ones the eigenvalues of the narrow
    Gram matrix (float64), which is what `energy` needs and costs one pass over the rows.
    """
    a = as_matrix(weights)
    if a.size <= DENSE_MAX_ENTRIES or min(a.shape) > 4096:
        return np.linalg.svd(a.astype(np.float64, copy=False), compute_uv=False)
    eig = np.linalg.eigvalsh(_gram(a))[::-1]
    return np.sqrt(np.clip(eig, 0.0, None))


def check_energy(energy: object) -> float:
    """Check that an energy share is a number in (0, 1]."""
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0.0 < float(energy) <= 1.0:
        raise BadEnergy(f"energy must be a number in (0, 1], got {energy!r}", field="energy")
    return float(energy)  # type: ignore[arg-type]


def rank_for_energy(svals: np.ndarray, energy: float) -> int:
    """The smallest r whose top r singular values keep at least `energy` of Σ s_i²."""
    energy = check_energy(energy)
    cum = np.cumsum(np.asarray(svals, dtype=np.float64) ** 2)
    if cum[-1] <= 0.0:
        return 1
    share = cum / cum[-1]
    # a tiny tolerance so that energy=1.0 (or a share hit exactly) is not lost to rounding
    return int(np.searchsorted(share, float(energy) - 1e-12, side="left")) + 1


# --- SVD methods -----------------------------------------------------------------------------

SvdResult = tuple[np.ndarray, np.ndarray, np.ndarray]  # U_r (m×r), s (r), V_rᵀ (r×n)
SvdMethod = Callable[[np.ndarray, int, int], SvdResult]
SVD_METHODS: dict[str, SvdMethod] = {}


def register_svd(name: str) -> Callable[[SvdMethod], SvdMethod]:
    """Register a truncated-SVD method under a name."""

    def deco(fn: SvdMethod) -> SvdMethod:
        SVD_METHODS[name] = fn
        return fn

    return deco


@register_svd("dense")
def _svd_dense(a: np.ndarray, rank: int, seed: int) -> SvdResult:
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return u[:, :rank], s[:rank], vt[:rank]


def orthonormal_basis(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's columns (m × k, m ≫ k), by Cholesky QR applied twice.

    Two passes of Q = Y R⁻¹ with RᵀR = YᵀY cost two thin products each and are as
    orthogonal as Householder QR for a well-conditioned sketch; a rank-deficient sketch
    (Cholesky fails) falls back to Householder QR.
    """
    q = y
    try:
        for _ in range(2):
            gram = (q.T @ q).astype(np.float64)
            upper = np.linalg.cholesky(gram).T
            q = q @ np.linalg.inv(upper).astype(y.dtype, copy=False)
    except np.linalg.LinAlgError:
        q, _ = np.linalg.qr(y)
    return q


@register_svd("randomized")
def _svd_randomized(a: np.ndarray, rank: int, seed: int, power_iters: int = 3) -> SvdResult:
    """Randomised range finder with power iterations, then an SVD of the small projection.

    Sketch Y = A Ω with k = r + oversampling Gaussian columns, sharpen the basis with a few
    rounds of A Aᵀ (re-orthonormalised each half-step), and take the SVD of Qᵀ A (k × n).
    """
    m, n = a.shape
    k = min(min(m, n), rank + max(10, rank // 2))
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((n, k)).astype(a.dtype, copy=False)
    q = orthonormal_basis(a @ omega)
    for _ in range(power_iters):
        z = orthonormal_basis(a.T @ q)
        q = orthonormal_basis(a @ z)
    ub, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ ub[:, :rank]), s[:rank], vt[:rank]


@register_svd("svds")
def _svd_scipy(a: np.ndarray, rank: int, seed: int) -> SvdResult:
    """scipy's partial SVD (ARPACK, Lanczos on AᵀA implicitly); needs rank < min(m, n)."""
    from scipy.sparse.linalg import svds

    if rank >= min(a.shape):
        return _svd_dense(a, rank, seed)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(min(a.shape)).astype(a.dtype, copy=False)
    u, s, vt = svds(a, k=rank, v0=v0, solver="arpack")
    order = np.argsort(s)[::-1]
    return u[:, order], s[order], vt[order]


def choose_method(shape: tuple[int, int], rank: int) -> str:
    """"dense" for small matrices or ranks near full; "randomized" for large, low-rank cases."""
    m, n = shape
    if m * n <= DENSE_MAX_ENTRIES or rank * 4 > min(m, n):
        return "dense"
    return "randomized"


def residual_norm(a: np.ndarray, lookup: np.ndarray, projection: np.ndarray) -> float:
    """‖A − lookup @ projection‖_F in float64, streamed over row chunks."""
    total = 0.0
    for start in range(0, a.shape[0], ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        # the product in the factors' own precision (as inference computes it), the sum in float64
        diff = (a[rows] - lookup[rows] @ projection).astype(np.float64, copy=False)
        total += float(np.einsum("ij,ij->", diff, diff))
    return math.sqrt(total)


def frobenius_norm(a: np.ndarray) -> float:
    """‖A‖_F in float64, streamed over row chunks."""
    total = 0.0
    for start in range(0, a.shape[0], ROW_CHUNK):
        chunk = np.asarray(a[start : start + ROW_CHUNK], dtype=np.float64)
        total += float(np.einsum("ij,ij->", chunk, chunk))
    return math.sqrt(total)


def factorize(weights: object, rank: int, *, method: str = "auto", seed: int = 0) -> Factorization:
    """Truncated SVD of `weights` at `rank`: lookup U_r Σ_r, projection V_rᵀ, with error figures.

    method: "auto" (dense when small or rank near full, else randomised), or a name in
    SVD_METHODS. The reported error is measured on the returned factors.
    """
    a = as_matrix(weights)
    r = check_rank(rank, a.shape)
    name = choose_method(a.shape, r) if method == "auto" else method
    svd = SVD_METHODS.get(name)
    if svd is None:
        raise UnknownMethod(f"unknown SVD method {method!r}; use auto or one of {', '.join(sorted(SVD_METHODS))}", field="method")
    t0 = time.perf_counter()
    u, s, vt = svd(a, r, seed)
    lookup = np.ascontiguousarray((u * s[None, :]).astype(a.dtype, copy=False))
    projection = np.ascontiguousarray(vt.astype(a.dtype, copy=False))
    seconds = time.perf_counter() - t0
    norm = frobenius_norm(a)
    if norm == 0.0:
        rel_error, energy = 0.0, 1.0
    else:
        rel_error = residual_norm(a, lookup, projection) / norm
        energy = min(1.0, float(np.sum(np.asarray(s, dtype=np.float64) ** 2)) / norm**2)
    return Factorization(lookup, projection, np.asarray(s, dtype=np.float64), name, rel_error, energy, seconds)


def factorize_energy(weights: object, energy: float, *, method: str = "auto", seed: int = 0) -> Factorization:
    """Factorise at the smallest rank that keeps `energy` of the spectrum (see the module doc)."""
    a = as_matrix(weights)
    check_energy(energy)  # before the spectrum, which costs a pass over the matrix
    return factorize(a, rank_for_energy(singular_values(a), energy), method=method, seed=seed)


# --- files -------------------------------------------------------------------------------------


def save_npz(fact: Factorization, path: str | Path) -> None:
    """Write the factors to a .npz: `lookup`, `projection`, `singular_values`."""
    with Path(path).open("wb") as fh:  # a file object, so numpy does not append its own suffix
        np.savez(fh, lookup=fact.lookup, projection=fact.projection, singular_values=fact.singular_values)


def export_onnx(fact: Factorization, path: str | Path | None = None, *, opset: int = 17) -> bytes:
    """The two-layer form as ONNX: Gather rows of U_r Σ_r by token id, then MatMul by V_rᵀ.

    Input `token_ids` int64 [batch, tokens]; output `embeddings` float [batch, tokens, n].
    Both factors are initialisers, so a trainer can fine-tune them. Returns the model bytes
    and writes them to `path` when given.
    """
    from onnx import TensorProto, checker, helper, numpy_helper

    if fact.lookup.nbytes + fact.projection.nbytes > ONNX_MAX_BYTES:
        raise FactorizeError(
            f"the factors take {(fact.lookup.nbytes + fact.projection.nbytes) / 2**30:.2f} GiB, over the 2 GiB "
            "limit of a single ONNX file; write them with -o OUT.npz instead",
            field="--onnx",
        )
    elem = TensorProto.FLOAT if fact.lookup.dtype == np.float32 else TensorProto.DOUBLE
    lookup = numpy_helper.from_array(fact.lookup, name="lookup")
    projection = numpy_helper.from_array(fact.projection, name="projection")
    nodes = [
        helper.make_node("Gather", ["lookup", "token_ids"], ["reduced"], name="lowrank_lookup", axis=0),
        helper.make_node("MatMul", ["reduced", "projection"], ["embeddings"], name="lowrank_projection"),
    ]
    graph = helper.make_graph(
        nodes,
        "lowrank_embedding",
        [helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embeddings", elem, ["batch", "tokens", fact.shape[1]])],
        initializer=[lookup, projection],
    )
    model = helper.make_model(
        graph,
        producer_name="widthwise-factorize",
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=8,
    )
    model.doc_string = f"rank-{fact.rank} factorisation of a {fact.shape[0]}x{fact.shape[1]} matrix"
    checker.check_model(model)
    data = model.SerializeToString()
    if path is not None:
        Path(path).write_bytes(data)
    return data
