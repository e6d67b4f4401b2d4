"""Low-rank text model: latency and size per rank on the local agent, and the SVD's speed.

Part 1 times the `text_lowrank` network (vocab x r lookup, r x dim projection, mean over
tokens, dense dim -> h, dense h -> classes) at several ranks r on a local agent (real
subprocess, real onnxruntime), next to the unfactorised network (a vocab x dim lookup
feeding the same head), and prints parameters and median latency with ratios.
Part 2 times the truncated SVD of a 100,000 x 300 random-plus-low-rank matrix at r = 30
(target: at most 5 s with the default method) against the exact dense SVD.

    python benchmarks/bench_lowrank.py [--ranks 300,100,30,10] [--skip-latency] [--skip-svd]

BLAS threads follow OPENBLAS_NUM_THREADS (printed); on a machine shared with other jobs,
OPENBLAS_NUM_THREADS=1 gives steadier SVD figures than spinning threads competing for cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np


from widthwise.device_agents.spaces import make_space
from widthwise.profiler.agent_client import connect
from widthwise.profiler.factorize import factorize

SVD_TARGET_S = 5.0


def unfactorised_onnx(vocab: int, dim: int, tokens: int, hidden: int, classes: int) -> bytes:
    """The network without factorisation: Gather from vocab x dim, mean, dense+ReLU, dense."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple[int, ...], std: float) -> object:
        return numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name)

    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["mean", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "text_unfactorised",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, tokens])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=[
            init("table", (vocab, dim), 1.0),
            init("w1", (hidden, dim), (2.0 / dim) ** 0.5),
            init("b1", (hidden,), 0.05),
            init("w2", (classes, hidden), (1.0 / hidden) ** 0.5),
            init("b2", (classes,), 0.05),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


def bench_latency(args: argparse.Namespace) -> None:
    """Median latency and parameters of the text model per rank, one agent, one run."""
    params = {"vocab": args.vocab}
    space = make_space("text_lowrank", params)
    dim, tokens = space.param_dict["dim"], space.param_dict["tokens"]
    classes = space.output_channels
    timing = {"warmup": 3, "repeat": args.repeat, "min_repeat_ms": 20}
    rows = []
    with connect("local") as agent:
        hello = agent.hello()
        print(f"agent: {hello.get('cpu')}, {hello.get('cores')} cores, runtimes {hello.get('runtimes')}")
        direct = unfactorised_onnx(args.vocab, dim, tokens, args.hidden, classes)
        res = agent.bench_model(direct, fmt="onnx", runtime="onnxruntime", timing=timing)
        direct_params = args.vocab * dim + dim * args.hidden + args.hidden + args.hidden * classes + classes
        rows.append(("unfactorised", direct_params, res["stats"]["median"], res["stats"]["iqr"]))
        for r in args.ranks:
            spec = {"space": "text_lowrank", "params": params, "widths": [r, args.hidden]}
            res = agent.bench_spec(spec, runtime="onnxruntime", timing=timing)
            _, n_params = space.counts([r, args.hidden])
            rows.append((f"r = {r}", n_params, res["stats"]["median"], res["stats"]["iqr"]))
    base_params, base_ms = rows[0][1], rows[0][2]
    print(f"\ntext_lowrank, vocab {args.vocab}, dim {dim}, tokens {tokens}, hidden {args.hidden}, "
          f"classes {classes}; onnxruntime, 1 thread, {args.repeat} repeats (median, iqr)")
    print(f"{'network':<14}{'params':>13}{'x params':>10}{'median ms':>12}{'iqr ms':>9}{'x latency':>11}")
    for name, n_params, median, iqr in rows:
        print(f"{name:<14}{n_params:>13,}{n_params / base_params:>10.3f}{median:>12.4f}{iqr:>9.4f}"
              f"{median / base_ms:>11.3f}")


def random_plus_low_rank(m: int, n: int, rank: int, seed: int = 0) -> np.ndarray:
    """A rank-`rank` signal plus dense Gaussian noise at 5 % of its scale (float32)."""
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((m, rank), dtype=np.float32) @ rng.standard_normal((rank, n), dtype=np.float32)
    return signal / np.float32(np.sqrt(rank)) + np.float32(0.05) * rng.standard_normal((m, n), dtype=np.float32)


def bench_svd(args: argparse.Namespace) -> None:
    """Seconds of the rank-30 truncated SVD per method (medians), with the error each reaches."""
    m, n, r = args.svd_rows, 300, 30
    a = random_plus_low_rank(m, n, r)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"\nSVD of a {m:,} x {n} random-plus-rank-{r} matrix at r = {r} (float32), "
          f"median of {args.svd_repeats} runs, OPENBLAS_NUM_THREADS={threads}")
    results = {}
    for method in ("auto", "randomized", "svds", "dense"):
        times, fact = [], None
        for _ in range(args.svd_repeats if method != "dense" else 1):
            t0 = time.perf_counter()
            fact = factorize(a, r, method=method)
            times.append(time.perf_counter() - t0)
        results[method] = (statistics.median(times), fact)
    exact_s, exact = results["dense"]
    print(f"{'method':<12}{'used':<12}{'seconds':>9}{'x dense':>9}{'rel. error':>12}{'x optimum':>11}")
    for method, (sec, fact) in results.items():
        print(f"{method:<12}{fact.method:<12}{sec:>9.2f}{sec / exact_s:>9.3f}{fact.rel_error:>12.6f}"
              f"{fact.rel_error / exact.rel_error:>11.5f}")
    auto_s = results["auto"][0]
    verdict = "meets" if auto_s <= SVD_TARGET_S else "MISSES"
    print(f"auto: {auto_s:.2f} s {verdict} the {SVD_TARGET_S:.0f} s target (figures include the error measurement)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="300,100,30,10", help="comma-separated ranks (default 300,100,30,10)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden width h (default 256)")
    parser.add_argument("--vocab", type=int, default=100_000, help="vocabulary size (default 100,000)")
    parser.add_argument("--repeat", type=int, default=15, help="timing repeats per network (default 15)")
    parser.add_argument("--svd-rows", type=int, default=100_000, help="rows of the SVD matrix (default 100,000)")
    parser.add_argument("--svd-repeats", type=int, default=3, help="runs per SVD method (default 3)")
    parser.add_argument("--skip-latency", action="store_true", help="do not start an agent")
    parser.add_argument("--skip-svd", action="store_true", help="do not time the SVD")
    args = parser.parse_args()
    args.ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    if not args.skip_latency:
        bench_latency(args)
    if not args.skip_svd:
        bench_svd(args)


if __name__ == "__main__":
    main()
