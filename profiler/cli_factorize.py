"""`widthwise factorize`: split a weight matrix into a low-rank lookup and projection."""

from __future__ import annotations

import json
from pathlib import Path

import click

from widthwise.errors import UsageError, cli_errors

from .errors import OutputError
from .factorize import (
    SVD_METHODS,
    Factorization,
    export_onnx,
    factorize as factorize_matrix,
    factorize_energy,
    load_weights,
    save_npz,
)


def _describe(fact: Factorization, source: str) -> str:
    """Human-readable lines: shape, rank, parameters before and after, error, energy."""
    m, n = fact.shape
    return "\n".join(
        [
            f"weights        {source}: {m} x {n}",
            f"rank           {fact.rank} (method {fact.method}, {fact.seconds:.2f} s)",
            f"parameters     {fact.params_original:,} -> {fact.params_factored:,} "
            f"({m} x {fact.rank} lookup + {fact.rank} x {n} projection)",
            f"saving         {100.0 * fact.saving:.1f} %",
            f"rel. error     {fact.rel_error:.6f}  (||W - L P||_F / ||W||_F)",
            f"energy kept    {fact.energy_kept:.6f}  (sum of kept s_i^2 / sum of all s_i^2)",
        ]
    )


@click.command()
@click.option("--weights", "weights_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A 2-D matrix saved with numpy.save (.npy), e.g. an embedding table V x d.")
@click.option("--rank", type=int, default=None, help="Keep this many singular values (1..min(m, n)).")
@click.option("--energy", type=float, default=None,
              help="Instead of --rank: the smallest rank keeping this share of sum(s_i^2), in (0, 1].")
@click.option("-o", "--output", "npz_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the factors to this .npz (lookup = U_r S_r, projection = V_r^T, singular_values).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the two-layer form (Gather, then MatMul) as an ONNX model.")
@click.option("--method", type=click.Choice(["auto", *sorted(SVD_METHODS)]), default="auto", show_default=True,
              help="SVD algorithm; auto uses a randomised SVD for large matrices at small rank.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the randomised methods.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@cli_errors
def factorize(
    weights_path: Path,
    rank: int | None,
    energy: float | None,
    npz_path: Path | None,
    onnx_path: Path | None,
    method: str,
    seed: int,
    as_json: bool,
) -> None:
    """Truncated SVD of a weight matrix W (m x n) into a lookup U_r S_r (m x r) and a
    projection V_r^T (r x n): prints the parameter saving and the relative Frobenius error."""
    if (rank is None) == (energy is None):
        raise UsageError("give exactly one of --rank and --energy", field="--rank")
    matrix = load_weights(weights_path)
    if rank is not None:
        fact = factorize_matrix(matrix, rank, method=method, seed=seed)
    else:
        fact = factorize_energy(matrix, energy, method=method, seed=seed)
    for path, write in ((npz_path, save_npz), (onnx_path, export_onnx)):
        if path is not None:
            try:
                write(fact, path)
            except OSError as exc:
                raise OutputError(f"cannot write output: {exc}", field="--output" if path is npz_path else "--onnx") from None
    summary = fact.summary()
    if energy is not None:
        summary["energy_target"] = energy
    summary["weights"] = str(weights_path)
    summary["npz"] = str(npz_path) if npz_path is not None else None
    summary["onnx"] = str(onnx_path) if onnx_path is not None else None
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    click.echo(_describe(fact, str(weights_path)))
    if energy is not None:
        click.echo(f"energy target  {energy} -> smallest rank {fact.rank}")
    for label, path in (("factors", npz_path), ("onnx", onnx_path)):
        if path is not None:
            click.echo(f"{label:<14} {path}")
