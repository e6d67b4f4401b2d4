"""TFLite on this machine: MobileNet-V1 float32 and int8 on LiteRT against ONNX Runtime.

Prints, side by side in one run (medians; the machine may be shared, so read the ratios):
  - the time to write the .tflite of MobileNet-V1 1.0 and 1.5x at 224, float32 and int8
    (target: the 1.5x float32 model in at most 100 ms);
  - in-process latency of MobileNet-V1 1.0 at 224 with the agent's timing loop: ONNX
    Runtime float32, LiteRT float32 and int8 with and without XNNPACK, and tflite_runtime
    where it works here; each as a ratio to ONNX Runtime float32;
  - the same LiteRT networks timed through a local agent (bench_spec over TCP), as a ratio
    to the in-process median (target: within 3 %).
Run: .venv/bin/python benchmarks/bench_tflite.py [--repeat N] [--threads T] [--rounds R] [--no-agent]
     [--write-only]  (only the writing section)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.errors import RuntimeUnavailable
from widthwise.device_agents.runtimes import get_runtime
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.timing import TimingSettings, time_session

BUILD_TARGET_MS = 100.0
AGENT_TOLERANCE = 0.03

#: (label, runtime, dtype, delegate) of the in-process rows, the reference first
ROWS = (
    ("onnxruntime float32", "onnxruntime", "float32", "none"),
    ("litert float32 xnnpack", "litert", "float32", "xnnpack"),
    ("litert float32 no-delegate", "litert", "float32", "none"),
    ("litert int8 xnnpack", "litert", "int8", "xnnpack"),
    ("litert int8 no-delegate", "litert", "int8", "none"),
    ("tflite_runtime float32 xnnpack", "tflite", "float32", "xnnpack"),
    ("tflite_runtime int8 xnnpack", "tflite", "int8", "xnnpack"),
)


def build_ms(space, widths, dtype: str, builds: int) -> tuple[float, float, int]:
    """Median and minimum wall time of writing the model (after one untimed build), and its size."""
    model = build_tflite(space, widths, dtype=dtype)
    times = []
    for _ in range(builds):
        start = time.perf_counter_ns()
        model = build_tflite(space, widths, dtype=dtype)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times), min(times), len(model)


def bytes_floor_ms(size: int, builds: int) -> float:
    """Median time to join `size` bytes of ready arrays into a new bytes object: the copy every
    writer returning bytes pays at least (mostly first-touch page faults of the new memory)."""
    parts = [np.ones(size // 8, dtype=np.uint8) for _ in range(8)]
    times = []
    for _ in range(builds):
        start = time.perf_counter_ns()
        joined = b"".join(parts)
        times.append((time.perf_counter_ns() - start) / 1e6)
        del joined
    return statistics.median(times)


def in_process_ms(runtime_name: str, model: bytes, delegate: str, settings: TimingSettings) -> tuple[float, dict]:
    """Median latency (ms) of one run with the agent's timing loop, and the session's info."""
    runtime = get_runtime(runtime_name)
    options = {"delegate": delegate} if runtime.model_format == "tflite" else {}
    session = runtime.load(model, threads=settings.threads, options=options)
    measurement = time_session(session, settings)
    return statistics.median(measurement.times_ms), session.info


def agent_vs_in_process(space, widths, dtype: str, delegate: str, timing: dict, rounds: int) -> list[tuple[float, float]]:
    """(agent median, in-process median) pairs, alternating, for the same LiteRT network.

    The agent is a local one (bench_spec over TCP); alternating the two in each round
    keeps a slow spell of a shared machine from landing on one side only.
    """
    from widthwise.profiler.agent_client import connect  # host side only: the agent itself never imports profiler

    settings = TimingSettings(**timing)
    session = get_runtime("litert").load(build_tflite(space, widths, dtype=dtype), threads=settings.threads,
                                         options={"delegate": delegate})
    spec = {"space": space.name, "params": space.param_dict, "widths": list(widths), "dtype": dtype}
    pairs = []
    with connect("local") as client:
        for _ in range(rounds):
            body = client.bench_spec(spec, runtime="litert", timing=timing, options={"delegate": delegate})
            local = statistics.median(time_session(session, settings).times_ms)
            pairs.append((float(body["stats"]["median"]), local))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--builds", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="alternating agent / in-process rounds")
    parser.add_argument("--no-agent", action="store_true", help="skip the timing through a local agent")
    parser.add_argument("--write-only", action="store_true", help="only time writing the models, no runtimes")
    args = parser.parse_args()

    space = make_space("mobilenet_v1", {"resolution": 224})
    base, largest = space.base_widths(), space.largest()

    print(f"writing MobileNet-V1 at 224 as .tflite ({args.builds} builds)")
    for label, widths in (("1.0x", base), ("1.5x", largest)):
        for dtype in ("float32", "int8"):
            ms, fastest, size = build_ms(space, widths, dtype, args.builds)
            note = ""
            if label == "1.5x" and dtype == "float32":
                note = f"  target <= {BUILD_TARGET_MS:.0f} ms: {'met' if ms <= BUILD_TARGET_MS else 'MISSED'} (median)"
            print(f"  {label} {dtype:8s} median {ms:7.1f} ms  min {fastest:7.1f} ms  {size / 1e6:5.1f} MB{note}")
            if label == "1.5x" and dtype == "float32":
                floor = bytes_floor_ms(size, args.builds)
                print(f"  {'':13s} of which at least {floor:5.1f} ms is joining {size / 1e6:.1f} MB into a new bytes "
                      f"object ({floor / ms:.0%})")
    if args.write_only:
        return

    timing = {"warmup": 3, "repeat": args.repeat, "min_repeat_ms": 50.0, "threads": args.threads}
    settings = TimingSettings(**timing)
    models = {
        ("onnxruntime", "float32"): build_onnx(space, base),
        ("tflite", "float32"): build_tflite(space, base),
        ("tflite", "int8"): build_tflite(space, base, dtype="int8"),
    }
    print(f"\nMobileNet-V1 1.0 at 224, {args.threads} thread(s), in-process median of {args.repeat} repeats")
    reference = None
    for label, runtime_name, dtype, delegate in ROWS:
        fmt = "onnxruntime" if runtime_name == "onnxruntime" else "tflite"
        try:
            ms, info = in_process_ms(runtime_name, models[(fmt, dtype)], delegate, settings)
        except RuntimeUnavailable as exc:
            print(f"  {label:32s} unavailable: {exc.message}")
            continue
        reference = reference or ms
        print(f"  {label:32s} {ms:8.2f} ms  x{ms / reference:5.2f} of onnxruntime  delegate={info.get('delegate')}")

    if args.no_agent:
        return
    print(f"\nthrough a local agent (bench_spec over TCP) vs in-process, {args.rounds} alternating rounds")
    for dtype in ("float32", "int8"):
        pairs = agent_vs_in_process(space, base, dtype, "xnnpack", timing, args.rounds)
        ratios = [remote / local for remote, local in pairs]
        ratio = statistics.median(ratios)
        verdict = "within" if abs(ratio - 1) <= AGENT_TOLERANCE else "OUTSIDE"
        rounds = ", ".join(f"{remote:.2f}/{local:.2f}" for remote, local in pairs)
        print(f"  litert {dtype} xnnpack: agent/in-process ms {rounds}; median ratio {ratio:.3f} "
              f"({verdict} {AGENT_TOLERANCE:.0%})")


if __name__ == "__main__":
    main()
