"""Read upload bodies as a stream: raw bytes, or multipart parsed on the fly. Never the whole body in memory."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header

from app.artifacts.names import checked_filename, decode_header_param
from app.artifacts.store import ArtifactStore, StoreWriter, UploadError

BATCH = 1 << 20  # hop to a thread once per MiB: file writes and hashing stay off the event loop
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 32  # text fields per body (every endpoint takes a handful): bounds what one request keeps in memory
MAX_PARTS = 64  # parts of any kind, files included
MAX_HEADER_BYTES = 16 * 1024  # per part


async def batched(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        if len(buf) >= BATCH:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def stream_raw(stream: AsyncIterator[bytes], writer: StoreWriter) -> None:
    async for block in batched(stream):
        await anyio.to_thread.run_sync(writer.write, block)


@dataclass
class FilePart:
    field: str
    filename: str | None
    writer: StoreWriter


@dataclass
class MultipartResult:
    files: dict[str, FilePart] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        for part in self.files.values():
            part.writer.discard()


class _Collector:
    """python-multipart callbacks: file parts go to store writers, small text fields to memory."""

    def __init__(self, store: ArtifactStore, max_bytes: int, file_fields: set[str]) -> None:
        self.store, self.max_bytes, self.file_fields = store, max_bytes, file_fields
        self.result = MultipartResult()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._target: FilePart | bytearray | None = None
        self._name = ""
        self._parts = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._target = {}, None
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise UploadError(f"the multipart body has more than {MAX_PARTS} parts")

    def _header_end(self) -> None:
        if len(self._header_field) + len(self._header_value) > MAX_HEADER_BYTES:
            raise UploadError(f"a multipart part header is over {MAX_HEADER_BYTES} bytes")
        # Latin-1 maps bytes to characters one to one: the filename's raw bytes survive to be decoded as UTF-8 below.
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        self._name = decode_header_param(params.get(b"name", b""))
        filename = params.get(b"filename")
        if self._name in self.file_fields:
            if self._name in self.result.files:
                raise UploadError(f"multipart field '{self._name}' appears twice")
            name = checked_filename(decode_header_param(filename)) if filename else None
            part = FilePart(self._name, name, self.store.writer(self.max_bytes))
            self.result.files[self._name] = part
            self._target = part
        else:
            if self._name in self.result.fields or len(self.result.fields) >= MAX_FIELDS:
                raise UploadError(f"multipart field '{self._name}' appears twice" if self._name in self.result.fields
                                  else f"the multipart body has more than {MAX_FIELDS} text fields")
            self._target = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if isinstance(self._target, FilePart):
            self._target.writer.write(data[start:end])
        elif self._target is not None:
            self._target += data[start:end]
            if len(self._target) > MAX_FIELD_BYTES:
                raise UploadError(f"multipart field '{self._name}' is over {MAX_FIELD_BYTES} bytes; only files may be large")

    def _part_end(self) -> None:
        if isinstance(self._target, bytearray):
            self.result.fields[self._name] = self._target.decode("utf-8", "replace")


async def stream_multipart(stream: AsyncIterator[bytes], content_type: str, store: ArtifactStore, max_bytes: int, file_fields: set[str]) -> MultipartResult:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("multipart/form-data without a boundary parameter")
    collector = _Collector(store, max_bytes, file_fields)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        async for block in batched(stream):
            await anyio.to_thread.run_sync(parser.write, block)
        parser.finalize()
    except UploadError:
        collector.result.discard()
        raise
    except Exception as exc:  # the parser's own errors: the body is not valid multipart
        collector.result.discard()
        raise UploadError(f"malformed multipart body: {exc}") from exc
    return collector.result
