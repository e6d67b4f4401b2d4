"""Requests a hostile peer could send, against a real agent process through the real client.

The agent runs in a directory holding a token file (as the README sets a board up) and
is capped at 4 GiB of address space, so a request that slipped past the agent's own caps
fails inside it instead of taking this machine's memory. Each attack must be refused with
a typed error naming what was refused, and the agent must keep serving afterwards.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from widthwise.device_agents import tflite_schema
from widthwise.device_agents.errors import AgentError
from widthwise.profiler.agent_client import connect
from tests.support.onnx_models import external_tensor, onnx_model
from tests.support.procs import read_line

REPO = Path(__file__).resolve().parents[2]
FAST = {"warmup": 0, "repeat": 2, "number": 1}
SMALL = {"space": "mobilenet_v1", "params": {"resolution": 32}, "widths": [8] * 14}
BASE_WIDTHS = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
AGENT_ADDRESS_SPACE = 4 << 30
TOKEN = bytes(range(65, 65 + 48))  # printable, so a leak would show as text or as integers


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AGENT_ADDRESS_SPACE, AGENT_ADDRESS_SPACE))


def start_agent(workdir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """A real agent process whose working directory is `workdir`; returns it and its URL."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "widthwise.device_agents", "serve", "--port", "0", "--exit-with-stdin", "--log-level", "WARNING",
         *extra],
        cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=_limit_address_space,
    )
    line = read_line(proc, 60)
    assert "listening on tcp://" in line, line
    return proc, line.strip().rsplit(" ", 1)[-1]


def stop_agent(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """(agent URL, its working directory, its pid) with `agent.token` in that directory."""
    workdir = tmp_path_factory.mktemp("board")
    (workdir / "agent.token").write_bytes(TOKEN)
    proc, url = start_agent(workdir)
    yield url, workdir, proc.pid
    stop_agent(proc)


def refused(url: str, call) -> AgentError:
    """The typed error the agent answers `call(client)` with (the test fails if it answers a result)."""
    with connect(url, timeout=60, retries=0) as client:
        with pytest.raises(AgentError) as exc:
            call(client)
    return exc.value


def assert_still_serving(url: str) -> None:
    with connect(url, timeout=60) as client:
        body = client.bench_spec(SMALL, timing=FAST)
    assert body["stats"]["count"] == 2


def leaked(err: AgentError) -> bool:
    """Whether the error carries the token, as text or as the int64 values a Reshape would print."""
    text = err.message + repr(err.details)
    ints = [str(v) for v in struct.unpack("<6q", TOKEN)] + [str(v) for v in struct.unpack("<6Q", TOKEN)]
    return TOKEN.decode() in text or TOKEN[:16].decode() in text or any(v in text for v in ints)


# --- ONNX models that reference data outside their bytes -----------------------------------


def reshape_by_file(location: str) -> bytes:
    """The issue's attack: the file's bytes as a Reshape's shape; an Identity in between keeps
    shape inference from reading it at load, so the runtime reads it when the graph runs."""
    return onnx_model(
        [helper.make_node("Identity", ["shape"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])],
        [external_tensor("shape", location)],
    )


def subgraph_by_file(location: str) -> bytes:
    """The file read inside an If node's branch (a subgraph)."""
    def branch(tensor: TensorProto) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Identity", [tensor.name], ["s_" + tensor.name])], "branch", [],
            [helper.make_tensor_value_info("s_" + tensor.name, TensorProto.INT64, [6])], initializer=[tensor],
        )

    inner = helper.make_tensor("inner", TensorProto.INT64, [6], [1, 1, 1, 1, 1, 4])
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["cond"], ["s"], then_branch=branch(external_tensor("branch_shape", location)),
                         else_branch=branch(inner)),
        helper.make_node("Reshape", ["x", "s"], ["y"]),
    ]
    return onnx_model(nodes)


def attribute_by_file(location: str) -> bytes:
    """The file read as a Constant node's `value` attribute tensor."""
    nodes = [helper.make_node("Constant", [], ["s"], value=external_tensor("const_shape", location)),
             helper.make_node("Reshape", ["x", "s"], ["y"])]
    return onnx_model(nodes)


def sparse_by_file(location: str) -> bytes:
    """The file read as the values of a sparse initializer."""
    values = external_tensor("sparse_values", location, 1)
    values.data_type = TensorProto.FLOAT
    indices = helper.make_tensor("sparse_indices", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [4])
    return onnx_model([helper.make_node("Add", ["x", "sparse_values"], ["y"])], sparse=[sparse])


