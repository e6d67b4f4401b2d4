"""Structural check of .tflite bytes before an interpreter sees them.

An interpreter handed a corrupt flatbuffer may read out of bounds and take the agent
process down; this walks the parts of the file the interpreter dereferences (root table,
buffers, operator codes, subgraphs, tensors, operators) with bounds checks and raises
BadModel naming the first thing that is wrong. Pure Python, no generated schema code.
"""

from __future__ import annotations

import struct

from ..errors import BadModel, ExternalDataRefused, clip_text

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
MAX_TENSORS = 1 << 20
NAME_LIMIT = 200  # characters of a model's tensor name kept in an error text


class _Reader:
    """Bounds-checked little-endian reads over the model bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or pos + n > self.size:
            raise BadModel(f"not a valid TFLite model: {what} points outside the file (offset {pos}, size {self.size})")

    def u16(self, pos: int, what: str) -> int:
        self._need(pos, 2, what)
        return struct.unpack_from("<H", self.data, pos)[0]

    def u32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        return struct.unpack_from("<I", self.data, pos)[0]

    def i32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        return struct.unpack_from("<i", self.data, pos)[0]

    def u64(self, pos: int, what: str) -> int:
        self._need(pos, 8, what)
        return struct.unpack_from("<Q", self.data, pos)[0]

    def table(self, pos: int, what: str) -> "_Table":
        """The table at `pos`, its vtable checked."""
        vtable = pos - self.i32(pos, what)
        vt_size = self.u16(vtable, f"{what} vtable")
        table_size = self.u16(vtable + 2, f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise BadModel(f"not a valid TFLite model: {what} has a malformed vtable")
        self._need(vtable, vt_size, f"{what} vtable")
        self._need(pos, max(table_size, 4), what)
        return _Table(self, pos, vtable, vt_size, table_size, what)

    def deref(self, pos: int, what: str) -> int:
        """Follow a uoffset stored at `pos`."""
        return pos + self.u32(pos, what)

    def vector(self, pos: int, elem_size: int, what: str) -> tuple[int, int]:
        """(start of elements, count) of the vector at `pos`, its extent checked."""
        count = self.u32(pos, what)
        self._need(pos + 4, count * elem_size, what)
        return pos + 4, count


class _Table:
    """A flatbuffer table: field lookups by slot, each position checked against the table."""

    def __init__(self, r: _Reader, pos: int, vtable: int, vt_size: int, table_size: int, what: str) -> None:
        self.r, self.pos, self.vtable, self.vt_size, self.table_size, self.what = r, pos, vtable, vt_size, table_size, what

    def field(self, slot: int, width: int) -> int | None:
        entry = 4 + 2 * slot
        if entry >= self.vt_size:
            return None
        off = self.r.u16(self.vtable + entry, f"{self.what} vtable")
        if off == 0:
            return None
        if off + width > self.table_size:
            raise BadModel(f"not a valid TFLite model: field {slot} of {self.what} lies outside its table")
        return self.pos + off

    def u32(self, slot: int, default: int = 0) -> int:
        p = self.field(slot, 4)
        return default if p is None else self.r.u32(p, self.what)

    def u64(self, slot: int, default: int = 0) -> int:
        p = self.field(slot, 8)
        return default if p is None else self.r.u64(p, self.what)

    def vector(self, slot: int, elem_size: int, name: str) -> tuple[int, int] | None:
        p = self.field(slot, 4)
        return None if p is None else self.r.vector(self.r.deref(p, name), elem_size, name)

    def tables(self, slot: int, name: str) -> list[_Table]:
        vec = self.vector(slot, 4, name)
        if vec is None:
            return []
        start, count = vec
        return [self.r.table(self.r.deref(start + 4 * i, name), f"{name}[{i}]") for i in range(count)]

    def ints(self, slot: int, name: str) -> list[int]:
        vec = self.vector(slot, 4, name)
        if vec is None:
            return []
        start, count = vec
        return list(struct.unpack_from(f"<{count}i", self.r.data, start))

    def sub_table(self, slot: int, name: str) -> "_Table | None":
        p = self.field(slot, 4)
        return None if p is None else self.r.table(self.r.deref(p, name), name)


def check_tflite(model: bytes) -> None:
    """Raise BadModel with a clear message unless `model` is a structurally sound TFLite file."""
    if not isinstance(model, (bytes, bytearray, memoryview)):
        raise BadModel(f"model must be bytes, got {type(model).__name__}")
    data = model if isinstance(model, bytes) else bytes(model)
    if len(data) < 16:
        raise BadModel(f"not a valid TFLite model: {len(data)} bytes is too short for a flatbuffer")
    if data[4:8] != FILE_IDENTIFIER:
        raise BadModel(f"not a TFLite model: file identifier is {data[4:8]!r}, expected {FILE_IDENTIFIER!r}")
    r = _Reader(data)
    root = r.table(r.deref(0, "root table"), "model")
    version = root.u32(0)
    if version != SCHEMA_VERSION:
        raise BadModel(f"unsupported TFLite schema version {version}; expected {SCHEMA_VERSION}")
    opcodes = root.tables(1, "operator_codes")
    subgraphs = root.tables(2, "subgraphs")
    buffers = root.tables(4, "buffers")
    if not subgraphs:
        raise BadModel("not a valid TFLite model: it has no subgraph")
    outside: dict[int, str] = {}  # buffer index -> how it reaches outside the file
    for k, buf in enumerate(buffers):
        buf.vector(0, 1, f"buffers[{k}].data")
        offset, size = buf.u64(1), buf.u64(2)
        if offset and offset + size > len(data):  # Python integers: an offset + size that wraps in C is caught
            outside[k] = f"offset {offset} + size {size} > {len(data)} bytes of file"
    for k, code in enumerate(opcodes):
        code.field(0, 1)  # deprecated_builtin_code
        code.field(3, 4)  # builtin_code
        code.vector(1, 1, f"operator_codes[{k}].custom_code")
    for s, sg in enumerate(subgraphs):
        _check_subgraph(sg, s, len(buffers), len(opcodes), outside)
    if outside:  # a buffer no tensor uses
        k, how = next(iter(outside.items()))
        raise ExternalDataRefused(f"the model references data outside its own bytes: buffers[{k}] ({how})", buffer=k)


def _outside(tensor: _Table, where: str, buffer: int, how: str) -> ExternalDataRefused:
    """The refusal of a tensor whose buffer lies outside the file, naming the tensor."""
    name_vec = tensor.vector(3, 1, f"{where}.name")
    name = "(unnamed)"
    if name_vec is not None:
        start, count = name_vec
        name = clip_text(tensor.r.data[start : start + count].decode("utf-8", "replace"), NAME_LIMIT)
    return ExternalDataRefused(
        f"the model references data outside its own bytes: tensor {name!r} ({where}) uses buffers[{buffer}] ({how})",
        tensor=name, buffer=buffer,
    )


def _check_subgraph(sg: _Table, s: int, n_buffers: int, n_opcodes: int, outside: dict[int, str]) -> None:
    tensors = sg.tables(0, f"subgraphs[{s}].tensors")
    n = len(tensors)
    if n > MAX_TENSORS:
        raise BadModel(f"not a valid TFLite model: subgraph {s} declares {n} tensors")
    for t, tensor in enumerate(tensors):
        where = f"subgraphs[{s}].tensors[{t}]"
        tensor.ints(0, f"{where}.shape")
        if tensor.u32(2) >= max(n_buffers, 1):
            raise BadModel(f"not a valid TFLite model: {where} refers to buffer {tensor.u32(2)} of {n_buffers}")
        if tensor.u32(2) in outside:
            raise _outside(tensor, where, tensor.u32(2), outside[tensor.u32(2)])
        quant = tensor.sub_table(4, f"{where}.quantization")
        if quant is not None:
            quant.vector(2, 4, f"{where}.quantization.scale")
            quant.vector(3, 8, f"{where}.quantization.zero_point")
    for name, slot in (("inputs", 1), ("outputs", 2)):
        for i in sg.ints(slot, f"subgraphs[{s}].{name}"):
            if not 0 <= i < n:
                raise BadModel(f"not a valid TFLite model: subgraph {s} {name} names tensor {i} of {n}")
    for o, op in enumerate(sg.tables(3, f"subgraphs[{s}].operators")):
        where = f"subgraphs[{s}].operators[{o}]"
        if op.u32(0) >= n_opcodes:
            raise BadModel(f"not a valid TFLite model: {where} uses operator code {op.u32(0)} of {n_opcodes}")
        for name, slot in (("inputs", 1), ("outputs", 2)):
            for i in op.ints(slot, f"{where}.{name}"):
                if not -1 <= i < n:
                    raise BadModel(f"not a valid TFLite model: {where} {name} names tensor {i} of {n}")
        op.sub_table(4, f"{where}.builtin_options")
        offset, size = op.u64(9), op.u64(10)  # large_custom_options_offset, _size
        if (offset or size) and offset + size > op.r.size:
            raise ExternalDataRefused(
                f"the model references data outside its own bytes: {where} has custom options at offset {offset} "
                f"+ size {size} > {op.r.size} bytes of file", operator=o,
            )
