"""Read zip members the way PyTorch's miniz-based reader does, where Python's ``zipfile`` refuses.

``zipfile`` rejects members that ``torch.load`` reads happily: an encryption flag on plain data, flag bits
5/6, a wrong CRC-32, a local-header name that differs from the central directory's. A scanner that gives up
there lets a payload through. Here the central directory (when ``zipfile`` can parse it) only says where each
member starts and how big it is; the local header and the data are read from the raw bytes, flags ignored as
miniz ignores them. Without a usable central directory, local headers are walked from offset 0.

Members come back as streams (``read(n)``), never as whole byte strings, and nothing is extracted to disk.
"""

import bz2
import io
import lzma
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass

CHUNK = 1 << 20
LOCAL_SIG, CENTRAL_SIG, DESCRIPTOR_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x07\x08"
STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14
SUPPORTED_METHODS = (STORED, DEFLATED, BZIP2, LZMA)
ENCRYPTION_FLAGS = 0x01 | 0x20 | 0x40  # encrypted, patched data, strong encryption: miniz's reader ignores them
_LOCAL = struct.Struct("<4sHHHHHIIIHH")


class ZipReadError(Exception):
    """A member whose bytes cannot be located or decompressed."""


@dataclass
class Entry:
    """One member: from the central directory (``central``) or, without one, from its local header."""

    name: str
    header_offset: int
    method: int
    flags: int
    crc: int | None
    compress_size: int | None
    file_size: int | None
    central: bool = True


@dataclass
class LocalHeader:
    name: str
    flags: int
    method: int
    crc: int
    compress_size: int | None  # None: not in the header (a data descriptor follows the data)
    file_size: int | None
    data_offset: int


def file_size(f) -> int:
    return f.seek(0, io.SEEK_END)


# --- where the members are -------------------------------------------------------------------

def central_entries(f) -> list[Entry] | None:
    """The central directory as ``zipfile`` parses it (zip64 included), or None when it is damaged or missing."""
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError, UnicodeDecodeError):
        return None
    return [Entry(i.filename, i.header_offset, i.compress_type, i.flag_bits, i.CRC, i.compress_size, i.file_size) for i in infos]


def local_entries(f, start: int = 0) -> tuple[list[Entry], int]:
    """Walk local headers one after another from ``start``, as streaming unzippers do; returns the entries and
    the offset where the walk stopped (the first byte that does not start a readable local entry)."""
    entries, offset, size = [], start, file_size(f)
    while offset < size and (found := local_entry(f, offset)) is not None:
        entry, offset = found
        entries.append(entry)
    return entries, offset


def local_entry(f, offset: int) -> tuple[Entry, int] | None:
    """The entry whose local header is at ``offset`` and where the next record starts, or None."""
    header = read_local(f, offset)
    if header is None:
        return None
    csize = header.compress_size if header.compress_size is not None else _data_length(f, header)
    if csize is None:
        return None
    crc = None if header.flags & 0x08 else header.crc  # with a data descriptor the header's CRC is zero
    entry = Entry(header.name, offset, header.method, header.flags, crc, csize, header.file_size, central=False)
    return entry, _after_descriptor(f, header.data_offset + csize, header.flags)


def read_local(f, offset: int) -> LocalHeader | None:
    """Parse the local file header at ``offset``; None when there is none."""
    f.seek(offset)
    raw = f.read(_LOCAL.size)
    if len(raw) < _LOCAL.size or not raw.startswith(LOCAL_SIG):
        return None
    _, _, flags, method, _, _, crc, csize, usize, nlen, elen = _LOCAL.unpack(raw)
    name_raw, extra = f.read(nlen), f.read(elen)
    if len(name_raw) < nlen:
        return None
    name = name_raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    usize, csize = _zip64_sizes(extra, usize, csize)
    known = not (flags & 0x08) or csize != 0  # bit 3: the sizes follow the data, the header's are zero
    return LocalHeader(name, flags, method, crc, csize if known else None, usize if known else None, offset + _LOCAL.size + nlen + elen)


def _zip64_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 1:
            values = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
        pos += 4 + length
    return usize, csize


def _data_length(f, header: LocalHeader) -> int | None:
    """Compressed length of a member whose header leaves it out: a deflate stream ends itself; stored data ends
    at a data descriptor that records its own length."""
    if header.method == DEFLATED:
        return _deflate_length(f, header.data_offset)
    if header.method == STORED:
        return _descriptor_length(f, header.data_offset)
    return None


def _deflate_length(f, start: int) -> int | None:
    z, consumed = zlib.decompressobj(-15), 0
    f.seek(start)
    try:
        while not z.eof:
            data = f.read(CHUNK)
            if not data:
                return None
            z.decompress(data, CHUNK)  # output is discarded (bounded chunks): only the stream's end matters here
            while z.unconsumed_tail and not z.eof:
                z.decompress(z.unconsumed_tail, CHUNK)
            consumed += len(data)
    except zlib.error:
        return None
    return consumed - len(z.unused_data)


