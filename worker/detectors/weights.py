"""Supply chain / backdoor: inspect the structure of model weight files without running them.

Pure functions, one per format. Nothing here executes or deserializes the scanned bytes with a
code-running loader: safetensors headers are parsed by hand, .keras archives with zipfile + json,
legacy .h5 files through h5py attributes and link metadata, ONNX with the protobuf parser only
(external data is never loaded). Every function bounds what it reads and turns a malformed file
into a finding instead of an exception.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

from worker.containers import member_escapes
from worker.findings import Finding, ScanInputs, Severity
from worker.formats import sniff
from worker.registry import registry

MAX_JSON_BYTES = 100 * 1024 * 1024  # refuse JSON headers/configs larger than this
MAX_ZIP_MEMBERS = 10_000
MAX_CONFIG_NODES = 2_000_000  # dicts/lists/values visited in one Keras config
MAX_CONFIG_DEPTH = 512
MAX_LISTED = 50  # items listed in one finding's evidence
MAX_HDF5_OBJECTS = 100_000
MAX_ONNX_BYTES = 2 * 1024 * 1024 * 1024  # protobuf's own limit
MAX_ONNX_NODES = 5_000_000
MAX_EMBEDDED_H5_BYTES = 512 * 1024 * 1024  # inspect model.weights.h5 inside a .keras up to this size

_SCORE = {Severity.critical: 1.0, Severity.high: 0.9, Severity.medium: 0.6, Severity.low: 0.3, Severity.info: 0.0}


def _finding(title: str, severity: Severity, explanation: str, remediation: str = "", evidence: dict | None = None,
             score: float | None = None) -> Finding:
    return Finding(title=title, severity=severity, score=_SCORE[severity] if score is None else score,
                   explanation=explanation, remediation=remediation, evidence=evidence or {})


def _capped(items: list, limit: int = MAX_LISTED) -> dict:
    return {"items": items[:limit], "total": len(items), "truncated": len(items) > limit}


def _short(value, limit: int = 200) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


_DO_NOT_LOAD = "Do not load this file. Obtain the model again from a trusted publisher and compare its hash with theirs."


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


def _json_pairs_with_duplicates(duplicates: list):
    def hook(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                duplicates.append(k)
            seen[k] = v
        return seen
    return hook


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


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


# --------------------------------------------------------------------------------------------
# Keras config (shared by .keras and legacy .h5)
# --------------------------------------------------------------------------------------------

TRUSTED_KERAS_PACKAGES = frozenset({"keras", "keras_hub", "keras_nlp", "keras_cv", "keras_rs", "tf_keras"})
# Importing anything from these (or instantiating one of their classes) gives a config code execution.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "socket", "importlib", "runpy",
    "pty", "ctypes", "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "code", "codeop",
    "webbrowser", "requests", "urllib", "urllib2", "urllib3", "http", "httpx", "ftplib", "telnetlib", "smtplib",
    "pathlib", "io", "multiprocessing", "asyncio", "signal", "types", "inspect", "commands", "tempfile", "glob",
    "zipimport", "pkgutil", "platform", "operator", "functools", "numpy.lib.npyio", "tensorflow.io",
    "tensorflow.python.lib.io", "tensorflow.python.ops.gen_io_ops", "tensorflow.python.ops.script_ops",
})
# Function references resolved by name at load time that reach outside the model.
DANGEROUS_FUNCTIONS = frozenset({
    "system", "popen", "Popen", "exec", "eval", "execfile", "compile", "__import__", "open", "getattr", "setattr",
    "delattr", "spawnl", "spawnv", "execv", "execve", "check_output", "check_call", "call", "run", "get_file",
    "enable_unsafe_deserialization", "load_model", "load_weights", "write_file", "read_file", "py_function",
    "numpy_function", "py_func", "load_library", "load_op_library", "remove", "rmtree", "unlink",
})
_KERAS_SAFE_BUILTIN_CLASSES = frozenset({"function"})  # Keras writes module 'builtins' for plain function refs
OP_LAMBDA_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda"})
_FILE_KEYS = frozenset({
    "filepath", "file_path", "path", "filename", "file", "fname", "vocabulary", "vocabulary_file", "vocab_file",
    "vocabulary_path", "vocab", "merges", "merges_file", "proto", "spm_proto", "url", "uri", "handle", "origin",
    "module_url", "model_url", "location", "cache_dir", "cache_subdir", "idf_weights", "data_path", "weights_path",
})
_OPAQUE_CLASSES = frozenset({"__lambda__", "__bytes__", "__numpy__", "__tensor__"})  # values are data, not references
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]{1,15}://|^file:", re.ASCII)
_WIN_ABS = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")
_DOTDOT = re.compile(r"(^|[\\/])\.\.([\\/]|$)")


def _module_root(module: str) -> str:
    return module.split(".", 1)[0]


def _is_dangerous_module(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in DANGEROUS_MODULES)


def _path_kind(value: str, key: str | None) -> str | None:
    """'url', 'escaping' (absolute / ~ / ..), 'relative' (a file name under a file-ish key) or None."""
    v = value.strip()
    if not v or len(v) > 4096:
        return None
    if _URL.match(v):
        return "url"
    if v.startswith(("/", "~")) or _WIN_ABS.match(v) or _DOTDOT.search(v):
        if v.startswith("/") and (len(v) == 1 or v[1] in " \t/"):
            return None if key not in _FILE_KEYS else "escaping"
        return "escaping"
    if key in _FILE_KEYS and (("/" in v or "\\" in v) or re.search(r"\.[A-Za-z0-9]{1,8}$", v)):
        return "relative"
    return None


def _lambda_marshalled(cfg: dict) -> bool:
    fn = cfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
        return True
    if cfg.get("function_type") == "lambda":
        return True
    if isinstance(fn, list) and fn and isinstance(fn[0], str) and len(fn[0]) > 16:
        return True  # tf.keras legacy: (base64 bytecode, defaults, closure)
    return False


def _lambda_function_ref(cfg: dict) -> str | None:
    fn = cfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") != "__lambda__":
        return f"{fn.get('module')}.{fn.get('config')}"
    if isinstance(fn, str) and cfg.get("function_type") == "function":
        return f"{cfg.get('module')}.{fn}"
    return None


def keras_config_findings(config: dict) -> list[Finding]:
    """Walk a Keras model config (any nesting) and flag code-bearing layers, foreign modules and file references.

    Always ends with one info finding summarising the model (layer count, classes used); a clean config
    yields only that.
    """
    if not isinstance(config, dict):
        return [_finding("Keras model config is not a JSON object", Severity.high,
                         f"The model config is a {type(config).__name__}; a Keras model config is an object.",
                         _DO_NOT_LOAD)]
    lambdas, code_blobs, op_lambdas, custom, dangerous, dangerous_fns = [], [], [], [], [], []
    refs = {"url": [], "escaping": [], "relative": []}
    classes = Counter()
    layer_count = 0
    visited = 0
    truncated = None
    # (value, json path, key it sits under, element of a `layers` list?, depth, inside Lambda code?)
    stack = [(config, "$", None, False, 0, False)]
    while stack:
        obj, where, key, is_layer, depth, in_code = stack.pop()
        visited += 1
        if visited > MAX_CONFIG_NODES or depth > MAX_CONFIG_DEPTH:
            truncated = "size" if visited > MAX_CONFIG_NODES else "depth"
            break
        if isinstance(obj, str):
            kind = None if in_code else _path_kind(obj, key)
            if kind:
                refs[kind].append({"path": where, "key": key, "value": _short(obj)})
            continue
        if isinstance(obj, list):
            for i in range(len(obj) - 1, -1, -1):
                stack.append((obj[i], f"{where}[{i}]", key, key == "layers", depth + 1, in_code))
            continue
        if not isinstance(obj, dict):
            continue
        class_name = obj.get("class_name")
        if is_layer:
            layer_count += 1
        if isinstance(class_name, str):
            classes[class_name] += 1
            inner = obj.get("config")
            name = (inner.get("name") if isinstance(inner, dict) else None) or obj.get("name") or where
            module, registered = obj.get("module"), obj.get("registered_name")
            if class_name == "Lambda":
                cfg = inner if isinstance(inner, dict) else {}
                lambdas.append({"layer": _short(name, 100), "path": where, "marshalled_code": _lambda_marshalled(cfg),
                                "function_ref": _lambda_function_ref(cfg),
                                "function_module": _short(cfg.get("module"), 100) if cfg.get("module") else None})
            elif class_name == "__lambda__" and not in_code:  # in_code: the Lambda layer's own function
                code_blobs.append({"path": where})
            elif class_name in OP_LAMBDA_CLASSES:
                fn = inner.get("function") if isinstance(inner, dict) else None
                op_lambdas.append({"layer": _short(name, 100), "class_name": class_name, "function": _short(fn, 100) if fn else None})
            fn_name = inner if isinstance(inner, str) else None
            entry = {"path": where, "module": _short(module, 100) if module else None, "class_name": _short(class_name, 100),
                     "registered_name": _short(registered, 100) if registered else None}
            if fn_name is not None:
                entry["function"] = _short(fn_name, 100)
            if isinstance(module, str) and module:
                if _module_root(module) in ("builtins", "__builtin__") and class_name in _KERAS_SAFE_BUILTIN_CLASSES:
                    if fn_name in DANGEROUS_FUNCTIONS:
                        dangerous_fns.append(entry)
                elif _is_dangerous_module(module):
                    dangerous.append(entry)
                elif _module_root(module) not in TRUSTED_KERAS_PACKAGES:
                    custom.append(entry)
                elif class_name == "function" and fn_name in DANGEROUS_FUNCTIONS:
                    dangerous_fns.append(entry)
            elif class_name == "function" and fn_name in DANGEROUS_FUNCTIONS:
                dangerous_fns.append(entry)
            if entry not in custom and entry not in dangerous:
                if isinstance(registered, str) and ">" in registered:
                    if registered.split(">", 1)[0] not in TRUSTED_KERAS_PACKAGES:
                        custom.append(entry)
                elif ">" in class_name:
                    custom.append(entry)  # tf.keras writes registered custom classes as 'Package>Name'
            if class_name in _OPAQUE_CLASSES:
                continue  # bytecode / raw bytes / arrays: data, nothing to resolve inside
        for k in reversed(list(obj)):
            v = obj[k]
            if isinstance(v, (dict, list, str)):
                # A Lambda's `function` holds (base64) bytecode or a function reference, not file paths.
                code = in_code or (class_name is None and key == "config" and k == "function")
                stack.append((v, f"{where}.{k}", k, False, depth + 1, code))

    findings: list[Finding] = []
    for lam in lambdas:
        code = "marshalled Python bytecode" if lam["marshalled_code"] else "a Python function reference"
        findings.append(_finding(
            f"Lambda layer '{lam['layer']}' carries executable Python code", Severity.critical,
            f"The layer '{lam['layer']}' is a Keras Lambda layer holding {code}. Loading the model with "
            "safe_mode=False (or with older Keras/tf.keras versions) runs that code on the loading machine, and a Lambda "
            "can also hide input-triggered backdoor logic that weight inspection never sees.",
            "Do not load this model with safe_mode=False. Ask the publisher to replace the Lambda with a built-in or "
            "reviewed, registered custom layer; if you must use it, review the decompiled code in an isolated sandbox first.",
            {"layer": lam["layer"], "path": lam["path"], "marshalled_code": lam["marshalled_code"],
             "function_ref": lam["function_ref"], "function_module": lam["function_module"]}))
    if code_blobs:
        findings.append(_finding(
            "Marshalled Python bytecode in model config", Severity.critical,
            f"{len(code_blobs)} value(s) outside a Lambda layer (for example an activation) are serialized Python "
            "lambdas. Keras turns them back into code when the model is loaded with safe_mode=False.",
            "Do not load this model with safe_mode=False; ask the publisher to use built-in functions.",
            {"locations": _capped(code_blobs)}))
    if dangerous:
        findings.append(_finding(
            "Model config imports a dangerous Python module", Severity.critical,
            "The config asks Keras to import objects from modules that run commands, touch files or the network "
            f"({', '.join(sorted({e['module'] for e in dangerous})[:10])}). Deserializing it can execute code even "
            "without a Lambda layer (as in CVE-2025-1550).",
            _DO_NOT_LOAD + " Treat the source as compromised.", {"objects": _capped(dangerous)}))
    if dangerous_fns:
        findings.append(_finding(
            "Model config calls a dangerous function", Severity.critical,
            "The config references functions that download files, read or write the file system, run commands or "
            f"turn off Keras' safe mode ({', '.join(sorted({e.get('function') or '' for e in dangerous_fns})[:10])}). "
            "Such references have been used to bypass safe_mode (e.g. keras.utils.get_file, "
            "keras.config.enable_unsafe_deserialization).",
            _DO_NOT_LOAD + " Treat the source as compromised.", {"objects": _capped(dangerous_fns)}))
    if custom:
        findings.append(_finding(
            "Model config uses custom (non-Keras) objects", Severity.medium,
            f"{len(custom)} object(s) come from modules outside Keras or are registered custom classes "
            f"({', '.join(sorted({str(e['module'] or e['registered_name'] or e['class_name']) for e in custom})[:10])}). "
            "Loading the model imports and runs that code, which this scan cannot see; it is also where a backdoor "
            "can be implemented.",
            "Load the model only with custom objects you have reviewed and pinned, from a source you trust.",
            {"objects": _capped(custom)}))
    if op_lambdas:
        findings.append(_finding(
            "TFOpLambda layers wrap raw TensorFlow ops", Severity.medium,
            f"{len(op_lambdas)} layer(s) are TFOpLambda/SlicingOpLambda wrappers around arbitrary TensorFlow functions "
            "named in the config. They run no Python bytecode, but can call TensorFlow ops with side effects and hide "
            "logic that is hard to review.",
            "Review the wrapped functions listed in the evidence; prefer models built from standard Keras layers.",
            {"layers": _capped(op_lambdas)}))
    if refs["url"] or refs["escaping"]:
        items = refs["url"] + refs["escaping"]
        findings.append(_finding(
            "Model config references remote URLs or paths outside the model", Severity.high,
            f"{len(items)} config value(s) are URLs or absolute/parent-directory paths. Building the model would fetch "
            "remote content (for example a TF-Hub module) or read files from the loading machine (for example a "
            "vocabulary file), which can leak data or pull in unreviewed code and weights.",
            "Do not load the model on a machine with sensitive files or network access; ask the publisher to embed "
            "the assets in the archive.", {"references": _capped(items)}))
    if refs["relative"]:
        findings.append(_finding(
            "Model config references external files", Severity.medium,
            f"{len(refs['relative'])} config value(s) name files that are not part of the model. Whatever sits at "
            "that path when the model is loaded becomes part of the model.",
            "Make sure the referenced files come from the same trusted source, or re-export the model with the assets "
            "embedded.", {"references": _capped(refs["relative"])}))
    if truncated:
        findings.append(_finding(
            "Keras model config could not be fully inspected", Severity.high,
            f"The config is too {'large' if truncated == 'size' else 'deeply nested'} to inspect completely "
            f"(limits: {MAX_CONFIG_NODES:,} values, depth {MAX_CONFIG_DEPTH}); the unchecked part may hide code.",
            "Treat the model as unverified; ask the publisher for a simpler export.", {"limit": truncated}))
    top = config.get("class_name")
    summary = _finding(
        f"Keras model config: {layer_count} layers",
        Severity.info,
        f"Model class {_short(top, 60)!s} with {layer_count} layers using {len(classes)} classes"
        + (". No code-bearing layers, foreign modules or file references found." if not findings else "."),
        evidence={"model_class": _short(top, 100) if top else None, "layer_count": layer_count,
                  "classes": dict(sorted(classes.items())[:200]), "class_count": len(classes)})
    findings.append(summary)
    return findings


def _parse_config_json(raw: bytes | str, what: str) -> tuple[dict | None, Finding | None]:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        config = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, _finding(f"{what} is not valid JSON", Severity.high,
                              f"The {what} does not parse ({_short(str(exc))}); the model is corrupt or was crafted to "
                              "confuse parsers.", _DO_NOT_LOAD)
    if not isinstance(config, dict):
        return None, _finding(f"{what} is not valid JSON", Severity.high,
                              f"The {what} is a JSON {type(config).__name__}, not an object.", _DO_NOT_LOAD)
    return config, None


# --------------------------------------------------------------------------------------------
# .keras archives
# --------------------------------------------------------------------------------------------

KERAS_EXPECTED_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5", "model.weights.npz"})
_EXECUTABLE_EXTS = (".pkl", ".pickle", ".pck", ".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib", ".exe", ".sh",
                    ".bat", ".cmd", ".ps1", ".pt", ".pth", ".joblib", ".dill", ".ckpt", ".bin", ".jar", ".js")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes | None:
    """Read at most ``limit`` bytes of a member (None when it is larger; the declared size can lie)."""
    if info.file_size > limit:
        return None
    with zf.open(info) as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


def check_keras_archive(path) -> list[Finding]:
    """Inspect a Keras v3 .keras zip: its member list and config.json (never loading the model)."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return [_finding("Keras archive is not a readable zip", Severity.high,
                         f"The file cannot be read as a zip archive ({_short(str(exc))}). It is corrupt, truncated, or not "
                         "a .keras model.", _DO_NOT_LOAD)]
    findings: list[Finding] = []
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            return [_finding("Keras archive has too many members", Severity.high,
                             f"The archive lists {len(infos)} members (limit {MAX_ZIP_MEMBERS}); a Keras model has a handful.",
                             _DO_NOT_LOAD, {"member_count": len(infos)})]
        names = [i.filename for i in infos]
        unsafe = [n for n in names if member_escapes(n)]
        if unsafe:
            findings.append(_finding(
                "Keras archive member escapes the archive (zip-slip)", Severity.high,
                "Some member names are absolute or climb out of the extraction folder with '..'. Tools that extract the "
                "archive (Keras itself extracts assets) can be tricked into overwriting files elsewhere on disk.",
                _DO_NOT_LOAD + " Do not unzip it.", {"members": _capped([_short(n) for n in unsafe])}))
        dupes = sorted(n for n, c in Counter(names).items() if c > 1)
        if dupes:
            findings.append(_finding(
                "Keras archive has duplicate member names", Severity.high,
                "The same name appears more than once; different zip readers pick different copies, so what was "
                "reviewed may not be what gets loaded.", _DO_NOT_LOAD, {"members": _capped(dupes)}))
        executable, extra = [], []
        for info in infos:
            n = info.filename
            if n in KERAS_EXPECTED_MEMBERS or n in unsafe or info.is_dir():
                continue
            head = b""
            try:
                with zf.open(info) as fh:
                    head = fh.read(16)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError):
                pass
            looks = _sniff_bytes(head)
            entry = {"member": _short(n), "size": info.file_size, "looks_like": looks}
            if n.lower().endswith(_EXECUTABLE_EXTS) or looks in ("pickle", "executable", "script"):
                executable.append(entry)
            elif not n.startswith("assets/"):
                extra.append(entry)
        if executable:
            findings.append(_finding(
                "Keras archive contains pickle or code members", Severity.high,
                "The archive carries pickle, Python or executable files that Keras never writes. They may be loaded by "
                "custom code paired with the model, or be a payload waiting for a second-stage loader.",
                _DO_NOT_LOAD + " Do not unpickle or run the extra members.", {"members": _capped(executable)}))
        if extra:
            findings.append(_finding(
                "Keras archive contains unexpected members", Severity.medium,
                "The archive holds files besides config.json, metadata.json, the weights and assets/. Keras ignores "
                "them, which makes them a place to smuggle data alongside a model that still loads.",
                "Find out why the files are there; re-export the model with model.save() to drop them.",
                {"members": _capped(extra)}))

        info = next((i for i in infos if i.filename == "config.json"), None)
        if info is None:
            findings.append(_finding("Keras archive is missing config.json", Severity.high,
                                     "Every .keras archive has a config.json describing the model; this one does not, "
                                     "so it is not a genuine Keras model.", _DO_NOT_LOAD, {"members": _capped(names)}))
            return findings
        try:
            raw = _read_member(zf, info, MAX_JSON_BYTES)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError) as exc:
            findings.append(_finding("Keras config.json could not be read", Severity.high,
                                     f"Decompressing config.json failed ({_short(str(exc))}).", _DO_NOT_LOAD))
            return findings
        if raw is None:
            findings.append(_finding("Keras config.json is too large", Severity.high,
                                     f"config.json is larger than the {MAX_JSON_BYTES // (1024 * 1024)} MB poisonscan reads; "
                                     "a model config is normally kilobytes.", _DO_NOT_LOAD,
                                     {"declared_size": info.file_size}))
            return findings
        config, bad = _parse_config_json(raw, "Keras config.json")
        if bad:
            return findings + [bad]
        metadata = None
        meta_info = next((i for i in infos if i.filename == "metadata.json"), None)
        if meta_info is not None:
            try:
                meta_raw = _read_member(zf, meta_info, 1024 * 1024)
                metadata = json.loads(meta_raw) if meta_raw else None
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError, RecursionError):
                metadata = None
        h5_refs = _embedded_h5_findings(zf, infos)
        findings += h5_refs
        config_findings = keras_config_findings(config)
        summary = config_findings[-1]
        summary.evidence |= {"members": _capped(names, 20),
                             "keras_version": _short(metadata.get("keras_version"), 40) if isinstance(metadata, dict) and metadata.get("keras_version") else None}
        # Put archive-level problems before the summary so the summary stays last.
        return config_findings[:-1] + findings + [summary]


