"""Find every pickle stream in a file, recursively through containers, within resource limits.

Zip members are looked at whatever their names (a PyTorch checkpoint, a .keras or .npz file, a
zip in a zip), as are tar and 7z members, gzip/bz2/xz/lzma/zlib/lz4 payloads, npy object arrays and bytes
embedded inside pickles. Zip members are read from the raw bytes as PyTorch's reader reads them
(``worker.inspect.zipraw``), so flags, CRCs or names that ``zipfile`` refuses hide nothing.

Only a member's head is read unless it may hold a pickle or an archive, so tensor data costs almost nothing.
Memory stays bounded whatever the sizes: a member that may hold a pickle is spooled (to a temporary file past
``Limits.spill_bytes``), files are read in pieces, and ``worker.inspect.pickles.analyze`` streams. Nothing is
deserialized. A limit that trips (zip bomb, deep nesting, too many members) ends in a recorded problem, and
whatever cannot be opened, decompressed or parsed is a ``high`` problem "... not inspected": the gate fails
closed. ``scan_file`` never raises.
"""

import ast
import bz2
import gzip
import io
import lzma
import struct
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from worker.inspect import zipraw
from worker.inspect.common import Problem
from worker.inspect.formats import COMPRESSED_KINDS, sniff, sniff_bytes
from worker.inspect.pickles import PickleAnalysis, analyze, looks_like_pickle
from worker.inspect.savedmodel import tf_graph_problems

CHUNK = 1 << 20
HEAD = 4096
ZIP_KINDS = ("zip", "pytorch_zip", "keras", "npz")
_UNREADABLE = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, RuntimeError, zipraw.ZipReadError, tarfile.TarError,
               struct.error, NotImplementedError)  # lz4 raises RuntimeError


@dataclass(frozen=True)
class Limits:
    max_depth: int = 6  # containers inside containers
    max_members: int = 100_000
    max_member_bytes: int = 2 * 1024**3  # bytes read to analyse one nested member (spooled to disk past spill_bytes)
    max_total_bytes: int = 64 * 1024**3  # decompressed bytes read in all
    max_ratio: float = 200.0  # decompressed/compressed above this, on more than 16 MiB, is a bomb
    spill_bytes: int = 32 * 1024**2  # a member kept for analysis goes to a temporary file past this size


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


def _not_inspected(what: str, location: str, detail: str) -> Problem:
    return Problem("high", f"{what} not inspected: treated as unsafe", location, detail)


