"""Truncated SVD factorisation: error figures, energy rank, ONNX export, input checks."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from widthwise.profiler import factorize as fz


def _with_spectrum(m: int, n: int, svals: list[float], seed: int = 0) -> np.ndarray:
    """A matrix with exactly these singular values (random orthonormal bases)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, len(svals))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(svals))))
    return (u * np.asarray(svals)) @ v.T


@pytest.fixture(scope="module")
def decaying() -> np.ndarray:
    """120 x 40 matrix whose spectrum decays geometrically (a realistic embedding shape)."""
    return _with_spectrum(120, 40, [float(0.85**i) * 10 for i in range(40)], seed=1)


@pytest.mark.parametrize("method", ["dense", "svds", "randomized"])
@pytest.mark.parametrize("rank", [1, 5, 17])
def test_error_equals_tail_of_singular_values(decaying: np.ndarray, method: str, rank: int) -> None:
    s = np.linalg.svd(decaying, compute_uv=False)
    expected = np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2))
    fact = fz.factorize(decaying, rank, method=method)
    # the reported error is measured on the returned factors, so it must match the optimum
    assert fact.rel_error == pytest.approx(expected, rel=1e-6)
    measured = np.linalg.norm(decaying - fact.lookup @ fact.projection) / np.linalg.norm(decaying)
    assert fact.rel_error == pytest.approx(measured, rel=1e-9)
    assert fact.energy_kept == pytest.approx(np.sum(s[:rank] ** 2) / np.sum(s**2), rel=1e-9)
    np.testing.assert_allclose(fact.singular_values, s[:rank], rtol=1e-8)


def test_random_matrix_error_is_tail_at_every_rank() -> None:
    a = np.random.default_rng(3).standard_normal((30, 12))
    s = np.linalg.svd(a, compute_uv=False)
    for r in range(1, 13):
        fact = fz.factorize(a, r, method="dense")
        assert fact.rel_error == pytest.approx(np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2)), abs=1e-12)
    assert fz.factorize(a, 12).rel_error < 1e-12


