"""Static pickle analysis: which globals a pickle imports and calls, without ever unpickling it.

We walk the opcode stream with ``pickletools.genops`` (a decoder, not an interpreter) and keep a
small model of the unpickler's stack and memo, enough to resolve ``STACK_GLOBAL`` operands
(built from strings, possibly through the memo) and to see which globals are called
(``REDUCE``, ``NEWOBJ``, ``OBJ``, ``INST``; ``BUILD`` on a global itself, which sets attributes on it;
the arguments of ``copyreg._reconstructor``, which calls ``base.__new__``/``__init__``). The walk is tolerant:
an opcode stream that breaks still reports every global seen before the break, and parsing resumes at later
pickle headers, so stacked pickles and payloads hidden after junk are seen too.

Memory stays bounded: the source is a seekable file read in pieces, a giant argument is skipped rather than
read (``_Source``), bytes arguments are remembered by position, not copied, and budgets cap opcodes, streams
and import records (``PickleAnalysis.incomplete`` says when one stopped the walk).

What a global *means* (allowed, dangerous, unknown) is ``worker.inspect.allowlist``'s business.
"""

import io
import pickletools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from worker.inspect.allowlist import classify

MAX_OPS = 5_000_000  # a pickle of a large model has ~1e5 opcodes; more is a parsing bomb
MAX_RESYNC = 64  # how many later pickle headers we try after a break
MAX_STREAMS = 10_000  # stacked pickles in one file (each is one load() of a loop)
MAX_GLOBAL_REFS = 100_000  # distinct import records kept; beyond it, repeats share one record
SMALL_SOURCE = 8 * 1024 * 1024  # sources up to this size are decoded from memory
MAX_EMBEDDED = 10_000  # bytes arguments kept for a closer look
MAX_DECODED_BYTES = 64 * 1024 * 1024  # text arguments decoded from base64/hex, in all
BIG_READ = 16 << 20  # an opcode argument above this is skipped over, not read (see _Source)
_HEAD = 4096
_CHUNK = 1 << 20

# --- the walk ---------------------------------------------------------------------------------

@dataclass
class GlobalRef:
    module: str
    name: str
    offset: int
    opcode: str
    called: bool = False
    dynamic: bool = False  # STACK_GLOBAL operands were not plain strings: an evasion attempt

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def verdict(self) -> str:
        return "dangerous" if self.dynamic else classify(self.module, self.name)


@dataclass
class PickleStream:
    start: int
    end: int
    protocol: int | None
    opcodes: int
    complete: bool  # reached STOP without a decoding error
    error: str | None = None
    resynced: bool = False  # found by searching for a pickle header after a break or junk
    globals_found: int = 0


class Embedded(NamedTuple):
    """A bytes argument that may hold a further payload: its opcode's offset, and where its data lies in the source."""

    offset: int
    start: int
    length: int


@dataclass
class PickleAnalysis:
    globals: list[GlobalRef] = field(default_factory=list)
    streams: list[PickleStream] = field(default_factory=list)
    embedded: list[Embedded] = field(default_factory=list)
    decoded: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, bytes) of base64/hex text arguments
    ops: int = 0  # opcodes decoded, all streams together
    incomplete: str | None = None  # why the analysis stopped before the end of the data (a budget), if it did

    @property
    def errors(self) -> list[str]:
        """Decoding errors that matter: a stream we were meant to read, or a found one that imported something."""
        return [s.error for s in self.streams if s.error and (not s.resynced or s.globals_found)]


class _Mark:
    pass


@dataclass
class _Instance:
    """What calling a global returned; enough to recognise joblib's array wrappers and numpy dtypes."""

    ref: GlobalRef
    args: object = None


_MARK = _Mark()
_UNKNOWN = object()
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_BYTES_OPS = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_PICKLE_HEADER = re.compile(rb"\x80[\x02-\x05]")


