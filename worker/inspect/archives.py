"""Find every pickle stream in a file, recursively through containers, within resource limits.

Zip members are looked at whatever their names (a PyTorch checkpoint, a .keras or .npz file, a
zip in a zip), as are tar members, gzip/bz2/xz/zlib payloads, npy object arrays and bytes
embedded inside pickles. Only a member's head is read unless it may hold a pickle or an archive,
so tensor data costs almost nothing. Nothing is extracted to disk and nothing is deserialized: bytes that look like a pickle go to
``worker.inspect.pickles.analyze``. A limit that trips (zip bomb, deep nesting, too many members) ends
in a recorded problem, not in a hang or a crash.
"""

import ast
import bisect
import bz2
import contextlib
import gzip
import io
import lzma
import mmap
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from worker.inspect.common import Problem
from worker.inspect.formats import COMPRESSED_KINDS, sniff, sniff_bytes
from worker.inspect.pickles import PickleAnalysis, analyze, looks_like_pickle
from worker.inspect.savedmodel import tf_graph_problems

CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_depth: int = 6  # containers inside containers
    max_members: int = 100_000
    max_member_bytes: int = 2 * 1024**3  # bytes read into memory to analyse one nested member
    max_total_bytes: int = 64 * 1024**3  # decompressed bytes read in all
    max_ratio: float = 200.0  # decompressed/compressed above this, on more than 16 MiB, is a bomb


@dataclass
class PickleHit:
    location: str
    analysis: PickleAnalysis
    expected: bool  # the location is meant to hold a pickle (not a guess from raw bytes)