def _embedded_h5_findings(zf: zipfile.ZipFile, infos: list) -> list[Finding]:
    info = next((i for i in infos if i.filename == "model.weights.h5"), None)
    if info is None or info.file_size > MAX_EMBEDDED_H5_BYTES:
        return []
    try:
        import h5py

        with zf.open(info) as fh:
            head = fh.read(8)
        if head != b"\x89HDF\r\n\x1a\n":
            return [_finding("Keras weights file is not HDF5", Severity.medium,
                             "model.weights.h5 does not start with the HDF5 signature; the archive was modified or "
                             "built by something other than Keras.", "Re-export the model with model.save().",
                             {"head_hex": head.hex()})]
        with zf.open(info) as fh, h5py.File(fh, "r") as h5:
            return _hdf5_external_findings(h5, "model.weights.h5")
    except Exception as exc:  # noqa: BLE001 - h5py raises many types on corrupt input
        return [_finding("Keras weights file could not be read", Severity.medium,
                         f"model.weights.h5 inside the archive could not be parsed as HDF5 ({exc.__class__.__name__}).",
                         "Re-export the model with model.save().", {"error": _short(str(exc))})]


# --------------------------------------------------------------------------------------------
# legacy .h5
# --------------------------------------------------------------------------------------------

def _hdf5_external_findings(h5, label: str) -> list[Finding]:
    """Flag HDF5 external links, external raw storage and virtual datasets (all point at other files)."""
    import h5py

    refs: list[dict] = []
    count = [0]

    def visit(name, link):
        count[0] += 1
        if count[0] > MAX_HDF5_OBJECTS:
            return True  # stop
        if isinstance(link, h5py.ExternalLink):
            refs.append({"object": _short(name), "kind": "external_link", "file": _short(link.filename), "target": _short(link.path)})
            return None
        if isinstance(link, h5py.HardLink):
            try:
                obj = h5.get(name)
            except Exception:  # noqa: BLE001
                return None
            if isinstance(obj, h5py.Dataset):
                try:
                    if obj.external:
                        refs.append({"object": _short(name), "kind": "external_storage",
                                     "files": [_short(e[0]) for e in obj.external][:10]})
                    if obj.is_virtual:
                        refs.append({"object": _short(name), "kind": "virtual_dataset",
                                     "files": sorted({_short(s.file_name) for s in obj.virtual_sources()})[:10]})
                except Exception:  # noqa: BLE001
                    pass
        return None

    h5.visititems_links(visit)
    if not refs:
        return []
    return [_finding(
        "HDF5 file references external files", Severity.high,
        f"{label} contains {len(refs)} link(s) or dataset(s) whose data lives in other files. Opening the model makes "
        "the HDF5 library read those files from the loading machine, which can leak local data into the model or "
        "swap weights at load time.",
        _DO_NOT_LOAD, {"file": label, "references": _capped(refs)})]


