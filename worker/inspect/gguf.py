"""GGUF (llama.cpp) headers parsed by hand: magic, version, counts, every metadata key/value and every tensor
descriptor, each length and count checked against the bytes left in the file. Tensor data is never read.

Oversized counts and string lengths in GGUF headers are a known memory-corruption class in GGUF loaders, and
``tokenizer.chat_template`` carries a Jinja template the server renders (checked with ``jinja.py``)."""

import struct
from dataclasses import dataclass, field
from pathlib import Path

from worker.findings import Finding, Severity
from worker.inspect.common import _DO_NOT_LOAD, _finding, _short, not_inspected
from worker.inspect.jinja import MAX_TEMPLATE_CHARS, check_jinja_template

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_GGUF_KEY_BYTES = 65_536
MAX_GGUF_STRING_BYTES = 64 * 1024 * 1024
MAX_GGUF_ARRAY_DEPTH = 8
MAX_GGUF_VALUES = 20_000_000  # metadata values visited in all (a vocabulary has a few hundred thousand)
MAX_GGUF_DIMS = 4  # GGML_MAX_DIMS: loaders index fixed arrays with n_dims
MAX_GGML_TYPE = 64  # ggml type ids are below 40 today
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims, type, offset

# value type -> struct code of the fixed-size types (GGUF spec: gguf_metadata_value_type)
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFMalformed(ValueError):
    pass


class GGUFCountsExceedFile(GGUFMalformed):
    pass


@dataclass
class GGUFHeader:
    version: int
    tensor_count: int
    kv_count: int
    byte_order: str
    metadata: dict = field(default_factory=dict)  # small scalar values and chat templates only
    keys: list = field(default_factory=list)
    duplicate_keys: list = field(default_factory=list)
    tensors_read: int = 0
    header_bytes: int = 0