class Walker:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.members = 0

    def scan_file(self, path: Path) -> ContainerScan:
        result = ContainerScan(kind="unknown")
        try:
            result.kind = kind = sniff(path)
            with path.open("rb") as f:  # plain buffered reads: an mmap would grow RSS with the file
                self._top(f, path.name, kind, result)
        except _LimitReached:
            pass
        except Exception as exc:  # noqa: BLE001 - fail closed: a scan that broke vouches for nothing, and never raises
            result.problems.append(_not_inspected("file", path.name, f"the scan stopped on {type(exc).__name__}: {exc}"))
        return result

    def _top(self, f, name: str, kind: str, result: ContainerScan) -> None:
        if kind == "unknown" and name.endswith(".pb"):
            result.problems += tf_graph_problems(f.read(self.limits.max_member_bytes), name)
        elif kind in ("pickle", "unknown"):  # an unrecognised file may hide a pickle behind junk: searched, not assumed
            result.bytes_read += zipraw.file_size(f)
            self._analyze(f, name, kind == "pickle", 0, result)
        else:
            self._dispatch(f, name, 0, result, expected=True, kind=kind)

    # --- containers ---

    def _zip(self, f, location: str, depth: int, result: ContainerScan) -> None:
        result.containers.append(location)
        entries = zipraw.central_entries(f)
        if entries is None:
            entries, _ = zipraw.local_entries(f)
            result.problems.append(Problem("medium", "zip central directory is damaged", location,
                                           "zipfile cannot read the central directory; the members were read from their local headers, "
                                           "as streaming unzippers and repairing loaders do."))
        for entry in entries:
            self._zip_member(f, entry, location, depth, result)
        self._hidden_local_entries(f, entries, location, depth, result)

    def _zip_member(self, f, entry: zipraw.Entry, location: str, depth: int, result: ContainerScan) -> None:
        member = f"{location}!{entry.name}"
        self._check_member_name(entry.name, member, result)
        header = zipraw.read_local(f, entry.header_offset)
        if header is None:
            result.problems.append(_not_inspected("zip member", member, f"no local file header at offset {entry.header_offset}."))
            return
        self._check_local_header(entry, header, member, result)
        if entry.method not in zipraw.SUPPORTED_METHODS:
            result.problems.append(_not_inspected("zip member", member, f"compression method {entry.method} is not supported."))
            return
        csize = entry.compress_size if entry.compress_size is not None else header.compress_size
        usize = entry.file_size if entry.file_size is not None else header.file_size
        if entry.method != zipraw.STORED and csize and usize and usize > 16 * CHUNK and usize / csize > self.limits.max_ratio:
            result.problems.append(Problem("high", "compression bomb", member,
                                           f"{usize} bytes compressed into {csize} (ratio {usize / csize:.0f}); not decompressed."))
            return
        budget = None if entry.method == zipraw.STORED else max(int((csize or 0) * self.limits.max_ratio), 16 * CHUNK)
        try:
            stream = zipraw.open_member(f, entry, header)
            self._member(stream, member, depth, result, budget=budget,
                         torch_storage="/data/" in entry.name and not entry.name.endswith(".pkl"))
        except _UNREADABLE as exc:
            result.problems.append(_not_inspected("zip member", member, f"{type(exc).__name__}: {exc}"))
            return
        if stream.crc_mismatch:
            result.problems.append(Problem("medium", "zip member fails its CRC-32 check", member,
                                           f"CRC-32 {stream.crc:08x}, recorded {stream.expected_crc:08x}: zipfile refuses the member, "
                                           "PyTorch's reader does not check; it was scanned anyway."))

    def _check_local_header(self, entry: zipraw.Entry, header: zipraw.LocalHeader, member: str, result: ContainerScan) -> None:
        if entry.central and header.name != entry.name:
            result.problems.append(Problem("high", "zip local header names another file", member,
                                           f"the central directory says {entry.name!r}, the local header {header.name!r}: tools that "
                                           "read one or the other see different archives."))
        if (entry.flags | header.flags) & zipraw.ENCRYPTION_FLAGS:
            result.problems.append(Problem("high", "zip member flagged as encrypted", member,
                                           f"flag bits {entry.flags | header.flags:#06x} mark it encrypted or patched; PyTorch's reader ignores "
                                           "them, so it was scanned as plain data. If it really is encrypted, its content was not inspected."))

    def _hidden_local_entries(self, f, entries: list[zipraw.Entry], location: str, depth: int, result: ContainerScan) -> None:
        """Local headers outside every listed member: zipfile never shows them, while streaming unzippers (and some
        loaders) do. A header signature inside a listed member's data is just data (tensor bytes can hold it)."""
        spans = sorted(self._span(f, e) for e in entries)
        size, pos = zipraw.file_size(f), 0
        for start, end in spans + [(size, size)]:
            for offset in (list(zipraw.find_all(f, zipraw.LOCAL_SIG, pos, start)) if start > pos else []):
                found = zipraw.local_entry(f, offset) if offset >= pos else None
                if found is None:
                    continue
                hidden, pos = found
                result.problems.append(Problem("high", "zip entry hidden from the central directory", f"{location}!{hidden.name}",
                                               f"a local file header at offset {offset} is not listed in the central directory; "
                                               "tools that read the directory skip it, streaming readers do not."))
                self._zip_member(f, hidden, location, depth, result)
            pos = max(pos, end)

    @staticmethod
    def _span(f, entry: zipraw.Entry) -> tuple[int, int]:
        """[start, end) of a member: its local header (whose extra field may differ from the directory's) and data."""
        header = zipraw.read_local(f, entry.header_offset)
        if header is None:
            return entry.header_offset, entry.header_offset + 4
        return entry.header_offset, header.data_offset + (entry.compress_size or header.compress_size or 0)

    def _tar(self, f, location: str, depth: int, result: ContainerScan) -> None:
        result.containers.append(location)
        try:
            with tarfile.open(fileobj=f, mode="r:") as tf:
                for info in tf:
                    self._tar_member(tf, info, f"{location}!{info.name}", depth, result)
        except _UNREADABLE as exc:
            result.problems.append(_not_inspected("tar archive", location, f"{type(exc).__name__}: {exc}"))

    def _tar_member(self, tf, info, member: str, depth: int, result: ContainerScan) -> None:
        self._check_member_name(info.name, member, result)
        if info.issym() or info.islnk():
            result.problems.append(Problem("medium", "archive member is a link", member, f"links to {info.linkname!r}; extracting it can reach outside the folder."))
        elif info.isfile() and (stream := tf.extractfile(info)) is not None:
            self._member(stream, member, depth, result)

    def _sevenzip(self, f, location: str, depth: int, result: ContainerScan) -> None:
        """7z members go to spools (a writer factory: nothing is written where py7zr would choose), then as any member."""
        import py7zr

        result.containers.append(location)
        budget = self._budget(zipraw.file_size(f))
        f.seek(0)
        try:
            with py7zr.SevenZipFile(f, mode="r") as archive:
                if archive.needs_password():
                    result.problems.append(_not_inspected("7z archive", location, "it is encrypted; its members cannot be read."))
                    return
                infos = [i for i in archive.list() if not i.is_directory]
                if sum(i.uncompressed or 0 for i in infos) > budget:
                    result.problems.append(Problem("high", "compression bomb", location,
                                                   f"declares over {budget} bytes (more than {self.limits.max_ratio:.0f}x its size); not decompressed."))
                    return
                sinks = _SpoolFactory(self.limits.spill_bytes, budget)
                archive.extractall(factory=sinks)
        except py7zr.exceptions.PasswordRequired:
            result.problems.append(_not_inspected("7z archive", location, "it is encrypted; its members cannot be read."))
            return
        except _BombError:
            result.problems.append(Problem("high", "compression bomb", location, f"decompresses to over {budget} bytes; not scanned further."))
            return
        except Exception as exc:  # noqa: BLE001 - py7zr raises its own and many builtin errors on damaged input
            result.problems.append(_not_inspected("7z archive", location, f"{type(exc).__name__}: {exc}"))
            return
        for name, spool in sinks.spools:
            with spool:
                spool.seek(0)
                self._member(spool, f"{location}!{name}", depth, result)

    def _compressed(self, f, kind: str, location: str, depth: int, result: ContainerScan) -> None:
        result.containers.append(location)
        size = zipraw.file_size(f)
        f.seek(0)
        try:
            if kind == "joblib_zlib":
                f.read(2)  # the 'ZF' prefix
            stream = _ZlibReader(f) if kind in ("joblib_zlib", "zlib") else _DECOMPRESSORS[kind](f)
            self._member(stream, f"{location}!<{kind} payload>", depth, result, budget=self._budget(size))
        except _UNREADABLE as exc:
            result.problems.append(_not_inspected(f"{kind} stream", location, f"{type(exc).__name__}: {exc}"))

    def _budget(self, compressed_size: int) -> int:
        return max(int(compressed_size * self.limits.max_ratio), 16 * CHUNK)

    # --- members ---

    def _member(self, f, location: str, depth: int, result: ContainerScan, torch_storage: bool = False, budget: int | None = None) -> None:
        """Read a member's head; read the rest (into a spool) only when it may hold a pickle or an archive.

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
        head = f.read(HEAD)
        result.bytes_read += len(head)
        if not head or not self._worth_a_look(head):
            return  # tensor data, text: nothing that can run
        with tempfile.SpooledTemporaryFile(max_size=self.limits.spill_bytes, prefix="poisonscan-") as spool:
            spool.write(head)
            if self._spool(f, spool, location, result, budget):
                self._bytes(spool, location, depth + 1, result, opportunistic=torch_storage)

    def _spool(self, f, spool, location: str, result: ContainerScan, budget: int | None) -> bool:
        """Copy the rest of a member into ``spool`` within the limits; False when a limit stopped it."""
        cap = min(self.limits.max_member_bytes, budget if budget is not None else self.limits.max_member_bytes)
        while chunk := f.read(CHUNK):
            spool.write(chunk)
            result.bytes_read += len(chunk)
            if result.bytes_read > self.limits.max_total_bytes:
                result.problems.append(Problem("high", "decompressed size limit reached", location, f"over {self.limits.max_total_bytes} bytes read; the rest was not inspected (possible decompression bomb)."))
                raise _LimitReached
            if spool.tell() > cap:
                if budget is not None and cap == budget:
                    result.problems.append(Problem("high", "compression bomb", location, f"decompresses to over {budget} bytes (more than {self.limits.max_ratio:.0f}x its compressed size); not scanned further."))
                else:
                    result.problems.append(Problem("high", "member too large to analyse", location, f"over {cap} bytes of possible pickle or archive data; not analysed."))
                return False
        return True

    def _worth_a_look(self, head: bytes) -> bool:
        return looks_like_pickle(head) or sniff_bytes(head) in (*ZIP_KINDS, "tar", "npy", "pickle", "7z", *COMPRESSED_KINDS)

    def _bytes(self, f, location: str, depth: int, result: ContainerScan, opportunistic: bool = False) -> None:
        """Look inside a seekable file found in a member. ``opportunistic``: the bytes only resembled a pickle or an
        archive (tensor data, a bytes argument); keep what we find only if it imports something."""
        if not opportunistic:
            return self._dispatch(f, location, depth, result, expected=True)
        scratch = ContainerScan(kind="")
        try:
            self._dispatch(f, location, depth, scratch, expected=False)
        finally:
            result.bytes_read += scratch.bytes_read
        if any(h.analysis.globals for h in scratch.pickles):
            result.pickles += scratch.pickles
            result.problems += scratch.problems
            result.containers += scratch.containers

    def _dispatch(self, f, location: str, depth: int, result: ContainerScan, expected: bool, kind: str | None = None) -> None:
        if depth > self.limits.max_depth:
            result.problems.append(Problem("high", "containers nested too deep", location, f"more than {self.limits.max_depth} levels of nesting; not scanned further."))
            return
        f.seek(0)
        head = f.read(HEAD)
        f.seek(0)
        kind = kind or sniff_bytes(head)
        if kind in ZIP_KINDS:
            self._zip(f, location, depth, result)
        elif kind == "tar":
            self._tar(f, location, depth, result)
        elif kind in COMPRESSED_KINDS:
            self._compressed(f, kind, location, depth, result)
        elif kind == "npy":
            self._npy(f, location, depth, result)
        elif kind == "7z":
            self._sevenzip(f, location, depth, result)
        elif kind == "pickle" or looks_like_pickle(head):
            self._analyze(f, location, expected, depth, result)

    def _npy(self, f, location: str, depth: int, result: ContainerScan) -> None:
        """An npy object array stores its data as a pickle after the header."""
        header = _npy_header(f)
        if header is None:
            result.problems.append(_not_inspected("npy array", location, "the array header could not be parsed."))
            return
        if "O" in str(header.get("descr", "")):
            start = f.tell()
            result.bytes_read += zipraw.file_size(f) - start
            self._analyze(f, f"{location}<object array>", True, depth, result, start=start)

    def _analyze(self, f, location: str, expected: bool, depth: int, result: ContainerScan, start: int = 0) -> None:
        analysis = analyze(f, start=start, keep_embedded=self._worth_a_look)
        if analysis.incomplete:
            result.problems.append(_not_inspected("pickle", location, f"{analysis.incomplete}."))
        if expected or analysis.globals:  # else raw bytes that merely resembled a pickle: only what they carry counts
            result.pickles.append(PickleHit(location, analysis, expected))
        for e in analysis.embedded:  # pickles or archives hidden in bytes arguments, read where they lie in the source
            window = io.BufferedReader(zipraw.Window(f, e.start, e.length))
            self._bytes(window, f"{location}@{e.offset}", depth + 1, result, opportunistic=True)
        for offset, data in analysis.decoded:  # ... or encoded as base64/hex text
            self._bytes(io.BytesIO(data), f"{location}@{offset}<decoded>", depth + 1, result, opportunistic=True)

    def _check_member_name(self, name: str, location: str, result: ContainerScan) -> None:
        if member_escapes(name):
            result.problems.append(Problem("high", "archive member escapes its folder", location,
                                           f"member name {name!r} is absolute or climbs with '..' (zip-slip): extracting it writes outside the target folder."))


def _lz4(f):
    import lz4.frame

    return lz4.frame.LZ4FrameFile(f, mode="rb")


_DECOMPRESSORS = {"gzip": lambda f: gzip.GzipFile(fileobj=f), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile, "lzma": lzma.LZMAFile, "lz4": _lz4}


class _BombError(Exception):
    pass


class _SpoolFactory:
    """py7zr writer factory: each member goes to a spool (memory, then a temporary file), all of them within ``budget``."""

    def __init__(self, spill: int, budget: int) -> None:
        self.spill, self.left, self.spools = spill, budget, []

    def create(self, filename: str):
        from py7zr.io import Py7zIO

        factory = self

        class Sink(Py7zIO):
            def __init__(self) -> None:
                self.spool = tempfile.SpooledTemporaryFile(max_size=factory.spill, prefix="poisonscan-")  # noqa: SIM115 - closed by the walker after the scan

            def write(self, s) -> int:
                factory.left -= len(s)
                if factory.left < 0:
                    raise _BombError
                return self.spool.write(s)

            def read(self, size=None) -> bytes:
                return self.spool.read(size)

            def seek(self, offset: int, whence: int = 0) -> int:
                return self.spool.seek(offset, whence)

            def flush(self) -> None:
                self.spool.flush()

            def size(self) -> int:
                return self.spool.tell()

        sink = Sink()
        self.spools.append((filename, sink.spool))
        return sink


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