def check_keras_h5(path) -> list[Finding]:
    """Inspect a legacy Keras .h5 model through its attributes (model_config / training_config) and link table."""
    path = Path(path)
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            findings: list[Finding] = []
            configs = {}
            for attr in ("model_config", "training_config"):
                if attr not in h5.attrs:
                    continue
                aid = h5.attrs.get_id(attr)
                if aid.get_storage_size() > MAX_JSON_BYTES:
                    findings.append(_finding(f"HDF5 {attr} is too large", Severity.high,
                                             f"The {attr} attribute is larger than {MAX_JSON_BYTES // (1024 * 1024)} MB; "
                                             "a model config is normally kilobytes.", _DO_NOT_LOAD,
                                             {"size": aid.get_storage_size()}))
                    continue
                value = h5.attrs[attr]
                if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
                    value = value.tolist()
                if not isinstance(value, (bytes, str)):
                    findings.append(_finding(f"HDF5 {attr} is not valid JSON", Severity.high,
                                             f"The {attr} attribute is a {type(value).__name__}, not a JSON string.",
                                             _DO_NOT_LOAD))
                    continue
                config, bad = _parse_config_json(value, f"HDF5 {attr}")
                if bad:
                    findings.append(bad)
                else:
                    configs[attr] = config
            try:
                findings += _hdf5_external_findings(h5, path.name)
            except Exception as exc:  # noqa: BLE001
                findings.append(_finding("HDF5 link table could not be read", Severity.medium,
                                         f"Walking the file's objects failed ({exc.__class__.__name__}); it may be corrupt.",
                                         "Re-export the model from its source.", {"error": _short(str(exc))}))
            keras_version = h5.attrs.get("keras_version")
            backend = h5.attrs.get("backend")
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/ValueError/RuntimeError on corrupt files
        return [_finding("HDF5 file could not be read", Severity.high,
                         f"The file cannot be opened as HDF5 ({exc.__class__.__name__}: {_short(str(exc))}). It is "
                         "corrupt, truncated or not an HDF5 model.", _DO_NOT_LOAD)]

    def _text(v):
        return _short(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v), 40) if v is not None else None

    if "model_config" not in configs:
        if not any(f.title.startswith("HDF5 model_config") for f in findings):
            findings.append(_finding(
                "HDF5 file has no model config (weights only)", Severity.info,
                "The file holds no model_config attribute, so it carries weights only and no architecture or code; "
                "only its link table was checked.",
                evidence={"keras_version": _text(keras_version), "backend": _text(backend)}))
        return findings
    out = keras_config_findings(configs["model_config"])
    if "training_config" in configs:
        training = [f for f in keras_config_findings(configs["training_config"])[:-1]]
        for f in training:
            f.evidence["in"] = "training_config"
        out = out[:-1] + training + [out[-1]]
    summary = out[-1]
    summary.evidence |= {"keras_version": _text(keras_version), "backend": _text(backend)}
    return out[:-1] + findings + [summary]


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

