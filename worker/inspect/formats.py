"""Identify a file's format from its bytes; its name decides only what the bytes leave open.

Cheap (reads the head, the tail, a few protobuf tags and, for zip files, the central directory) so the API
can label an upload as it arrives. Pure Python: no numpy, no TensorFlow, no onnx.
"""

import io
import json
import re
import struct
import zipfile
from pathlib import Path, PurePosixPath

from worker.inspect.protobuf import LEN, VARINT, ProtobufError, ProtobufLimit, iter_fields, iter_stream_fields
from worker.inspect.savedmodel import TF_AUXILIARY_PROTOS, looks_like_tf_graph

COMPRESSED_KINDS = frozenset({"gzip", "bz2", "xz", "lzma", "zlib", "joblib_zlib", "lz4"})
# "unknown" stays scannable as a model: refusing it would let a disguised payload skip the content scan.
MODEL_KINDS = frozenset({"keras", "hdf5", "safetensors", "pickle", "pytorch_zip", "onnx", "gguf", "zip", "tar", "7z", "npy", "npz",
                         "savedmodel", "jinja", "yaml", "hf_json", "unknown"} | COMPRESSED_KINDS)
DATASET_KINDS = frozenset({"npz", "csv", "parquet", "npy", "jsonl"})
ROLE_KINDS = {  # what each scan input may be
    "model": MODEL_KINDS, "dataset": DATASET_KINDS,
    "signature": frozenset({"json"}), "public_key": frozenset({"text"}), "certificate_chain": frozenset({"text"}),
    "holdout": DATASET_KINDS, "trigger": frozenset({"npz"}),
}

# Extensions people use for each kind; a name that promises another kind is a finding.
EXTENSIONS = {
    "png": {".png"},
    "keras": {".keras"},
    "hdf5": {".h5", ".hdf5", ".keras"},
    "safetensors": {".safetensors"},
    "pickle": {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".dat"},
    "pytorch_zip": {".pt", ".pth", ".bin", ".ckpt", ".zip"},
    "onnx": {".onnx"},
    "gguf": {".gguf"},
    "npy": {".npy"},
    "npz": {".npz"},
    "csv": {".csv", ".txt", ".tsv"},
    "parquet": {".parquet", ".pq"},
    "zip": {".zip"},
    "tar": {".tar"},
    "gzip": {".gz", ".tgz", ".joblib"},
    "bz2": {".bz2", ".joblib"},
    "xz": {".xz", ".joblib"},
    "joblib_zlib": {".joblib", ".z", ".pkl"},
    "zlib": {".joblib", ".z", ".zlib", ".pkl"},
    "lzma": {".joblib", ".lzma", ".pkl"},
    "lz4": {".joblib", ".lz4", ".pkl"},
    "7z": {".7z"},
    "json": {".json"},
    "jsonl": {".jsonl", ".ndjson", ".json"},
    "savedmodel": {".pb"},
    "jinja": {".jinja", ".jinja2", ".j2"},
    "yaml": {".yaml", ".yml"},
    "hf_json": {".json"},
}

# Hugging Face JSON files that transformers reads by name (chat templates, auto_map custom code).
HF_JSON_NAMES = frozenset({"config.json", "tokenizer_config.json", "chat_template.json", "processor_config.json",
                           "preprocessor_config.json", "generation_config.json", "feature_extractor_config.json",
                           "image_processor_config.json", "video_preprocessor_config.json"})
# Kinds a name may give a file whose content does not settle it, each with a check that reports the malformation.
_NAME_HINT_KINDS = ("safetensors", "gguf", "onnx", "savedmodel", "jinja", "yaml")
# What the content says when it proves little: text-like guesses, or nothing recognised.
_WEAK_CONTENT_KINDS = frozenset({"text", "csv", "json", "jsonl", "unknown", "jinja", "yaml"})

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HEAD = 4096


def sniff(path: Path, filename: str | None = None) -> str:
    """Return the kind of the file at ``path`` (see EXTENSIONS), or 'empty' / 'unknown'.

    ``filename`` is the file's original name (default ``path.name``; stored artifacts are named by hash). Content
    decides; the name only settles what the content leaves open (see ``_sniff``)."""
    with path.open("rb") as f:
        return _sniff(f, path.stat().st_size, path.name if filename is None else filename)


def sniff_bytes(data: bytes, filename: str | None = None) -> str:
    """The same for bytes in memory (a member of an archive)."""
    return _sniff(io.BytesIO(data), len(data), filename)


