"""The agent's request handlers: hello, bench_spec and bench_model (PROTOCOL.md, section 6).

A handler takes the decoded request header and the binary payload and returns the
response body and payload; failures are typed AgentErrors, which the server turns into
error frames. Networks are built by the builder registry (builders.py), run by the
runtime registry; timing is device_agents.timing's loop, paired timing pair_handler's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Mapping, Sequence

from . import __version__, limits, sysinfo
from .bench_answer import finish_body
from .buildable import buildable_kinds, check_buildable
from .builders import build_model, detect_format
from .errors import BadModel, BadRequest, BadWidths, RuntimeUnavailable
from .model_check import check_model
from .pair_handler import bench_paired
from .runtimes import RUNTIME_MODULES, Runtime, available_runtimes, get_runtime, unavailable_runtimes
from .network import check_block_range, isolated_network
from .space_spec import SPEC_FORMAT
from .spaces import SPACES, BlockSpec, Space, block_counts, make_space
from .timing import NO_DRIFT, DriftInjector, TimingSettings, random_inputs, reset_peak_rss, time_session

Handler = Callable[[dict, bytes], tuple[dict, bytes]]

#: the element types a bench_spec network can be built in (the one definition: the host imports it)
DTYPES = ("float32", "int8")
#: dtype -> model format to pick a default runtime for (None: the protocol's default order)
DTYPE_FORMATS: dict[str, str | None] = {"float32": None, "int8": "tflite"}
SPEC_KEYS = ("space", "params", "widths", "dtype", "seed")
MAX_PARAMS = limits.MAX_PARAMS

_drift: DriftInjector = NO_DRIFT
_bench_lock = threading.Lock()  # one timing at a time: two would distort each other


def configure(*, inject_drift_per_min: float = 0.0, caps: limits.Limits | None = None) -> None:
    """Set the agent-wide drift injection (a testing aid; 0 turns it off; the clock starts now)
    and, when given, the caps on work per request (until then: limits.DEFAULT_LIMITS)."""
    global _drift
    rate = float(inject_drift_per_min)
    _drift = DriftInjector(rate) if rate else NO_DRIFT
    if caps is not None:
        limits.configure(caps)


def choose_runtime(name: object, fmt: str | None = None) -> Runtime:
    """The requested runtime, or the first available one (onnxruntime first) for the format."""
    if name is not None:
        if not isinstance(name, str):
            raise BadRequest(f"runtime must be a string, got {name!r}", field="runtime")
        runtime = get_runtime(name)
        if fmt is not None and runtime.model_format != fmt:
            raise BadRequest(
                f"runtime {name} runs {runtime.model_format} models, not {fmt}", field="runtime", runtime=name
            )
        return runtime
    reasons = []
    for candidate in RUNTIME_MODULES:
        try:
            runtime = get_runtime(candidate)
        except RuntimeUnavailable as exc:
            reasons.append(exc.message)
            continue
        if fmt is None or runtime.model_format == fmt:
            return runtime
    wanted = f" for {fmt} models" if fmt else ""
    raise RuntimeUnavailable(f"no runtime available{wanted}: " + "; ".join(reasons or ["none installed"]))


def parse_spec(spec: object, *, check_caps: bool = True) -> tuple[Space, tuple[int, ...], str, int]:
    """Validate a bench_spec `spec` into (space, widths, dtype, seed); errors name the field.
    With `check_caps` the whole network is held to the caps (a run of its blocks timed alone
    is checked by the caller instead)."""
    if not isinstance(spec, Mapping):
        raise BadRequest("bench_spec needs a 'spec' object", field="spec")
    for key in spec:
        if key not in SPEC_KEYS:
            raise BadRequest(f"unknown spec key {key!r}; known: {', '.join(SPEC_KEYS)}", field=f"spec.{key}")
    name = spec.get("space")
    if not isinstance(name, str):
        raise BadRequest(f"spec.space must be a space name, got {name!r}; known: {', '.join(sorted(SPACES))}",
                         field="spec.space")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise BadRequest(f"spec.params must be an object, got {params!r}", field="spec.params")
    limits.check_space_params(params)
    try:
        space = make_space(name, params)
    except (TypeError, ValueError) as exc:  # e.g. a list parameter holding a non-number
        raise BadRequest(f"bad spec.params for space {name}: {exc}", field="spec.params") from exc
    if "widths" not in spec:
        raise BadRequest(f"spec.widths is missing: a list of {space.num_layers} widths{space.order_hint()}",
                         field="spec.widths")
    widths = space.validate_widths(spec["widths"])
    if check_caps:
        check_block_caps(space.blocks(widths))
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise BadRequest(f"spec.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", field="spec.dtype")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise BadRequest(f"spec.seed must be a non-negative integer, got {seed!r}", field="spec.seed")
    return space, widths, str(dtype), seed


def check_block_caps(blocks: Sequence[BlockSpec]) -> None:
    """Refuse a network of these blocks above the parameter cap or the agent's caps (limits.py)."""
    macs = params_count = 0
    for b in blocks:
        m, p = block_counts(b)
        macs, params_count = macs + m, params_count + p
    if params_count > MAX_PARAMS:
        raise BadWidths(
            f"the network with these widths has {params_count:,} parameters, above this agent's cap of "
            f"{MAX_PARAMS:,}; use smaller widths",
            params=params_count,
        )
    limits.check_blocks(blocks, macs, params_count)