def analyze(source, max_ops: int = MAX_OPS, start: int = 0, keep_embedded: Callable[[bytes], bool] | None = None) -> PickleAnalysis:
    """Analyse every pickle stream in ``source`` from ``start`` on (stacked, or after junk).

    ``source``: bytes, or a seekable binary file (read in bounded pieces: the whole file is never in memory).
    ``keep_embedded``: which bytes arguments (given their head) are worth recording in ``embedded``.
    """
    if not isinstance(source, bytes | bytearray | memoryview) and source.seek(0, io.SEEK_END) <= SMALL_SOURCE:
        source.seek(0)
        source = source.read()  # small: decode from memory, where every read and tell is cheap
    src = _Source(io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source)
    result = PickleAnalysis()
    result._keep = keep_embedded
    pos, resyncs = start, 0
    while pos < src.size and resyncs <= MAX_RESYNC:
        if len(result.streams) >= MAX_STREAMS:
            result.incomplete = f"more than {MAX_STREAMS} pickle streams; the rest (from offset {pos}) was not analysed"
            break
        seen = len(result.globals)
        stream = _walk(src, pos, result, max_ops)
        stream.resynced, stream.globals_found = resyncs > 0, len(result.globals) - seen
        result.streams.append(stream)
        if stream.error and "opcode budget" in stream.error:
            result.incomplete = stream.error
            break
        nxt = stream.end if stream.complete else stream.end + 1
        src.seek(nxt)
        following = src.read(1)
        if stream.complete and following and following in b"\x80(cdl}]":  # another pickle follows right away
            pos = nxt
            continue
        found = _find_header(src, nxt)  # look for a later stream behind junk
        if found is None:
            break
        pos, resyncs = found, resyncs + 1
    return result


def _find_header(src: "_Source", start: int) -> int | None:
    """The next pickle header at or after ``start``, searched chunk by chunk."""
    pos = start
    while pos < src.size:
        src.seek(pos)
        m = _PICKLE_HEADER.search(src.f.read(_CHUNK + 1))  # one byte of overlap: a header across the boundary
        if m:
            return pos + m.start()
        pos += _CHUNK
    return None


def _walk(src: "_Source", start: int, result: PickleAnalysis, max_ops: int) -> PickleStream:
    src.seek(start)
    stack: list = []
    memo = _Memo()
    ops, protocol, last = 0, None, start
    try:
        # in memory, reads are bounded by the data itself: genops may read the buffer directly
        reader = src.f if isinstance(src.f, io.BytesIO) and src.size <= SMALL_SOURCE else src
        for op, arg, pos in pickletools.genops(reader):
            ops += 1
            result.ops += 1
            last = pos
            if result.ops > max_ops:
                return PickleStream(start, pos, protocol, ops, False, f"opcode budget of {max_ops} exceeded at offset {pos}")
            if op.name == "PROTO":
                protocol = arg
            skip = _step(op, arg, pos, stack, memo, result)
            if skip:  # joblib wrote raw array bytes (or a nested pickle) right after this BUILD
                _skip_joblib_array(skip, src, result, max_ops)
            if op.name == "STOP":
                return PickleStream(start, src.tell(), protocol, ops, True)
        return PickleStream(start, src.tell(), protocol, ops, False, f"stream ended without STOP at offset {src.tell()}")
    except (ValueError, EOFError, IndexError, KeyError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        return PickleStream(start, max(last, start), protocol, ops, False, f"{type(exc).__name__} at offset ~{last}: {exc}")


def _pop_to_mark(stack: list) -> list:
    items = []
    while stack:
        item = stack.pop()
        if item is _MARK:
            return items[::-1]
        items.append(item)
    raise IndexError("MARK expected on the stack")


_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT"}
_CONSTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}


