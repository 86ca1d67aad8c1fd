"""An ONNX file's metadata without loading its graph.

The store checks every built INT8 file whenever a model is made ready (worker start): which
recipe built it and for which CPU kind. `onnx.load` parses the whole graph to get there (the
weights included: 58 MB for all-MiniLM INT8, ~180 MB for bge-base INT8). A ModelProto's top
level is a handful of fields; this walks them in the protobuf wire format, seeking past the
graph, and decodes only `metadata_props` (field 14: key = 1, value = 2).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

_METADATA_PROPS = 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: BinaryIO) -> int | None:
    """The next varint, or None at the end of the data."""
    value, shift = 0, 0
    while True:
        byte = data.read(1)
        if not byte:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _entry(raw: bytes) -> tuple[str, str]:
    """(key, value) of one StringStringEntryProto."""
    data = io.BytesIO(raw)
    fields = {1: "", 2: ""}
    while (tag := _varint(data)) is not None:
        number, kind = tag >> 3, tag & 7
        if kind != _LENGTH:
            raise ValueError("unexpected field in a metadata entry")
        length = _varint(data)
        if length is None:
            raise ValueError("truncated metadata entry")
        value = data.read(length)
        if len(value) != length:
            raise ValueError("truncated metadata entry")
        if number in fields:
            fields[number] = value.decode("utf-8")
    return fields[1], fields[2]


def read_metadata(path: Path) -> dict[str, str]:
    """`metadata_props` of the ONNX model at `path`. ValueError if it is no model file."""
    props: dict[str, str] = {}
    with path.open("rb") as data:
        size = path.stat().st_size
        while (tag := _varint(data)) is not None:
            number, kind = tag >> 3, tag & 7
            if number == 0:
                raise ValueError(f"{path} is not an ONNX model")
            if kind == _VARINT:
                if _varint(data) is None:
                    raise ValueError(f"{path} is truncated")
            elif kind in (_FIXED64, _FIXED32):
                width = 8 if kind == _FIXED64 else 4
                if data.tell() + width > size:
                    raise ValueError(f"{path} is truncated")
                data.seek(width, 1)
            elif kind == _LENGTH:
                length = _varint(data)
                if length is None or data.tell() + length > size:
                    raise ValueError(f"{path} is truncated or not an ONNX model")
                if number == _METADATA_PROPS:
                    key, value = _entry(data.read(length))
                    props[key] = value
                else:
                    data.seek(length, 1)
            else:
                raise ValueError(f"{path} is not an ONNX model (wire type {kind})")
    return props
