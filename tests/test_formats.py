import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from worker.inspect.formats import extension_matches, sniff


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_pickle_every_protocol(tmp_path, protocol):
    assert sniff(write(tmp_path, "x.bin", pickle.dumps({"w": [1.0, 2.0]}, protocol=protocol))) == "pickle"


def test_protocol0_global_without_header(tmp_path):
    assert sniff(write(tmp_path, "x.txt", b"cos\nsystem\n(S'echo hi'\ntR.")) == "pickle"


def test_numpy_formats(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    npz = tmp_path / "a.npz"
    np.savez(npz, x=np.zeros((2, 2)), y=np.array([0, 1]))
    assert sniff(npy) == "npy"
    assert sniff(npz) == "npz"


def test_safetensors(tmp_path):
    p = tmp_path / "w.safetensors"
    save_file({"w": np.ones((2, 3), dtype=np.float32)}, str(p))
    assert sniff(p) == "safetensors"


def test_pytorch_zip_layout_whatever_the_name(tmp_path):
    p = tmp_path / "weights.safetensors"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
        zf.writestr("archive/version", "3\n")
    assert sniff(p) == "pytorch_zip"
    assert not extension_matches(p.name, "pytorch_zip")


def test_containers_and_magic(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    assert sniff(write(tmp_path, "a.tar", buf.getvalue())) == "tar"
    assert sniff(write(tmp_path, "a.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)) == "hdf5"
    assert sniff(write(tmp_path, "a.gguf", b"GGUF" + b"\0" * 100)) == "gguf"
    assert sniff(write(tmp_path, "a.gz", b"\x1f\x8b\x08" + b"\0" * 20)) == "gzip"
    assert sniff(write(tmp_path, "a.7z", b"7z\xbc\xaf\x27\x1c" + b"\0" * 20)) == "7z"
    assert sniff(write(tmp_path, "d.csv", b"a,b,label\n1,2,0\n")) == "csv"
    assert sniff(write(tmp_path, "empty.bin", b"")) == "empty"


def test_extension_matching():
    assert extension_matches("model.pkl", "pickle")
    assert extension_matches("model", "pickle")  # no extension says nothing
    assert not extension_matches("model.safetensors", "pickle")
    assert not extension_matches("data.npz", "pickle")