def _step(op, arg, pos: int, stack: list, memo: "_Memo", result: PickleAnalysis):
    """Apply one opcode to the model stack. Returns a joblib array to skip over, if one follows."""
    name = op.name
    if name in _INT_OPS:
        stack.append(arg)
    elif name in _CONSTS:
        stack.append(_CONSTS[name])
    elif name in ("EMPTY_DICT", "EMPTY_LIST"):
        stack.append({} if name == "EMPTY_DICT" else [])
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = stack[-n:]
        del stack[-n:]
        if len(items) < n:
            raise IndexError("stack underflow")
        stack.append(tuple(items))
    elif name == "TUPLE":
        stack.append(tuple(_pop_to_mark(stack)))
    elif name in ("SETITEM", "SETITEMS"):
        items = [stack.pop(), stack.pop()][::-1] if name == "SETITEM" else _pop_to_mark(stack)
        target = stack[-1]
        if isinstance(target, dict):
            for k, v in zip(items[::2], items[1::2], strict=False):
                if isinstance(k, str | int | float | tuple):
                    target[k] = v
    elif name in _STRING_OPS:
        text = arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
        _note_encoded(text, pos, result)
        stack.append(text)
    elif name in _BYTES_OPS:
        _note_embedded(name, arg, pos, result)
        stack.append(_UNKNOWN)
    elif name in ("GLOBAL", "INST"):
        module, _, qual = str(arg).partition(" ")
        ref = _record(result, GlobalRef(module, qual, pos, name))
        if name == "INST":
            _pop_to_mark(stack)
            ref.called = True
        stack.append(ref)
    elif name == "STACK_GLOBAL":
        qual, module = stack.pop(), stack.pop()
        if isinstance(module, str) and isinstance(qual, str):
            ref = GlobalRef(module, qual, pos, name)
        else:
            ref = GlobalRef(_describe(module), _describe(qual), pos, name, dynamic=True)
        stack.append(_record(result, ref))
    elif name in ("EXT1", "EXT2", "EXT4"):
        stack.append(_record(result, GlobalRef("<copyreg extension>", str(arg), pos, name, dynamic=True)))
    elif name == "REDUCE":
        args = stack.pop()
        fn = stack.pop()
        _mark_called(fn)
        if isinstance(fn, GlobalRef) and (fn.module, fn.name) in _CALLS_ITS_ARGUMENTS and isinstance(args, tuple):
            for a in args:  # _reconstructor(cls, base, state) runs base.__new__(cls) and base.__init__(obj, state)
                _mark_called(a)
        if isinstance(fn, _Instance):  # calling what a call returned: remember where it came from
            fn = fn.ref
        stack.append(_Instance(fn, args) if isinstance(fn, GlobalRef) else _UNKNOWN)
    elif name in ("NEWOBJ", "NEWOBJ_EX"):
        for _ in range(2 if name == "NEWOBJ_EX" else 1):
            stack.pop()
        cls = stack.pop()
        _mark_called(cls)
        stack.append(_Instance(cls) if isinstance(cls, GlobalRef) else _UNKNOWN)
    elif name == "OBJ":
        items = _pop_to_mark(stack)
        if items:
            _mark_called(items[0])
        stack.append(_UNKNOWN)
    elif name == "BUILD":
        state = stack.pop()  # the object stays (BUILD calls its __setstate__)
        target = stack[-1]
        _mark_called(target)  # BUILD on a class or module itself sets attributes on it (setattr): a call in effect
        if isinstance(target, _Instance) and target.ref.module == "joblib.numpy_pickle" and isinstance(state, dict):
            return state
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo.put(arg, stack[-1])
    elif name == "MEMOIZE":
        memo.put(len(memo), stack[-1])
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo.get(arg, _UNKNOWN))
    elif name == "DUP":
        stack.append(stack[-1])
    elif name == "POP":
        stack.pop()
    elif name == "STOP":
        stack.pop()
    else:
        _generic(op, stack)