def kind_from_name(filename: str | None) -> str | None:
    """The kind a file's name promises, among those a name may decide; None when it promises none of them."""
    if not filename:
        return None
    name = PurePosixPath(filename.replace("\\", "/")).name.lower()
    if name in HF_JSON_NAMES:
        return "hf_json"
    if name in TF_AUXILIARY_PROTOS:
        return None  # TensorFlow's own non-graph protobufs next to saved_model.pb
    suffix = PurePosixPath(name).suffix
    return next((kind for kind in _NAME_HINT_KINDS if suffix in EXTENSIONS[kind]), None)


def _sniff(f, size: int, filename: str | None) -> str:
    if size == 0:
        return "empty"
    head = f.read(_HEAD)
    kind = _content_kind(f, head, size)
    if kind == "json" and _is_json_lines(head, filename):
        kind = "jsonl"  # not a document a loader reads whole (a config): records, one per line
    if kind in ("text", "csv", "json"):
        kind = _text_refinement(kind, head, _tail(f, size))
    hinted = kind_from_name(filename)
    if hinted and kind in _WEAK_CONTENT_KINDS:
        return hinted  # e.g. x.safetensors with an absurd header length: its own check reports the malformation
    return kind


def _tail(f, size: int) -> bytes:
    if size <= _HEAD:
        return b""
    f.seek(max(_HEAD, size - _HEAD))
    return f.read(_HEAD)


def _content_kind(f, head: bytes, size: int) -> str:
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        f.seek(0)
        return _zip_kind(f)
    if any(head[off:off + 8] == _HDF5_MAGIC for off in (0, 512, 1024, 2048)):
        return "hdf5"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if _is_safetensors(head, size):  # before the weak 3-byte magics below, which a header length can mimic
        return "safetensors"
    if head.startswith(b"ZF") and head[2:3] == b"x":  # joblib's zlib container before 0.9.3
        return "joblib_zlib"
    if head.startswith(b"\x5d\x00\x00"):  # lzma "alone" format (joblib compress='lzma')
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if _is_pickle(head):
        return "pickle"
    if _is_onnx(f, size):
        return "onnx"
    if looks_like_tf_graph(f, size):
        return "savedmodel"
    if len(head) > 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0 and not head[1] & 0x20:
        return "zlib"  # a raw zlib stream (joblib compress=True / 'zlib')
    return _text_kind(head)


def _zip_kind(source) -> str:
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip"  # a zip header with a broken directory is still a zip to the scanners
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "pytorch_zip"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _is_pickle(head: bytes) -> bool:
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return True
    # Protocol 0/1 have no header: look for the usual opening opcodes followed by pickle-shaped text.
    if head[:1] == b"c" and b"\n" in head[:256]:  # GLOBAL 'module\nname\n'
        module = head[1:head.index(b"\n")]
        return module.replace(b".", b"").replace(b"_", b"").isalnum()
    if head[:1] in (b"(", b"}", b"]") and head[1:2] in (b"d", b"l", b"p", b"c", b"i", b"(", b"S", b"V", b"I", b"q", b"X", b"\x85", b"\x94"):
        return True
    return False


# ModelProto and GraphProto field numbers -> wire types (onnx/onnx.proto)
_ONNX_MODEL = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN, 20: LEN, 25: LEN, 26: LEN}
_ONNX_GRAPH = {1: LEN, 2: LEN, 5: LEN, 10: LEN, 11: LEN, 12: LEN, 13: LEN, 14: LEN, 15: LEN, 16: LEN}
_ONNX_STRINGS = (2, 3, 4)  # producer_name, producer_version, domain
_MAX_IR_VERSION = 64  # ONNX is at 11; far above that is not an ONNX model


def _is_onnx(f, size: int) -> bool:
    """An ONNX ModelProto by structure, whatever its producer: every top-level field is a ModelProto field with
    its wire type, there is one plausible ir_version and one graph, and the graph's first bytes parse as a GraphProto."""
    try:
        fields = list(_top_fields(f, size, max_fields=256, peek=1024))
        if not fields or any(_ONNX_MODEL.get(sf.number) != sf.wire_type for sf in fields):
            return False
        ir_versions = [sf.value for sf in fields if sf.number == 1]
        graphs = [sf for sf in fields if sf.number == 7]
        if len(ir_versions) != 1 or not 1 <= ir_versions[0] <= _MAX_IR_VERSION or len(graphs) != 1:
            return False
        for sf in fields:
            if sf.number in _ONNX_STRINGS and sf.value <= len(sf.peek):
                sf.peek.decode("utf-8")
        graph = graphs[0]
        return all(_ONNX_GRAPH.get(g.number, g.wire_type) == g.wire_type for g in iter_fields(graph.peek, total=graph.value))
    except (ProtobufError, UnicodeDecodeError):
        return False