@dataclass
class ContainerScan:
    kind: str
    pickles: list[PickleHit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    bytes_read: int = 0


class _LimitReached(Exception):
    pass


class Walker:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.members = 0

    def scan_file(self, path: Path) -> ContainerScan:
        kind = sniff(path)
        result = ContainerScan(kind=kind)
        try:
            if kind == "unknown" and path.name.endswith(".pb"):
                result.problems += tf_graph_problems(path.read_bytes()[: self.limits.max_member_bytes], path.name)
            elif kind in ("pickle", "unknown"):
                self._pickle_file(path, result, expected=kind == "pickle")
            elif kind == "npy":
                with path.open("rb") as f:
                    self._npy(f, path.name, result)
            elif kind in ("zip", "pytorch_zip", "keras", "npz"):
                self._zip(path, path.name, 0, result)
            elif kind == "tar":
                self._tar(path, path.name, 0, result)
            elif kind in COMPRESSED_KINDS:
                with path.open("rb") as f:
                    self._compressed(f, kind, path.name, 0, result, path.stat().st_size)
            elif kind == "7z":
                result.problems.append(Problem("medium", "7z archive not inspected", path.name,
                                               "poisonscan does not open 7z archives; their members were not scanned."))
        except _LimitReached:
            pass
        return result

    # --- top level ---

    def _pickle_file(self, path: Path, result: ContainerScan, expected: bool) -> None:
        """A pickle, or an unrecognised file that may hide one behind junk (searched, not assumed)."""
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            result.bytes_read += len(mm)
            self._analyze(mm, path.name, expected, 0, result)

    # --- containers ---

    def _zip(self, source, location: str, depth: int, result: ContainerScan) -> None:
        result.containers.append(location)
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            result.problems.append(Problem("medium", "zip archive is malformed", location,
                                           f"{exc}. Loaders that repair or skip the damage may read members this scan could not."))
            return
        with zf:
            self._hidden_local_entries(source, zf, location, depth, result)
            for info in zf.infolist():
                if info.is_dir():
                    continue
                member = f"{location}!{info.filename}"
                self._check_member_name(info.filename, member, result)
                if info.compress_size and info.file_size > 16 * CHUNK and info.file_size / info.compress_size > self.limits.max_ratio:
                    result.problems.append(Problem("high", "compression bomb", member,
                                                   f"{info.file_size} bytes compressed into {info.compress_size} (ratio {info.file_size / info.compress_size:.0f}); not decompressed."))
                    continue
                try:
                    with zf.open(info) as f:
                        self._member(f, member, depth, result, torch_storage="/data/" in info.filename and not info.filename.endswith(".pkl"))
                except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, zlib.error) as exc:
                    result.problems.append(Problem("medium", "zip member could not be read", member, str(exc)))

    def _hidden_local_entries(self, source, zf: zipfile.ZipFile, location: str, depth: int, result: ContainerScan) -> None:
        """Entries with a local header but no central-directory record: zipfile never shows them, while
        streaming unzippers (and some loaders) do. Read them from the raw bytes. A header signature that
        falls inside a listed member's data is just data (tensor bytes can contain it by chance)."""
        with _raw_view(source) as raw:
            covered = sorted(_member_span(raw, info) for info in zf.infolist())
            offset = raw.find(b"PK\x03\x04")
            while offset != -1:
                if not _inside(covered, offset):
                    entry = _local_entry(raw, offset)
                    if entry is not None:
                        name, data = entry
                        member = f"{location}!{name}"
                        result.problems.append(Problem("high", "zip entry hidden from the central directory", member,
                                                       f"a local file header at offset {offset} is not listed in the central directory; "
                                                       "tools that read the directory skip it, streaming readers do not."))
                        self._member(io.BytesIO(data), member, depth, result)
                offset = raw.find(b"PK\x03\x04", offset + 4)

    def _tar(self, source, location: str, depth: int, result: ContainerScan) -> None:
        """``source``: a path or a file object."""
        result.containers.append(location)
        try:
            tf = tarfile.open(source, mode="r:") if isinstance(source, Path) else tarfile.open(fileobj=source, mode="r:")
        except (tarfile.TarError, OSError) as exc:
            result.problems.append(Problem("medium", "tar archive is malformed", location, str(exc)))
            return
        with tf:
            try:
                for info in tf:
                    member = f"{location}!{info.name}"
                    self._check_member_name(info.name, member, result)
                    if info.issym() or info.islnk():
                        result.problems.append(Problem("medium", "archive member is a link", member, f"links to {info.linkname!r}; extracting it can reach outside the folder."))
                        continue
                    if not info.isfile():
                        continue
                    f = tf.extractfile(info)
                    if f is not None:
                        self._member(f, member, depth, result)
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                result.problems.append(Problem("medium", "tar archive is malformed", location, str(exc)))

    def _compressed(self, f, kind: str, location: str, depth: int, result: ContainerScan, compressed_size: int) -> None:
        result.containers.append(location)
        try:
            if kind == "lz4":
                result.problems.append(Problem("medium", "lz4 stream not inspected", location, "poisonscan does not decompress lz4; its content was not scanned."))
                return
            if kind in ("joblib_zlib", "zlib"):
                if kind == "joblib_zlib":
                    f.read(2)  # the 'ZF' prefix
                stream = _ZlibReader(f)
            else:
                stream = _DECOMPRESSORS[kind](f)
            budget = max(int(compressed_size * self.limits.max_ratio), 16 * CHUNK)
            self._member(stream, f"{location}!<{kind} payload>", depth, result, budget=budget)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            result.problems.append(Problem("medium", f"{kind} stream is malformed", location, str(exc)))

    # --- members ---

    def _member(self, f, location: str, depth: int, result: ContainerScan, torch_storage: bool = False, budget: int | None = None) -> None:
        """Read a member's head; read the rest only when it may hold a pickle or an archive.

        ``budget`` caps the decompressed size of a compressed stream (ratio to its compressed size).
        """
        self.members += 1
        if self.members > self.limits.max_members:
            result.problems.append(Problem("high", "too many archive members", location, f"over {self.limits.max_members} members; the rest were not scanned."))
            raise _LimitReached
        if location.endswith(".pb"):  # a TensorFlow graph (SavedModel): its ops, not pickles, are the risk
            data = f.read(self.limits.max_member_bytes)
            result.bytes_read += len(data)
            result.problems += tf_graph_problems(data, location)
            return
        head = f.read(4096)
        result.bytes_read += len(head)
        if not head or not self._worth_a_look(head):
            return  # tensor data, text: nothing that can run
        cap = min(self.limits.max_member_bytes, budget if budget is not None else self.limits.max_member_bytes)
        kept = bytearray(head)
        while chunk := f.read(CHUNK):
            kept += chunk
            result.bytes_read += len(chunk)
            if result.bytes_read > self.limits.max_total_bytes:
                result.problems.append(Problem("high", "decompressed size limit reached", location, f"over {self.limits.max_total_bytes} bytes read; the rest was not scanned (possible decompression bomb)."))
                raise _LimitReached
            if len(kept) > cap:
                if budget is not None and cap == budget:
                    result.problems.append(Problem("high", "compression bomb", location, f"decompresses to over {budget} bytes (more than {self.limits.max_ratio:.0f}x its compressed size); not scanned further."))
                else:
                    result.problems.append(Problem("high", "member too large to analyse", location, f"over {cap} bytes of possible pickle or archive data; not analysed."))
                return
        self._bytes(bytes(kept), location, depth + 1, result, opportunistic=torch_storage)

    def _worth_a_look(self, head: bytes) -> bool:
        return looks_like_pickle(head) or sniff_bytes(head) in ("zip", "pytorch_zip", "keras", "npz", "tar", "npy", "pickle", "7z", *COMPRESSED_KINDS)

    def _bytes(self, data: bytes, location: str, depth: int, result: ContainerScan, opportunistic: bool = False) -> None:
        """Look inside bytes found in a member. ``opportunistic``: the bytes only resembled a pickle or an
        archive (tensor data, a bytes argument); keep what we find only if it imports something."""
        if not opportunistic:
            return self._dispatch(data, location, depth, result, expected=True)
        scratch = ContainerScan(kind="")
        try:
            self._dispatch(data, location, depth, scratch, expected=False)
        finally:
            result.bytes_read += scratch.bytes_read
        if any(h.analysis.globals for h in scratch.pickles):
            result.pickles += scratch.pickles
            result.problems += scratch.problems
            result.containers += scratch.containers

    def _dispatch(self, data: bytes, location: str, depth: int, result: ContainerScan, expected: bool) -> None:
        if depth > self.limits.max_depth:
            result.problems.append(Problem("high", "containers nested too deep", location, f"more than {self.limits.max_depth} levels of nesting; not scanned further."))
            return
        kind = sniff_bytes(data)
        if kind in ("zip", "pytorch_zip", "keras", "npz"):
            self._zip(io.BytesIO(data), location, depth, result)
        elif kind == "tar":
            self._tar(io.BytesIO(data), location, depth, result)
        elif kind in COMPRESSED_KINDS:
            self._compressed(io.BytesIO(data), kind, location, depth, result, len(data))
        elif kind == "npy":
            self._npy(io.BytesIO(data), location, result)
        elif kind == "7z":
            result.problems.append(Problem("medium", "7z archive not inspected", location, "a 7z archive inside the file was not opened."))
        elif kind == "pickle" or looks_like_pickle(data):
            self._analyze(data, location, expected, depth, result)

    def _npy(self, f, location: str, result: ContainerScan) -> None:
        """An npy object array stores its data as a pickle after the header."""
        header = _npy_header(f)
        if header is None:
            result.problems.append(Problem("medium", "npy header is malformed", location, "the array header could not be parsed."))
            return
        if "O" in str(header.get("descr", "")):
            data = f.read(self.limits.max_member_bytes)
            result.bytes_read += len(data)
            self._analyze(data, f"{location}<object array>", True, 0, result)

    def _analyze(self, data, location: str, expected: bool, depth: int, result: ContainerScan) -> None:
        analysis = analyze(data)
        if not expected and not analysis.globals:
            return  # raw bytes that merely resembled a pickle
        result.pickles.append(PickleHit(location, analysis, expected))
        for offset, blob in analysis.embedded:  # pickles or archives hidden in bytes arguments
            if self._worth_a_look(blob[:4096]):
                self._bytes(blob, f"{location}@{offset}", depth + 1, result, opportunistic=True)

    def _check_member_name(self, name: str, location: str, result: ContainerScan) -> None:
        if member_escapes(name):
            result.problems.append(Problem("high", "archive member escapes its folder", location,
                                           f"member name {name!r} is absolute or climbs with '..' (zip-slip): extracting it writes outside the target folder."))


