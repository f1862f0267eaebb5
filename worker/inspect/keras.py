"""Keras .keras archives and legacy .h5 files: configs (Lambda layers, foreign modules, file references), archive
members and HDF5 link tables, read with zipfile, json and h5py attributes; never loaded."""

import json
import re
import zipfile
from collections import Counter
from pathlib import Path

from worker.findings import Finding, Severity
from worker.inspect.archives import member_escapes
from worker.inspect.common import (
    _DO_NOT_LOAD,
    _URL,
    _WIN_ABS,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    MAX_EMBEDDED_H5_BYTES,
    MAX_HDF5_OBJECTS,
    MAX_JSON_BYTES,
    MAX_ZIP_MEMBERS,
    _capped,
    _finding,
    _reject_constant,
    _short,
)
from worker.inspect.safetensors import _sniff_bytes

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


