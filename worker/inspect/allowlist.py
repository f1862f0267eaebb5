"""Which pickle globals may be called: allowlist first.

A global is ``safe`` only when it is known to be needed to rebuild weights, estimators or arrays
(grown from real checkpoints, never by shrinking what fails). ``dangerous`` names known code,
file, process and network entry points: it only adds explanation, the allowlist decides.
Everything else is ``unknown``, and an unknown global that is *called* fails the gate.
"""

import re

# --- classification --------------------------------------------------------------------------

SAFE_GLOBALS = frozenset({
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("collections", "Counter"), ("collections", "deque"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"), ("builtins", "range"),
    ("builtins", "bytearray"), ("builtins", "bytes"), ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"),
    ("builtins", "int"), ("builtins", "float"), ("builtins", "str"), ("builtins", "bool"), ("builtins", "object"),
    # pure builtins: they compute from their arguments and call nothing a pickle could choose (fickling treats them so)
    *(("builtins", n) for n in ("len", "abs", "min", "max", "sum", "round", "pow", "divmod", "sorted", "reversed",
                                 "isinstance", "issubclass", "hash", "ord", "chr", "bin", "hex", "oct", "repr", "ascii",
                                 "all", "any", "callable", "enumerate", "zip")),
    ("__builtin__", "set"), ("__builtin__", "frozenset"), ("__builtin__", "object"), ("__builtin__", "slice"),
    ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "timedelta"), ("decimal", "Decimal"), ("uuid", "UUID"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # numpy arrays at pickle protocol 5
    ("argparse", "Namespace"),  # hyper-parameters in Lightning-style checkpoints
    # numpy random state, as scikit-learn estimators carry it (seen in GradientBoosting joblib files); the Cython
    # __pyx_unpickle_* helper checks a layout checksum, then sets fields
    ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random._mt19937", "MT19937"), ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._philox", "Philox"), ("numpy.random._sfc64", "SFC64"), ("numpy.random._generator", "Generator"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"), ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"), ("torch._utils", "_rebuild_nested_tensor"), ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch", "Size"), ("torch", "device"), ("torch", "dtype"),
    ("torch.nn.parameter", "Parameter"), ("joblib.numpy_pickle", "NumpyArrayWrapper"), ("joblib.numpy_pickle", "NDArrayWrapper"),
})
_TORCH_STORAGE = re.compile(r"^(\w+Storage|bfloat16|float\d*|int\d+|uint\d+|bool|complex\d+|half|double|long|short|qint8|quint8)$")
# Classes (not functions) from these packages only rebuild objects; a *function* from them is still unknown.
SAFE_CLASS_PREFIXES = ("torch.nn.modules.", "sklearn.", "numpy.dtypes", "scipy.sparse.", "joblib.numpy_pickle", "xgboost.", "lightgbm.")

DANGEROUS_MODULE_ROOTS = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "sys", "socket", "_socket", "ssl", "shutil",
    "runpy", "importlib", "imp", "zipimport", "pkgutil", "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal",
    "types", "ctypes", "_ctypes", "cffi", "pty", "commands", "code", "codeop", "pdb", "bdb", "timeit", "trace", "profile",
    "cProfile", "webbrowser", "http", "urllib", "urllib2", "urllib3", "requests", "httpx", "ftplib", "smtplib", "telnetlib",
    "asyncio", "multiprocessing", "concurrent", "threading", "_thread", "signal", "tempfile", "pathlib", "io", "_io", "fileinput",
    "distutils", "setuptools", "pip", "platform", "operator", "functools", "inspect", "gc", "builtins_exec", "sqlite3",
    "glob", "venv", "ensurepip", "xmlrpc", "socketserver", "mmap", "resource", "readline", "rlcompleter", "pydoc", "idlelib",
    "site", "sysconfig", "__main__", "jinja2", "mako", "yaml",
})
DANGEROUS_NAMES = frozenset({
    "eval", "exec", "execfile", "compile", "__import__", "getattr", "setattr", "delattr", "globals", "locals", "vars", "open",
    "input", "breakpoint", "system", "popen", "popen2", "popen3", "spawn", "spawnl", "spawnv", "spawnve", "spawnvp", "execv",
    "execve", "execl", "execvp", "fork", "call", "check_call", "check_output", "run", "Popen", "getoutput", "getstatusoutput",
    "load", "loads", "load_inline", "read_pickle", "runstring", "run_path", "run_module", "_run_code", "_run_module_code",
    "import_module", "remove", "unlink", "rmtree", "rmdir", "removedirs", "rename", "replace", "chmod", "chown", "kill", "write",
    "write_text", "write_bytes", "urlopen", "urlretrieve", "create_connection", "connect", "apply", "methodcaller", "attrgetter",
    "itemgetter", "partial", "reduce", "start_new_thread", "Thread", "Process", "exec_module", "get_type_hints", "safe_load_all",
    "unsafe_load", "full_load", "Template", "_load_from_bytes", "load_state_dict_from_url", "download_url_to_file",
})
DANGEROUS_EXACT = frozenset({
    ("builtins", "eval"), ("builtins", "exec"), ("__builtin__", "eval"), ("__builtin__", "exec"),
    ("torch.storage", "_load_from_bytes"), ("torch.serialization", "load"), ("torch", "load"), ("numpy", "load"),
    ("joblib", "load"), ("pandas", "read_pickle"), ("numpy.testing._private.utils", "runstring"),
})


def classify(module: str, name: str) -> str:
    """'safe', 'dangerous' or 'unknown'."""
    if (module, name) in SAFE_GLOBALS:
        return "safe"
    if module == "torch" and _TORCH_STORAGE.match(name):
        return "safe"
    root = module.split(".", 1)[0]
    leaf = name.rsplit(".", 1)[-1]
    if (module, name) in DANGEROUS_EXACT or root in DANGEROUS_MODULE_ROOTS or leaf in DANGEROUS_NAMES or name in DANGEROUS_NAMES:
        return "dangerous"
    if root in ("builtins", "__builtin__"):
        return "unknown"  # every builtin not allowlisted (e.g. 'getattr' is dangerous above, others still unknown)
    if name.startswith("__pyx_unpickle_") and "." not in name and (module + ".").startswith(SAFE_CLASS_PREFIXES):
        return "safe"  # Cython's generated unpickler of one of the package's own classes (checksum, then set state)
    if "." in name or name.startswith("__"):
        return "unknown"  # dotted or dunder names reach into attributes: never allowlisted by prefix
    if leaf[:1].isupper() and (module + ".").startswith(SAFE_CLASS_PREFIXES):
        return "safe"
    return "unknown"


