"""A minimal protobuf writer for ONNX models, so a board can build ONNX without the `onnx` package.

Only what the builders need is covered: ModelProto, GraphProto, NodeProto, AttributeProto,
TensorProto (dims, data type, raw little-endian data), ValueInfoProto with a tensor type,
and OperatorSetIdProto. Field numbers follow onnx/onnx.proto. A message is kept as a list
of byte chunks with its total size, so nested messages are framed without copying their
contents; the model's bytes are joined once at the end (large tensors are copied once).
"""

from __future__ import annotations

import math
import struct
from typing import Iterable, Sequence, Union

import numpy as np

# wire types
_VARINT = 0
_FIXED32 = 5
_LEN = 2

# TensorProto.DataType values (onnx.proto)
FLOAT = 1
UINT8 = 2
INT8 = 3
INT32 = 6
INT64 = 7
BOOL = 9
DOUBLE = 11

#: numpy dtype name -> TensorProto.DataType
ONNX_DTYPES: dict[str, int] = {
    "float32": FLOAT,
    "uint8": UINT8,
    "int8": INT8,
    "int32": INT32,
    "int64": INT64,
    "bool": BOOL,
    "float64": DOUBLE,
}

# AttributeProto.AttributeType values
_ATTR_FLOAT = 1
_ATTR_INT = 2
_ATTR_STRING = 3
_ATTR_TENSOR = 4
_ATTR_FLOATS = 6
_ATTR_INTS = 7

Chunk = Union[bytes, memoryview]


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take their 64-bit two's complement."""
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


