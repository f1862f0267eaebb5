"""Static pickle analysis: which globals a pickle imports and calls, without ever unpickling it.

We walk the opcode stream with ``pickletools.genops`` (a decoder, not an interpreter) and keep a
small model of the unpickler's stack and memo, enough to resolve ``STACK_GLOBAL`` operands
(built from strings, possibly through the memo) and to see which globals are called
(``REDUCE``, ``NEWOBJ``, ``OBJ``, ``INST``). The walk is tolerant: an opcode stream that breaks
still reports every global seen before the break, and parsing resumes at later pickle headers,
so stacked pickles and payloads hidden after junk are seen too.

What a global *means* (allowed, dangerous, unknown) is ``worker.inspect.allowlist``'s business.
"""

import io
import pickletools
import re
from dataclasses import dataclass, field

from worker.inspect.allowlist import classify

MAX_OPS = 5_000_000  # a pickle of a large model has ~1e5 opcodes; more is a parsing bomb
MAX_RESYNC = 64  # how many later pickle headers we try after a break

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


@dataclass
class PickleAnalysis:
    globals: list[GlobalRef] = field(default_factory=list)
    streams: list[PickleStream] = field(default_factory=list)
    embedded: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, bytes) arguments that may hold further payloads

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


def analyze(data: bytes, max_ops: int = MAX_OPS) -> PickleAnalysis:
    """Analyse every pickle stream in ``data`` (stacked, or after junk)."""
    result = PickleAnalysis()
    pos, resyncs = 0, 0
    while pos < len(data) and resyncs <= MAX_RESYNC:
        seen = len(result.globals)
        stream = _walk(data, pos, result, max_ops)
        stream.resynced, stream.globals_found = resyncs > 0, len(result.globals) - seen
        result.streams.append(stream)
        if stream.error and "opcode budget" in stream.error:
            break
        nxt = stream.end if stream.complete else stream.end + 1
        rest = data[nxt:]
        if stream.complete and rest[:1] and rest[:1] in b"\x80(cdl}]":  # another pickle follows right away
            pos = nxt
            continue
        found = _PICKLE_HEADER.search(data, nxt)  # look for a later stream behind junk
        if not found:
            break
        pos, resyncs = found.start(), resyncs + 1
    return result


def _walk(data, start: int, result: PickleAnalysis, max_ops: int) -> PickleStream:
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else _BufferReader(data)
    stream.seek(start)
    stack: list = []
    memo: dict = {}
    ops, protocol, last = 0, None, start
    try:
        for op, arg, pos in pickletools.genops(stream):
            ops += 1
            last = pos
            if ops > max_ops:
                return PickleStream(start, pos, protocol, ops, False, f"opcode budget of {max_ops} exceeded at offset {pos}")
            if op.name == "PROTO":
                protocol = arg
            skip = _step(op, arg, pos, stack, memo, result)
            if skip:  # joblib wrote raw array bytes (or a nested pickle) right after this BUILD
                _skip_joblib_array(skip, data, stream, result, max_ops)
            if op.name == "STOP":
                return PickleStream(start, stream.tell(), protocol, ops, True)
        return PickleStream(start, stream.tell(), protocol, ops, False, f"stream ended without STOP at offset {stream.tell()}")
    except (ValueError, EOFError, IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
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


def _step(op, arg, pos: int, stack: list, memo: dict, result: PickleAnalysis):
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
        stack.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
    elif name in _BYTES_OPS:
        if len(arg) >= 8:
            result.embedded.append((pos, bytes(arg)))
        stack.append(_UNKNOWN)
    elif name in ("GLOBAL", "INST"):
        module, _, qual = str(arg).partition(" ")
        ref = GlobalRef(module, qual, pos, name)
        result.globals.append(ref)
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
        result.globals.append(ref)
        stack.append(ref)
    elif name in ("EXT1", "EXT2", "EXT4"):
        ref = GlobalRef("<copyreg extension>", str(arg), pos, name, dynamic=True)
        result.globals.append(ref)
        stack.append(ref)
    elif name == "REDUCE":
        args = stack.pop()
        fn = stack.pop()
        _mark_called(fn)
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
        if isinstance(target, _Instance) and target.ref.module == "joblib.numpy_pickle" and isinstance(state, dict):
            return state
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[arg] = stack[-1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
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


def _skip_joblib_array(state: dict, data, stream, result: PickleAnalysis, max_ops: int) -> None:
    """joblib's NumpyArrayWrapper: the array follows its BUILD opcode, as raw bytes or, for object
    arrays, as a nested pickle (which may carry a payload of its own)."""
    dtype = state.get("dtype")
    descr = dtype.args[0] if isinstance(dtype, _Instance) and isinstance(dtype.args, tuple) and dtype.args else None
    if descr in ("O", "|O", "O8"):
        nested = _walk(data, stream.tell(), result, max_ops)
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


class _BufferReader:
    """Minimal file interface over a buffer (an mmap of a large file), without copying it."""

    def __init__(self, buf) -> None:
        self.buf, self.pos = memoryview(buf), 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.buf) if n is None or n < 0 else min(self.pos + n, len(self.buf))
        out = self.buf[self.pos:end].tobytes()
        self.pos = end
        return out

    def readline(self) -> bytes:
        end = self.pos
        while end < len(self.buf) and self.buf[end] != 10:
            end += 1
        return self.read(end + 1 - self.pos)

    def seek(self, pos: int) -> None:
        self.pos = pos

    def tell(self) -> int:
        return self.pos


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
