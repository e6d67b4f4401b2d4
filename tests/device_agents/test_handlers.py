"""The request handlers, called in-process with real networks on real onnxruntime sessions."""

import pytest

from widthwise.device_agents import handlers
from widthwise.device_agents.build_onnx import build_onnx
from widthwise.device_agents.errors import BadModel, BadRequest, BadWidths, RuntimeUnavailable, UnknownSpace
from widthwise.device_agents.handlers import HANDLERS
from widthwise.device_agents.spaces import make_space

FAST = {"warmup": 1, "repeat": 3, "min_repeat_ms": 1}
SMALL = {"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14}
TEXT = {"space": "text_lowrank", "params": {"vocab": 300, "dim": 16, "tokens": 8, "classes": 4}, "widths": [7, 9]}


def bench_spec(spec, **fields):
    return HANDLERS["bench_spec"]({"type": "bench_spec", "id": 1, "spec": spec, "timing": FAST, **fields}, b"")


def check_bench_body(body):
    assert len(body["times_ms"]) == body["repeat"] == body["stats"]["count"] == 3
    assert body["stats"]["min"] <= body["stats"]["median"] <= body["stats"]["p90"]
    assert set(body["stats"]) == {"min", "median", "mean", "p90", "iqr", "std", "count"}
    assert body["warmup"] == 1 and body["number"] >= 1 and body["init_ms"] > 0
    assert body["peak_rss_kb"] is None or body["peak_rss_kb"] > 0
    assert isinstance(body["warnings"], list) and body["model_bytes"] > 0
    assert body["runtime"]["name"] == "onnxruntime" and body["runtime"]["threads"] == 1
    assert body["runtime"]["delegate"] is None


def test_hello_describes_the_device():
    body, payload = HANDLERS["hello"]({"type": "hello", "id": 1}, b"")
    assert payload == b""
    for key in ("agent_version", "cpu", "os", "python", "machine", "fingerprint"):
        assert isinstance(body[key], str) and body[key]
    assert body["cores"] >= 1 and "onnxruntime" in body["runtimes"]
    assert set(body["spaces"]) >= {"mobilenet_v1", "mobilenet_v2", "text_lowrank"}
    assert set(body["runtimes"]).isdisjoint(body["runtimes_unavailable"])
    assert HANDLERS["hello"]({"type": "hello", "id": 2}, b"")[0]["fingerprint"] == body["fingerprint"]


def test_bench_spec_times_a_mobilenet_and_caches_the_build():
    spec = dict(SMALL, widths=[8, 16, 24, 16, 32, 24, 40, 16, 8, 24, 16, 32, 48, 20], seed=4)
    body, payload = bench_spec(spec)
    check_bench_body(body)
    assert payload == b"" and body["build_ms"] > 0 and body["runtime"]["dtype"] == "float32"
    again, _ = bench_spec(spec)
    assert again["build_cached"] and again["model_bytes"] == body["model_bytes"]


def test_bench_spec_times_a_text_model():
    body, _ = bench_spec(TEXT)
    check_bench_body(body)


V2 = {"space": "mobilenet_v2", "params": {"resolution": 32, "levels": 3}}


def test_bench_spec_times_a_mobilenet_v2():
    widths = list(make_space("mobilenet_v2", V2["params"]).base_widths())
    body, _ = bench_spec(dict(V2, widths=widths, seed=2))
    check_bench_body(body)


def test_mobilenet_v2_widths_are_checked_naming_the_variable():
    space = make_space("mobilenet_v2", V2["params"])
    with pytest.raises(BadWidths, match="has 25 variables, got 24 widths, in the order stem, stage1, "):
        bench_spec(dict(V2, widths=list(space.smallest())[:-1]))
    widths = list(space.smallest())
    widths[20] = -8
    with pytest.raises(BadWidths, match=r"width of variable 20 \(stage6.block2.expand\) must be positive"):
        bench_spec(dict(V2, widths=widths))
    with pytest.raises(BadRequest, match="spec.widths is missing: a list of 25 widths, in the order stem, stage1"):
        bench_spec(V2)


# --- a run of blocks timed alone (`block`, `block_count`) ----------------------------------------


def test_bench_spec_times_a_block_alone_and_reports_what_it_built():
    from widthwise.device_agents.spaces import block_counts

    space = make_space("mobilenet_v2", V2["params"])
    widths = list(space.base_widths())
    blocks = space.blocks(widths)
    later = next(b for b in blocks if b.residual and b.residual_from < b.index)  # a projection closing a residual
    body, _ = bench_spec(dict(V2, widths=widths), block=later.index)
    check_bench_body(body)
    assert body["block"]["first"] == later.index and body["block"]["count"] == 1
    assert body["block"]["names"] == [later.name] and body["block"]["kinds"] == ["ir_project"]
    shape = [1, later.cout, later.out_hw, later.out_hw]
    assert body["block"]["input_shape"] == [1, later.cin, later.in_hw, later.in_hw]
    assert body["block"]["output_shape"] == body["block"]["output_shapes"][0] == shape
    assert body["block"]["skip_shapes"] == {str(later.residual_from): shape}
    assert (body["block"]["macs"], body["block"]["params"]) == block_counts(later)
    whole, _ = bench_spec(dict(V2, widths=widths))
    assert body["model_bytes"] < whole["model_bytes"] and "block" not in whole

    pair, _ = bench_spec(dict(V2, widths=widths), block=later.residual_from, block_count=2)
    assert pair["block"]["names"] == [blocks[later.residual_from].name, later.name]
    assert pair["block"]["skip_shapes"] == {} and pair["block"]["output_shapes"] == [shape]
    classifier, _ = bench_spec(dict(V2, widths=widths), block=len(blocks) - 1)
    assert classifier["block"]["input_shape"] == [1, blocks[-1].cin, blocks[-1].in_hw, blocks[-1].in_hw]
    assert classifier["block"]["output_shapes"] == [[1, 1000]]


def test_a_block_alone_can_be_paired_with_the_whole_reference():
    space = make_space("mobilenet_v2", V2["params"])
    widths = list(space.base_widths())
    body, _ = bench_spec(dict(V2, widths=widths), block=0, pair_with=dict(V2, widths=widths))
    assert 0 < body["pair"]["ratio_median"] < 1.0  # the stem alone does less than the whole network
    assert body["block"]["names"] == ["stem"]


@pytest.mark.parametrize(
    "fields, field, match",
    [
        ({"block": 36}, "block", "block must be the index of a block of space mobilenet_v2, 0 to 35 "
                                 r"\(stem to classifier\), got 36"),
        ({"block": -1}, "block", "got -1"),
        ({"block": "stem"}, "block", "got 'stem'"),
        ({"block": 35, "block_count": 2}, "block_count", "block_count must be an integer from 1 to 1"),
        ({"block_count": 2}, "block_count", "block_count needs block"),
    ],
)
def test_a_bad_block_run_is_refused_naming_the_field(fields, field, match):
    widths = list(make_space("mobilenet_v2", V2["params"]).smallest())
    with pytest.raises(BadRequest, match=match) as exc:
        bench_spec(dict(V2, widths=widths), **fields)
    assert exc.value.details["field"] == field


def test_bench_model_refuses_block():
    space = make_space("mobilenet_v1", {"resolution": 32})
    with pytest.raises(BadRequest, match="block is a bench_spec field") as exc:
        HANDLERS["bench_model"]({"type": "bench_model", "id": 3, "block": 0}, build_onnx(space, space.smallest()))
    assert exc.value.details["field"] == "block"


def test_the_caps_hold_the_run_timed_not_the_whole_network():
    from widthwise.device_agents import limits
    from widthwise.device_agents.errors import LimitExceeded

    space = make_space("mobilenet_v2", {"resolution": 224})
    widths = list(space.largest())
    macs, _ = space.counts(widths)
    spec = {"space": "mobilenet_v2", "params": {"resolution": 224}, "widths": widths}
    limits.configure(limits.with_overrides(max_macs=macs // 4))
    try:
        with pytest.raises(LimitExceeded, match="multiply-accumulate count"):
            bench_spec(spec)
        body, _ = bench_spec(spec, block=len(space.templates) - 1)  # the classifier: 1.9 M MACs
        assert body["block"]["macs"] < macs // 4
        classifier_macs = body["block"]["macs"]
        limits.configure(limits.with_overrides(max_macs=classifier_macs - 1))
        with pytest.raises(LimitExceeded, match=f"{classifier_macs:,}, above this agent's cap of {classifier_macs - 1:,}"):
            bench_spec(spec, block=len(space.templates) - 1)
    finally:
        limits.configure(limits.DEFAULT_LIMITS)


def test_bench_model_times_onnx_bytes():
    space = make_space("mobilenet_v1", {"resolution": 32})
    model = build_onnx(space, space.smallest())
    body, _ = HANDLERS["bench_model"]({"type": "bench_model", "id": 3, "timing": FAST}, model)
    check_bench_body(body)
    assert body["build_ms"] is None and body["model_bytes"] == len(model)
    assert body["runtime"]["dtype"] == "float32"


@pytest.mark.parametrize(
    "widths, match",
    [([8] * 13, "got 13 widths"), ([8] * 15, "got 15 widths"), ([8] * 13 + [0], "must be positive"),
     ([-8] + [8] * 13, "must be positive"), ([8] * 13 + [2.5], "not an integer"), ("8,8", "list")],
)
def test_bad_widths(widths, match):
    with pytest.raises(BadWidths, match=match):
        bench_spec(dict(SMALL, widths=widths))


def test_oversized_network_is_refused_before_building():
    with pytest.raises(BadWidths, match="parameters, above"):
        bench_spec(dict(SMALL, widths=[8] * 12 + [100_000, 100_000]))


def test_malformed_space_params_are_a_bad_request():
    with pytest.raises(BadRequest, match="spec.params|ranks"):
        bench_spec(dict(TEXT, params={"ranks": ["a", "b"]}))


def test_unknown_space_is_named():
    with pytest.raises(UnknownSpace, match="'resnet50'"):
        bench_spec(dict(SMALL, space="resnet50"))


def test_unknown_space_param_is_named():
    with pytest.raises(BadRequest, match="'depth'"):
        bench_spec(dict(SMALL, params={"depth": 3}))


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"space": "mobilenet_v1", "widths": [8] * 14, "resolution": 32}, "unknown spec key 'resolution'"),
        ({"space": "mobilenet_v1"}, "spec.widths is missing"),
        (dict(SMALL, dtype="float16"), "spec.dtype"),
        (dict(SMALL, seed=-1), "spec.seed"),
        ({"widths": [8] * 14}, "spec.space"),
        ("mobilenet_v1", "'spec' object"),
    ],
)
def test_bad_spec_fields_are_named(spec, match):
    with pytest.raises(BadRequest, match=match):
        bench_spec(spec)


