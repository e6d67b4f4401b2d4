"""Refuse a model sent to `bench_model` that references data outside its own bytes.

An ONNX tensor may be stored as "external data": a file path (relative, absolute or with
`..`) that the runtime opens on the board, so a model could make the agent read its own
token file and leak it through an error text. The board has no `onnx` package, so this
module walks the protobuf wire format itself (varints and length-delimited fields only)
and raises ExternalDataRefused, naming the tensor, when any TensorProto has
`data_location = EXTERNAL` or an `external_data` entry: graph initializers, sparse
initializers, tensors in node attributes, subgraphs (If/Loop/Scan bodies, to a bounded
depth), model-local functions and training graphs. onnxruntime (1.32 checked) has no
session option that refuses external initializers, so this check is the only line.

A .tflite is checked by runtimes.tflite_check, which refuses buffers and custom options
whose offset and size reach outside the file.

Field numbers follow onnx.proto (ModelProto.graph = 7, GraphProto.initializer = 5, ...).
"""

from __future__ import annotations

from typing import Iterator

from .errors import BadModel, ExternalDataRefused, clip_text

#: subgraphs nested deeper than this are refused (a real model nests a few levels)
MAX_GRAPH_DEPTH = 32
NAME_LIMIT = 200  # characters of a peer-chosen tensor name kept in an error text

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# message kinds
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = (
    "model", "graph", "node", "attribute", "tensor", "sparse_tensor", "function", "training_info")

#: message kind -> {field number: (field name, kind of the sub-message)} of the fields that can hold
#: tensors; a name ending in "[]" is a repeated field (its index is shown where a tensor is refused)
_CHILDREN: dict[str, dict[int, tuple[str, str]]] = {
    _MODEL: {7: ("graph", _GRAPH), 20: ("training_info[]", _TRAINING), 25: ("functions[]", _FUNCTION)},
    _TRAINING: {1: ("initialization", _GRAPH), 2: ("algorithm", _GRAPH)},
    _FUNCTION: {7: ("node[]", _NODE), 11: ("attribute_proto[]", _ATTRIBUTE)},
    _GRAPH: {1: ("node[]", _NODE), 5: ("initializer[]", _TENSOR), 15: ("sparse_initializer[]", _SPARSE)},
    _NODE: {5: ("attribute[]", _ATTRIBUTE)},
    _ATTRIBUTE: {5: ("t", _TENSOR), 6: ("g", _GRAPH), 10: ("tensors[]", _TENSOR), 11: ("graphs[]", _GRAPH),
                 22: ("sparse_tensor", _SPARSE), 23: ("sparse_tensors[]", _SPARSE)},
    _SPARSE: {1: ("values", _TENSOR), 2: ("indices", _TENSOR)},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14


class _Malformed(Exception):
    """The bytes are not a protobuf message."""


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("a varint runs past the end of its message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("a varint is longer than 10 bytes")


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or payload start, payload end) of each field in data[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
        elif wire == _LEN:
            size, pos = _varint(data, pos, end)
            if pos + size > end:
                raise _Malformed(f"a field of {size} bytes at byte {pos} runs past the end of its message")
            yield number, wire, pos, pos + size
            pos += size
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _Malformed("a fixed-width field runs past the end of its message")
        else:
            raise _Malformed(f"wire type {wire} (groups are not used by ONNX) at byte {pos}")


def _check_tensor(data: bytes, start: int, end: int, where: str) -> None:
    """Raise ExternalDataRefused if the TensorProto in data[start:end] points outside the model."""
    name = None
    external = False
    for number, wire, a, b in _fields(data, start, end):
        if number == _TENSOR_NAME and wire == _LEN:
            name = data[a:b].decode("utf-8", "replace")
        elif number == _TENSOR_EXTERNAL_DATA or (number == _TENSOR_DATA_LOCATION and not (wire == _VARINT and a == 0)):
            external = True
    if external:
        shown = clip_text(name, NAME_LIMIT) if name is not None else "(unnamed)"
        raise ExternalDataRefused(
            f"the model references data outside its own bytes: tensor {shown!r} at {where} is stored as external "
            "data; this agent times only self-contained models (save the model with its weights inside it)",
            tensor=shown, where=where,
        )


def _walk(data: bytes, start: int, end: int, kind: str, where: str, depth: int) -> None:
    """Check every tensor reachable from the message of `kind` in data[start:end]."""
    if kind == _TENSOR:
        _check_tensor(data, start, end, where)
        return
    if kind == _GRAPH:
        depth += 1
        if depth > MAX_GRAPH_DEPTH:
            raise BadModel(f"the model nests subgraphs more than {MAX_GRAPH_DEPTH} deep (at {where})", where=where)
    children = _CHILDREN[kind]
    counts: dict[int, int] = {}
    for number, wire, a, b in _fields(data, start, end):
        child = children.get(number)
        if child is None or wire != _LEN:
            continue
        name, child_kind = child
        if name.endswith("[]"):
            index = counts.get(number, 0)
            counts[number] = index + 1
            name = f"{name[:-2]}[{index}]"
        _walk(data, a, b, child_kind, f"{where}.{name}" if where else name, depth)


def check_onnx(model: bytes) -> None:
    """Raise ExternalDataRefused if any tensor of the ONNX model is stored outside its bytes,
    BadModel if the bytes are not a protobuf message."""
    data = bytes(model)
    try:
        _walk(data, 0, len(data), _MODEL, "", 0)
    except _Malformed as exc:
        raise BadModel(f"cannot load the model: its bytes are not a valid ONNX protobuf ({exc})") from None


def check_model(model: bytes, fmt: str) -> None:
    """Refuse, before any runtime sees them, model bytes that reference data outside themselves."""
    if fmt == "onnx":
        check_onnx(model)
    elif fmt == "tflite":
        from .runtimes.tflite_check import check_tflite  # noqa: PLC0415

        check_tflite(model)