class _Reader:
    """Reads a file front to back; every read and skip is checked against the file size first."""

    def __init__(self, f, size: int) -> None:
        self.f, self.size, self.pos = f, size, 0
        self.order = "<"
        self.values = 0

    def left(self) -> int:
        return self.size - self.pos

    def read(self, n: int, what: str) -> bytes:
        if n > self.left():
            raise GGUFMalformed(f"{what} needs {n} bytes at offset {self.pos} but the file has {self.left()} left")
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFMalformed(f"short read of {what}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.left():
            raise GGUFCountsExceedFile(f"{what} claims {n:,} bytes at offset {self.pos:,}; only {self.left():,} are left")
        self.pos += n
        self.f.seek(self.pos)

    def unpack(self, code: str, what: str):
        return struct.unpack(self.order + code, self.read(struct.calcsize(code), what))[0]

    def string_length(self, what: str, limit: int) -> int:
        length = self.unpack("Q", f"{what} length")
        if length > self.left():
            raise GGUFCountsExceedFile(f"{what} claims {length:,} bytes; only {self.left():,} are left")
        if length > limit:
            raise GGUFMalformed(f"{what} is {length:,} bytes, over the {limit:,} allowed")
        return length

    def string(self, what: str, limit: int) -> str:
        raw = self.read(self.string_length(what, limit), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFMalformed(f"{what} is not valid UTF-8") from exc

    def count_value(self) -> None:
        self.values += 1
        if self.values > MAX_GGUF_VALUES:
            raise GGUFMalformed(f"more than {MAX_GGUF_VALUES:,} metadata values")


def parse_gguf_header(f, size: int) -> GGUFHeader:
    """Parse the header of a GGUF file (v2/v3, either byte order); raise GGUFMalformed."""
    r = _Reader(f, size)
    if r.read(4, "magic") != GGUF_MAGIC:
        raise GGUFMalformed("the file does not start with the GGUF magic")
    raw_version = r.read(4, "version")
    for order in ("<", ">"):
        version = struct.unpack(order + "I", raw_version)[0]
        if version in SUPPORTED_VERSIONS:
            r.order = order
            break
    else:
        raise GGUFMalformed(f"unsupported GGUF version {struct.unpack('<I', raw_version)[0]} (poisonscan reads 2 and 3)")
    tensor_count, kv_count = r.unpack("Q", "tensor count"), r.unpack("Q", "metadata count")
    if kv_count * _MIN_KV_BYTES > r.left() or tensor_count * _MIN_TENSOR_INFO_BYTES > r.left():
        raise GGUFCountsExceedFile(f"{tensor_count:,} tensors and {kv_count:,} metadata entries cannot fit in "
                                   f"the {r.left():,} bytes left")
    header = GGUFHeader(version, tensor_count, kv_count, "little" if r.order == "<" else "big")
    seen = set()
    for _ in range(kv_count):
        key = r.string("metadata key", MAX_GGUF_KEY_BYTES)
        (header.duplicate_keys if key in seen else header.keys).append(key)
        seen.add(key)
        value = _value(r, r.unpack("I", f"type of {_short(key, 60)}"), key, 0)
        if value is not None:
            header.metadata[key] = value
    last_offset = max((_tensor_info(r) for _ in range(tensor_count)), default=0)
    header.tensors_read = tensor_count
    header.header_bytes = r.pos
    _check_data_section(header, last_offset, size)
    return header


def _check_data_section(header: GGUFHeader, last_offset: int, size: int) -> None:
    """Tensor offsets count from the data section, which starts at the header's end rounded up to the alignment."""
    alignment = header.metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFMalformed(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-header.header_bytes // alignment) * alignment
    if header.tensor_count and last_offset > size - data_start:
        raise GGUFCountsExceedFile(f"a tensor starts at data offset {last_offset:,}; the data section after byte "
                                   f"{data_start:,} holds {max(size - data_start, 0):,} bytes")


def _keeps(key: str) -> bool:
    return key.startswith("tokenizer.chat_template") or key.startswith("general.")


def _value(r: _Reader, vtype: int, key: str, depth: int):
    """Read (or skip) one value; return it only when it is a string or scalar worth keeping."""
    r.count_value()
    if vtype in _FIXED:
        value = r.unpack(_FIXED[vtype], f"value of {_short(key, 60)}")
        return value if _keeps(key) else None
    if vtype == _STRING:
        if key.startswith("tokenizer.chat_template"):
            return r.string(f"value of {_short(key, 60)}", 4 * MAX_TEMPLATE_CHARS)
        length = r.string_length(f"value of {_short(key, 60)}", MAX_GGUF_STRING_BYTES)
        if _keeps(key) and length <= 256:
            return r.read(length, key).decode("utf-8", "replace")
        r.skip(length, f"value of {_short(key, 60)}")
        return None
    if vtype == _ARRAY:
        _array(r, key, depth + 1)
        return None
    raise GGUFMalformed(f"metadata {_short(key, 60)} has unknown value type {vtype}")


def _array(r: _Reader, key: str, depth: int) -> None:
    if depth > MAX_GGUF_ARRAY_DEPTH:
        raise GGUFMalformed(f"arrays nested more than {MAX_GGUF_ARRAY_DEPTH} deep in {_short(key, 60)}")
    item_type, count = r.unpack("I", "array type"), r.unpack("Q", "array length")
    if item_type in _FIXED:
        r.skip(count * struct.calcsize(_FIXED[item_type]), f"array {_short(key, 60)}")
        return
    if item_type == _STRING and count * 8 > r.left():
        raise GGUFCountsExceedFile(f"array {_short(key, 60)} claims {count:,} strings; only {r.left():,} bytes are left")
    if item_type == _ARRAY and count * 12 > r.left():
        raise GGUFCountsExceedFile(f"array {_short(key, 60)} claims {count:,} arrays; only {r.left():,} bytes are left")
    for _ in range(count):
        if item_type == _STRING:
            r.count_value()
            r.skip(r.string_length(f"string in {_short(key, 60)}", MAX_GGUF_STRING_BYTES), f"string in {_short(key, 60)}")
        else:
            _value(r, item_type, key, depth)


def _tensor_info(r: _Reader) -> int:
    """Read one tensor descriptor; return its data offset."""
    name = r.string("tensor name", MAX_GGUF_KEY_BYTES)
    n_dims = r.unpack("I", f"dimensions of {_short(name, 60)}")
    if n_dims > MAX_GGUF_DIMS:
        raise GGUFMalformed(f"tensor {_short(name, 60)} has {n_dims} dimensions (at most {MAX_GGUF_DIMS})")
    for _ in range(n_dims):
        r.unpack("Q", "dimension")
    ggml_type, offset = r.unpack("I", "tensor type"), r.unpack("Q", "tensor offset")
    if ggml_type >= MAX_GGML_TYPE:
        raise GGUFMalformed(f"tensor {_short(name, 60)} has unknown type {ggml_type}")
    if offset > r.size:
        raise GGUFCountsExceedFile(f"tensor {_short(name, 60)} starts at offset {offset:,}, past the end of the file")
    return offset


def check_gguf(path) -> list[Finding]:
    """Parse the GGUF header (never the tensors), check its chat templates, summarise."""
    path = Path(path)
    what = "GGUF model"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = parse_gguf_header(f, size)
    except GGUFCountsExceedFile as exc:
        return [_finding("GGUF header counts exceed the file", Severity.high,
                         f"{exc}. A loader that trusts these counts allocates or reads past the end of its buffers "
                         "(the heap overflows reported in GGUF parsers).", _DO_NOT_LOAD, {"location": path.name, "file_size": size})]
    except (GGUFMalformed, OSError) as exc:
        return [not_inspected(what, f"The GGUF header is malformed or truncated ({_short(str(exc), 200)}).", path.name)]
    findings = []
    if header.duplicate_keys:
        findings.append(_finding(
            "GGUF metadata repeats keys", Severity.high,
            "The same metadata key appears more than once; loaders disagree on which value wins, so what a reviewer "
            "sees need not be what a server uses.", _DO_NOT_LOAD,
            {"location": path.name, "duplicates": [_short(k, 100) for k in header.duplicate_keys[:50]]}))
    for key, value in header.metadata.items():
        if key.startswith("tokenizer.chat_template"):
            findings += check_jinja_template(value, f"{path.name}:{key}")
    findings.append(_finding(
        f"GGUF v{header.version}: {header.tensor_count} tensors, {header.kv_count} metadata entries", Severity.info,
        f"Architecture {header.metadata.get('general.architecture', 'unknown')}; the header ({header.header_bytes:,} "
        "bytes) is consistent with the file size. Tensor data was not read.",
        evidence={"version": header.version, "byte_order": header.byte_order, "tensor_count": header.tensor_count,
                  "kv_count": header.kv_count, "architecture": header.metadata.get("general.architecture"),
                  "name": header.metadata.get("general.name"), "header_bytes": header.header_bytes,
                  "chat_templates": [k for k in header.metadata if k.startswith("tokenizer.chat_template")],
                  "file_size": size}))
    return findings