def _skip_joblib_array(state: dict, stream: "_Source", result: PickleAnalysis, max_ops: int) -> None:
    """joblib's NumpyArrayWrapper: the array follows its BUILD opcode, as raw bytes or, for object
    arrays, as a nested pickle (which may carry a payload of its own)."""
    dtype = state.get("dtype")
    descr = dtype.args[0] if isinstance(dtype, _Instance) and isinstance(dtype.args, tuple) and dtype.args else None
    if descr in ("O", "|O", "O8"):
        nested = _walk(stream, stream.tell(), result, max_ops)
        result.streams.append(nested)
        stream.seek(nested.end)
        return
    shape = state.get("shape")
    try:
        import numpy  # parses a dtype string; no code from the file runs

        itemsize = numpy.dtype(descr).itemsize
        count = 1
        for dim in shape:
            count *= int(dim)
    except Exception as exc:  # unknown shape or dtype: we cannot know where the pickle resumes
        raise ValueError(f"joblib array with unreadable shape/dtype ({shape!r}, {descr!r})") from exc
    if "numpy_array_alignment_bytes" in state:
        padding = stream.read(1)
        stream.seek(stream.tell() + (padding[0] if padding else 0))
    stream.seek(stream.tell() + count * itemsize)


class _Memo:
    """The unpickler's memo without the values we know nothing about (a large pickle memoizes millions of them).
    Keys written in order (as picklers write them) are counted, not stored, so MEMOIZE still gets the index
    ``len(memo)`` the real unpickler gives it."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.dense, self.sparse = 0, set()  # keys 0..dense-1 are set; sparse: keys set out of order

    def __len__(self) -> int:
        return self.dense + len(self.sparse)

    def put(self, key, value) -> None:
        if key == self.dense:
            self.dense += 1
            while self.dense in self.sparse:
                self.sparse.discard(self.dense)
                self.dense += 1
        elif not isinstance(key, int) or key < 0 or key > self.dense:
            self.sparse.add(key)
        if value is _UNKNOWN:
            self.values.pop(key, None)
        else:
            self.values[key] = value

    def get(self, key, default=None):
        return self.values.get(key, default)


class _Head(bytes):
    """The first bytes of an opcode argument too large to read, posing as the whole: pickletools checks
    ``len(data) == n``. Whatever looks at the argument later sees only its head."""

    def __new__(cls, head: bytes, length: int):
        obj = super().__new__(cls, head)
        obj.length = length
        return obj

    def __len__(self) -> int:
        return self.length


# A line longer than BIG_READ stands in as this (by the opcode that reads it), so the walk goes on past it
# as the unpickler would; the value itself (a huge number or string) cannot name or hide a global.
_LINE_STAND_INS = {b"S": b"''\n", b"F": b"0.0\n", b"I": b"0\n", b"L": b"0L\n"}


class _Source:
    """What ``pickletools.genops`` reads from: a seekable file, read in bounded pieces. A read above BIG_READ
    (a giant BINBYTES/BINUNICODE argument) seeks past the data and returns a ``_Head`` instead of allocating it.
    Stateless over the file's own position, so nested walks (joblib arrays) can share it."""

    def __init__(self, f) -> None:
        self.f, self.opcode = f, b""
        self.size = f.seek(0, io.SEEK_END)
        f.seek(0)

    def read(self, n: int = -1) -> bytes:
        pos = self.f.tell()
        if n is None or n < 0:
            n = self.size - pos
        if n <= BIG_READ:
            data = self.f.read(n)
            if n == 1:
                self.opcode = data  # genops reads each opcode byte alone, then its argument
            return data
        length = min(n, self.size - pos)  # shorter than n: pickletools reports the truncation
        head = _utf8_prefix(self.f.read(_HEAD))
        self.f.seek(pos + length)
        return _Head(head, length)

    def readline(self) -> bytes:
        pos = self.f.tell()
        line = self.f.readline(BIG_READ)
        if line.endswith(b"\n") or len(line) < BIG_READ:
            return line
        end = next((i for i in _find_from(self.f, b"\n", pos + len(line))), None)
        if end is None:
            self.f.seek(self.size)
            return line[:_HEAD]  # no newline: pickletools reports it
        self.f.seek(end + 1)
        return _LINE_STAND_INS.get(self.opcode, b"<oversized line>\n")

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()


def _find_from(f, needle: bytes, start: int):
    pos = start
    while True:
        f.seek(pos)
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        i = chunk.find(needle)
        if i != -1:
            yield pos + i
            return
        pos += len(chunk)


