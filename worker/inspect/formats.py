"""Identify a file's format from its bytes, never from its name.

Cheap (reads the head, the tail and, for zip files, the central directory) so the API
can label an upload as it arrives. Pure Python: no numpy, no TensorFlow.
"""

import io
import struct
import zipfile
from pathlib import Path

COMPRESSED_KINDS = frozenset({"gzip", "bz2", "xz", "lzma", "zlib", "joblib_zlib", "lz4"})
# "unknown" stays scannable as a model: refusing it would let a disguised payload skip the content scan.
MODEL_KINDS = frozenset({"keras", "hdf5", "safetensors", "pickle", "pytorch_zip", "onnx", "gguf", "zip", "tar", "7z", "npy", "npz", "unknown"} | COMPRESSED_KINDS)
DATASET_KINDS = frozenset({"npz", "csv", "parquet", "npy"})
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
}

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HEAD = 4096


def sniff(path: Path, filename: str | None = None) -> str:
    """Return the kind of the file at ``path`` (see EXTENSIONS), or 'empty' / 'unknown'."""
    with path.open("rb") as f:
        head = f.read(_HEAD)
    return _sniff(head, path.stat().st_size, lambda: path)


def sniff_bytes(data: bytes) -> str:
    """The same for bytes in memory (a member of an archive)."""
    return _sniff(data[:_HEAD], len(data), lambda: io.BytesIO(data))


def _sniff(head: bytes, size: int, opener) -> str:
    if size == 0:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(opener())
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
    if head.startswith(b"ZF") and head[2:3] == b"x":  # joblib's zlib container before 0.9.3
        return "joblib_zlib"
    if head.startswith(b"\x5d\x00\x00"):  # lzma "alone" format (joblib compress='lzma')
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if _is_safetensors(head, size):
        return "safetensors"
    if _is_pickle(head):
        return "pickle"
    if _is_onnx(head):
        return "onnx"
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


def _is_onnx(head: bytes) -> bool:
    # ModelProto: field 1 (ir_version, varint) first, and the producer/opset strings appear early.
    return head[:1] == b"\x08" and (b"onnx" in head[:512].lower() or b"ai.onnx" in head)


def _text_kind(head: bytes) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # The head may end mid-character; retry without the last few bytes.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return "unknown"
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "json"  # only the head was read: validity is for whoever parses it
    first_line = stripped.splitlines()[0] if stripped else ""
    if "," in first_line or "\t" in first_line:
        return "csv"
    return "text" if text.isprintable() or "\n" in text else "unknown"


def wrong_kind_for_role(role: str, kind: str) -> str | None:
    """Why a file of ``kind`` cannot be this scan input, or None when it can."""
    if kind in ROLE_KINDS[role]:
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