@pytest.mark.parametrize(
    "make, where, tensor",
    [
        (reshape_by_file, "relative", "shape"),
        (reshape_by_file, "absolute", "shape"),
        (reshape_by_file, "dotdot", "shape"),
        (subgraph_by_file, "relative", "branch_shape"),
        (attribute_by_file, "relative", "const_shape"),
        (sparse_by_file, "relative", "sparse_values"),
    ],
)
def test_models_reading_board_files_are_refused_naming_the_tensor(board, make, where, tensor):
    url, workdir, _ = board
    location = {"relative": "agent.token", "absolute": str(workdir / "agent.token"),
                "dotdot": f"../{workdir.name}/agent.token"}[where]
    model = make(location)
    err = refused(url, lambda c: c.bench_model(model, fmt="onnx", timing=FAST, options={"graph_optimization": "disable"}))
    assert err.code == "external_data", (err.code, err.message)
    assert err.details["tensor"] == tensor and repr(tensor) in err.message
    assert not leaked(err)
    assert_still_serving(url)


def test_a_runtime_error_text_is_cut_before_it_is_forwarded(board):
    url, _, _ = board
    long_name = "n" * 10_000  # onnxruntime names the failing node in its error text
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [7])  # 4 elements cannot take the shape [7]
    model = onnx_model([helper.make_node("Identity", ["shape"], ["s"]),
                    helper.make_node("Reshape", ["x", "s"], ["y"], name=long_name)], [shape])
    err = refused(url, lambda c: c.bench_model(model, fmt="onnx", timing=FAST, options={"graph_optimization": "disable"}))
    assert err.code == "bench_failed"
    assert len(err.message) <= 2048 and "characters cut" in err.message


# --- TFLite files whose buffers point outside them -----------------------------------------


class OutsideBufferWriter(tflite_schema.ModelWriter):
    """Writes every int32 constant's Buffer with offset and size fields instead of its data."""

    def __init__(self, offset: int, size: int) -> None:
        super().__init__("hostile")
        self.offset, self.size = offset, size

    def _write_buffer(self, b, array):  # type: ignore[override]
        if array is None or array.dtype != np.int32:
            return tflite_schema.ModelWriter._write_buffer(b, array)
        b.StartObject(3)
        b.PrependUint64Slot(1, self.offset, 0)
        b.PrependUint64Slot(2, self.size, 0)
        return b.EndObject()


def reshape_tflite(writer: tflite_schema.ModelWriter) -> bytes:
    x = writer.tensor("x", (1, 4), "float32")
    y = writer.tensor("y", (1, 4), "float32")
    shape = writer.constant("shape", np.array([1, 4], dtype=np.int32))
    writer.op(tflite_schema.OP_RESHAPE, [x, shape], [y], tflite_schema.reshape_options([1, 4]))
    return writer.finish([x], [y])


def _tflite_runtime(url: str) -> str:
    with connect(url, timeout=60) as client:
        names = [n for n in ("litert", "tflite") if n in client.hello()["runtimes"]]
    if not names:
        pytest.skip("no TFLite runtime on this machine: the check runs inside a TFLite runtime's load")
    return names[0]


@pytest.mark.parametrize("offset, size", [(1 << 40, 8), (2**64 - 4, 8), (None, 64)])
def test_tflite_buffers_outside_the_file_are_refused(board, offset, size):
    url, _, _ = board
    runtime = _tflite_runtime(url)
    sound = reshape_tflite(tflite_schema.ModelWriter("sound"))
    # None: the buffer starts inside the file and runs past its end
    model = reshape_tflite(OutsideBufferWriter(len(sound) - 16 if offset is None else offset, size))
    err = refused(url, lambda c: c.bench_model(model, fmt="tflite", runtime=runtime, timing=FAST))
    assert err.code == "external_data", (err.code, err.message)
    assert err.details["tensor"] == "shape" and "outside its own bytes" in err.message
    assert_still_serving(url)


class OutsideCustomOptionsWriter(tflite_schema.ModelWriter):
    """Writes every operator with large custom options at an offset beyond the file."""

    @staticmethod
    def _write_operator(b, o):  # type: ignore[override]
        inputs = b.CreateNumpyVector(np.asarray(o.inputs, dtype=np.int32))
        outputs = b.CreateNumpyVector(np.asarray(o.outputs, dtype=np.int32))
        b.StartObject(11)
        b.PrependUint32Slot(0, o.opcode_index, 0)
        b.PrependUOffsetTRelativeSlot(1, inputs, 0)
        b.PrependUOffsetTRelativeSlot(2, outputs, 0)
        b.PrependUint64Slot(9, 1 << 32, 0)  # large_custom_options_offset
        b.PrependUint64Slot(10, 64, 0)  # large_custom_options_size
        return b.EndObject()


