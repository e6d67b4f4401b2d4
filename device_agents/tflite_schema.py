"""Write TFLite model files (schema version 3) with the pure-Python `flatbuffers` Builder.

Only the part of the TFLite schema that widthwise's builders need: buffers, tensors with
optional quantisation, builtin operators with their options tables, one subgraph. Field
slot numbers follow the published schema.fbs. The Builder writes only the tables; the
weights follow them in 16-byte-aligned vectors, joined into the file once (each array
copied once, no zero-filled Builder of the model's size), so a 1.5x MobileNet writes in
tens of milliseconds. Tiny models (the smoke model) keep everything inside the Builder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Sequence

import flatbuffers
import numpy as np

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# BuiltinOperator codes used here.
OP_ADD = 0
OP_AVERAGE_POOL_2D = 1
OP_CONV_2D = 3
OP_DEPTHWISE_CONV_2D = 4
OP_DEQUANTIZE = 6
OP_FULLY_CONNECTED = 9
OP_MUL = 18
OP_RESHAPE = 22
OP_GATHER = 36
OP_MEAN = 40
OP_QUANTIZE = 114
OP_HARD_SWISH = 117
OP_BATCH_MATMUL = 126

# TensorType values.
FLOAT32 = 0
INT32 = 2
INT64 = 4
INT8 = 9
TENSOR_TYPES: dict[str, int] = {"float32": FLOAT32, "int32": INT32, "int64": INT64, "int8": INT8}

# Padding and fused activations.
PAD_SAME = 0
PAD_VALID = 1
ACT_NONE = 0
ACT_RELU = 1
ACT_RELU6 = 3

#: Operator codes at or above this value do not fit the deprecated int8 field.
PLACEHOLDER_FOR_GREATER_OP_CODES = 127

#: Constants of at most this many bytes in all stay inside the Builder; more are appended.
INLINE_DATA_LIMIT = 4096
_DATA_ALIGNMENT = 16  # Buffer.data is force_align: 16 in the schema
_DATA_PLACEHOLDER = 0xFFFFFFFF  # a Buffer.data offset until the vector's place is known

OptionWriter = Callable[[flatbuffers.Builder], int]


@dataclass(frozen=True)
class Options:
    """A builtin options table: its BuiltinOptions union type and a function writing it."""

    union_type: int
    write: OptionWriter


@dataclass(frozen=True)
class Quant:
    """Affine quantisation of a tensor: real = scale * (q - zero_point), per tensor or per channel."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dimension: int = 0


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    ttype: int
    buffer: int
    quant: Quant | None


@dataclass
class _Operator:
    opcode_index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Options | None


def _scalar_table(fields: Sequence[tuple[str, int, object, object]]) -> OptionWriter:
    """An options writer for a table of scalar fields: (kind, slot, value, default)."""

    def write(b: flatbuffers.Builder) -> int:
        b.StartObject(len(fields) and max(slot for _, slot, _, _ in fields) + 1)
        for kind, slot, value, default in fields:
            getattr(b, f"Prepend{kind}Slot")(slot, value, default)
        return b.EndObject()

    return write


def conv2d_options(stride: int, activation: int) -> Options:
    """Conv2DOptions with SAME padding."""
    return Options(1, _scalar_table([("Int8", 0, PAD_SAME, 0), ("Int32", 1, stride, 0),
                                     ("Int32", 2, stride, 0), ("Int8", 3, activation, 0)]))


def depthwise_options(stride: int, activation: int) -> Options:
    """DepthwiseConv2DOptions with SAME padding and depth multiplier 1."""
    return Options(2, _scalar_table([("Int8", 0, PAD_SAME, 0), ("Int32", 1, stride, 0), ("Int32", 2, stride, 0),
                                     ("Int32", 3, 1, 0), ("Int8", 4, activation, 0)]))


def add_options(activation: int = ACT_NONE) -> Options:
    """AddOptions (element-wise sum of two same-shape tensors)."""
    return Options(11, _scalar_table([("Int8", 0, activation, 0)]))