def _utf8_prefix(head: bytes) -> bytes:
    """Cut a head so it does not end inside a UTF-8 sequence (BINUNICODE arguments are decoded)."""
    i = len(head)
    while i > 0 and len(head) - i < 3 and 0x80 <= head[i - 1] < 0xC0:  # back over continuation bytes
        i -= 1
    if i > 0 and head[i - 1] >= 0xC0:
        lead = head[i - 1]
        if len(head) - (i - 1) < (2 if lead < 0xE0 else 3 if lead < 0xF0 else 4):
            return head[:i - 1]
    return head


def _record(result: PickleAnalysis, ref: GlobalRef) -> GlobalRef:
    """Keep an import record; past MAX_GLOBAL_REFS, a repeated name shares its first record (``called`` then
    covers every occurrence) and a new name shares one catch-all record that counts as dangerous."""
    if len(result.globals) < MAX_GLOBAL_REFS:
        result.globals.append(ref)
        return ref
    if "_by_name" not in result.__dict__:
        result._by_name = {g.qualified: g for g in result.globals}
    seen = result._by_name
    if ref.qualified in seen:
        return seen[ref.qualified]
    key = "<too many distinct globals>"
    if key not in seen:
        seen[key] = GlobalRef(key, "<more>", ref.offset, ref.opcode, dynamic=True)
        result.globals.append(seen[key])
    return seen[key]


def _note_embedded(name: str, arg, pos: int, result: PickleAnalysis) -> None:
    """Remember where a bytes argument lies (not its bytes) if its head is worth a closer look."""
    keep = getattr(result, "_keep", None)
    if len(arg) < 8 or (keep is not None and not keep(bytes(arg[:_HEAD]))):
        return
    if len(result.embedded) >= MAX_EMBEDDED:
        result.incomplete = result.incomplete or f"more than {MAX_EMBEDDED} bytes arguments worth a look; the rest were not"
        return
    start = pos + 1 + _LENGTH_FIELD[name]
    result.embedded.append(Embedded(pos, start, len(arg)))


_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){12,}")


def _note_encoded(text: str, pos: int, result: PickleAnalysis) -> None:
    """A text argument that is base64 or hex of a pickle or an archive: a payload staged for a second-stage loader
    (a later ``pickle.loads(b64decode(...))``). Keep the decoded bytes when their head is worth a closer look."""
    if len(text) < 24 or sum(len(d) for _, d in result.decoded) > MAX_DECODED_BYTES:
        return
    import base64
    import binascii

    data = None
    try:
        if _HEX.fullmatch(text):
            data = bytes.fromhex(text)
        elif _BASE64.fullmatch(text):
            data = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        return
    keep = getattr(result, "_keep", None)
    if data and len(data) >= 8 and (keep is None or keep(data[:_HEAD])):
        result.decoded.append((pos, data))


_LENGTH_FIELD = {"SHORT_BINBYTES": 1, "BINBYTES": 4, "BINBYTES8": 8, "BYTEARRAY8": 8}


def _generic(op, stack: list) -> None:
    before = [s.name for s in op.stack_before]
    if "mark" in before:
        _pop_to_mark(stack)
        for _ in range(before.index("mark")):
            stack.pop()
    else:
        for _ in before:
            stack.pop()
    for s in op.stack_after:
        stack.append(_MARK if s.name == "mark" else _UNKNOWN)


_CALLS_ITS_ARGUMENTS = {("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"), ("copyreg", "__newobj__"),
                        ("copyreg", "__newobj_ex__"), ("copy_reg", "__newobj__")}


def _mark_called(obj) -> None:
    if isinstance(obj, GlobalRef):
        obj.called = True


def _describe(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, _Instance):
        return f"<result of {value.ref.qualified}>"
    if isinstance(value, GlobalRef):
        return f"<result of {value.qualified}>"
    return "<computed>"


def looks_like_pickle(head: bytes) -> bool:
    """A cheap guess used for bytes found inside other data (not for top-level format identification)."""
    return bool(_PICKLE_HEADER.match(head[:2])) or bool(re.match(rb"c[\w.]+\n[\w.]+\n", head[:200]))