def test_tflite_custom_options_outside_the_file_are_refused(board):
    url, _, _ = board
    runtime = _tflite_runtime(url)
    model = reshape_tflite(OutsideCustomOptionsWriter("hostile"))
    err = refused(url, lambda c: c.bench_model(model, fmt="tflite", runtime=runtime, timing=FAST))
    assert err.code == "external_data", (err.code, err.message)
    assert "operators[0]" in err.message and "custom options" in err.message


# --- requests for more work than a board can give --------------------------------------------


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


OVER_CAP = {
    "wide first layer": (dict(SMALL, params={"resolution": 224}, widths=[100_000] + [8] * 13), None, "macs", 55_194_847_504),
    "resolution": (dict(SMALL, params={"resolution": 16384}, widths=BASE_WIDTHS), None, "spec.params.resolution", 16384),
    "levels": (dict(SMALL, params={"levels": 10**9}), None, "spec.params.levels", 10**9),
    "tokens": ({"space": "text_lowrank", "params": {"tokens": 10**9}, "widths": [10, 64]}, None, "spec.params.tokens", 10**9),
    "memory": ({"space": "text_lowrank", "params": {"vocab": 2_000_000}, "widths": [100, 64]}, None, "memory", None),
    "timing.number": (SMALL, {"warmup": 0, "repeat": 3, "number": 10**12}, "timing.number", 10**12),
    "timing.max_total_s": (SMALL, {"max_total_s": 10**6}, "timing.max_total_s", 10**6),
    "timing.repeat": (SMALL, {"repeat": 10**9}, "timing.repeat", 10**9),
    "timing.warmup": (SMALL, {"warmup": 10**9}, "timing.warmup", 10**9),
}


@pytest.mark.parametrize("case", sorted(OVER_CAP))
def test_requests_over_a_cap_are_refused_before_any_work(board, case):
    url, _, pid = board
    spec, timing, field, value = OVER_CAP[case]
    spec = dict(spec, widths=spec.get("widths", BASE_WIDTHS))
    assert_still_serving(url)  # a normal request first: its peak is the baseline
    before = peak_rss_kb(pid)
    err = refused(url, lambda c: c.bench_spec(spec, timing=timing or FAST))
    assert err.code == "limit_exceeded", (err.code, err.message)
    assert err.details["field"] == field and str(err.details["limit"]).replace(".0", "") in err.message.replace(",", "")
    if value is not None:
        assert err.details["value"] == value and f"{value:,}" in err.message
    assert err.details["value"] > err.details["limit"]
    # nothing was built: the agent's peak memory did not move (building any of these takes GBs)
    assert peak_rss_kb(pid) - before < 64 * 1024
    assert_still_serving(url)


def test_a_sent_model_with_huge_inputs_is_refused(board):
    url, _, _ = board
    model = onnx_model([helper.make_node("Relu", ["x"], ["y"])],
                   inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16384, 16384])])
    err = refused(url, lambda c: c.bench_model(model, fmt="onnx", timing=FAST))
    assert err.code == "limit_exceeded" and err.details["field"] == "inputs"
    assert err.details["value"] == 3 * 16384 * 16384 * 4 and err.details["value"] > err.details["limit"]
    assert_still_serving(url)


def test_the_time_budget_holds_inside_a_repeat(board):
    url, _, _ = board
    with connect(url, timeout=60) as client:
        body = client.bench_spec(SMALL, timing={"warmup": 0, "repeat": 5, "number": 1_000_000, "max_total_s": 0.5})
    # a million runs would take minutes; the loop stopped inside the first repeat and says so
    assert body["repeat"] == 1 and body["number"] == 1_000_000
    assert any("stopped in repeat 1 of 5" in w and "time budget (timing.max_total_s)" in w for w in body["warnings"])


