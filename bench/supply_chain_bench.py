"""Supply-chain benchmark: poisonscan vs modelscan, picklescan, fickling and modelaudit on one corpus.

The one command (baseline run: add --baseline; the 1 GiB amplification case is opt-in):
    .venv/bin/python bench/supply_chain_bench.py --big-gib 1 --amplification [--baseline]

Needs, once:
    .venv/bin/pip install torch==2.13.0              # bench-only: writes the torch checkpoints
    python3 -m venv bench/.venv-anchors               # the anchor tools, kept out of poisonscan's venv
    bench/.venv-anchors/bin/pip install 'modelscan[tensorflow,h5py]==0.8.8' tensorflow==2.21.0 numpy==2.2.6 \
        picklescan==1.0.5 fickling==0.1.12 modelaudit==0.2.5
    git mirrors of the four peer projects under --mirror-root (see bench/peer_corpus.py; skipped if absent)
(the script runs the second and third steps itself when bench/.venv-anchors is missing).

What it does, in one run:
1. Builds a corpus in --corpus (default bench/corpus/, gitignored; wiped and rebuilt each run), corpus/manifest.json:
   own/   malicious files assembled opcode by opcode whose payload would `touch` a canary (raw pickles, injected
          torch zip/legacy, joblib, npy/npz, import-path variants, stacked/truncated pickles, hidden zip entries,
          Keras Lambda) and, from tests/hostile_files.py, one set per newer class: pickles calling globals missing
          from denylists, zip anomalies (encryption flag, bits 5/6, bad CRC, name mismatch, broken central
          directory), 7z, lz4, SavedModel PyFunc/ReadFile, chat-template SSTI (tokenizer_config.json, .jinja, GGUF),
          YAML python tags, ONNX external data outside the model folder, escape-sequence member names, HF snapshot
          zip/tar; "hostile" files (malformed safetensors, truncated .keras) that a fail-closed gate must refuse;
          and their benign counterparts (crafted)
   real/  benign files written by the libraries: torch 2.13 state dicts, whole modules, Adam/SGD states, a
          Lightning-style checkpoint, scikit-learn estimators and pipelines via joblib (compress variants), numpy
          object arrays, Keras, safetensors; plus a whole custom nn.Module ("benign_custom": custom code, no allowlist
          can vouch for it, reported apart)
   peers/ the malicious and benign samples of picklescan, modelscan, modelaudit and fickling's own test suites at
          pinned commits, labelled from their tests (bench/peer_corpus.py)
2. Runs every tool over the same files. Tools with a folder mode scan the whole corpus in ONE process, timed:
   poisonscan  scan --model CORPUS --format json; per-file verdicts from the report's `files` list
               (without one: one process per file, `scan --model F`)
   modelscan   -p CORPUS -r json; outcomes attributed per file from each issue/error 'source'
   modelaudit  scan --no-cache -f json CORPUS; exit 0 clean, 1 issues found, 2 errors; attributed by 'location'
   picklescan  -p CORPUS timed, outcomes from one process per file (exit 0 clean, 1 dangerous globals,
               2 scan error, which wins over 1, so the "Dangerous globals: N" line decides)
   fickling    no folder mode: --check-safety F per file (exit 0 clean, 1 unsafe, 2 parse error), times summed
   Blocked = a verdict/exit that stops a pipeline: poisonscan fail (exit 1; warn exits 0), the others exit 1/flag.
   Errors: exits that mean the tool failed; for poisonscan every exit 2 counts.
3. --amplification: a ~1 MB zip whose data.pkl inflates to 1 GiB; each tool's peak RSS (/usr/bin/time -v).
4. With --big-gib N > 0: an N GiB safetensors file and an ~N GiB torch zip checkpoint, each timed
   under every tool, sha256sum and openssl dgst -sha256 (files are read once beforehand so all runs hit the page cache).
5. Prints a markdown summary table and a file x tool matrix; writes bench/results/supply-chain[-baseline]-<ts>.json.

Safety: nothing here ever unpickles or loads a malicious file (no pickle.load, torch.load, joblib.load,
np.load(allow_pickle=True), keras load_model, template rendering). Malicious pickles are assembled as bytes and checked
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
import signal
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
sys.path[:0] = [str(REPO), str(BENCH)]
from tests import hostile_files as hostile  # noqa: E402  (pure-bytes builders shared with the test suite)
from tests.hostile_files import Call, G  # noqa: E402  (one definition of a global and a call)
POISONSCAN = REPO / ".venv" / "bin" / "poisonscan"
ANCHOR_VENV = BENCH / ".venv-anchors"
# modelscan needs its tensorflow extra to scan .keras and h5py for .h5; its numpy scanner calls
# numpy.lib.format._check_version, which numpy 2.3 removed, hence numpy 2.2 in this venv.
ANCHOR_PINS = ["modelscan[tensorflow,h5py]==0.8.8", "tensorflow==2.21.0", "numpy==2.2.6", "picklescan[7z]==1.0.5",
               "fickling==0.1.12", "modelaudit==0.2.5"]  # picklescan's 7z extra: without py7zr its folder scan aborts on a .7z
TORCH_VERSION = "2.13.0"
CANARY_NAME = "CANARY-if-this-exists-a-file-was-loaded"
MiB = 1024 * 1024
GiB = 1024 * MiB


# --------------------------------------------------------------------------------------------
# A tiny pickle assembler. It only writes opcodes; nothing here ever unpickles.
# --------------------------------------------------------------------------------------------

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
    label: str  # malicious | hostile (unreadable: a fail-closed gate blocks it) | benign | benign_custom | unlabelled
    format: str
    trick: str
    payload: str = ""
    size: int = 0
    sha256: str = ""
    static_globals: list[str] = field(default_factory=list)
    check: str = ""  # how the file was checked without loading it
    group: str = "own"  # own (hand-made here) | real (written by the ML libraries) | peers/<project>
    source: str = ""  # peers: the upstream test asserting the label

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

    def add(self, name: str, data: bytes, label: str, fmt: str, trick: str, payload: str = "", check: str = "", group: str = "") -> Sample:
        group = group or ("real" if name.startswith("benign/") else "own")  # benign/: written by the libraries
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        s = Sample(name, label, fmt, trick, payload, len(data), hashlib.sha256(data).hexdigest(), check=check, group=group)
        self.samples.append(s)
        return s

    def add_file(self, name: str, label: str, fmt: str, trick: str, payload: str = "", check: str = "") -> Sample:
        data = (self.root / name).read_bytes()
        s = Sample(name, label, fmt, trick, payload, len(data), hashlib.sha256(data).hexdigest(), check=check,
                   group="real" if label == "benign" else "own")
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


class TinyCustomNet:  # replaced by a torch.nn.Module subclass in real_checkpoints (torch is imported lazily)
    pass


def _custom_module_class(torch):
    """A user-defined nn.Module: torch.save(model) pickles a reference to this bench module's class,
    which no allowlist can vouch for ("benign, custom code")."""
    global TinyCustomNet

    class TinyCustomNet(torch.nn.Module):  # noqa: F811
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    TinyCustomNet.__module__, TinyCustomNet.__qualname__ = __name__, "TinyCustomNet"
    return TinyCustomNet


def real_checkpoints(self, torch, np) -> None:
    """Benign checkpoints as the libraries write them (c): what a gate must pass."""
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeRegressor

    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    x, y = torch.randn(32, 8), torch.randint(0, 2, (32,))
    opts = {"adam": torch.optim.Adam(seq.parameters(), lr=1e-3), "sgd": torch.optim.SGD(seq.parameters(), lr=0.1, momentum=0.9)}
    for opt in opts.values():  # one step so the optimizer state holds tensors
        opt.zero_grad()
        torch.nn.functional.cross_entropy(seq(x), y).backward()
        opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opts["adam"], step_size=10)
    lightning = {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.0", "state_dict": seq.state_dict(),
                 "optimizer_states": [opts["adam"].state_dict()], "lr_schedulers": [sched.state_dict()],
                 "hyper_parameters": {"lr": 1e-3, "hidden": 16, "activation": "relu"}, "loops": None, "callbacks": {}}
    torch_objs = {"torch_seq_state_dict.pt": seq.state_dict(), "torch_seq_whole_module.pt": seq,
                  "torch_adam_state.pt": opts["adam"].state_dict(), "torch_sgd_state.pt": opts["sgd"].state_dict(),
                  "lightning_style.ckpt": lightning}
    for name, obj in torch_objs.items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        self.add(f"real/{name}", buf.getvalue(), "benign", "pytorch_zip", f"torch {torch.__version__} torch.save({type(obj).__name__})", group="real")
    buf = io.BytesIO()
    torch.save(_custom_module_class(torch)(), buf)
    self.add("real/torch_custom_module.pt", buf.getvalue(), "benign_custom", "pytorch_zip",
             "torch.save of a whole custom nn.Module (class defined in the bench): benign, custom code", group="real")

    rng = np.random.default_rng(0)
    X, yv = rng.normal(size=(120, 5)), rng.integers(0, 2, 120)
    estimators = {"logreg": LogisticRegression(max_iter=200), "gboost": GradientBoostingClassifier(n_estimators=5, max_depth=2),
                  "svc": SVC(), "tree_reg": DecisionTreeRegressor(max_depth=3),
                  "pipeline_scaler_logreg": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=200))])}
    for name, est in estimators.items():
        est.fit(X, yv)
        for suffix, compress in (("", 0), ("_zlib3", 3), ("_gzip", ("gzip", 3)), ("_lzma", ("lzma", 3))):
            if compress and name not in ("pipeline_scaler_logreg", "gboost"):
                continue  # compress variants on two estimators are enough
            buf = io.BytesIO()
            joblib.dump(est, buf, compress=compress)
            self.add(f"real/sklearn_{name}{suffix}.joblib", buf.getvalue(), "benign", "joblib", f"joblib.dump({type(est).__name__}, compress={compress!r})", group="real")
    for name, arr in (("strings", np.array(["cat", "dog", "bird"], dtype=object)), ("ints", np.array([1, 2**70, -3], dtype=object)),
                      ("mixed", np.array([{"lr": 0.1}, ["a", 1], ("b", 2.0)], dtype=object))):
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=True)  # writing our own benign data
        self.add(f"real/numpy_object_{name}.npy", buf.getvalue(), "benign", "npy", f"np.save object array of {name} (allow_pickle=True)", group="real")


def hostile_classes(self) -> None:
    """The pure-bytes classes of tests/hostile_files.py: malicious, unreadable (hostile) and benign counterparts."""
    for label, sets in (("malicious", hostile.malicious_sets(self.canary)), ("hostile", hostile.hostile_sets(self.canary)), ("benign", hostile.benign_sets())):
        for cls, files in sets.items():
            for name, data in files.items():
                fmt = _format_of(name)
                s = self.add(f"classes/{cls}/{name}", data, label, fmt, f"{cls}: {name}", "touch canary" if label == "malicious" else "")
                if name.endswith(".pkl"):
                    s.static_globals, s.check = static_globals(data), "pickletools"


def peers(self, mirror_root: Path) -> str:
    """The peer projects' own test samples (bench/peer_corpus.py); skipped when the mirrors are absent."""
    import peer_corpus

    try:
        samples, skipped = peer_corpus.build(mirror_root, self.root / "peers", ANCHOR_VENV / "bin/python")
    except SystemExit as exc:
        print(f"peer corpus skipped: {exc}", file=sys.stderr)
        return f"skipped: {exc}"
    for p in samples:
        s = Sample(p.name, p.label, _format_of(p.name), p.upstream, "", p.size, p.sha256, check=p.check, group=f"peers/{p.project}", source=p.source)
        self.samples.append(s)
    return f"{len(samples)} files; pins {json.dumps({k: v[1] for k, v in peer_corpus.PINS.items()})}; skipped {skipped}"