_DECOMPRESSORS = {"gzip": lambda f: gzip.GzipFile(fileobj=f), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile, "lzma": lzma.LZMAFile}


class _ZlibReader:
    """File-like view of a zlib stream (joblib's 'ZF' container)."""

    def __init__(self, f) -> None:
        self.f, self.z, self.eof = f, zlib.decompressobj(), False

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and not self.eof:
            data = self.z.unconsumed_tail or self.f.read(CHUNK)
            if not data:
                out += self.z.flush()
                self.eof = True
                break
            out += self.z.decompress(data, n - len(out))
            self.eof = self.z.eof
        return bytes(out)


def member_escapes(name: str) -> bool:
    """An archive member name that extracts outside its folder (zip-slip): absolute, a drive, '..', or a NUL byte."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":") or "\x00" in name


@contextlib.contextmanager
def _raw_view(source):
    """The archive's raw bytes: a read-only map of a file, or the buffer of an in-memory member."""
    if isinstance(source, Path):
        with source.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm
    else:
        yield source.getbuffer().tobytes() if isinstance(source, io.BytesIO) else source


def _member_span(raw, info: zipfile.ZipInfo) -> tuple[int, int]:
    """[start, end) of a listed member: its local header (whose extra field may differ from the directory's) and data."""
    header = raw[info.header_offset:info.header_offset + 30]
    nlen, elen = struct.unpack("<HH", header[26:30]) if len(header) == 30 else (len(info.filename), 0)
    return info.header_offset, info.header_offset + 30 + nlen + elen + info.compress_size