def test_serve_flags_set_the_caps(tmp_path):
    proc, url = start_agent(tmp_path, "--max-macs", "100000", "--max-memory-mb", "64", "--max-request-seconds", "5")
    try:
        err = refused(url, lambda c: c.bench_spec(SMALL, timing=FAST))  # 123,408 MACs at 32
        assert err.code == "limit_exceeded" and err.details["field"] == "macs" and err.details["limit"] == 100_000
        assert err.details["value"] == 123_408
        assert "--max-macs" in err.message
        err = refused(url, lambda c: c.bench_spec(dict(SMALL, widths=[8] * 14, params={"resolution": 8}),
                                                  timing={**FAST, "max_total_s": 6}))
        assert err.details["field"] == "timing.max_total_s" and err.details["limit"] == 5 and "--max-request-seconds" in err.message
        err = refused(url, lambda c: c.bench_spec(
            {"space": "text_lowrank", "params": {"tokens": 1, "dim": 16}, "widths": [300, 64]}, timing=FAST))
        assert err.details["field"] == "memory" and err.details["limit"] == 64 * 2**20 and "--max-memory-mb" in err.message
        with connect(url, timeout=60) as client:  # within every cap: served, the default budget within the cap
            body = client.bench_spec(dict(SMALL, params={"resolution": 8}), timing=FAST)
        assert body["stats"]["count"] == 2
    finally:
        stop_agent(proc)


# --- space specs sent as data ----------------------------------------------------------------------

SPEC_FILE = REPO / "docs" / "spaces" / "mcu_vww.json"


def spec_request(mutate=None, widths=None) -> dict:
    """A bench spec carrying the mcu_vww space spec (after `mutate`), at its smallest widths."""
    import json

    spec = json.loads(SPEC_FILE.read_text())
    if mutate is not None:
        mutate(spec)
    return {"space": "mcu_vww", "params": {"spec": spec}, "widths": widths or [8, 16, 48, 16, 48, 48, 24, 72, 72, 128]}


def _nest(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_SPECS = {
    "oversized": (lambda s: s.update(doc="x" * 200_000), "bytes as compact JSON, above the cap of 65,536"),
    "deep nesting": (lambda s: s["variables"][0].update(choices=_nest(500)), "nested deeper than 6 levels"),
    "many values": (lambda s: s.update(doc=[0] * 30_000), "more than 20,000 values"),
    "huge choice list": (lambda s: s["variables"][0].update(choices=list(range(1, 5000))),
                         'variable 1 (stem): field "choices": has 4,999 items, above the cap of 256'),
    "unknown kind": (lambda s: s["stages"][1]["blocks"][0].update(kind="resblock"),
                     "stage 2 block 1: field \"kind\": unknown block kind 'resblock'"),
    "code, not data": (lambda s: s["stages"][0]["blocks"][0].update(kind="__import__('os').system('true')"),
                       "unknown block kind \"__import__('os').system('true')\""),
    "cycle": (lambda s: (s["variables"].pop(), s["stages"][-1]["blocks"][0].update(out="stage1")),
              "the variables stage2 - stage2.block1.expand - stage1 - stage2 close a cycle"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_hostile_space_specs_are_refused_before_any_build(board, case):
    url, _, _ = board
    mutate, message = HOSTILE_SPECS[case]
    err = refused(url, lambda c: c.bench_spec(spec_request(mutate), timing=FAST))
    assert err.code == "bad_request" and message in err.message, err.message
    assert "build_ms" not in err.details and "\n" not in err.message
    assert_still_serving(url)


def test_a_spec_over_the_caps_at_its_largest_is_refused(board):
    url, _, _ = board
    err = refused(url, lambda c: c.bench_spec(spec_request(lambda s: s["variables"][0].update(choices=[8, 60_000])),
                                              timing=FAST))
    assert err.code == "limit_exceeded" and "at its largest configuration" in err.message
    assert_still_serving(url)


def test_a_sent_spec_is_timed_and_paired_like_a_built_in_space(board):
    url, _, _ = board
    with connect(url, timeout=60) as client:
        hello = client.hello()
        body = client.bench_spec(spec_request(), timing=FAST,
                                 pair_with=spec_request(widths=[16, 24, 96, 32, 96, 96, 48, 144, 144, 256]))
        other = spec_request(lambda s: s["stages"][0]["blocks"][0].update(kernel=5))
        err = None
        try:
            client.bench_spec(spec_request(), timing=FAST, pair_with=other)
        except AgentError as exc:
            err = exc
    assert hello["space_spec_format"] == "widthwise-space/1"
    assert {"conv", "dwsep", "ir_expand", "ir_project", "pool_fc"} <= set(hello["block_kinds"]["onnx"])
    assert body["pair"]["ratio_median"] > 0 and body["stats"]["count"] == 2
    assert err is not None and err.details["field"] == "pair_with.space"  # another spec is another space
