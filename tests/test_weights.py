"""Structural checks of weight files (worker/inspect/: safetensors, keras, onnx).

Fixtures are real files built with safetensors / Keras / onnx.helper, then corrupted byte by byte.
Nothing here loads a scanned file with a code-running loader: Keras is only used to *save* models.
"""

import json
import random
import struct
import zipfile

import numpy as np
import pytest

from worker.inspect.keras import check_keras_archive, check_keras_h5, keras_config_findings
from worker.inspect.onnx import check_onnx
from worker.inspect.safetensors import check_safetensors
from worker.findings import Finding, Severity


def titles(findings, severity=None):
    return [f.title for f in findings if severity is None or f.severity == severity]


def worst(findings) -> Severity:
    return max((f.severity for f in findings), key=lambda s: s.rank)


def by_title(findings, fragment) -> Finding:
    hits = [f for f in findings if fragment in f.title]
    assert hits, f"no finding containing {fragment!r} in {titles(findings)}"
    return hits[0]


def assert_serializable(findings):
    for f in findings:
        assert isinstance(f, Finding)
        assert 0.0 <= f.score <= 1.0
        json.dumps(f.to_dict())


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

@pytest.fixture
def st_file(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "model.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(4, dtype=np.int64)}, str(path),
              metadata={"format": "np"})
    return path


def split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write(path, header, data, header_bytes=None):
    hb = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return path


def test_safetensors_clean(st_file):
    findings = check_safetensors(st_file)
    assert_serializable(findings)
    assert len(findings) == 1
    f = findings[0]
    assert (f.title, f.severity) == ("safetensors structure valid", Severity.info)
    assert f.evidence["tensor_count"] == 2 and f.evidence["total_params"] == 10
    assert f.evidence["metadata"] == {"format": "np"}


@pytest.mark.parametrize("length", [0, 1, 10**6, 2**40, 2**64 - 1])
def test_safetensors_bad_header_length(st_file, length):
    raw = st_file.read_bytes()
    st_file.write_bytes(struct.pack("<Q", length) + raw[8:])
    findings = check_safetensors(st_file)
    assert titles(findings) == ["safetensors header length is invalid"]
    assert findings[0].severity == Severity.high