def mul_options(activation: int = ACT_NONE) -> Options:
    """MulOptions (element-wise product, broadcasting a [1, 1, 1, C] or [1] operand)."""
    return Options(21, _scalar_table([("Int8", 0, activation, 0)]))


def hard_swish_options() -> Options:
    """HardSwishOptions (an empty table): x * relu6(x + 3) / 6."""
    return Options(91, _scalar_table([]))


def pool2d_options(filter_hw: int, stride: int = 1) -> Options:
    """Pool2DOptions with VALID padding and a square filter."""
    return Options(5, _scalar_table([("Int8", 0, PAD_VALID, 0), ("Int32", 1, stride, 0), ("Int32", 2, stride, 0),
                                     ("Int32", 3, filter_hw, 0), ("Int32", 4, filter_hw, 0)]))


def fully_connected_options(activation: int, keep_num_dims: bool = False) -> Options:
    """FullyConnectedOptions (default weights format)."""
    return Options(8, _scalar_table([("Int8", 0, activation, 0), ("Bool", 2, keep_num_dims, False)]))


def reducer_options(keep_dims: bool) -> Options:
    """ReducerOptions (for MEAN)."""
    return Options(27, _scalar_table([("Bool", 0, keep_dims, False)]))


def gather_options(axis: int) -> Options:
    """GatherOptions."""
    return Options(23, _scalar_table([("Int32", 0, axis, 0)]))


def reshape_options(new_shape: Sequence[int]) -> Options:
    """ReshapeOptions carrying the target shape (also given as a constant input)."""

    def write(b: flatbuffers.Builder) -> int:
        vec = b.CreateNumpyVector(np.asarray(new_shape, dtype=np.int32))
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, vec, 0)
        return b.EndObject()

    return Options(17, write)


def quantize_options() -> Options:
    """QuantizeOptions (an empty table)."""
    return Options(89, _scalar_table([]))


def dequantize_options() -> Options:
    """DequantizeOptions (an empty table)."""
    return Options(38, _scalar_table([]))


