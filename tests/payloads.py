"""Malicious and benign model files for the supply-chain tests. Each malicious file, if it were ever
loaded, would create the canary file; the tests assert it never appears. Nothing here loads them."""

import gzip
import io
import os
import pickle
import sys
import tarfile
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np


class Payload:
    """Unpickling this runs os.system(<touch canary>)."""

    def __init__(self, canary: Path) -> None:
        self.cmd = f"touch {canary}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


def global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol 0 text: import module.name and call it with one string argument."""
    return f"c{module}\n{name}\n(S'{arg}'\ntR.".encode()


def stack_global_via_memo(module: str, name: str, arg: str) -> bytes:
    """Protocol 4 with the STACK_GLOBAL operands memoized and fetched back (BINGET)."""
    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw

    return (b"\x80\x04" + s(module) + b"\x94" + s(name) + b"\x94" + b"h\x00h\x01" + b"\x93" + s(arg) + b"\x85R.")


def dynamic_global(canary: Path) -> bytes:
    """STACK_GLOBAL whose module name is computed at load time (''.join(['o', 's'])), hiding 'os' from string scans."""
    def s(text: str) -> bytes:
        raw = text.encode()
        return b"\x8c" + bytes([len(raw)]) + raw

    join = b"\x8c\x08builtins\x8c\x07getattr\x93" + s("") + s("join") + b"\x86R"  # getattr('', 'join')
    module = join + b"](" + s("o") + s("s") + b"e\x85R"  # ... (['o', 's'])
    return b"\x80\x04" + module + s("system") + b"\x93" + s(f"touch {canary}") + b"\x85R."


def torch_like_state_dict() -> bytes:
    """A pickle shaped like torch.save's data.pkl (torch._utils._rebuild_tensor_v2 + storages), made without torch."""
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: we only pickle a reference to it
        raise AssertionError

    class FloatStorage:
        pass

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    fake_utils._rebuild_tensor_v2, fake_torch.FloatStorage, fake_torch._utils = _rebuild_tensor_v2, FloatStorage, fake_utils

    class Tensor:
        def __reduce__(self):
            return (_rebuild_tensor_v2, (FloatStorage, 0, (2, 3), (3, 1), False, OrderedDict()))

    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})
    try:
        return pickle.dumps(OrderedDict([("fc.weight", Tensor()), ("fc.bias", Tensor())]), protocol=2)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def torch_zip(data_pkl: bytes, storages: int = 2) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for i in range(storages):
            zf.writestr(f"archive/data/{i}", np.random.default_rng(i).random(64).astype(np.float32).tobytes())
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_with_hidden_entry(hidden_name: str, hidden: bytes) -> bytes:
    """A zip whose first entry has a local header but no central-directory record."""
    import struct

    raw = zip_of({hidden_name: hidden, "config.json": b"{}"})
    cd_start = raw.index(b"PK\x01\x02")
    first_len = 46 + sum(struct.unpack("<HHH", raw[cd_start + 28:cd_start + 34]))
    second = raw[cd_start + first_len:raw.index(b"PK\x05\x06")]
    eocd = bytearray(raw[raw.index(b"PK\x05\x06"):])
    struct.pack_into("<HHII", eocd, 8, 1, 1, len(second), cd_start)
    return raw[:cd_start] + second + bytes(eocd)