def test_safetensors_too_short(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(b"\x02\x00")
    assert titles(check_safetensors(p), Severity.high) == ["safetensors header length is invalid"]


@pytest.mark.parametrize("garbage", [b"{not json at all}", b"\xff\xfe\xfd{}", b"[1, 2, 3]", b'{"a": NaN}'])
def test_safetensors_header_garbage(st_file, garbage):
    _, data = split(st_file)
    write(st_file, None, data, header_bytes=garbage)
    findings = check_safetensors(st_file)
    assert len(findings) == 1 and findings[0].severity == Severity.high
    assert findings[0].title.startswith("safetensors header is not")


def test_safetensors_overlapping_offsets(st_file):
    header, data = split(st_file)
    assert header["b"]["data_offsets"] == [0, 32] and header["a"]["data_offsets"] == [32, 56]  # writer's layout
    header["a"]["data_offsets"] = [8, 32]  # a (24 bytes) now lies inside b
    data = data[:32]
    findings = check_safetensors(write(st_file, header, data))
    assert by_title(findings, "tensors overlap").severity == Severity.high
    assert "safetensors structure valid" not in titles(findings)


def test_safetensors_offsets_out_of_range(st_file):
    header, data = split(st_file)
    header["b"]["data_offsets"] = [len(data), len(data) + 32]
    findings = check_safetensors(write(st_file, header, data))
    f = by_title(findings, "offsets out of range")
    assert f.severity == Severity.high and f.evidence["tensors"]["items"][0]["tensor"] == "b"


def test_safetensors_wrong_size_for_shape(st_file):
    header, data = split(st_file)
    header["b"]["shape"] = [5]  # 5 x I64 needs 40 bytes, the offsets hold 32
    findings = check_safetensors(write(st_file, header, data))
    f = by_title(findings, "tensor entries are malformed")
    assert f.severity == Severity.high and "needs 40" in f.evidence["problems"]["items"][0]["problem"]


@pytest.mark.parametrize("mutation, expected", [
    (lambda h: h["a"].update(dtype="F128"), "unknown dtype"),
    (lambda h: h["a"].update(shape=[2, -3]), "non-negative"),
    (lambda h: h["a"].update(shape=[2, 3.0]), "non-negative"),
    (lambda h: h["a"].update(data_offsets=[24, 0]), "end before"),
    (lambda h: h["a"].update(data_offsets="0-24"), "data_offsets"),
    (lambda h: h.update(c=[1, 2]), "not an object"),
])
def test_safetensors_malformed_entries(st_file, mutation, expected):
    header, data = split(st_file)
    mutation(header)
    findings = check_safetensors(write(st_file, header, data))
    f = by_title(findings, "tensor entries are malformed")
    assert f.severity == Severity.high
    assert any(expected in p["problem"] for p in f.evidence["problems"]["items"])


def test_safetensors_bad_metadata(st_file):
    header, data = split(st_file)
    header["__metadata__"] = {"format": "np", "epochs": 3}
    findings = check_safetensors(write(st_file, header, data))
    assert by_title(findings, "__metadata__ is malformed").severity == Severity.high


def test_safetensors_duplicate_keys(st_file):
    header, data = split(st_file)
    text = json.dumps(header)
    dup = text[:-1] + ', "a": ' + json.dumps(header["a"]) + "}"
    findings = check_safetensors(write(st_file, None, data, header_bytes=dup.encode()))
    assert by_title(findings, "duplicate keys").severity == Severity.high


def test_safetensors_trailing_bytes_are_hidden_data(st_file):
    with st_file.open("ab") as f:
        f.write(b"\x80\x04\x95payload-after-the-last-tensor")
    findings = check_safetensors(st_file)
    assert worst(findings) == Severity.medium
    f = by_title(findings, "hides data outside its tensors")
    assert f.severity == Severity.medium
    region = f.evidence["regions"]["items"][0]
    assert region["kind"] == "trailing" and region["head_looks_like"] == "pickle"


def test_safetensors_gap_between_tensors(st_file):
    header, data = split(st_file)
    header["a"]["data_offsets"] = [40, 64]  # 8 unused bytes between b (0..32) and a
    data = data[:32] + b"GAPGAP!!" + data[32:]
    findings = check_safetensors(write(st_file, header, data))
    f = by_title(findings, "hides data outside its tensors")
    assert f.evidence["regions"]["items"][0]["kind"] == "gap" and f.evidence["hidden_bytes"] == 8
    assert worst(findings) == Severity.medium


def test_safetensors_odd_tensor_names(st_file):
    header, data = split(st_file)
    header["a\x1b[2K"] = header.pop("a")
    findings = check_safetensors(write(st_file, header, data))
    assert by_title(findings, "tensor names are unusual").severity == Severity.medium


def test_safetensors_random_corruption_never_raises(st_file):
    raw = bytearray(st_file.read_bytes())
    rng = random.Random(0)
    for _ in range(200):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        st_file.write_bytes(bytes(b[: rng.randint(0, len(b))] if rng.random() < 0.2 else b))
        assert_serializable(check_safetensors(st_file))


# --------------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("keras")
    clean = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    lam = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense"),
                            keras.layers.Lambda(lambda x: x * 2, name="doubler")])
    inner = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x + 1, name="nested_lambda")], name="inner")
    nested = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), inner])
    paths = {}
    for name, model in {"clean": clean, "lambda": lam, "nested": nested}.items():
        for ext in ("keras", "h5"):
            paths[f"{name}.{ext}"] = d / f"{name}.{ext}"
            model.save(paths[f"{name}.{ext}"])
    return paths


def rewrite_zip(src, dst, extra=(), config=None, drop=()):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if info.filename == "config.json" and config is not None:
                data = json.dumps(config).encode()
            zout.writestr(info, data)
        for name, data in extra:
            zout.writestr(name, data)
    return dst