def parse_block_run(header: Mapping, space: Space) -> tuple[int, int] | None:
    """The optional `block` / `block_count` fields: the run of blocks to time alone, or None."""
    if header.get("block") is None:
        if header.get("block_count") is not None:
            raise BadRequest("block_count needs block (the first block of the run to time alone)", field="block_count")
        return None
    count = header.get("block_count")
    return check_block_range(space, header["block"], 1 if count is None else count)


def _options(header: Mapping) -> dict:
    options = header.get("options") or {}
    if not isinstance(options, Mapping):
        raise BadRequest(f"options must be an object, got {options!r}", field="options")
    return dict(options)


def _bench(
    runtime: Runtime,
    model: bytes,
    settings: TimingSettings,
    options: dict,
    *,
    dtype: str | None,
    int_high: int,
    started_ns: int,
    seed: int = 0,
    output_shapes: bool = False,
) -> dict:
    """Load the model, time it, and assemble the bench answer's body (without build fields);
    with `output_shapes`, run it once more and report the shapes of its outputs."""
    start = time.perf_counter_ns()
    session = runtime.load(model, threads=settings.threads, options=options)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    limits.check_inputs(session.inputs)
    spent_s = (time.perf_counter_ns() - started_ns) / 1e9
    loop_settings = replace(settings, max_total_s=max(settings.max_total_s - spent_s, 1e-3))
    measurement = time_session(session, loop_settings, int_high=int_high, seed=seed, drift=_drift)
    body = finish_body(
        measurement.to_json(), runtime=runtime, session=session, settings=settings,
        dtype=dtype if dtype is not None else session.info.get("dtype"), init_ms=init_ms, model=model, drift=_drift,
    )
    if output_shapes:
        outputs = session.run(random_inputs(session.inputs, seed=seed, int_high=int_high))
        body["output_shapes"] = [[int(d) for d in getattr(o, "shape", ())] for o in outputs]
    return body


def block_answer(space: Space, widths: Sequence[int], run: tuple[int, int]) -> dict:
    """The `block` object of an answer timing a run of blocks alone (PROTOCOL.md, section 6)."""
    net = isolated_network(space, widths, *run)
    counts = [block_counts(b) for b in net.blocks]
    return {
        "first": run[0],
        "count": run[1],
        "names": [b.name for b in net.blocks],
        "kinds": [b.kind for b in net.blocks],
        "input_shape": list(net.input_shape),
        "output_shape": list(net.output_shape),
        "skip_shapes": {str(index): list(shape) for index, shape in net.skips},
        "macs": sum(m for m, _ in counts),
        "params": sum(p for _, p in counts),
    }


def handle_hello(header: dict, payload: bytes) -> tuple[dict, bytes]:
    """Who this agent is: versions, runtimes, device facts and fingerprint, spaces, and the block
    kinds it can build per target (a space spec may use those)."""
    facts = sysinfo.device_facts()
    runtimes = available_runtimes()
    body = {
        "agent_version": __version__,
        "runtimes": runtimes,
        "runtime_formats": {name: get_runtime(name).model_format for name in runtimes},
        "runtimes_unavailable": unavailable_runtimes(),
        **facts,
        "fingerprint": sysinfo.fingerprint(facts),
        "spaces": sorted(SPACES),
        "space_spec_format": SPEC_FORMAT,
        "block_kinds": {target: list(kinds) for target, kinds in buildable_kinds().items()},
    }
    return body, b""


