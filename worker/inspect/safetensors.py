"""safetensors: the header and tensor layout validated byte by byte (never loaded)."""

import json
import math
import struct
from collections import Counter
from pathlib import Path

from worker.findings import Finding, Severity
from worker.inspect.common import MAX_LISTED, MAX_JSON_BYTES, _capped, _finding, _json_pairs_with_duplicates, _reject_constant, _short

# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

# dtype -> size in bits (the safetensors spec, including the sub-byte float formats)
SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_SAFETENSORS_FIX = ("Do not load this file. Re-export the weights from their source with the official safetensors "
                    "library, or download them again from a trusted publisher and compare hashes.")


def _is_nonneg_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_safetensors(path) -> list[Finding]:
    """Validate a safetensors file's header and tensor layout byte by byte."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                return [_finding(
                    "safetensors header length is invalid", Severity.high,
                    f"The file is {size} bytes, too short to hold the 8-byte header length every safetensors file starts with.",
                    _SAFETENSORS_FIX, {"file_size": size})]
            (header_len,) = struct.unpack("<Q", prefix)
            problem = None
            if header_len < 2:
                problem = "is smaller than the shortest possible JSON object ({})"
            elif header_len > MAX_JSON_BYTES:
                problem = f"exceeds the {MAX_JSON_BYTES // (1024 * 1024)} MB limit poisonscan reads"
            elif header_len > size - 8:
                problem = "runs past the end of the file"
            if problem:
                return [_finding(
                    "safetensors header length is invalid", Severity.high,
                    f"The header length field says {header_len} bytes, which {problem}. A loader that trusts this field "
                    "may read out of bounds, allocate huge amounts of memory or misparse the file.",
                    _SAFETENSORS_FIX, {"header_len": header_len, "file_size": size})]
            raw = f.read(header_len)
            data_len = size - 8 - header_len
            findings, summary, spans = _safetensors_header(raw, header_len, data_len, size)
            if summary is not None:
                findings += _safetensors_hidden_data(spans, data_len, f, 8 + header_len)
                if not any(x.severity.rank >= Severity.medium.rank for x in findings):
                    findings.append(summary)  # only a clean file is called valid
            return findings
    except OSError as exc:
        return [_finding("safetensors file could not be read", Severity.high,
                         f"Reading the file failed ({exc.__class__.__name__}: {exc}).", _SAFETENSORS_FIX)]


def _safetensors_header(raw: bytes, header_len: int, data_len: int, size: int):
    """(findings, summary finding or None when the header is unusable, [(begin, end, name)] of in-range tensors)."""
    base = {"header_len": header_len, "file_size": size, "data_len": data_len}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [_finding("safetensors header is not valid UTF-8 JSON", Severity.high,
                         f"The header is not UTF-8 text ({exc.reason} at byte {exc.start}); the file is corrupt or was "
                         "crafted to confuse parsers.", _SAFETENSORS_FIX, base)], None, []
    duplicates: list[str] = []
    try:
        header = json.loads(text, object_pairs_hook=_json_pairs_with_duplicates(duplicates), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return [_finding("safetensors header is not valid UTF-8 JSON", Severity.high,
                         f"The header does not parse as JSON ({_short(str(exc))}); the file is corrupt or was crafted "
                         "to confuse parsers.", _SAFETENSORS_FIX, base | {"header_head": _short(text, 120)})], None, []
    if not isinstance(header, dict):
        return [_finding("safetensors header is not a JSON object", Severity.high,
                         f"The header is a JSON {type(header).__name__}, not the object mapping tensor names to their "
                         "layout that the format requires.", _SAFETENSORS_FIX, base)], None, []
    findings: list[Finding] = []
    if duplicates:
        findings.append(_finding(
            "safetensors header has duplicate keys", Severity.high,
            "The same key appears more than once in the header. Different parsers keep different copies, so two tools "
            "can see two different models in the same file.", _SAFETENSORS_FIX,
            base | {"duplicates": _capped(sorted(set(duplicates)))}))

    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        findings.append(_finding(
            "safetensors __metadata__ is malformed", Severity.high,
            "The __metadata__ entry must map strings to strings; this one does not. The reference loader rejects the "
            "file, and other loaders may misbehave.", _SAFETENSORS_FIX,
            base | {"metadata_type": type(metadata).__name__, "metadata_head": _short(json.dumps(metadata), 200)}))
        metadata = None

    malformed, out_of_range, odd_names = [], [], []
    spans = []  # (begin, end, name) of every tensor whose offsets are well-formed and inside the data section
    total_params = 0
    dtypes = Counter()
    for name, info in header.items():
        if not name or len(name) > 1024 or any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in name):
            odd_names.append(_short(name, 100))
        if not isinstance(info, dict):
            malformed.append({"tensor": _short(name, 100), "problem": f"entry is a {type(info).__name__}, not an object"})
            continue
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        problems = []
        extra = sorted(set(info) - {"dtype", "shape", "data_offsets"})
        if extra:
            problems.append(f"unexpected fields {extra[:5]}")
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
            problems.append(f"unknown dtype {_short(dtype, 40)}")
        if not isinstance(shape, list) or not all(_is_nonneg_int(d) for d in shape):
            problems.append(f"shape {_short(shape, 80)} is not a list of non-negative integers")
        offsets_ok = isinstance(offsets, list) and len(offsets) == 2 and all(_is_nonneg_int(o) for o in offsets)
        if not offsets_ok:
            problems.append(f"data_offsets {_short(offsets, 80)} is not [begin, end] of non-negative integers")
        elif offsets[1] < offsets[0]:
            problems.append(f"data_offsets {offsets} end before they begin")
            offsets_ok = False
        elif offsets[1] > data_len:
            out_of_range.append({"tensor": _short(name, 100), "data_offsets": offsets, "data_len": data_len})
            offsets_ok = False
        if offsets_ok:
            spans.append((offsets[0], offsets[1], name))
        if not problems:
            numel = math.prod(shape)
            bits = numel * SAFETENSORS_DTYPE_BITS[dtype]
            if bits % 8:
                problems.append(f"{numel} x {dtype} is not a whole number of bytes")
            elif offsets[1] - offsets[0] != bits // 8:
                problems.append(f"holds {offsets[1] - offsets[0]} bytes but shape {shape} of {dtype} needs {bits // 8}")
            else:
                total_params += numel
                dtypes[dtype] += 1
        if problems:
            malformed.append({"tensor": _short(name, 100), "problem": "; ".join(problems)})

    if malformed:
        findings.append(_finding(
            "safetensors tensor entries are malformed", Severity.high,
            f"{len(malformed)} tensor entr{'y is' if len(malformed) == 1 else 'ies are'} inconsistent (unknown dtype, "
            "bad shape or offsets, or a byte size that does not match the shape). A loader may read the wrong bytes, "
            "crash, or be steered into memory errors.", _SAFETENSORS_FIX, base | {"problems": _capped(malformed)}))
    if out_of_range:
        findings.append(_finding(
            "safetensors offsets out of range", Severity.high,
            f"{len(out_of_range)} tensor(s) point past the end of the data section. A loader that does not check "
            "bounds reads memory or file bytes that are not part of the tensor.", _SAFETENSORS_FIX,
            base | {"tensors": _capped(out_of_range)}))
    spans.sort()
    overlaps, furthest = [], None
    for b, e, n in spans:
        if furthest is not None and b < furthest[1] and e > b:
            overlaps.append({"a": _short(furthest[2], 100), "a_offsets": [furthest[0], furthest[1]],
                             "b": _short(n, 100), "b_offsets": [b, e]})
        if furthest is None or e > furthest[1]:
            furthest = (b, e, n)
    if overlaps:
        findings.append(_finding(
            "safetensors tensors overlap", Severity.high,
            f"{len(overlaps)} tensor(s) share bytes with another. Well-formed files never do this; it lets one region of "
            "the file mean two different weights, and the reference loader rejects it.", _SAFETENSORS_FIX,
            base | {"overlaps": _capped(overlaps)}))
    if odd_names:
        findings.append(_finding(
            "safetensors tensor names are unusual", Severity.medium,
            "Some tensor names are empty, extremely long or contain control characters. Such names can hide tensors "
            "from people and tools that display or match them.",
            "Check where the file came from and which tensors it is expected to contain.",
            base | {"names": _capped(odd_names)}))
    summary = _finding(
        "safetensors structure valid", Severity.info,
        f"{len(header)} tensors, {total_params:,} parameters; the header and tensor layout are consistent and every "
        "byte of the data section belongs to a tensor.",
        evidence=base | {"tensor_count": len(header), "total_params": total_params, "dtypes": dict(dtypes),
                         "metadata": dict(list(metadata.items())[:MAX_LISTED]) if metadata else None})
    return findings, summary, spans


def _safetensors_hidden_data(spans: list, data_len: int, f, data_start: int) -> list[Finding]:
    regions, pos = [], 0
    for b, e, _ in spans:  # sorted
        if b > pos:
            regions.append({"kind": "gap", "data_offsets": [pos, b], "bytes": b - pos})
        pos = max(pos, e)
    if data_len > pos:
        regions.append({"kind": "trailing", "data_offsets": [pos, data_len], "bytes": data_len - pos})
    if not regions:
        return []
    for r in regions[:5]:
        try:
            f.seek(data_start + r["data_offsets"][0])
            head = f.read(min(32, r["bytes"]))
            r["head_hex"] = head.hex()
            r["head_looks_like"] = _sniff_bytes(head)
        except OSError:
            pass
    hidden = sum(r["bytes"] for r in regions)
    return [_finding(
        "safetensors file hides data outside its tensors", Severity.medium,
        f"{hidden} byte(s) of the data section belong to no tensor (gaps between tensors or bytes after the last one). "
        "Loaders skip them, so they can smuggle a payload (for example a pickle or a second set of weights) past "
        "reviewers while the file still looks like plain weights.",
        "Re-save the weights with the official safetensors library (which writes no slack) and find out who added "
        "the extra bytes.",
        {"hidden_bytes": hidden, "regions": _capped(regions)})]


def _sniff_bytes(head: bytes) -> str | None:
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith((b"\x7fELF", b"MZ")):
        return "executable"
    if head.startswith(b"#!"):
        return "script"
    return None