def test_unknown_timing_key_is_named():
    with pytest.raises(BadRequest, match="'rounds'"):
        HANDLERS["bench_spec"]({"type": "bench_spec", "id": 1, "spec": SMALL, "timing": {"rounds": 2}}, b"")


def test_int8_on_onnxruntime_is_unavailable():
    with pytest.raises(RuntimeUnavailable, match="float32"):
        bench_spec(dict(SMALL, dtype="int8"), runtime="onnxruntime")


def test_unknown_runtime_is_named():
    with pytest.raises(RuntimeUnavailable, match="'tensorrt'"):
        bench_spec(SMALL, runtime="tensorrt")


@pytest.mark.parametrize("payload", [b"this is not a model", b"\x00" * 64])
def test_non_onnx_model_bytes(payload):
    with pytest.raises(BadModel, match="cannot load"):
        HANDLERS["bench_model"]({"type": "bench_model", "id": 1}, payload)


def test_empty_model_and_unknown_format():
    with pytest.raises(BadModel, match="payload"):
        HANDLERS["bench_model"]({"type": "bench_model", "id": 1}, b"")
    with pytest.raises(BadRequest, match="'pt'"):
        HANDLERS["bench_model"]({"type": "bench_model", "id": 1, "format": "pt"}, b"abc")