def _inside(spans: list[tuple[int, int]], offset: int) -> bool:
    i = bisect.bisect_right(spans, (offset, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= offset < spans[i][1]


def _local_entry(raw, offset: int) -> tuple[str, bytes] | None:
    """Parse one local file header and return (name, uncompressed data), or None if it is not one."""
    header = raw[offset:offset + 30]
    if len(header) < 30:
        return None
    _, _, flags, method, _, _, _, csize, _, nlen, elen = struct.unpack("<4sHHHHHIIIHH", header)
    start = offset + 30 + nlen + elen
    name = bytes(raw[offset + 30:offset + 30 + nlen]).decode("utf-8", "replace")
    if method == 0 and csize:
        return name, bytes(raw[start:start + csize])
    if method == 0 and flags & 0x08:  # stored with a trailing data descriptor (as torch writes): ends at the next record
        ends = [e for e in (raw.find(sig, start) for sig in (b"PK\x07\x08", b"PK\x03\x04", b"PK\x01\x02")) if e != -1]
        return name, bytes(raw[start:min(ends) if ends else len(raw)])
    if method == 8:  # deflate: the stream ends itself, sizes may be in a trailing data descriptor (flag bit 3)
        z = zlib.decompressobj(-15)
        try:
            data = z.decompress(bytes(raw[start:start + (csize or 64 << 20)]), 256 << 20)
        except zlib.error:
            return None
        return name, data
    return None


def _npy_header(f) -> dict | None:
    """Parse an npy header as a Python literal (never evaluated as code)."""
    magic = f.read(8)
    if len(magic) < 8 or not magic.startswith(b"\x93NUMPY"):
        return None
    major = magic[6]
    size_bytes = 2 if major == 1 else 4
    raw = f.read(size_bytes)
    if len(raw) < size_bytes:
        return None
    (length,) = struct.unpack("<H" if size_bytes == 2 else "<I", raw)
    if length > 1 << 20:
        return None
    try:
        header = ast.literal_eval(f.read(length).decode("latin-1"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None
    return header if isinstance(header, dict) else None
