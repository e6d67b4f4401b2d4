"""How cheap is building a network on the agent, and how fast is the 1.0 model in-process.

Prints the median build time of MobileNet-V1 at 224 for width multipliers 0.25, 1.0 and
1.5 (target: the 1.5x model in under 100 ms), the session-creation time, and the in-process
median latency of the 1.0 model with the agent's default timing settings; then the median
build times of MobileNet-V2 at 224 (every width and expansion times the multiplier) as
ONNX, TFLite float32 and TFLite int8 (target: 1.5x within 150 ms each); then those of
Once-for-All's MobileNet-V3 (ofa_mbv3) at 224, its smallest and largest configurations
(largest: every block k7e6, depth 4, the widest stage widths).
Run: .venv/bin/python benchmarks/bench_build.py [--builds N] [--threads T] [--only SPACE]
"""

from __future__ import annotations

import argparse
import mmap
import resource
import statistics
import time

from typing import Callable

from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.build_tflite import build_tflite
from widthwise.device_agents.runtimes import get_runtime
from widthwise.device_agents.spaces import make_space
from widthwise.device_agents.timing import TimingSettings, time_session

MULTIPLIERS = (0.25, 1.0, 1.5)
TARGET_MS = 100.0
V2_TARGET_MS = 150.0
V2_BUILDERS: dict[str, Callable[..., bytes]] = {
    "onnx": build_onnx,
    "tflite float32": build_tflite,
    "tflite int8": lambda space, widths: build_tflite(space, widths, dtype="int8"),
}


def scaled_widths(space, multiplier: float) -> list[int]:
    """A space's base widths times a multiplier, rounded to integers (at least 1)."""
    return [max(1, round(base * multiplier)) for base in space.base_widths()]


def build_times_ms(space, widths, builds: int, build: Callable[..., bytes] = build_onnx) -> tuple[list[float], int, float]:
    """Wall times of `builds` builds (after one untimed build), the model size, minor page faults per build.

    The faults matter: above 32 MiB glibc maps every new buffer afresh, and first-touch
    faults then dominate on a VM whose memory the host has not backed yet.
    """
    model = build(space, widths)
    times = []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(builds):
        del model
        start = time.perf_counter_ns()
        model = build(space, widths)
        times.append((time.perf_counter_ns() - start) / 1e6)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / builds
    return times, len(model), faults


def fault_cost_us(megabytes: int = 32) -> float:
    """Microseconds per first-touch page fault on this machine (touching a fresh anonymous map)."""
    size = megabytes << 20
    region = mmap.mmap(-1, size)
    page = mmap.PAGESIZE
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter_ns()
    for offset in range(0, size, page):
        region[offset] = 1
    elapsed_us = (time.perf_counter_ns() - start) / 1e3
    faults = max(1, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    region.close()
    return elapsed_us / faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("mobilenet_v1", "mobilenet_v2", "ofa_mbv3"),
                        help="only this space's figures (default: all)")
    args = parser.parse_args()
    if args.only in (None, "mobilenet_v1"):
        mobilenet_v1_builds(args.builds, args.threads)
    if args.only in (None, "mobilenet_v2"):
        mobilenet_v2_builds(args.builds)
    if args.only in (None, "ofa_mbv3"):
        ofa_mbv3_builds(args.builds)