CorpusBuilder.real_checkpoints = real_checkpoints
CorpusBuilder.hostile_classes = hostile_classes
CorpusBuilder.peers = peers


def _format_of(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    for suffix, fmt in ((".tar.gz", "tar.gz"), (".pkl.lz4", "lz4"), (".safetensors.lz4", "lz4"), ("saved_model.pb", "savedmodel"),
                        ("tokenizer_config.json", "tokenizer_config")):
        if base.endswith(suffix):
            return fmt
    return base.rsplit(".", 1)[-1] if "." in base else "none"


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


def build_corpus(root: Path, mirror_root: Path) -> tuple[list[Sample], Path, dict]:
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
    builder.real_checkpoints(torch, np)
    builder.hostile_classes()
    peers_note = builder.peers(mirror_root)
    assert not canary.exists(), "building the corpus ran a payload"
    import sklearn
    versions = {"torch": torch.__version__, "keras": keras.__version__, "numpy": np.__version__, "sklearn": sklearn.__version__, "peers": peers_note}
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
    """Run argv in its own process group so a timeout also ends its children (e.g. under /usr/bin/time)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", cwd=cwd, start_new_session=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"})
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err, time.perf_counter() - t
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return -9, out, f"{err}\ntimeout after {timeout}s", time.perf_counter() - t


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


MODELAUDIT_BLOCKING = ("critical", "warning")  # exit 1 = "security issues found"; info-only reports exit 0


def run_modelaudit(path: Path, timeout: float, work: Path) -> Result:
    """modelaudit scan --no-cache -f json -o OUT PATH: exit 0 clean, 1 issues found, 2 errors during scanning."""
    out_json = work / "modelaudit.json"
    out_json.unlink(missing_ok=True)
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/modelaudit"), "scan", "--no-cache", "-f", "json", "-o", str(out_json), str(path)], timeout, work)
    try:
        report = json.loads(out_json.read_text())
    except (OSError, ValueError):
        return Result("error", secs, rc, _last_line(err + out) or f"rc={rc}, no report")
    return _modelaudit_result(report.get("issues", []), rc, secs)


def _modelaudit_result(issues: list[dict], rc: int, secs: float) -> Result:
    blocking = [i for i in issues if i.get("severity") in MODELAUDIT_BLOCKING]
    extra = {"issues": [f"[{i.get('severity')}] {str(i.get('message'))[:120]}" for i in blocking][:6]}
    if rc == 1 or blocking:
        return Result("flagged", secs, rc, "; ".join(extra["issues"][:2]) or f"rc={rc}", None, extra)
    if rc not in (0, 1):
        return Result("error", secs, rc, f"rc={rc}", None, extra)
    return Result("clean", secs, rc, f"{len(issues)} info issue(s)", None, extra)


TOOLS = {"poisonscan": run_poisonscan, "modelscan": run_modelscan, "picklescan": run_picklescan, "fickling": run_fickling,
         "modelaudit": run_modelaudit}


# --------------------------------------------------------------------------------------------
# Whole-folder runs: one process over the corpus, timed; outcomes attributed per file where the
# report allows (poisonscan's `files`, modelscan's issue sources, modelaudit's issue locations).
# --------------------------------------------------------------------------------------------

def _rel_owner(rel: str, names: set[str]) -> str | None:
    """The sample a report path belongs to: itself, or the archive/folder sample it sits in (a.zip:member)."""
    rel = rel.lstrip("/")
    while rel:
        if rel in names:
            return rel
        cut = max(rel.rfind(":"), rel.rfind(" "), rel.rfind("/"))
        if cut <= 0:
            return None
        rel = rel[:cut]
    return None


def folder_poisonscan(root: Path, names: set[str], timeout: float, work: Path) -> tuple[float, dict | None, str]:
    rc, out, err, secs = _run([str(POISONSCAN), "scan", "--model", str(root), "--format", "json"], timeout, work)
    try:
        report = json.loads(out)
    except ValueError:
        return secs, None, f"no folder report (rc={rc}: {_last_line(err, r'error:') or _last_line(err)})"
    files = report.get("files")
    if not isinstance(files, list):
        return secs, None, f"report has no `files` list (rc={rc}, verdict {report.get('verdict')})"
    results = {}
    for f in files:
        name = _rel_owner(str(f.get("file", "")), names)
        if name:
            v = f.get("verdict")
            results[name] = Result("flagged" if v in ("warn", "fail") else "clean", 0.0, 1 if v == "fail" else 0,
                                   f"severity {f.get('severity')}", v, {"kind": f.get("kind")})
    return secs, results, f"folder report: {len(files)} files, rc={rc}"


def folder_modelscan(root: Path, names: set[str], timeout: float, work: Path) -> tuple[float, dict | None, str]:
    out_json = work / "modelscan-folder.json"
    out_json.unlink(missing_ok=True)
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/modelscan"), "-p", str(root), "-r", "json", "-o", str(out_json), "--show-skipped"], timeout, work)
    try:
        report = json.loads(out_json.read_text())
    except (OSError, ValueError):
        return secs, None, f"no report (rc={rc})"
    per: dict[str, dict] = collections.defaultdict(lambda: {"issues": [], "errors": [], "skipped": [], "scanned": False})
    for i in report.get("issues", []):
        per[_rel_owner(i.get("source", ""), names)]["issues"].append(f"{i.get('module')}.{i.get('operator')}")
    for e in report.get("errors", []):
        per[_rel_owner(str(e.get("source", "")), names)]["errors"].append(str(e.get("description", e))[:150])
    for sk in report.get("summary", {}).get("skipped", {}).get("skipped_files", []):
        per[_rel_owner(str(sk.get("source", "")), names)]["skipped"].append(str(sk.get("description", ""))[:150])
    for f in report.get("summary", {}).get("scanned", {}).get("scanned_files", []):
        per[_rel_owner(f, names)]["scanned"] = True
    results = {}
    for name in names:
        p = per.get(name) or {"issues": [], "errors": [], "skipped": [], "scanned": False}
        if p["issues"]:
            results[name] = Result("flagged", 0.0, 1, f"issues: {', '.join(sorted(set(p['issues']))[:4])}")
        elif p["errors"]:
            results[name] = Result("error", 0.0, 2, "; ".join(p["errors"][:2]))
        elif p["scanned"]:
            results[name] = Result("clean", 0.0, 0, "scanned, no issues")
        else:
            results[name] = Result("skipped", 0.0, 3, "; ".join(p["skipped"][:1]) or "not scanned")
    return secs, results, f"folder report, rc={rc}"


def folder_modelaudit(root: Path, names: set[str], timeout: float, work: Path) -> tuple[float, dict | None, str]:
    out_json = work / "modelaudit-folder.json"
    out_json.unlink(missing_ok=True)
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/modelaudit"), "scan", "--no-cache", "-f", "json", "-o", str(out_json), str(root)], timeout, work)
    try:
        report = json.loads(out_json.read_text())
    except (OSError, ValueError):
        return secs, None, f"no report (rc={rc})"
    by_file: dict[str, list] = collections.defaultdict(list)
    prefix = str(root).rstrip("/") + "/"
    for i in report.get("issues", []):
        loc = str(i.get("location") or "")
        name = _rel_owner(loc[len(prefix):] if loc.startswith(prefix) else loc, names)
        by_file[name].append(i)
    # files with no issue: clean as far as the folder report tells (its per-file errors are issues too)
    results = {n: _modelaudit_result(by_file.get(n, []), 1 if any(i.get("severity") in MODELAUDIT_BLOCKING for i in by_file.get(n, [])) else 0, 0.0)
               for n in names}
    return secs, results, f"folder report, rc={rc}, {report.get('files_scanned')} files scanned"


def folder_picklescan(root: Path, names: set[str], timeout: float, work: Path) -> tuple[float, dict | None, str]:
    rc, out, err, secs = _run([str(ANCHOR_VENV / "bin/picklescan"), "-p", str(root)], timeout, work)
    return secs, None, f"timing only (rc={rc}); its summary does not say which file errored"


# Who scans the folder in one process, and whose per-file outcomes come from that one report.
FOLDER_RUNS = {"poisonscan": folder_poisonscan, "modelscan": folder_modelscan, "modelaudit": folder_modelaudit, "picklescan": folder_picklescan}


# --------------------------------------------------------------------------------------------
# Amplification: a ~1 MB zip holding a 1 GiB data.pkl; peak RSS of each tool's process
# --------------------------------------------------------------------------------------------

def tool_argv(tool: str, path: Path, work: Path) -> list[str]:
    a = ANCHOR_VENV / "bin"
    return {"poisonscan": [str(POISONSCAN), "scan", "--model", str(path), "--format", "json"],
            "modelscan": [str(a / "modelscan"), "-p", str(path), "-r", "json", "-o", str(work / "amp-modelscan.json")],
            "picklescan": [str(a / "picklescan"), "-p", str(path)],
            "fickling": [str(a / "fickling"), "--check-safety", str(path), "--json-output", str(work / "amp-fickling.json")],
            "modelaudit": [str(a / "modelaudit"), "scan", "--no-cache", "-f", "json", "-o", str(work / "amp-modelaudit.json"), str(path)]}[tool]


def peak_rss(argv: list[str], timeout: float, work: Path) -> dict:
    """Runs argv under /usr/bin/time -v: the child's maximum resident set size, exit code and wall time."""
    rc, out, err, secs = _run(["/usr/bin/time", "-v", *argv], timeout, work)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    status = re.search(r"Exit status: (\d+)", err)
    return {"peak_rss_mib": int(m.group(1)) / 1024 if m else None, "rc": int(status.group(1)) if status else rc,
            "seconds": secs, "stdout_tail": out[-300:], "stderr_tail": re.sub(r"\tCommand being timed.*", "", err, flags=re.S)[-300:]}


def amplification(tools: list[str], canary: Path, timeout: float, work: Path) -> dict:
    path = work / "amplification_1GiB_inflated.pt"
    size = hostile.write_amplification_zip(path, canary, GiB)
    rows = {"file": {"bytes": size, "inflated_bytes": GiB}}
    for tool in tools:
        rows[tool] = peak_rss(tool_argv(tool, path, work), timeout, work)
        print(f"  amplification {tool:10} rc={rows[tool]['rc']} {rows[tool]['seconds']:6.1f}s peak RSS {rows[tool]['peak_rss_mib']} MiB", file=sys.stderr)
    path.unlink()
    return rows


def ensure_anchor_venv() -> dict:
    py7zr = list((ANCHOR_VENV / "lib").glob("python3*/site-packages/py7zr"))
    if not (ANCHOR_VENV / "bin/modelaudit").exists() or not py7zr:  # missing, or made before modelaudit / picklescan[7z]
        print(f"installing the anchor tools into {ANCHOR_VENV} ...", file=sys.stderr)
        if not (ANCHOR_VENV / "bin/pip").exists():
            subprocess.run(["python3", "-m", "venv", str(ANCHOR_VENV)], check=True)
        subprocess.run([str(ANCHOR_VENV / "bin/pip"), "install", "-q", *ANCHOR_PINS], check=True)
    listing = subprocess.run([str(ANCHOR_VENV / "bin/pip"), "list", "--format", "json"], capture_output=True, text=True, check=True).stdout
    have = {p["name"].lower(): p["version"] for p in json.loads(listing)}
    versions = {t: have.get(t, "?") for t in ("modelscan", "picklescan", "fickling", "modelaudit")}
    versions["anchor_py7zr"] = have.get("py7zr", "not installed (picklescan cannot open .7z)")
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

def blocks(tool: str, r: Result) -> bool:
    """A verdict/exit that stops a pipeline: poisonscan fail (exit 1); the others' flag (exit 1)."""
    if tool == "poisonscan":
        return r.verdict == "fail" or (r.verdict is None and r.rc == 1)
    return r.flagged


MUST_BLOCK = ("malicious", "hostile")


def cell(sample: Sample, tool: str, r: Result) -> str:
    if tool == "poisonscan" and r.verdict:
        text = r.verdict.upper() if r.verdict == "fail" else r.verdict
    else:
        text = {"flagged": "FLAG", "clean": "clean", "error": "ERR", "skipped": "skip"}[r.status]
        if tool == "poisonscan" and r.status == "flagged":
            text = "ERR-flag"
    if sample.label in MUST_BLOCK and not blocks(tool, r):
        return f"miss ({text})"
    if sample.label == "benign" and blocks(tool, r):
        return f"FP ({text})"
    return text


def _rate(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "—"


def summarize(samples: list[Sample], results: dict[str, dict[str, Result]], big: dict, folder: dict, amp: dict) -> dict:
    def pick(label, group=None):
        return [s for s in samples if s.label == label and (group is None or (s.group.startswith(group)))]

    sets = {"malicious_own": [s for s in pick("malicious") if s.group == "own"], "hostile": pick("hostile"),
            "malicious_peers": pick("malicious", "peers"), "benign_real": pick("benign", "real"),
            "benign_custom": pick("benign_custom"), "benign_crafted": [s for s in pick("benign") if s.group == "own"],
            "benign_peers": pick("benign", "peers")}
    out = {}
    for tool, per in results.items():
        row = {k: {"blocked": sum(blocks(tool, per[s.name]) for s in v), "of": len(v)} for k, v in sets.items()}
        row["errors"] = sum(r.status == "error" for r in per.values())
        row["skipped"] = sum(r.status == "skipped" for r in per.values())
        if tool == "poisonscan":
            row["exit2"] = sum(r.rc == 2 for r in per.values()) + (1 if folder.get(tool, {}).get("rc") == 2 else 0)
            row["errors"] = max(row["errors"], row["exit2"])
            row["warn_on_must_block"] = sum(per[s.name].verdict == "warn" for s in samples if s.label in MUST_BLOCK)
            row["false_warn_real"] = sum(per[s.name].verdict == "warn" for s in sets["benign_real"])
        f = folder.get(tool)
        row["total_seconds"] = f["seconds"] if f else sum(r.seconds for r in per.values())
        row["timing"] = "one folder process" if f else "sum of per-file processes"
        row["attribution"] = f["attribution"] if f else "per-file processes"
        row["per_file_seconds"] = sum(r.seconds for r in per.values())
        row["amplification_peak_rss_mib"] = amp.get(tool, {}).get("peak_rss_mib")
        row["amplification_rc"] = amp.get(tool, {}).get("rc")
        for kind in ("safetensors", "torch_zip"):
            if kind in big:
                row[f"big_{kind}"] = big[kind]["tools"][tool]
        out[tool] = row
    return out


def markdown(samples: list[Sample], results: dict[str, dict[str, Result]], summary: dict, big: dict, versions: dict, amp: dict) -> str:
    total = sum(s.size for s in samples) / MiB
    counts = collections.Counter((s.group.split("/")[0], s.label) for s in samples)
    lines = [f"Corpus: {len(samples)} files, {total:.1f} MiB ({', '.join(f'{g}/{l} {n}' for (g, l), n in sorted(counts.items()))}). "
             "blocked = poisonscan verdict fail (exit 1); for the others a flag (exit 1).", "",
             "| tool | version | malicious blocked (own) | hostile blocked (unreadable) | peers' malicious blocked | FALSE block: real benign ckpts "
             "| custom-code ckpt blocked | false block: crafted benign | false block: peers' benign | errors | total time (how) | amplification peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool, r in summary.items():
        rss = r["amplification_peak_rss_mib"]
        rss_text = f"{rss:.0f} MiB (rc={r['amplification_rc']})" if rss is not None else ("—" if not amp else "n/a")
        err = f"{r['errors']}" + (f" (exit 2: {r['exit2']})" if tool == "poisonscan" else "") + (f", {r['skipped']} skipped" if r["skipped"] else "")
        lines.append(f"| {tool} | {versions.get(tool, '')} | " + " | ".join(_rate(r[k]["blocked"], r[k]["of"]) for k in (
            "malicious_own", "hostile", "malicious_peers", "benign_real", "benign_custom", "benign_crafted", "benign_peers"))
            + f" | {err} | {r['total_seconds']:.1f}s ({r['timing']}) | {rss_text} |")
    if "poisonscan" in summary:
        p = summary["poisonscan"]
        lines += ["", f"poisonscan warn (exit 0, does not block) on must-block files: {p['warn_on_must_block']}; warn on real benign: {p['false_warn_real']}. "
                  f"Outcomes: {p['attribution']}."]
    if big:
        lines += ["", "| big file | " + " | ".join(big[next(iter(big))]["tools"]) + " |", "|---|" + "---|" * len(big[next(iter(big))]["tools"])]
        for kind, b in big.items():
            lines.append(f"| {kind} {b['bytes'] / GiB:.2f} GiB | " + " | ".join(
                f"{t['seconds']:.1f}s ({t['status']})" for t in b["tools"].values()) + " |")
        for name in HASH_BASELINES:
            if any(f"poisonscan_over_{name}" in big[k] for k in big):
                lines.append(f"poisonscan time / {name} time: " + ", ".join(
                    f"{k} {big[k][f'poisonscan_over_{name}']:.2f}x" for k in big if f"poisonscan_over_{name}" in big[k]))
    tools = list(results)
    lines += ["", "Per file (miss = must-block file not blocked; FP = benign blocked; poisonscan shows its verdict):", "",
              "| file | group | label | format | " + " | ".join(tools) + " |", "|---|---|---|---|" + "---|" * len(tools)]
    for s in samples:
        name = s.name.encode("unicode_escape").decode()  # escape-sequence names stay inert in the table
        lines.append(f"| {name} | {s.group} | {s.label} | {s.format} | " + " | ".join(cell(s, t, results[t][s.name]) for t in tools) + " |")
    return "\n".join(lines)


def run_tools(tools: list[str], samples: list[Sample], timeout: float, folder_timeout: float) -> tuple[dict, dict, dict]:
    """One folder process per tool that can scan a folder (timed), then per-file processes where the
    folder report cannot attribute outcomes to files."""
    results, folder, canary_after = {}, {}, {}
    names = {s.name for s in samples}
    with tempfile.TemporaryDirectory(prefix="poisonscan-bench-") as work_s:
        work = Path(work_s)
        for tool in tools:
            t = time.perf_counter()
            per = None
            if tool in FOLDER_RUNS:
                secs, per, note = FOLDER_RUNS[tool](CORPUS, names, folder_timeout, work)
                folder[tool] = {"seconds": secs, "attribution": f"from the folder report ({note})" if per else f"per-file processes ({note})"}
                print(f"{tool}: folder run {secs:.1f}s, {note}", file=sys.stderr)
            if per is None:
                per = {s.name: TOOLS[tool](s.path, timeout, work) for s in samples}
            else:
                missing = [s for s in samples if s.name not in per]  # not in the report: scan it alone
                per.update({s.name: TOOLS[tool](s.path, timeout, work) for s in missing})
                folder[tool]["attribution"] += f"; {len(missing)} files absent from it scanned alone" if missing else ""
            results[tool] = per
            canary_after[tool] = (CORPUS / CANARY_NAME).exists()
            print(f"{tool}: {len(samples)} files in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    return results, folder, canary_after


def tool_versions() -> dict:
    versions = ensure_anchor_venv()
    versions["poisonscan"] = subprocess.run([str(REPO / ".venv/bin/python"), "-c", "import importlib.metadata as m; print(m.version('poisonscan'))"],
                                            capture_output=True, text=True).stdout.strip()
    versions["poisonscan_git"] = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    for name, argv in (("sha256sum", ["sha256sum", "--version"]), ("openssl-sha256", ["openssl", "version"])):
        if shutil.which(argv[0]):
            versions[name] = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0].strip()
    return versions


INTERPRETATION = {
    "poisonscan": "blocked = verdict fail (exit 1); warn exits 0 and does not block; every exit 2 counts as an error. Folder run: "
                  "`scan --model CORPUS` once (timed); per-file verdicts from its `files` list, else one process per file",
    "modelscan": "blocked = total_issues > 0 for the file (exit 1); error = a report error for it; skipped = not scanned. "
                 "One folder run (-p CORPUS), outcomes attributed by each issue/error 'source' (archive:member -> archive)",
    "picklescan": "blocked = 'Dangerous globals: N' > 0 (exit 1; exit 2 = scan error, which wins over 1). Folder run timed; "
                  "outcomes from one process per file (its folder summary does not name the file that errored)",
    "fickling": "--check-safety: exit 1 = unsafe = blocked, 0 clean, 2 parse error. No folder mode: one process per file, times summed",
    "modelaudit": "modelaudit scan --no-cache -f json: exit 0 no issues, 1 issues found (blocked = any critical/warning issue), "
                  "2 errors during scanning. One folder run, outcomes attributed by each issue's 'location'",
}


def main(argv: list[str] | None = None) -> int:
    global CORPUS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-gib", type=float, default=1.0, help="size of the large safetensors and torch files (0 skips that part)")
    ap.add_argument("--big-dir", type=Path, help="where to write the large files (default: a temp dir, removed afterwards)")
    ap.add_argument("--keep-big", action="store_true", help="do not delete the large files")
    ap.add_argument("--amplification", action="store_true", help="also scan a ~1 MB zip inflating to a 1 GiB pickle; report each tool's peak RSS")
    ap.add_argument("--corpus", type=Path, default=BENCH / "corpus", help="corpus folder, wiped and rebuilt (default bench/corpus)")
    ap.add_argument("--mirror-root", type=Path, default=Path("/work/.mirror"), help="git mirrors of the peer projects (bench/peer_corpus.py)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per tool call on one file")
    ap.add_argument("--folder-timeout", type=float, default=3600.0, help="seconds for one tool's whole-folder run")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS))
    ap.add_argument("--baseline", action="store_true", help="name the result supply-chain-baseline-<ts>.json")
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if not POISONSCAN.exists():
        sys.exit(f"{POISONSCAN} is missing: install poisonscan into .venv first")
    CORPUS = args.corpus.resolve()

    versions = tool_versions()
    t0 = time.perf_counter()
    samples, canary, lib_versions = build_corpus(CORPUS, args.mirror_root)
    versions.update(lib_versions)
    print(f"corpus: {len(samples)} files in {CORPUS} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    results, folder, canary_after = run_tools(tools, samples, args.timeout, args.folder_timeout)
    big, amp = {}, {}
    with tempfile.TemporaryDirectory(prefix="poisonscan-bench-") as work_s:
        if args.amplification:
            amp = amplification(tools, canary, max(args.timeout, 900.0), Path(work_s))
        if args.big_gib > 0:
            big = big_files(args.big_gib, tools, max(args.timeout, 600.0), Path(work_s), args.big_dir, args.keep_big)

    summary = summarize(samples, results, big, folder, amp)
    table = markdown(samples, results, summary, big, versions, amp)
    print(table)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = BENCH / "results" / f"supply-chain-{'baseline-' if args.baseline else ''}{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": versions,
        "interpretation": INTERPRETATION,
        "corpus": {"dir": str(CORPUS), "samples": [asdict(s) for s in samples]},
        "results": {t: {n: asdict(r) for n, r in per.items()} for t, per in results.items()},
        "folder_runs": folder,
        "summary": summary,
        "amplification": amp,
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