def handle_bench_spec(header: dict, payload: bytes) -> tuple[dict, bytes]:
    """Build the network a spec describes on the agent and time it (alternated with
    `pair_with`'s network, run by run, when the request names one); with `block`, time that
    run of its blocks alone, fed tensors of the shapes the whole network feeds them."""
    started = time.perf_counter_ns()
    if payload:
        raise BadRequest(f"bench_spec takes no payload, got {len(payload)} bytes", field="payload")
    space, widths, dtype, seed = parse_spec(header.get("spec"), check_caps=False)
    run = parse_block_run(header, space)
    blocks = space.blocks(widths)
    check_block_caps(blocks if run is None else blocks[run[0] : run[0] + run[1]])
    settings = TimingSettings.from_dict(limits.check_timing(header.get("timing")))
    options = _options(header)
    runtime = choose_runtime(header.get("runtime"), None if header.get("runtime") else DTYPE_FORMATS[dtype])
    check_buildable(space, runtime.model_format, dtype)
    reference = parse_pair_spec(header["pair_with"], space, dtype) if header.get("pair_with") is not None else None
    with _bench_lock:
        reset_peak_rss()
        model, build_ms, cached = build_model(space, widths, runtime.model_format, dtype, seed, run)
        if reference is not None:
            body = bench_paired(runtime, model, reference, settings, options, dtype=dtype, seed=seed,
                                started_ns=started, drift=_drift, space=space)
        else:
            vocab = dict(space.attrs).get("vocab", 1)  # token ids must index the embedding
            body = _bench(runtime, model, settings, options, dtype=dtype, int_high=vocab, started_ns=started,
                          seed=seed, output_shapes=run is not None)
    body["build_ms"] = build_ms
    body["build_cached"] = cached
    if run is not None:
        body["block"] = block_answer(space, widths, run)
        if "output_shapes" in body:
            body["block"]["output_shapes"] = body.pop("output_shapes")
    return body, b""


def parse_pair_spec(spec: object, target_space: Space, target_dtype: str) -> tuple[Space, tuple[int, ...], str, int]:
    """Validate `pair_with` like `spec`; it must describe a network of the same space and dtype."""
    if not isinstance(spec, Mapping):
        raise BadRequest("pair_with must be a spec object like 'spec'", field="pair_with")
    try:
        parsed = parse_spec(spec)
    except BadRequest as exc:  # same error class, its message and field said of pair_with
        where = str(exc.details.get("field") or "spec")
        details = {**exc.details, "field": "pair_with" + where[len("spec"):] if where.startswith("spec") else where}
        raise type(exc)(f"pair_with: {exc.message.replace('spec.', 'pair_with.')}", **details) from exc
    space, _, dtype, _ = parsed
    if (space.name, space.param_dict) != (target_space.name, target_space.param_dict):
        raise BadRequest(
            f"pair_with must be of the same space as spec ({target_space.name} {target_space.param_dict}), "
            f"got {space.name} {space.param_dict}",
            field="pair_with.space",
        )
    if dtype != target_dtype:
        raise BadRequest(f"pair_with.dtype must equal spec.dtype ({target_dtype}), got {dtype}", field="pair_with.dtype")
    return parsed


def handle_bench_model(header: dict, payload: bytes) -> tuple[dict, bytes]:
    """Time a model sent as bytes (ONNX or TFLite); integer inputs are fed zeros."""
    started = time.perf_counter_ns()
    if not payload:
        raise BadModel("bench_model needs the model bytes as the request payload", field="payload")
    if header.get("pair_with") is not None:
        raise BadRequest("pair_with is a bench_spec field; bench_model cannot pair", field="pair_with")
    for key in ("block", "block_count"):
        if header.get(key) is not None:
            raise BadRequest(f"{key} is a bench_spec field; bench_model times the model it is sent", field=key)
    fmt = detect_format(payload, header.get("format"))
    settings = TimingSettings.from_dict(limits.check_timing(header.get("timing")))
    options = _options(header)
    runtime = choose_runtime(header.get("runtime"), fmt)
    check_model(payload, fmt)  # before any runtime sees the bytes
    with _bench_lock:
        reset_peak_rss()
        body = _bench(runtime, payload, settings, options, dtype=None, int_high=1, started_ns=started)
    body["build_ms"] = None
    return body, b""


HANDLERS: dict[str, Handler] = {
    "hello": handle_hello,
    "bench_spec": handle_bench_spec,
    "bench_model": handle_bench_model,
}
