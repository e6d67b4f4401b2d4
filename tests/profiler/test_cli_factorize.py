"""`widthwise factorize`: output, files written, and clear errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from widthwise.profiler.cli import main


@pytest.fixture()
def table(tmp_path: Path) -> Path:
    """A 400 x 50 'embedding table' of rank 8 plus noise, saved as .npy."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((400, 8)) @ rng.standard_normal((8, 50)) + 0.05 * rng.standard_normal((400, 50))
    path = tmp_path / "emb.npy"
    np.save(path, w.astype(np.float32))
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["factorize", *args])
    return result.exit_code, result.output


def test_rank_prints_saving_and_error(table: Path) -> None:
    code, out = _run("--weights", str(table), "--rank", "8")
    assert code == 0, out
    assert "400 x 50" in out
    assert "20,000 -> 3,600" in out  # 400*50 -> 8*(400+50)
    assert "saving         82.0 %" in out
    assert "rel. error" in out and "energy kept" in out


def test_json_output_matches_the_library(table: Path) -> None:
    code, out = _run("--weights", str(table), "--rank", "8", "--json")
    assert code == 0, out
    report = json.loads(out)
    w = np.load(table).astype(np.float64)
    s = np.linalg.svd(w, compute_uv=False)
    assert report["rank"] == 8 and report["shape"] == [400, 50]
    assert report["params_original"] == 20_000 and report["params_factored"] == 3_600
    assert report["rel_error"] == pytest.approx(np.sqrt(np.sum(s[8:] ** 2) / np.sum(s**2)), rel=1e-4)
    assert report["npz"] is None and report["onnx"] is None


def test_energy_picks_minimal_rank_and_writes_files(table: Path, tmp_path: Path) -> None:
    npz, model = tmp_path / "f.npz", tmp_path / "f.onnx"
    code, out = _run("--weights", str(table), "--energy", "0.97", "-o", str(npz), "--onnx", str(model), "--json")
    assert code == 0, out
    report = json.loads(out)
    s = np.linalg.svd(np.load(table).astype(np.float64), compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    r = report["rank"]
    assert share[r - 1] >= 0.97 and (r == 1 or share[r - 2] < 0.97)
    assert report["energy_target"] == 0.97
    with np.load(npz) as data:
        lookup, projection = data["lookup"], data["projection"]
    assert lookup.shape == (400, r) and projection.shape == (r, 50)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, 399, 5]], dtype=np.int64)
    (emb,) = session.run(None, {"token_ids": ids})
    np.testing.assert_allclose(emb[0], (lookup @ projection)[ids[0]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rank", "0"], "rank 0 is out of range for a 400 x 50 matrix: use 1..50"),
        (["--rank", "51"], "rank 51 is out of range"),
        (["--energy", "1.5"], "energy must be a number in (0, 1]"),
        (["--rank", "3", "--method", "magic"], "Invalid value for '--method'"),
        ([], "give exactly one of --rank and --energy"),
        (["--rank", "3", "--energy", "0.9"], "give exactly one of --rank and --energy"),
    ],
)
def test_bad_arguments(table: Path, args: list[str], message: str) -> None:
    code, out = _run("--weights", str(table), *args)
    assert code != 0
    assert message in out


def test_not_2d_and_not_npy(tmp_path: Path) -> None:
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((2, 3, 4)))
    code, out = _run("--weights", str(cube), "--rank", "1")
    assert code == 1 and "must be a 2-D matrix, got an array of shape (2, 3, 4)" in out
    text = tmp_path / "weights.txt"
    text.write_text("1 2\n3 4\n")
    code, out = _run("--weights", str(text), "--rank", "1")
    assert code == 1 and "weights.txt: not a .npy file" in out
    code, out = _run("--weights", str(tmp_path / "absent.npy"), "--rank", "1")
    assert code == 1 and "cannot read" in out


def test_unwritable_output_is_a_clear_error(table: Path, tmp_path: Path) -> None:
    code, out = _run("--weights", str(table), "--rank", "2", "-o", str(tmp_path / "no" / "such" / "dir.npz"))
    assert code == 1 and "cannot write output" in out


def test_real_process_exit_codes(table: Path, tmp_path: Path) -> None:
    """The installed entry point, in a real subprocess: success prints, failure exits non-zero."""
    cmd = [sys.executable, "-c", "from widthwise.profiler.cli import main; main()", "factorize", "--weights"]
    ok = subprocess.run([*cmd, str(table), "--rank", "4"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "rank           4" in ok.stdout
    bad = subprocess.run([*cmd, str(table), "--rank", "999"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "Error: rank 999 is out of range" in bad.stderr and "Traceback" not in bad.stderr