def test_tflite_bytes_are_not_sent_to_onnxruntime():
    with pytest.raises(BadRequest, match="runs onnx models, not tflite"):
        fake_tflite = b"\x1c\x00\x00\x00TFL3" + b"\0" * 32
        HANDLERS["bench_model"]({"type": "bench_model", "id": 1, "runtime": "onnxruntime"}, fake_tflite)


def test_format_detection():
    assert handlers.detect_format(b"\x1c\x00\x00\x00TFL3....") == "tflite"
    assert handlers.detect_format(b"\x08\x08\x12") == "onnx"
    assert handlers.detect_format(b"\x08\x08\x12", "tflite") == "tflite"


def test_configure_drift_marks_the_answer():
    try:
        handlers.configure(inject_drift_per_min=0.5)
        body, _ = bench_spec(SMALL)
        assert any("drift injection" in w for w in body["warnings"])
        with pytest.raises(BadRequest):
            handlers.configure(inject_drift_per_min=-1.0)
    finally:
        handlers.configure(inject_drift_per_min=0.0)
    body, _ = bench_spec(SMALL)
    assert not any("drift injection" in w for w in body["warnings"])


def test_int8_without_a_runtime_goes_to_a_tflite_runtime():
    from widthwise.device_agents.runtimes import available_runtimes

    tflite_runtimes = [name for name in ("litert", "tflite") if name in available_runtimes()]
    if not tflite_runtimes:  # this machine is a board without TFLite: the other branch is the routing
        with pytest.raises(RuntimeUnavailable, match="for tflite models"):
            bench_spec(dict(SMALL, dtype="int8"))
        return
    body, _ = bench_spec(dict(SMALL, dtype="int8"))
    # onnxruntime comes first for float32 and is available, so landing here is the int8 routing
    assert body["runtime"]["name"] == tflite_runtimes[0] and body["runtime"]["dtype"] == "int8"
    assert bench_spec(SMALL)[0]["runtime"]["name"] == "onnxruntime"