def _descriptor_length(f, start: int) -> int | None:
    """A descriptor 'PK\\x07\\x08' whose compressed-size field equals its distance from ``start``."""
    for pos in find_all(f, DESCRIPTOR_SIG, start):
        f.seek(pos + 8)
        raw = f.read(12)
        if len(raw) >= 4 and struct.unpack_from("<I", raw)[0] == pos - start:
            return pos - start
        if len(raw) == 12 and struct.unpack_from("<Q", raw)[0] == pos - start:
            return pos - start
    return None


def _after_descriptor(f, end: int, flags: int) -> int:
    """Where the next record starts after a member's data (skipping a data descriptor, with or without its signature, 32 or 64 bit)."""
    if not flags & 0x08:
        return end
    f.seek(end)
    window = f.read(28)
    for skip in (16, 24, 12, 20):
        if window[skip:skip + 4] in (LOCAL_SIG, CENTRAL_SIG):
            return end + skip
    return end + (16 if window.startswith(DESCRIPTOR_SIG) else 12)


def find_all(f, needle: bytes, start: int = 0, end: int | None = None):
    """Offsets of ``needle`` in f[start:end], read in chunks (never the whole file at once)."""
    end = file_size(f) if end is None else end
    pos, pattern = start, re.compile(re.escape(needle))
    while pos < end:
        f.seek(pos)
        chunk = f.read(min(CHUNK + len(needle) - 1, end - pos))
        for m in pattern.finditer(chunk):
            if m.start() < CHUNK:
                yield pos + m.start()
        pos += CHUNK


# --- member data -----------------------------------------------------------------------------

class Window(io.RawIOBase):
    """A seekable view of f[start:start+length] that does not move with other readers of f (it seeks on every read)."""

    def __init__(self, f, start: int, length: int | None = None) -> None:
        super().__init__()
        self.f, self.start, self.pos = f, start, 0
        self.length = file_size(f) - start if length is None else max(0, min(length, file_size(f) - start))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.length - self.pos))
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos


class MemberStream:
    """A member's uncompressed bytes, read on demand; tracks the CRC-32 of what was read."""

    def __init__(self, raw, decoder, expected_crc: int | None, size: int | None) -> None:
        self.raw, self.decoder, self.expected_crc, self.size = raw, decoder, expected_crc, size
        self.crc, self.produced, self.eof = 0, 0, False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        if self.size is not None:
            n = min(n, self.size - self.produced)  # loaders stop at the recorded size
        data = self._next(n) if n > 0 else b""
        if not data:
            self.eof = True
        self.crc, self.produced = zlib.crc32(data, self.crc), self.produced + len(data)
        return data

    def _next(self, n: int) -> bytes:
        if self.decoder is None:
            return self.raw.read(min(n, CHUNK * 16))
        out = bytearray()
        while len(out) < n and not self.decoder.eof:
            data = self._input()
            chunk = self.decoder.decompress(data, n - len(out))
            if not data and not chunk:
                raise ZipReadError("the compressed data ends before its stream does (truncated member)")
            out += chunk
        return bytes(out)

    def _input(self) -> bytes:
        if isinstance(self.decoder, _Inflate):
            return self.decoder.z.unconsumed_tail or self.raw.read(CHUNK)
        return self.raw.read(CHUNK) if self.decoder.needs_input else b""

    @property
    def crc_mismatch(self) -> bool:
        """Only known once the member was read to its end."""
        return self.eof and self.expected_crc is not None and self.crc != self.expected_crc


class _Inflate:
    def __init__(self) -> None:
        self.z = zlib.decompressobj(-15)

    @property
    def eof(self) -> bool:
        return self.z.eof

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self.z.decompress(data, max_length)


def open_member(f, entry: Entry, header: LocalHeader) -> MemberStream:
    """The member's data as a stream. The method and sizes come from the central directory when there is one
    (as miniz and zipfile take them); flag bits are ignored (as miniz ignores them)."""
    csize = entry.compress_size if entry.compress_size is not None else header.compress_size
    raw = Window(f, header.data_offset, csize)
    if entry.method == STORED:
        return MemberStream(raw, None, entry.crc, csize)
    return MemberStream(raw, _decoder(entry.method, raw), entry.crc, entry.file_size)


def _decoder(method: int, raw: Window):
    if method == DEFLATED:
        return _Inflate()
    if method == BZIP2:
        return bz2.BZ2Decompressor()
    if method == LZMA:  # zip's LZMA: a 4-byte version/size prefix, then the LZMA1 properties, then raw data
        prefix = raw.read(4)
        if len(prefix) < 4:
            raise ZipReadError("LZMA member too short for its header")
        props = raw.read(struct.unpack("<H", prefix[2:4])[0])
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)])
    raise ZipReadError(f"compression method {method} is not supported")