class ModelWriter:
    """Collects tensors, constant buffers and operators of one subgraph, then serialises them."""

    def __init__(self, description: str = "widthwise", inline_limit: int | None = None) -> None:
        self.description = description
        self.inline_limit = INLINE_DATA_LIMIT if inline_limit is None else inline_limit
        self._buffers: list[np.ndarray | None] = [None]  # buffer 0 is the empty sentinel
        self._tensors: list[_Tensor] = []
        self._operators: list[_Operator] = []
        self._opcodes: dict[int, int] = {}  # builtin code -> index in operator_codes

    def tensor(self, name: str, shape: Sequence[int], dtype: str, quant: Quant | None = None) -> int:
        """Add an activation tensor (no data); return its index."""
        self._tensors.append(_Tensor(name, tuple(int(d) for d in shape), TENSOR_TYPES[dtype], 0, quant))
        return len(self._tensors) - 1

    def constant(self, name: str, array: np.ndarray, quant: Quant | None = None) -> int:
        """Add a tensor holding `array` (its dtype gives the tensor type); return its index."""
        data = np.asarray(array)  # may be a strided view (a transpose): copied once, when written
        self._buffers.append(data)
        self._tensors.append(_Tensor(name, data.shape, TENSOR_TYPES[data.dtype.name], len(self._buffers) - 1, quant))
        return len(self._tensors) - 1

    def rename(self, index: int, name: str) -> None:
        """Give a tensor another name (e.g. the graph output's fixed name)."""
        self._tensors[index].name = name

    def shape_of(self, index: int) -> tuple[int, ...]:
        """The shape a tensor was declared with."""
        return self._tensors[index].shape

    def quant_of(self, index: int) -> Quant | None:
        """The quantisation a tensor was declared with."""
        return self._tensors[index].quant

    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int], options: Options | None = None) -> None:
        """Append a builtin operator; an input index of -1 marks an omitted optional input."""
        index = self._opcodes.setdefault(code, len(self._opcodes))
        self._operators.append(_Operator(index, tuple(inputs), tuple(outputs), options))

    def finish(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        """Serialise the model: version 3, identifier TFL3, one subgraph named `main`.

        Up to `inline_limit` bytes of constants go inside the flatbuffer Builder (the compact
        layout of tiny models); more are appended after the tables, each array copied once.
        """
        data_bytes = sum(a.nbytes for a in self._buffers if a is not None)
        if data_bytes <= self.inline_limit:
            return self._finish_inline(inputs, outputs, data_bytes)
        return self._finish_appended(inputs, outputs)

    def _finish_inline(self, inputs: Sequence[int], outputs: Sequence[int], data_bytes: int) -> bytes:
        """Everything written by the Builder, buffers first (so they end up at the file's end)."""
        b = flatbuffers.Builder(data_bytes + 16 * len(self._buffers) + self._metadata_size_hint())
        buffer_offsets = [self._write_buffer(b, a) for a in self._buffers]
        self._write_model(b, buffer_offsets, inputs, outputs)
        return bytes(memoryview(b.Bytes)[b.Head() :])

    def _finish_appended(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        """Tables by the Builder, then every constant appended and its Buffer.data offset patched.

        A Buffer table's data field is written as a placeholder whose position is recorded
        (as distance from the Builder's end); once the tables' size is known, each field
        gets the offset of its vector, placed after the tables with 16-byte aligned data.
        The file is joined once, so each weight array is copied exactly once into it.
        """
        b = flatbuffers.Builder(self._metadata_size_hint())
        buffer_offsets, data_fields = [], []
        for array in self._buffers:
            b.StartObject(1)
            if array is not None and array.nbytes:
                b.PrependUint32Slot(0, _DATA_PLACEHOLDER, 0)
                data_fields.append((b.Offset(), array))
            buffer_offsets.append(b.EndObject())
        self._write_model(b, buffer_offsets, inputs, outputs)
        tables = bytearray(memoryview(b.Bytes)[b.Head() :])

        chunks: list[bytes | bytearray | np.ndarray] = [tables]
        position = len(tables)
        for from_end, array in data_fields:
            field_at = len(tables) - from_end
            pad = -(position + 4) % _DATA_ALIGNMENT  # the bytes after the length prefix start aligned
            vector_at = position + pad
            struct.pack_into("<I", tables, field_at, vector_at - field_at)
            chunks.append(bytes(pad) + struct.pack("<I", array.nbytes))
            chunks.append(_little_endian_contiguous(array))
            position = vector_at + 4 + array.nbytes
        return b"".join(chunks)

    def _metadata_size_hint(self) -> int:
        """A Builder size that the tables (not the constants) rarely outgrow."""
        quant_bytes = sum(12 * len(t.quant.scale) + 64 for t in self._tensors if t.quant is not None)
        return quant_bytes + 128 * len(self._tensors) + 64 * len(self._operators) + 65536

    def _write_model(self, b: flatbuffers.Builder, buffer_offsets: Sequence[int], inputs: Sequence[int],
                     outputs: Sequence[int]) -> None:
        """Tensors, operators, operator codes, the subgraph and the Model root, then Finish."""
        tensor_offsets = [self._write_tensor(b, t) for t in self._tensors]
        operator_offsets = [self._write_operator(b, o) for o in self._operators]
        opcode_offsets = [self._write_opcode(b, code) for code in self._opcodes]

        tensors_vec = _offset_vector(b, tensor_offsets)
        inputs_vec = b.CreateNumpyVector(np.asarray(inputs, dtype=np.int32))
        outputs_vec = b.CreateNumpyVector(np.asarray(outputs, dtype=np.int32))
        operators_vec = _offset_vector(b, operator_offsets)
        name = b.CreateString("main")
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)
        b.PrependUOffsetTRelativeSlot(1, inputs_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, outputs_vec, 0)
        b.PrependUOffsetTRelativeSlot(3, operators_vec, 0)
        b.PrependUOffsetTRelativeSlot(4, name, 0)
        subgraph = b.EndObject()

        opcodes_vec = _offset_vector(b, opcode_offsets)
        subgraphs_vec = _offset_vector(b, [subgraph])
        description = b.CreateString(self.description)
        buffers_vec = _offset_vector(b, buffer_offsets)
        b.StartObject(5)
        b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
        b.PrependUOffsetTRelativeSlot(1, opcodes_vec, 0)
        b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)
        b.PrependUOffsetTRelativeSlot(3, description, 0)
        b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
        model = b.EndObject()
        b.Finish(model, file_identifier=FILE_IDENTIFIER)

    @staticmethod
    def _write_buffer(b: flatbuffers.Builder, array: np.ndarray | None) -> int:
        data_offset = None
        if array is not None and array.nbytes:
            size = array.nbytes
            b.StartVector(1, size, _DATA_ALIGNMENT)
            b.head -= size
            target = np.frombuffer(b.Bytes, dtype=array.dtype.newbyteorder("<"), count=array.size, offset=b.head)
            target.reshape(array.shape)[...] = array  # one bulk copy, transposing on the way
            b.vectorNumElems = size
            data_offset = b.EndVector()
        b.StartObject(1)
        if data_offset is not None:
            b.PrependUOffsetTRelativeSlot(0, data_offset, 0)
        return b.EndObject()

    @staticmethod
    def _write_quant(b: flatbuffers.Builder, q: Quant) -> int:
        scale = b.CreateNumpyVector(np.asarray(q.scale, dtype=np.float32))
        zero_point = b.CreateNumpyVector(np.asarray(q.zero_point, dtype=np.int64))
        b.StartObject(7)
        b.PrependUOffsetTRelativeSlot(2, scale, 0)
        b.PrependUOffsetTRelativeSlot(3, zero_point, 0)
        b.PrependInt32Slot(6, q.dimension, 0)
        return b.EndObject()

    def _write_tensor(self, b: flatbuffers.Builder, t: _Tensor) -> int:
        quant = self._write_quant(b, t.quant) if t.quant is not None else None
        shape = b.CreateNumpyVector(np.asarray(t.shape, dtype=np.int32))
        name = b.CreateString(t.name)
        b.StartObject(9)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, t.ttype, -1)  # force-write the type, even FLOAT32 (0)
        b.PrependUint32Slot(2, t.buffer, 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        if quant is not None:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        return b.EndObject()

    @staticmethod
    def _write_operator(b: flatbuffers.Builder, o: _Operator) -> int:
        options = o.options.write(b) if o.options is not None else None
        inputs = b.CreateNumpyVector(np.asarray(o.inputs, dtype=np.int32))
        outputs = b.CreateNumpyVector(np.asarray(o.outputs, dtype=np.int32))
        b.StartObject(5)
        b.PrependUint32Slot(0, o.opcode_index, 0)
        b.PrependUOffsetTRelativeSlot(1, inputs, 0)
        b.PrependUOffsetTRelativeSlot(2, outputs, 0)
        if options is not None:
            b.PrependUint8Slot(3, o.options.union_type, 0)
            b.PrependUOffsetTRelativeSlot(4, options, 0)
        return b.EndObject()

    @staticmethod
    def _write_opcode(b: flatbuffers.Builder, code: int) -> int:
        b.StartObject(4)
        # Both fields always: old readers look at the int8 one, new ones take the larger.
        b.PrependInt8Slot(0, min(code, PLACEHOLDER_FOR_GREATER_OP_CODES), -1)
        b.PrependInt32Slot(2, 1, 0)
        b.PrependInt32Slot(3, code, -1)
        return b.EndObject()


def _little_endian_contiguous(array: np.ndarray) -> np.ndarray:
    """The array as C-contiguous little-endian data: itself when it already is, else one copy."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def _offset_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def smoke_model() -> bytes:
    """The smallest useful model: RESHAPE of a float [1, 4] input, for checking a runtime works."""
    w = ModelWriter("smoke")
    x = w.tensor("x", (1, 4), "float32")
    y = w.tensor("y", (1, 4), "float32")
    shape = w.constant("shape", np.array([1, 4], dtype=np.int32))
    w.op(OP_RESHAPE, [x, shape], [y], reshape_options([1, 4]))
    return w.finish([x], [y])