def test_factor_layout(decaying: np.ndarray) -> None:
    fact = fz.factorize(decaying, 6, method="dense")
    assert fact.lookup.shape == (120, 6) and fact.projection.shape == (6, 40)
    # projection = V_r^T has orthonormal rows; lookup = U_r Sigma_r has orthogonal columns of norm s_i
    np.testing.assert_allclose(fact.projection @ fact.projection.T, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(fact.lookup.T @ fact.lookup, np.diag(fact.singular_values**2), atol=1e-8)
    assert fact.params_original == 4800 and fact.params_factored == 6 * 160
    assert fact.saving == pytest.approx(1 - 960 / 4800)


def test_parameter_saving_of_an_embedding_table() -> None:
    a = np.random.default_rng(0).standard_normal((1000, 100)).astype(np.float32)
    fact = fz.factorize(a, 10)
    assert fact.method == "dense"  # small: under the dense threshold
    assert fact.params_original == 100_000 and fact.params_factored == 10 * 1100
    assert fact.saving == pytest.approx(0.89)
    assert fact.lookup.dtype == np.float32 and fact.projection.dtype == np.float32


def test_auto_uses_randomized_for_large_low_rank(monkeypatch: pytest.MonkeyPatch, decaying: np.ndarray) -> None:
    assert fz.choose_method((100_000, 300), 30) == "randomized"
    assert fz.choose_method((100_000, 300), 100) == "dense"  # rank near full: dense is better
    assert fz.choose_method((500, 300), 10) == "dense"
    monkeypatch.setattr(fz, "DENSE_MAX_ENTRIES", 100)
    assert fz.factorize(decaying, 5).method == "randomized"


def test_energy_rank_on_known_spectrum() -> None:
    a = _with_spectrum(20, 10, [4.0, 3.0, 2.0, 1.0])  # s^2 = 16, 9, 4, 1 of 30
    s = fz.singular_values(a)
    assert fz.rank_for_energy(s, 0.5) == 1
    assert fz.rank_for_energy(s, 16 / 30) == 1
    assert fz.rank_for_energy(s, 0.54) == 2
    assert fz.rank_for_energy(s, 25 / 30) == 2
    assert fz.rank_for_energy(s, 0.84) == 3
    assert fz.rank_for_energy(s, 1.0) == 4
    assert fz.factorize_energy(a, 0.84).rank == 3


@pytest.mark.parametrize("energy", [0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_energy_rank_is_minimal(decaying: np.ndarray, energy: float) -> None:
    s = np.linalg.svd(decaying, compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    fact = fz.factorize_energy(decaying, energy)
    r = fact.rank
    assert share[r - 1] >= energy and fact.energy_kept >= energy - 1e-12
    if r > 1:
        assert share[r - 2] < energy


def test_gram_spectrum_matches_lapack(monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.random.default_rng(5).standard_normal((3000, 50)) @ np.diag(np.linspace(5, 0.5, 50))
    exact = np.linalg.svd(a, compute_uv=False)
    monkeypatch.setattr(fz, "DENSE_MAX_ENTRIES", 1000)
    monkeypatch.setattr(fz, "ROW_CHUNK", 700)  # several chunks, the last one partial
    np.testing.assert_allclose(fz.singular_values(a), exact, rtol=1e-8)
    np.testing.assert_allclose(fz.singular_values(a.T), exact, rtol=1e-8)


@pytest.mark.parametrize(
    "weights, error",
    [
        (np.zeros(5), fz.NotAMatrix),
        (np.zeros((2, 3, 4)), fz.NotAMatrix),
        (np.zeros((0, 3)), fz.NotAMatrix),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), fz.NotAMatrix),
        (np.array([["a", "b"]]), fz.NotAMatrix),
    ],
)
def test_bad_matrices(weights: np.ndarray, error: type) -> None:
    with pytest.raises(error):
        fz.factorize(weights, 1)


@pytest.mark.parametrize("rank", [0, -1, 11, 2.5, True, "3"])
def test_rank_out_of_range(rank: object) -> None:
    with pytest.raises(fz.RankOutOfRange, match="rank"):
        fz.factorize(np.ones((20, 10)), rank)  # type: ignore[arg-type]


def test_rank_message_names_the_range() -> None:
    with pytest.raises(fz.RankOutOfRange, match=r"1\.\.10"):
        fz.factorize(np.ones((20, 10)), 11)


@pytest.mark.parametrize("energy", [0.0, -0.2, 1.5, float("nan"), "0.9"])
def test_bad_energy(energy: object) -> None:
    with pytest.raises(fz.BadEnergy):
        fz.factorize_energy(np.eye(4), energy)  # type: ignore[arg-type]


def test_unknown_method() -> None:
    with pytest.raises(fz.UnknownMethod, match="qr"):
        fz.factorize(np.eye(4), 2, method="qr")


def test_load_weights(tmp_path) -> None:
    good = tmp_path / "w.npy"
    np.save(good, np.arange(12, dtype=np.int32).reshape(3, 4))
    loaded = fz.load_weights(good)
    assert loaded.dtype == np.float64 and loaded.shape == (3, 4)

    npz = tmp_path / "w.npz"
    np.savez(npz, w=np.eye(3))
    with pytest.raises(fz.BadWeightsFile, match="not a .npy"):
        fz.load_weights(npz)
    fake = tmp_path / "fake.npy"
    fake.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(fz.BadWeightsFile, match="no NumPy header"):
        fz.load_weights(fake)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(fz.BadWeightsFile, match="unreadable"):
        fz.load_weights(objects)  # pickled objects are refused, never loaded
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(fz.BadWeightsFile):
        fz.load_weights(truncated)
    with pytest.raises(fz.BadWeightsFile, match="cannot read"):
        fz.load_weights(tmp_path / "missing.npy")
    vector = tmp_path / "vector.npy"
    np.save(vector, np.ones(7))
    with pytest.raises(fz.NotAMatrix, match="2-D"):
        fz.load_weights(vector)


def test_save_npz_round_trip(tmp_path, decaying: np.ndarray) -> None:
    fact = fz.factorize(decaying, 4)
    path = tmp_path / "factors.bin"  # no .npz suffix: written exactly where asked
    fz.save_npz(fact, path)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["lookup"], fact.lookup)
        np.testing.assert_array_equal(data["projection"], fact.projection)
        np.testing.assert_array_equal(data["singular_values"], fact.singular_values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnx_export_computes_the_factorised_embeddings(tmp_path, dtype: type) -> None:
    rng = np.random.default_rng(7)
    table = (rng.standard_normal((500, 12)) @ rng.standard_normal((12, 64))).astype(dtype)
    table += 0.01 * rng.standard_normal(table.shape).astype(dtype)
    fact = fz.factorize(table, 12)
    path = tmp_path / "emb.onnx"
    data = fz.export_onnx(fact, path)
    assert path.read_bytes() == data

    model = onnx.load(path)
    assert [n.op_type for n in model.graph.node] == ["Gather", "MatMul"]
    assert sorted(i.name for i in model.graph.initializer) == ["lookup", "projection"]

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    ids = rng.integers(0, 500, size=(3, 9), dtype=np.int64)
    (out,) = session.run(None, {"token_ids": ids})
    assert out.shape == (3, 9, 64) and out.dtype == dtype
    expected = (fact.lookup.astype(np.float64) @ fact.projection.astype(np.float64))[ids]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    # and the embeddings are close to the original rows, as far as the rank allows
    assert np.linalg.norm(out - table[ids]) / np.linalg.norm(table[ids]) < 0.05


@pytest.mark.parametrize("method", ["randomized", "svds"])
def test_wide_float32_matrix(decaying: np.ndarray, method: str) -> None:
    wide = decaying.T.astype(np.float32)  # 40 x 120: more columns than rows
    s = np.linalg.svd(decaying, compute_uv=False)
    fact = fz.factorize(wide, 7, method=method)
    assert fact.lookup.shape == (40, 7) and fact.projection.shape == (7, 120)
    assert fact.lookup.dtype == np.float32
    assert fact.rel_error == pytest.approx(np.sqrt(np.sum(s[7:] ** 2) / np.sum(s**2)), rel=1e-4)


def test_onnx_export_refuses_factors_over_two_gib(monkeypatch: pytest.MonkeyPatch, decaying: np.ndarray) -> None:
    monkeypatch.setattr(fz, "ONNX_MAX_BYTES", 1000)  # stands in for 2 GiB: the 120 x 4 factors are larger
    with pytest.raises(fz.FactorizeError, match="-o OUT.npz"):
        fz.export_onnx(fz.factorize(decaying, 4))