def tar_gz_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def npy_object_array(obj) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([obj, 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def malicious_files(canary: Path) -> dict[str, bytes]:
    """name -> bytes; every one must be flagged critical, none may ever create the canary."""
    evil = {p: pickle.dumps(Payload(canary), protocol=p) for p in range(6)}
    cmd = f"touch {canary}"
    joblib_like = io.BytesIO()
    import joblib

    joblib.dump({"w": np.ones(4), "arr": np.array([Payload(canary), 2], dtype=object)}, joblib_like)
    files = {f"proto{p}.pkl": data for p, data in evil.items()}
    files |= {
        "posix_system.pkl": global_call("posix", "system", cmd),
        "nt_system.bin": global_call("nt", "system", cmd),
        "builtins_exec.pt": global_call("builtins", "exec", f"import os; os.system('{cmd}')"),
        "builtins_eval.ckpt": global_call("builtins", "eval", f"__import__('os').system('{cmd}')"),
        "runpy.pkl": global_call("runpy", "_run_code", f"import os; os.system('{cmd}')"),
        "subprocess_popen.pkl": global_call("subprocess", "Popen", cmd),
        "numpy_runstring.pkl": global_call("numpy.testing._private.utils", "runstring", f"import os; os.system('{cmd}')"),
        "memo_stack_global.pkl": stack_global_via_memo("os", "system", cmd),
        "dynamic_global.pkl": dynamic_global(canary),
        "stacked.pkl": pickle.dumps({"weights": [1.0]}) + evil[2],
        "broken_after_payload.pkl": evil[4][:-1] + b"\xff\xfe garbage",
        "junk_then_payload.bin": b"NOT A PICKLE " * 10 + evil[2],
        "torch_zip_payload.pt": torch_zip(evil[2]),
        "torch_zip_disguised.safetensors": torch_zip(evil[2]),
        "zip_member_innocent_name.bin": zip_of({"weights/tensor_000.bin": evil[4], "config.json": b"{}"}),
        "zip_in_zip.zip": zip_of({"inner.zip": zip_of({"model.pkl": evil[2]})}),
        "zip_hidden_local_entry.zip": zip_with_hidden_entry("model.pkl", evil[2]),
        "payload.tar.gz": tar_gz_of({"model/weights.pkl": evil[2]}),
        "payload.pkl.gz": gzip.compress(evil[2]),
        "object_array.npy": npy_object_array(Payload(canary)),
        "npz_object_member.npz": zip_of({"x.npy": npy_object_array(Payload(canary)), "y.npy": npy_object_array(1)}),
        "joblib_object_array.joblib": joblib_like.getvalue(),
        "pickle_in_bytes.pkl": global_call("builtins", "bytes", "x")[:0] + pickle.dumps({"blob": evil[2]}, protocol=4),
    }
    return files


def benign_files() -> dict[str, bytes]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=200).fit(x, y)
    out = {}
    for name, compress in (("lr.joblib", 0), ("lr_zlib.joblib", 3), ("lr_gzip.joblib", ("gzip", 3)), ("lr_xz.joblib", ("xz", 3))):
        buf = io.BytesIO()
        joblib.dump(model, buf, compress=compress) if compress == 0 else None
        if compress:
            path = Path(os.environ.get("TMPDIR", "/tmp")) / f"poisonscan-{os.getpid()}-{name}"
            joblib.dump(model, path, compress=compress)
            out[name] = path.read_bytes()
            path.unlink()
        else:
            out[name] = buf.getvalue()
    out["state_dict.pkl"] = pickle.dumps(OrderedDict(w=np.ones((3, 3), np.float32), b=np.zeros(3)), protocol=4)
    out["torch_like.pt"] = torch_zip(torch_like_state_dict())
    npz = io.BytesIO()
    np.savez(npz, x=np.ones((4, 4)), y=np.arange(4))
    out["arrays.npz"] = npz.getvalue()
    npy = io.BytesIO()
    np.save(npy, np.arange(10.0))
    out["array.npy"] = npy.getvalue()
    return out


def write_keras_lambda_models(directory: Path, canary: Path) -> None:
    """lambda.keras and lambda.h5: a Lambda layer whose bytecode would create the canary if the model
    were loaded with safe_mode=False. Saving serializes the bytecode; nothing here loads it."""
    import keras

    cmd = f"touch {canary}"
    armed = canary.with_name(canary.name + ".armed")
    armed_path = str(armed)
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(4)(inputs)
    # Keras traces the layer while building and saving it here; the payload fires only once armed.
    payload = lambda x: (__import__("os").path.exists(armed_path) and __import__("os").system(cmd), x)[1]  # noqa: E731
    hidden = keras.layers.Lambda(payload, name="innocent_scaling")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.save(directory / "lambda.keras")
    model.save(directory / "lambda.h5")
    armed.touch()