def test_int8_on_a_board_without_tflite_names_the_missing_format():
    """The other branch, on a real process where no TFLite package can be imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['ai_edge_litert'] = None; sys.modules['tflite_runtime'] = None  # imports now fail\n"
        "from widthwise.device_agents.errors import RuntimeUnavailable\n"
        "from widthwise.device_agents.handlers import HANDLERS\n"
        "try:\n"
        f"    HANDLERS['bench_spec']({{'type': 'bench_spec', 'id': 1, 'spec': {dict(SMALL, dtype='int8')!r}}}, b'')\n"
        "except RuntimeUnavailable as exc:\n"
        "    print(exc.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("no runtime available for tflite models:"), out.stdout + out.stderr
    assert "litert" in out.stdout and "tflite_runtime" in out.stdout


def test_the_agent_side_imports_nothing_the_board_lacks():
    import subprocess
    import sys

    from pathlib import Path

    # as on a board: device_agents is a top-level package (the bundle's layout), nothing else of ours
    repo = str(Path(__file__).resolve().parents[2])
    code = (
        "import sys\n"
        f"sys.path.insert(0, {repo!r})\n"
        "from device_agents.handlers import HANDLERS\n"
        f"HANDLERS['bench_spec']({{'type': 'bench_spec', 'id': 1, 'spec': {SMALL!r}, 'timing': {FAST!r}}}, b'')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}\n"
        "             & {'onnx', 'scipy', 'click', 'profiler', 'search', 'widthwise'}))\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# --- pair_with and clock (optional protocol fields) --------------------------------------------

REFERENCE = dict(SMALL, widths=[8, 16, 24, 16, 32, 24, 40, 16, 8, 24, 16, 32, 48, 20])
WIDER = dict(SMALL, widths=[16, 32, 48, 48, 64, 64, 96, 96, 96, 96, 96, 96, 160, 160])


def test_pair_with_alternates_target_and_kept_reference():
    from widthwise.device_agents import pair_handler

    pair_handler.clear_cache()
    timing = {**FAST, "number": 1, "clock": "thread_cpu"}
    body, payload = bench_spec(WIDER, pair_with=REFERENCE, timing=timing)
    check_bench_body(body)
    pair = body["pair"]
    assert payload == b"" and body["runtime"]["clock"] == "thread_cpu"
    assert len(pair["ref_times_ms"]) == len(pair["ratios"]) == body["repeat"] == 3
    for t, r, ratio in zip(body["times_ms"], pair["ref_times_ms"], pair["ratios"]):
        assert ratio == pytest.approx(t / r)
    assert pair["ratio_median"] > 1.0  # the wider network does more work than the reference
    assert pair["ref_widths"] == REFERENCE["widths"] and not pair["ref_kept"] and pair["ref_median_ms"] > 0
    again, _ = bench_spec(SMALL, pair_with=REFERENCE, timing=timing)
    assert again["pair"]["ref_kept"]  # the reference session is not rebuilt for the next sample
    other, _ = bench_spec(SMALL, pair_with=dict(REFERENCE, seed=3), timing=timing)
    assert not other["pair"]["ref_kept"]


def test_unpaired_answers_name_their_clock_and_have_no_pair_block():
    body, _ = bench_spec(SMALL)
    assert body["runtime"]["clock"] == "wall" and "pair" not in body


@pytest.mark.parametrize(
    "pair_with, error, field",
    [
        ([8] * 14, BadRequest, "pair_with"),
        (dict(SMALL, widths=[8] * 13), BadWidths, "pair_with"),
        (dict(SMALL, params={"resolution": 64}), BadRequest, "pair_with.space"),
        (dict(SMALL, space="nope"), UnknownSpace, None),
        (dict(SMALL, dtype="int8"), BadRequest, "pair_with.dtype"),
        (dict(SMALL, colour="red"), BadRequest, "pair_with.colour"),
    ],
)
def test_bad_pair_with_is_named(pair_with, error, field):
    with pytest.raises(error, match="pair_with") as exc:
        bench_spec(SMALL, pair_with=pair_with)
    if field is not None:
        assert exc.value.details.get("field") == field


def test_thread_cpu_clock_with_threads_is_refused_naming_the_clock():
    with pytest.raises(BadRequest, match="thread_cpu") as exc:
        bench_spec(SMALL, timing={**FAST, "clock": "thread_cpu", "threads": 2})
    assert exc.value.details["field"] == "timing.clock"


def test_pair_with_on_litert_when_present():
    try:
        body, _ = bench_spec(WIDER, pair_with=REFERENCE, runtime="litert", timing={**FAST, "number": 1, "clock": "thread_cpu"})
    except RuntimeUnavailable:
        pytest.skip("LiteRT is not installed here")
    assert body["runtime"]["name"] == "litert" and body["runtime"]["clock"] == "thread_cpu"
    assert body["pair"]["ratio_median"] > 1.0


def test_bench_model_refuses_pair_with():
    space = make_space("mobilenet_v1", {"resolution": 32})
    model = build_onnx(space, space.smallest())
    with pytest.raises(BadRequest, match="pair_with is a bench_spec field") as exc:
        HANDLERS["bench_model"]({"type": "bench_model", "id": 3, "timing": FAST, "pair_with": SMALL}, model)
    assert exc.value.details["field"] == "pair_with"


# --- caps on work per request (defaults: device_agents.limits) ---------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"space": "mobilenet_v1", "params": {"resolution": 224}, "widths": [48, 96, 192, 192, 384, 384, 768, 768, 768,
                                                                            768, 768, 768, 1536, 1536]},
        {"space": "text_lowrank", "params": {"vocab": 100_000, "dim": 300, "tokens": 32}, "widths": [300, 512]},
        {"space": "mobilenet_v1", "params": {"resolution": 224, "levels": 14}, "widths": [8] * 14},
        {"space": "mobilenet_v2", "params": {"resolution": 224}, "widths": list(make_space("mobilenet_v2").largest())},
    ],
)
def test_the_default_caps_admit_the_largest_networks_the_project_uses(spec):
    from widthwise.device_agents import limits

    limits.configure(limits.DEFAULT_LIMITS)
    space, widths, _, _ = handlers.parse_spec(spec)
    assert tuple(widths) == tuple(spec["widths"])
    assert limits.check_timing(None)["max_total_s"] == 120.0  # the protocol's default, within the cap


def test_a_cap_refusal_names_the_cap_and_the_value():
    from widthwise.device_agents.errors import LimitExceeded

    wide = dict(SMALL, params={"resolution": 224}, widths=[100_000] + [8] * 13)
    with pytest.raises(LimitExceeded, match="55,194,847,504, above this agent's cap of 4,000,000,000") as exc:
        handlers.parse_spec(wide)
    assert exc.value.details == {"field": "macs", "limit": 4_000_000_000, "value": 55_194_847_504}
    with pytest.raises(LimitExceeded, match="pair_with.params.levels") as exc:
        bench_spec(SMALL, pair_with=dict(SMALL, params={"resolution": 32, "levels": 10**9}))
    assert exc.value.details["field"] == "pair_with.params.levels" and exc.value.details["value"] == 10**9


def test_mobilenet_v2_caps_count_its_macs_and_its_residual_activations():
    from widthwise.device_agents import limits
    from widthwise.device_agents.errors import LimitExceeded

    space = make_space("mobilenet_v2")
    widths = space.largest()
    macs, params = space.counts(widths)
    # the largest live set: the first stride-2 expansion (input, expanded at 112, depthwise output at 56)
    blocks = {b.name: b for b in space.blocks(widths)}
    first = blocks["stage2.block1.expand"]
    assert limits.peak_activation_elems(space, widths) == (first.cin + first.hidden) * 112 ** 2 + first.hidden * 56 ** 2
    later = blocks["stage2.block2.project"]  # projection, the residual input and the sum
    assert limits.ACTIVATIONS["ir_project"](later) == (later.cin + 3 * later.cout) * 56 ** 2
    spec = {"space": "mobilenet_v2", "params": {"resolution": 224}, "widths": list(widths)}
    limits.configure(limits.with_overrides(max_macs=macs - 1))
    try:
        with pytest.raises(LimitExceeded, match=f"{macs:,}, above this agent's cap of {macs - 1:,}"):
            handlers.parse_spec(spec)
    finally:
        limits.configure(limits.DEFAULT_LIMITS)
    assert handlers.parse_spec(spec)[1] == widths and params < handlers.MAX_PARAMS


def test_the_serve_flags_configure_the_caps():
    from widthwise.device_agents import limits
    from widthwise.device_agents.__main__ import build_parser, limits_from_args

    args = build_parser().parse_args(["serve", "--max-macs", "5", "--max-memory-mb", "7", "--max-request-seconds", "9"])
    caps = limits_from_args(args)
    assert (caps.max_macs, caps.max_memory_bytes, caps.max_request_s) == (5, 7 * 2**20, 9.0)
    defaults = limits_from_args(build_parser().parse_args(["serve"]))
    assert defaults == limits.DEFAULT_LIMITS


def test_a_spec_request_builds_the_space_it_carries():
    import json
    from pathlib import Path

    spec = json.loads((Path(__file__).resolve().parents[2] / "docs" / "spaces" / "mcu_vww.json").read_text())
    space, widths, dtype, _ = handlers.parse_spec({"space": "mcu_vww", "params": {"spec": spec},
                                                   "widths": [8, 16, 48, 16, 48, 48, 24, 72, 72, 128]})
    assert space.name == "mcu_vww" and space.param_dict == {"spec": spec} and dtype == "float32"
    with pytest.raises(BadRequest, match="the spec describes space 'mcu_vww', not 'other'"):
        handlers.parse_spec({"space": "other", "params": {"spec": spec}, "widths": list(widths)})


def test_bench_spec_refuses_a_kind_the_runtime_cannot_build_before_building(monkeypatch):
    from widthwise.device_agents import build_onnx, buildable

    monkeypatch.delitem(build_onnx.EMITTERS, "mb_block")
    buildable.buildable_kinds.cache_clear()
    try:
        space = handlers.make_space("ofa_mbv3", {"resolution": 32})
        header = {"spec": {"space": "ofa_mbv3", "params": {"resolution": 32}, "widths": list(space.smallest())},
                  "runtime": "onnxruntime", "timing": {"warmup": 0, "repeat": 1}}
        with pytest.raises(BadRequest, match="cannot build block kind 'mb_block' as float32 onnx"):
            handlers.handle_bench_spec(header, b"")
    finally:
        buildable.buildable_kinds.cache_clear()