def _top_fields(f, size: int, max_fields: int, peek: int):
    try:
        yield from iter_stream_fields(f, size, max_fields=max_fields, peek=peek)
    except ProtobufLimit:
        return  # consistent for as long as we looked


# A YAML tag in node position (!!python/..., !<tag:...>, !!python%2F...) or a %TAG directive: what a loader resolves.
_YAML_TAG = re.compile(rb"(?:^|[\s\[{,:\-])!(?:!|<)[\w%<]|^%TAG\s|^%YAML\s", re.MULTILINE)
_JINJA_OPENERS = (b"{{", b"{%", b"{#")


def _text_refinement(kind: str, head: bytes, tail: bytes) -> str:
    """Text a scanner must read as YAML, a Jinja template or a Hugging Face config, by what it contains.
    A CSV stays a CSV (a dataset may quote anything) unless it carries python/* YAML tags."""
    text = head + b"\n" + tail
    if kind == "json" and not head.lstrip().startswith(_JINJA_OPENERS):
        return "hf_json" if b'"chat_template"' in text or b'"auto_map"' in text else "json"
    if kind == "csv":
        return "yaml" if b"!!python/" in text or b"tag:yaml.org,2002:python/" in text else kind
    if _YAML_TAG.search(text):
        return "yaml"
    if (b"{%" in text and b"%}" in text) or (b"{{" in text and b"}}" in text):
        return "jinja"
    return kind


def _is_json_lines(head: bytes, filename: str | None) -> bool:
    """JSON Lines: a first line that is a whole JSON object with more after it (a JSON document ends with its value),
    or, when that is open (one record, or a first one longer than the head), a .jsonl / .ndjson name."""
    first, newline, rest = head.lstrip().partition(b"\n")
    if not newline or not rest.strip():
        return PurePosixPath((filename or "").lower()).suffix in (".jsonl", ".ndjson")
    try:
        return isinstance(json.loads(first.decode("utf-8-sig", errors="replace")), dict)  # bad bytes: the loader's
    except (ValueError, RecursionError):
        return False


# Text in another encoding than UTF-8 (a cp1252 CSV): a few undecodable bytes among printable characters. It is still
# text, so that the dataset loader can name the line and byte instead of a refusal of an "unknown" file.
_MAX_UNDECODABLE_SHARE = 0.1


def _text_kind(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # The head may end mid-character; retry without the last few bytes.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            text = head.decode("utf-8", errors="replace")
            readable = all(c.isprintable() or c in "\t\r\n" for c in text)
            if not readable or text.count("\ufffd") > _MAX_UNDECODABLE_SHARE * len(text):
                return "unknown"
    stripped = text.lstrip("\ufeff").lstrip()  # a UTF-8 BOM is not content
    if stripped.startswith(("{", "[")):
        return "json"  # only the head was read: validity is for whoever parses it
    first_line = stripped.splitlines()[0] if stripped else ""
    if "," in first_line or "\t" in first_line:
        return "csv"
    return "text" if text.isprintable() or "\n" in text else "unknown"


def wrong_kind_for_role(role: str, kind: str) -> str | None:
    """Why a file of ``kind`` cannot be this scan input, or None when it can. A model of any kind is scanned: what
    poisonscan cannot understand fails the scan with the reason (the gate fails closed), it is never refused."""
    if role == "model" or kind in ROLE_KINDS[role]:
        return None
    return f"is {kind}, which cannot be scanned as a {role}; expected one of: {', '.join(sorted(ROLE_KINDS[role]))}"


def extension_matches(filename: str | None, kind: str) -> bool:
    """True when the name says nothing, or says what the content is."""
    if not filename or "." not in filename:
        return True
    ext = "." + filename.rsplit(".", 1)[1].lower()
    known = {e for exts in EXTENSIONS.values() for e in exts}
    if ext not in known:
        return True
    return ext in EXTENSIONS.get(kind, set())