class Message:
    """A protobuf message under construction: byte chunks plus their total length."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.size = 0

    def _put(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def int_field(self, field: int, value: int) -> "Message":
        """A varint field (int32, int64, enum)."""
        self._put(_key(field, _VARINT) + varint(int(value)))
        return self

    def float_field(self, field: int, value: float) -> "Message":
        """A 32-bit float field."""
        self._put(_key(field, _FIXED32) + struct.pack("<f", value))
        return self

    def bytes_field(self, field: int, data: Chunk) -> "Message":
        """A length-delimited field holding raw bytes (kept by reference, not copied)."""
        self._put(_key(field, _LEN) + varint(len(data)))
        if len(data):
            self._put(data)
        return self

    def string_field(self, field: int, text: str) -> "Message":
        """A length-delimited UTF-8 string field."""
        return self.bytes_field(field, text.encode("utf-8"))

    def message_field(self, field: int, msg: "Message") -> "Message":
        """A nested message, framed by its length; its chunks are shared, not copied."""
        self._put(_key(field, _LEN) + varint(msg.size))
        self.chunks.extend(msg.chunks)
        self.size += msg.size
        return self

    def packed_ints(self, field: int, values: Iterable[int]) -> "Message":
        """A packed repeated varint field."""
        return self.bytes_field(field, b"".join(varint(int(v)) for v in values))

    def packed_floats(self, field: int, values: Sequence[float]) -> "Message":
        """A packed repeated 32-bit float field."""
        return self.bytes_field(field, struct.pack(f"<{len(values)}f", *values))

    def to_bytes(self) -> bytes:
        """The serialised message: every chunk joined once."""
        return b"".join(self.chunks)


def tensor(name: str, array: np.ndarray) -> Message:
    """TensorProto with dims, data_type and raw_data (little-endian, C order)."""
    dtype_name = np.dtype(array.dtype).name
    if dtype_name not in ONNX_DTYPES:
        raise ValueError(f"no ONNX data type for numpy dtype {dtype_name}")
    data = np.asarray(array, dtype=np.dtype(array.dtype).newbyteorder("<"), order="C")  # keeps 0-d shape
    msg = Message()
    for dim in data.shape:  # dims = 1 (repeated int64, unpacked is always accepted)
        msg.int_field(1, dim)
    msg.int_field(2, ONNX_DTYPES[dtype_name])  # data_type = 2
    msg.string_field(8, name)  # name = 8
    msg.bytes_field(9, memoryview(data.reshape(-1)).cast("B"))  # raw_data = 9
    return msg


def value_info(name: str, dtype: str, shape: Sequence[int | str]) -> Message:
    """ValueInfoProto of a dense tensor; a str dimension is symbolic (dim_param)."""
    shape_msg = Message()
    for dim in shape:
        dim_msg = Message()
        if isinstance(dim, str):
            dim_msg.string_field(2, dim)  # dim_param = 2
        else:
            dim_msg.int_field(1, dim)  # dim_value = 1
        shape_msg.message_field(1, dim_msg)  # TensorShapeProto.dim = 1
    tensor_type = Message().int_field(1, ONNX_DTYPES[dtype]).message_field(2, shape_msg)  # elem_type, shape
    type_msg = Message().message_field(1, tensor_type)  # TypeProto.tensor_type = 1
    return Message().string_field(1, name).message_field(2, type_msg)  # name = 1, type = 2


AttrValue = Union[int, float, str, Sequence[int], Sequence[float], np.ndarray]


def attribute(name: str, value: AttrValue) -> Message:
    """AttributeProto of an int, float, string, tensor, or a list of ints or floats."""
    msg = Message().string_field(1, name)  # name = 1
    if isinstance(value, bool):
        raise TypeError(f"attribute {name}: bool is not an ONNX attribute type")
    if isinstance(value, int):
        msg.int_field(3, value).int_field(20, _ATTR_INT)  # i = 3, type = 20
    elif isinstance(value, float):
        msg.float_field(2, value).int_field(20, _ATTR_FLOAT)  # f = 2
    elif isinstance(value, str):
        msg.bytes_field(4, value.encode("utf-8")).int_field(20, _ATTR_STRING)  # s = 4
    elif isinstance(value, np.ndarray):
        msg.message_field(5, tensor("", value)).int_field(20, _ATTR_TENSOR)  # t = 5
    elif isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        msg.packed_ints(8, value).int_field(20, _ATTR_INTS)  # ints = 8
    elif isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"attribute {name}: non-finite float")
        msg.packed_floats(7, value).int_field(20, _ATTR_FLOATS)  # floats = 7
    else:
        raise TypeError(f"attribute {name}: unsupported value {value!r}")
    return msg


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", **attrs: AttrValue) -> Message:
    """NodeProto of a default-domain operator."""
    msg = Message()
    for inp in inputs:
        msg.string_field(1, inp)  # input = 1
    for out in outputs:
        msg.string_field(2, out)  # output = 2
    if name:
        msg.string_field(3, name)  # name = 3
    msg.string_field(4, op_type)  # op_type = 4
    for key, value in attrs.items():
        msg.message_field(5, attribute(key, value))  # attribute = 5
    return msg


def graph(
    name: str,
    nodes: Sequence[Message],
    inputs: Sequence[Message],
    outputs: Sequence[Message],
    initializers: Sequence[Message] = (),
) -> Message:
    """GraphProto: nodes in topological order, initialisers, graph inputs and outputs."""
    msg = Message()
    for n in nodes:
        msg.message_field(1, n)  # node = 1
    msg.string_field(2, name)  # name = 2
    for t in initializers:
        msg.message_field(5, t)  # initializer = 5
    for vi in inputs:
        msg.message_field(11, vi)  # input = 11
    for vi in outputs:
        msg.message_field(12, vi)  # output = 12
    return msg


def model(
    graph_msg: Message,
    *,
    opset: int = 13,
    ir_version: int = 8,
    producer: str = "widthwise",
    producer_version: str = "",
) -> bytes:
    """Serialised ModelProto importing the default domain at `opset`."""
    opset_msg = Message().string_field(1, "").int_field(2, opset)  # domain = 1, version = 2
    msg = Message()
    msg.int_field(1, ir_version)  # ir_version = 1
    msg.string_field(2, producer)  # producer_name = 2
    if producer_version:
        msg.string_field(3, producer_version)  # producer_version = 3
    msg.message_field(7, graph_msg)  # graph = 7
    msg.message_field(8, opset_msg)  # opset_import = 8
    return msg.to_bytes()