def keras_config(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras_clean(keras_models, ext):
    check = check_keras_archive if ext == "keras" else check_keras_h5
    findings = check(keras_models[f"clean.{ext}"])
    assert_serializable(findings)
    assert [f.severity for f in findings] == [Severity.info], titles(findings)
    summary = findings[0]
    assert summary.evidence["layer_count"] == 2  # InputLayer + Dense
    assert "Dense" in summary.evidence["classes"]


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras_lambda_is_critical(keras_models, ext):
    check = check_keras_archive if ext == "keras" else check_keras_h5
    findings = check(keras_models[f"lambda.{ext}"])
    crit = [f for f in findings if f.severity == Severity.critical]
    assert titles(crit) == ["Lambda layer 'doubler' carries executable Python code"]
    assert crit[0].evidence["layer"] == "doubler" and crit[0].evidence["marshalled_code"] is True
    assert findings[-1].severity == Severity.info  # the summary still comes last
    assert not titles(findings, Severity.high)  # base64 bytecode is not mistaken for a path


@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_keras_nested_model_lambda(keras_models, ext):
    check = check_keras_archive if ext == "keras" else check_keras_h5
    findings = check(keras_models[f"nested.{ext}"])
    assert titles(findings, Severity.critical) == ["Lambda layer 'nested_lambda' carries executable Python code"]


def test_keras_extra_pickle_member(keras_models, tmp_path):
    p = rewrite_zip(keras_models["clean.keras"], tmp_path / "m.keras",
                    extra=[("payload.pkl", b"\x80\x04\x95\x10\x00cos\nsystem\n."), ("notes.txt", b"hello")])
    findings = check_keras_archive(p)
    high = by_title(findings, "pickle or code members")
    assert high.severity == Severity.high and high.evidence["members"]["items"][0]["member"] == "payload.pkl"
    assert by_title(findings, "unexpected members").severity == Severity.medium


def test_keras_disguised_pickle_member(keras_models, tmp_path):
    p = rewrite_zip(keras_models["clean.keras"], tmp_path / "m.keras", extra=[("assets/vocab.txt", b"\x80\x05\x95junk")])
    assert by_title(check_keras_archive(p), "pickle or code members").severity == Severity.high


def test_keras_assets_are_expected(keras_models, tmp_path):
    p = rewrite_zip(keras_models["clean.keras"], tmp_path / "m.keras", extra=[("assets/layer/vocabulary.txt", b"a\nb\n")])
    assert [f.severity for f in check_keras_archive(p)] == [Severity.info]


@pytest.mark.parametrize("member", ["../evil", "/etc/cron.d/evil", "assets/../../evil.sh", "C:\\evil"])
def test_keras_zip_slip(keras_models, tmp_path, member):
    p = rewrite_zip(keras_models["clean.keras"], tmp_path / "m.keras", extra=[(member, b"x")])
    f = by_title(check_keras_archive(p), "zip-slip")
    assert f.severity == Severity.high


def test_keras_custom_module_in_archive(keras_models, tmp_path):
    config = keras_config(keras_models["clean.keras"])
    layer = config["config"]["layers"][1]
    layer["module"], layer["class_name"], layer["registered_name"] = "evilcorp.layers", "Trigger", "evilcorp>Trigger"
    p = rewrite_zip(keras_models["clean.keras"], tmp_path / "m.keras", config=config)
    findings = check_keras_archive(p)
    f = by_title(findings, "custom (non-Keras) objects")
    assert f.severity == Severity.medium and worst(findings) == Severity.medium
    assert f.evidence["objects"]["items"][0]["module"] == "evilcorp.layers"


def test_keras_dangerous_module_in_archive(keras_models, tmp_path):
    config = keras_config(keras_models["clean.keras"])
    config["config"]["layers"][1]["config"]["kernel_initializer"] = {
        "module": "subprocess", "class_name": "Popen", "config": {"args": ["sh", "-c", "id"]}, "registered_name": None}
    p = rewrite_zip(keras_models["clean.keras"], tmp_path / "m.keras", config=config)
    f = by_title(check_keras_archive(p), "dangerous Python module")
    assert f.severity == Severity.critical and f.evidence["objects"]["items"][0]["module"] == "subprocess"


def test_keras_archive_broken(keras_models, tmp_path):
    p = tmp_path / "m.keras"
    p.write_bytes(keras_models["clean.keras"].read_bytes()[:200])
    assert titles(check_keras_archive(p)) == ["Keras archive is not a readable zip"]
    q = rewrite_zip(keras_models["clean.keras"], tmp_path / "n.keras", drop={"config.json"})
    assert by_title(check_keras_archive(q), "missing config.json").severity == Severity.high
    r = rewrite_zip(keras_models["clean.keras"], tmp_path / "o.keras", drop={"config.json"},
                    extra=[("config.json", b"{'class_name': ")])
    assert by_title(check_keras_archive(r), "not valid JSON").severity == Severity.high


def test_keras_h5_broken(keras_models, tmp_path):
    p = tmp_path / "m.h5"
    p.write_bytes(keras_models["clean.h5"].read_bytes()[:300])
    assert titles(check_keras_h5(p)) == ["HDF5 file could not be read"]
    p.write_bytes(b"not hdf5 at all")
    assert check_keras_h5(p)[0].severity == Severity.high


def test_keras_h5_weights_only_and_external_link(tmp_path):
    import h5py

    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f["w"] = np.zeros(3)
    assert [(f.title, f.severity) for f in check_keras_h5(p)] == [("HDF5 file has no model config (weights only)", Severity.info)]
    with h5py.File(p, "a") as f:
        f["stolen"] = h5py.ExternalLink("/etc/secrets.h5", "/data")
    f = by_title(check_keras_h5(p), "references external files")
    assert f.severity == Severity.high and f.evidence["references"]["items"][0]["file"] == "/etc/secrets.h5"


def test_keras_h5_bad_model_config(tmp_path):
    import h5py

    p = tmp_path / "m.h5"
    with h5py.File(p, "w") as f:
        f.attrs["model_config"] = b"{broken"
    assert by_title(check_keras_h5(p), "model_config is not valid JSON").severity == Severity.high


# keras_config_findings on hand-written configs (shapes as Keras 3 / tf.keras write them)

def seq(*layers, name="m"):
    return {"module": "keras", "class_name": "Sequential", "config": {"name": name, "layers": list(layers)}, "registered_name": None}


def layer(class_name, name, module="keras.layers", **cfg):
    return {"module": module, "class_name": class_name, "config": {"name": name, **cfg}, "registered_name": None}


def test_config_tf_keras_legacy_lambda():
    lam = {"class_name": "Lambda", "config": {"name": "legacy", "function": ["4wEAAAAAAAAAAAAAAAEAAAADAAAAQwAAAHMI", None, None],
                                               "function_type": "lambda", "module": "__main__"}}
    findings = keras_config_findings({"class_name": "Functional", "config": {"layers": [lam]}})
    f = by_title(findings, "Lambda layer 'legacy'")
    assert f.severity == Severity.critical and f.evidence["marshalled_code"] is True


def test_config_deeply_nested_functional():
    inner = seq(layer("Lambda", "deep", function={"class_name": "__lambda__", "config": {"code": "/AAAA", "defaults": None, "closure": None}}), name="inner")
    wrapper = layer("TimeDistributed", "td", layer=inner)
    outer = {"module": "keras", "class_name": "Functional", "config": {"name": "outer", "layers": [seq(wrapper, name="mid")]}}
    findings = keras_config_findings(outer)
    assert titles(findings, Severity.critical) == ["Lambda layer 'deep' carries executable Python code"]
    assert not titles(findings, Severity.high)


def test_config_tfoplambda_is_medium():
    findings = keras_config_findings(seq(layer("TFOpLambda", "tf.math.add", function="math.add"),
                                         layer("SlicingOpLambda", "slice", function="__operators__.getitem")))
    f = by_title(findings, "TFOpLambda")
    assert f.severity == Severity.medium and worst(findings) == Severity.medium and f.evidence["layers"]["total"] == 2


def test_config_lambda_activation_bytecode():
    dense = layer("Dense", "d", activation={"class_name": "__lambda__", "config": {"code": "4wEA", "defaults": None, "closure": None}})
    assert by_title(keras_config_findings(seq(dense)), "Marshalled Python bytecode").severity == Severity.critical


@pytest.mark.parametrize("obj, title", [
    ({"module": "os", "class_name": "system", "config": {}, "registered_name": None}, "dangerous Python module"),
    ({"module": "builtins", "class_name": "builtin_function_or_method", "config": "exec", "registered_name": None}, "dangerous Python module"),
    ({"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": "function"}, "dangerous function"),
    ({"module": "builtins", "class_name": "function", "config": "enable_unsafe_deserialization", "registered_name": "function"}, "dangerous function"),
])
def test_config_dangerous_references(obj, title):
    findings = keras_config_findings(seq(layer("Dense", "d", kernel_initializer=obj)))
    assert by_title(findings, title).severity == Severity.critical


def test_config_keras_function_refs_are_clean():
    relu = {"module": "builtins", "class_name": "function", "config": "relu", "registered_name": "function"}
    hub = {"module": "keras_hub.src.models", "class_name": "GemmaBackbone", "config": {"name": "g"}, "registered_name": "keras_hub>GemmaBackbone"}
    findings = keras_config_findings(seq(layer("Dense", "d", activation=relu), hub))
    assert [f.severity for f in findings] == [Severity.info], titles(findings)


def test_config_custom_objects_are_medium():
    findings = keras_config_findings(seq(
        {"module": None, "class_name": "L", "config": {"name": "l"}, "registered_name": "my>L"},
        {"module": "__main__", "class_name": "Backdoor", "config": {"name": "b"}, "registered_name": None},
        {"class_name": "Custom>Legacy", "config": {"name": "c"}},
    ))
    f = by_title(findings, "custom (non-Keras) objects")
    assert f.severity == Severity.medium and f.evidence["objects"]["total"] == 3


@pytest.mark.parametrize("cfg, severity", [
    ({"vocabulary": "/etc/passwd"}, Severity.high),
    ({"vocabulary": "../../home/user/.ssh/id_rsa"}, Severity.high),
    ({"handle": "https://tfhub.dev/google/some-module/1"}, Severity.high),
    ({"filepath": "gs://bucket/weights.h5"}, Severity.high),
    ({"vocabulary": "vocab.txt"}, Severity.medium),
    ({"vocabulary": ["a", "b"], "output_mode": "int"}, Severity.info),
])
def test_config_file_references(cfg, severity):
    findings = keras_config_findings(seq(layer("StringLookup", "lookup", **cfg)))
    assert worst(findings) == severity, titles(findings)
    if severity == Severity.high:
        assert "remote URLs or paths outside the model" in titles(findings, Severity.high)[0]
    elif severity == Severity.medium:
        assert titles(findings, Severity.medium) == ["Model config references external files"]


def test_config_not_a_dict_and_depth_bomb():
    assert keras_config_findings([1, 2])[0].severity == Severity.high
    deep = {"class_name": "X", "config": {}}
    cur = deep["config"]
    for _ in range(2000):
        cur["n"] = {}
        cur = cur["n"]
    assert by_title(keras_config_findings(deep), "could not be fully inspected").severity == Severity.high


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

def onnx_model(nodes, initializers=(), functions=(), extra_opsets=()):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=list(initializers))
    opsets = [helper.make_opsetid("", 17), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions), producer_name="test")