def mobilenet_v1_builds(builds: int, threads: int) -> None:
    """Median ONNX build times of MobileNet-V1 at 224, and the 1.0x model's latency in-process."""
    space = make_space("mobilenet_v1", {"resolution": 224})
    print(f"MobileNet-V1 at 224, ONNX build, median of {builds} builds")
    results: dict[float, float] = {}
    fault_counts: dict[float, float] = {}
    for mult in MULTIPLIERS:
        times, size, faults = build_times_ms(space, scaled_widths(space, mult), builds)
        results[mult] = build_ms = statistics.median(times)
        fault_counts[mult] = faults
        params = space.counts(scaled_widths(space, mult))[1]
        print(f"  {mult:>4}x  build median {build_ms:7.1f} ms (min {min(times):6.1f})   "
              f"{size / 2**20:6.1f} MiB   {params / 1e6:5.2f} M params   {faults:7.0f} page faults/build")
    per_fault = fault_cost_us()
    print(f"  this machine: {per_fault:.2f} us per first-touch page fault "
          f"(1.5x: {fault_counts[1.5]:.0f} faults/build, 1.0x: {fault_counts[1.0]:.0f})")
    verdict = "meets" if results[1.5] < TARGET_MS else "MISSES"
    print(f"  1.5x build / {TARGET_MS:.0f} ms target = {results[1.5] / TARGET_MS:.2f} ({verdict} the target)")
    ratios = f"1.5x / 1.0x = {results[1.5] / results[1.0]:.2f}, 0.25x / 1.0x = {results[0.25] / results[1.0]:.2f}"
    print(f"  build ratio {ratios}")

    runtime = get_runtime("onnxruntime")
    model = build_onnx(space, scaled_widths(space, 1.0))
    start = time.perf_counter_ns()
    session = runtime.load(model, threads=threads)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    settings = TimingSettings(threads=threads)
    m = time_session(session, settings)
    print(f"1.0x in-process, onnxruntime {runtime.version()}, threads={threads}, defaults {settings.to_json()}")
    print(f"  session init {init_ms:.1f} ms; latency median {m.median:.3f} ms, min {m.min:.3f}, p90 {m.p90:.3f}, "
          f"IQR/median {m.iqr / m.median:.1%}, number {m.number}, repeats {m.count}, peak RSS {m.peak_rss_kb} KiB")
    for warning in m.warnings:
        print(f"  warning: {warning}")


def mobilenet_v2_builds(builds: int) -> None:
    """Median build times of MobileNet-V2 at 224 per builder and multiplier, against the 150 ms target."""
    space = make_space("mobilenet_v2", {"resolution": 224})
    print(f"MobileNet-V2 at 224 ({space.num_layers} variables, {len(space.factors)} blocks), median of {builds} builds")
    for name, build in V2_BUILDERS.items():
        medians = {}
        for mult in MULTIPLIERS:
            widths = scaled_widths(space, mult)
            times, size, _ = build_times_ms(space, widths, builds, build)
            medians[mult] = statistics.median(times)
            macs, params = space.counts(widths)
            print(f"  {name:<15} {mult:>4}x  build median {medians[mult]:7.1f} ms (min {min(times):6.1f})   "
                  f"{size / 2**20:6.1f} MiB   {params / 1e6:5.2f} M params   {macs / 1e6:6.0f} MMACs")
        verdict = "meets" if medians[1.5] <= V2_TARGET_MS else "MISSES"
        print(f"  {name:<15} 1.5x build / {V2_TARGET_MS:.0f} ms target = {medians[1.5] / V2_TARGET_MS:.2f} "
              f"({verdict} the target)")


def ofa_mbv3_builds(builds: int) -> None:
    """Median build times of ofa_mbv3 at 224, smallest and largest configuration, per builder."""
    space = make_space("ofa_mbv3", {"resolution": 224})
    print(f"ofa_mbv3 at 224 ({space.num_layers} variables, {len(space.factors)} blocks), median of {builds} builds")
    for name, build in V2_BUILDERS.items():
        for which in ("smallest", "largest"):
            widths = getattr(space, which)()
            times, size, _ = build_times_ms(space, widths, builds, build)
            macs, params = space.counts(widths)
            print(f"  {name:<15} {which:<8}  build median {statistics.median(times):7.1f} ms (min {min(times):6.1f})   "
                  f"{size / 2**20:6.1f} MiB   {params / 1e6:5.2f} M params   {macs / 1e6:6.0f} MMACs")


if __name__ == "__main__":
    main()
