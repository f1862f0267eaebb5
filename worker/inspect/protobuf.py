"""A minimal, bounded protobuf wire-format reader: enough to identify a message by its structure and to
walk the fields a check needs, without generated classes (no TensorFlow, no onnx import).

Malformed input raises ``ProtobufError``; a walk that would exceed its budget raises ``ProtobufLimit``.
Callers turn both into findings."""

from collections.abc import Iterator
from typing import NamedTuple

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
MAX_FIELD_NUMBER = (1 << 29) - 1
_MAX_VARINT_BYTES = 10


class ProtobufError(ValueError):
    """The bytes are not well-formed protobuf wire format."""


class Truncated(ProtobufError):
    """A value runs past the end of the bytes at hand."""


class ProtobufLimit(ProtobufError):
    """Well-formed so far, but walking further would exceed a bound."""


class Field(NamedTuple):
    number: int
    wire_type: int
    value: object  # int for VARINT/FIXED*, a memoryview for LEN (only the part present when ``truncated``)
    offset: int  # where the field's tag starts, relative to the start of the buffer
    truncated: bool = False  # a LEN payload that runs past the bytes at hand but within the declared total


class StreamField(NamedTuple):
    number: int
    wire_type: int
    value: int  # the integer, or the payload length of a LEN field
    payload_offset: int  # absolute file offset of a LEN payload (of the value otherwise)
    peek: bytes  # the first bytes of a LEN payload


class Budget:
    """Counts fields visited across nested walks so one file cannot make a walk unbounded."""

    def __init__(self, max_fields: int) -> None:
        self.left = max_fields

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ProtobufLimit("too many protobuf fields")


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it). Raises ProtobufError on a varint longer than 10 bytes or cut by ``end``."""
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            raise Truncated("varint runs past the end of the message")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >> 64:
                raise ProtobufError("varint does not fit in 64 bits")
            return value, pos + i + 1
        shift += 7
    raise ProtobufError("varint longer than 10 bytes")


def _read_tag(buf, pos: int, end: int) -> tuple[int, int, int]:
    tag, pos = read_varint(buf, pos, end)
    number, wire_type = tag >> 3, tag & 7
    if number == 0 or number > MAX_FIELD_NUMBER:
        raise ProtobufError(f"invalid field number {number}")
    if wire_type in (START_GROUP, END_GROUP):
        raise ProtobufError("deprecated group encoding")  # nothing we identify uses groups
    if wire_type > FIXED32:
        raise ProtobufError(f"invalid wire type {wire_type}")
    return number, wire_type, pos


def iter_fields(buf, total: int | None = None, budget: Budget | None = None) -> Iterator[Field]:
    """The fields of one message in ``buf``.

    ``total`` is the message's declared length when ``buf`` holds only its first bytes (a file's head): a field
    cut by the end of ``buf`` but ending within ``total`` ends the walk quietly (a LEN field is yielded with
    ``truncated=True``); one that runs past ``total`` is malformed."""
    view = memoryview(buf)
    have = len(view)
    total = have if total is None else total
    if total < have:
        raise ValueError("total is smaller than the bytes at hand")
    pos = 0
    while pos < have:
        if budget is not None:
            budget.spend()
        start = pos
        try:
            number, wire_type, pos = _read_tag(view, pos, have)
            if wire_type == VARINT:
                value, pos = read_varint(view, pos, have)
            elif wire_type in (FIXED64, FIXED32):
                width = 8 if wire_type == FIXED64 else 4
                if pos + width > have:
                    raise Truncated("fixed-width value runs past the end of the message")
                value, pos = int.from_bytes(view[pos:pos + width], "little"), pos + width
            else:
                length, pos = read_varint(view, pos, have)
                if pos + length > total:
                    raise ProtobufError(f"field {number} declares {length} bytes, past the end of the message")
                if pos + length > have:
                    yield Field(number, wire_type, view[pos:have], start, truncated=True)
                    return
                value, pos = view[pos:pos + length], pos + length
        except Truncated:
            if have < total:
                return  # cut by the end of the bytes at hand, not malformed
            raise
        yield Field(number, wire_type, value, start)


def iter_stream_fields(f, size: int, max_fields: int, peek: int = 256) -> Iterator[StreamField]:
    """The top-level fields of a message that fills a seekable file of ``size`` bytes, seeking over LEN payloads
    (a few small reads per field, whatever the file's size)."""
    pos = 0
    for _ in range(max_fields):
        if pos >= size:
            return
        f.seek(pos)
        head = f.read(2 * _MAX_VARINT_BYTES)
        number, wire_type, at = _read_tag(head, 0, len(head))
        if wire_type == VARINT:
            value, at = read_varint(head, at, len(head))
            yield StreamField(number, wire_type, value, pos, b"")
            pos += at
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if pos + at + width > size:
                raise ProtobufError("fixed-width value runs past the end of the file")
            yield StreamField(number, wire_type, int.from_bytes(head[at:at + width], "little"), pos + at, b"")
            pos += at + width
        else:
            length, at = read_varint(head, at, len(head))
            start = pos + at
            if start + length > size:
                raise ProtobufError(f"field {number} declares {length} bytes, past the end of the file")
            f.seek(start)
            yield StreamField(number, wire_type, length, start, f.read(min(length, peek)))
            pos = start + length
    raise ProtobufLimit(f"more than {max_fields} top-level fields")


def as_text(value) -> str:
    """A LEN payload as UTF-8 text (strings in protobuf must be UTF-8)."""
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError("string field is not valid UTF-8") from exc