def save_onnx(model, path):
    import onnx

    onnx.save(model, str(path))
    return path


def test_onnx_clean(tmp_path):
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.ones(2, dtype=np.float32), "w")
    p = save_onnx(onnx_model([helper.make_node("Add", ["x", "w"], ["y"])], [w]), tmp_path / "m.onnx")
    findings = check_onnx(p)
    assert_serializable(findings)
    assert [(f.title, f.severity) for f in findings] == [("ONNX model: 1 nodes", Severity.info)]
    assert findings[0].evidence["opsets"] == {"ai.onnx": 17}


def test_onnx_custom_domain_node(tmp_path):
    from onnx import helper

    nodes = [helper.make_node("Backdoor", ["x"], ["t"], domain="com.evil"), helper.make_node("Relu", ["t"], ["y"])]
    p = save_onnx(onnx_model(nodes, extra_opsets=[helper.make_opsetid("com.evil", 1)]), tmp_path / "m.onnx")
    findings = check_onnx(p)
    f = by_title(findings, "custom operator domains")
    assert f.severity == Severity.medium and worst(findings) == Severity.medium
    assert f.evidence["ops"]["items"] == [{"domain": "com.evil", "op_type": "Backdoor", "count": 1}]


def test_onnx_custom_domain_in_subgraph(tmp_path):
    from onnx import TensorProto, helper

    then = helper.make_graph([helper.make_node("Hidden", ["x"], ["a"], domain="org.hidden")], "then", [],
                             [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "else", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    f = by_title(check_onnx(save_onnx(onnx_model(nodes), tmp_path / "m.onnx")), "custom operator domains")
    assert f.evidence["ops"]["items"][0]["domain"] == "org.hidden"


def test_onnx_custom_domain_function(tmp_path):
    from onnx import helper

    fn = helper.make_function("com.local", "Twice", ["i"], ["o"], [helper.make_node("Add", ["i", "i"], ["o"])],
                              [helper.make_opsetid("", 17)])
    nodes = [helper.make_node("Twice", ["x"], ["y"], domain="com.local")]
    model = onnx_model(nodes, functions=[fn], extra_opsets=[helper.make_opsetid("com.local", 1)])
    findings = check_onnx(save_onnx(model, tmp_path / "m.onnx"))
    assert by_title(findings, "functions in custom domains").severity == Severity.medium
    assert "ONNX model uses custom operator domains" not in titles(findings)  # the op is defined in the model


@pytest.mark.parametrize("location, severity, title", [
    ("../../etc/passwd", Severity.critical, "ONNX external data escapes the model folder"),
    ("/etc/passwd", Severity.critical, "ONNX external data escapes the model folder"),
    ("weights/..\\..\\secret", Severity.critical, "ONNX external data escapes the model folder"),
    ("weights.bin", Severity.low, "ONNX model references external data files"),
])
def test_onnx_external_data(tmp_path, location, severity, title):
    from onnx import TensorProto, helper

    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "8")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    p = save_onnx(onnx_model([helper.make_node("Add", ["x", "w"], ["y"])], [w]), tmp_path / "m.onnx")
    findings = check_onnx(p)
    f = by_title(findings, title)
    assert f.severity == severity and worst(findings) == severity
    assert f.evidence["tensors"]["items"][0]["location"] == location


@pytest.mark.parametrize("payload", [b"", b"\x00\x01\x02garbage" * 10, b"\x08\x07" + b"\xff" * 30, b"PK\x03\x04" + bytes(100)])
def test_onnx_unparseable(tmp_path, payload):
    p = tmp_path / "m.onnx"
    p.write_bytes(payload)
    findings = check_onnx(p)
    assert titles(findings) == ["ONNX model could not be parsed"] and findings[0].severity == Severity.high


def test_onnx_random_corruption_never_raises(tmp_path):
    from onnx import helper

    p = save_onnx(onnx_model([helper.make_node("Relu", ["x"], ["y"])]), tmp_path / "m.onnx")
    raw = p.read_bytes()
    rng = random.Random(1)
    for _ in range(200):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        p.write_bytes(bytes(b))
        assert_serializable(check_onnx(p))


def test_keras_archive_weights_with_external_link(keras_models, tmp_path):
    import h5py

    h5 = tmp_path / "w.h5"
    with h5py.File(h5, "w") as f:
        f["layers"] = h5py.ExternalLink("/etc/other.h5", "/")
    with zipfile.ZipFile(keras_models["clean.keras"]) as zin, zipfile.ZipFile(tmp_path / "m.keras", "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, h5.read_bytes() if info.filename == "model.weights.h5" else zin.read(info))
    f = by_title(check_keras_archive(tmp_path / "m.keras"), "HDF5 file references external files")
    assert f.severity == Severity.high and f.evidence["file"] == "model.weights.h5"