STANDARD_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})


def _location_escapes(location: str) -> bool:
    loc = location.replace("\\", "/")
    return (not loc or loc.startswith(("/", "~")) or bool(_WIN_ABS.match(location)) or bool(_URL.match(location))
            or ".." in PurePosixPath(loc).parts or "\x00" in loc or os.path.isabs(location))


def check_onnx(path) -> list[Finding]:
    """Parse an ONNX ModelProto (external data never loaded) and flag escaping external data and custom ops."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return [_finding("ONNX model could not be parsed", Severity.high, f"The file cannot be read ({exc}).", _DO_NOT_LOAD)]
    if size > MAX_ONNX_BYTES:
        return [_finding("ONNX model could not be parsed", Severity.high,
                         f"The file is {size} bytes, beyond the 2 GiB protobuf limit; a valid ONNX model keeps large "
                         "weights in external data files.", _DO_NOT_LOAD, {"file_size": size})]
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, RuntimeError, ValueError...
        return [_finding("ONNX model could not be parsed", Severity.high,
                         f"The file does not parse as an ONNX protobuf ({exc.__class__.__name__}: {_short(str(exc))}). "
                         "It is corrupt, truncated or not an ONNX model.", _DO_NOT_LOAD, {"file_size": size})]
    if model.ir_version <= 0 or not model.HasField("graph"):
        return [_finding("ONNX model could not be parsed", Severity.high,
                         "The bytes parse as protobuf but carry no IR version or graph, so this is not a usable ONNX "
                         "model (protobuf accepts many arbitrary byte strings).", _DO_NOT_LOAD,
                         {"file_size": size, "ir_version": model.ir_version})]

    from onnx import AttributeProto, TensorProto

    local_functions = {(fn.domain, fn.name) for fn in model.functions}
    external, escaping, custom_ops = [], [], Counter()
    node_count = 0
    truncated = False

    def tensor(t, where):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            entry = {k.key: _short(k.value) for k in t.external_data}
            entry = {"tensor": _short(t.name, 100), "where": where, **{k: entry[k] for k in ("location", "offset", "length") if k in entry}}
            loc = next((k.value for k in t.external_data if k.key == "location"), "")
            (escaping if _location_escapes(loc) else external).append(entry)

    # Iterative walk over the main graph, every subgraph and every function body.
    graphs = [(model.graph, "graph")] + [(fn, f"function {fn.domain}:{fn.name}") for fn in model.functions]
    while graphs:
        g, where = graphs.pop()
        for t in getattr(g, "initializer", ()):
            tensor(t, f"{where} initializer")
        for st in getattr(g, "sparse_initializer", ()):
            tensor(st.values, f"{where} sparse initializer")
            tensor(st.indices, f"{where} sparse initializer")
        for node in g.node:
            node_count += 1
            if node_count > MAX_ONNX_NODES:
                truncated = True
                graphs.clear()
                break
            if node.domain not in STANDARD_ONNX_DOMAINS and (node.domain, node.op_type) not in local_functions:
                custom_ops[(node.domain, node.op_type)] += 1
            for a in node.attribute:
                nw = f"{where} node {_short(node.name or node.op_type, 60)}"
                if a.type == AttributeProto.TENSOR:
                    tensor(a.t, nw)
                elif a.type == AttributeProto.TENSORS:
                    for t in a.tensors:
                        tensor(t, nw)
                elif a.type == AttributeProto.SPARSE_TENSOR:
                    tensor(a.sparse_tensor.values, nw)
                    tensor(a.sparse_tensor.indices, nw)
                elif a.type == AttributeProto.GRAPH:
                    graphs.append((a.g, f"{nw}.{a.name}"))
                elif a.type == AttributeProto.GRAPHS:
                    graphs.extend((sg, f"{nw}.{a.name}[{i}]") for i, sg in enumerate(a.graphs))

    findings: list[Finding] = []
    if escaping:
        findings.append(_finding(
            "ONNX external data escapes the model folder", Severity.critical,
            f"{len(escaping)} tensor(s) load their bytes from an absolute path, a URL or a path that climbs out of the "
            "model's folder with '..'. A runtime loading this model reads arbitrary files from the host (for example "
            "/etc/passwd or credentials) into the model, where they can be exfiltrated through its outputs.",
            _DO_NOT_LOAD + " Never load it with external data enabled.", {"tensors": _capped(escaping)}))
    if external:
        findings.append(_finding(
            "ONNX model references external data files", Severity.low,
            f"{len(external)} tensor(s) keep their bytes in files next to the model. Those files were not scanned and "
            "must come from the same trusted source.",
            "Scan and hash the external data files along with the model.",
            {"tensors": _capped(external), "files": sorted({e.get("location", "") for e in external})[:MAX_LISTED]}))
    if custom_ops:
        ops = [{"domain": d, "op_type": o, "count": c} for (d, o), c in sorted(custom_ops.items())]
        findings.append(_finding(
            "ONNX model uses custom operator domains", Severity.medium,
            f"Nodes use operators from non-standard domains ({', '.join(sorted({d for d, _ in custom_ops})[:10])}). "
            "Running them needs a native plugin library (or a runtime's contrib ops) whose code this scan cannot "
            "inspect; a custom op can implement anything, including a backdoor.",
            "Confirm each domain is expected (e.g. com.microsoft contrib ops from ONNX Runtime) and load custom-op "
            "libraries only from trusted, pinned sources.", {"ops": _capped(ops)}))
    custom_fns = [{"domain": fn.domain, "name": fn.name, "nodes": len(fn.node)} for fn in model.functions
                  if fn.domain not in STANDARD_ONNX_DOMAINS]
    if custom_fns:
        findings.append(_finding(
            "ONNX model defines functions in custom domains", Severity.medium,
            f"The model defines {len(custom_fns)} function(s) in non-standard domains. They are built from ONNX ops "
            "(checked above) but can re-define what an op name means inside this model, which hides logic from "
            "reviewers.", "Review the function bodies (for example with Netron) before deploying.",
            {"functions": _capped(custom_fns)}))
    if truncated:
        findings.append(_finding(
            "ONNX model could not be fully inspected", Severity.high,
            f"The model has more than {MAX_ONNX_NODES:,} nodes; the rest were not checked.",
            "Treat the model as unverified.", {"node_limit": MAX_ONNX_NODES}))
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    findings.append(_finding(
        f"ONNX model: {node_count} nodes", Severity.info,
        f"IR version {model.ir_version}, {node_count} nodes, {len(model.graph.initializer)} initializers, "
        f"{len(model.functions)} local functions"
        + (". No escaping external data or custom operators found." if not findings else "."),
        evidence={"ir_version": model.ir_version, "producer": _short(model.producer_name, 100),
                  "producer_version": _short(model.producer_version, 40), "opsets": dict(list(opsets.items())[:MAX_LISTED]),
                  "node_count": node_count, "initializers": len(model.graph.initializer),
                  "local_functions": len(model.functions)}))
    return findings


_CHECKS_BY_KIND = {"safetensors": check_safetensors, "keras": check_keras_archive, "hdf5": check_keras_h5, "onnx": check_onnx}


@registry.register(name="model_structure", layer="supply_chain", technique="AML.T0010", needs=("model",))
def model_structure(inputs: ScanInputs, config: dict) -> list[Finding]:
    """Checks the model's own format statically: Keras configs (Lambda layers, custom modules, file references),
    safetensors headers (offsets, overlaps, hidden data), ONNX (external data paths, custom op domains)."""
    kind = sniff(inputs.model.path)
    check = _CHECKS_BY_KIND.get(kind)
    if check is None:
        return []
    findings = check(inputs.model.path)
    for f in findings:  # code that runs on load can also plant a backdoor
        if f.severity == Severity.critical and f.technique is None:
            f.evidence.setdefault("also", "AML.T0018 Backdoor ML Model")
    return findings
