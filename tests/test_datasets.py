"""worker.datasets: loading and validating training datasets (npz, CSV, Parquet)."""

import gc
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from worker.datasets import MAX_CLASSES, Dataset, DatasetError, load_dataset

import pyarrow  # noqa: E402,F401  (Parquet support)


def npz(tmp_path, name="d.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def csv(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def parquet(tmp_path, df, name="d.parquet", **kw):
    p = tmp_path / name
    df.to_parquet(p, engine="pyarrow", **kw)
    return p


def error(path, **kw) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, **kw)
    return str(info.value)


# ------------------------------------------------------------------------------------------ valid sets

def test_npz_tabular(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))  # float64: converted to float32 once
    y = np.array([7, 3] * 25)
    ds = load_dataset(npz(tmp_path, x=x, y=y))
    assert isinstance(ds, Dataset)
    assert ds.kind == "tabular" and ds.source == "npz" and ds.feature_names is None
    assert ds.x.dtype == np.float32 and ds.x.shape == (50, 4)
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    assert ds.classes == [3, 7] and all(type(c) is int for c in ds.classes)
    assert ds.y.dtype == np.int64 and ds.y.tolist() == [1, 0] * 25


def test_npz_images_uint8_kept(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, size=(100, 28, 28), dtype=np.uint8)
    y = np.arange(100) % 10
    ds = load_dataset(npz(tmp_path, x=x, y=y))
    assert ds.kind == "images" and ds.x.dtype == np.uint8 and ds.x.shape == (100, 28, 28)
    np.testing.assert_array_equal(ds.x, x)
    assert ds.classes == list(range(10)) and ds.y.tolist() == y.tolist()


def test_npz_images_with_channels_and_string_labels(tmp_path):
    x = np.zeros((6, 8, 8, 3), dtype=np.float32)
    y = np.array(["dog", "cat", "dog", "bird", "cat", "dog"])
    ds = load_dataset(npz(tmp_path, x=x, y=y))
    assert ds.kind == "images" and ds.x.dtype == np.float32
    assert ds.classes == ["bird", "cat", "dog"] and all(type(c) is str for c in ds.classes)
    assert ds.y.tolist() == [2, 1, 2, 0, 1, 2]


def test_npz_float_labels_that_are_integers(tmp_path):
    ds = load_dataset(npz(tmp_path, x=np.zeros((4, 2)), y=np.array([1.0, 0.0, 1.0, 2.0])))
    assert ds.classes == [0, 1, 2] and ds.y.tolist() == [1, 0, 1, 2]


def test_csv_string_labels_mapped(tmp_path):
    p = csv(tmp_path, "f1,label,f2\n1,spam,0.5\n2,ham,1.5\n3,spam,2.5\n4,eggs,3\n")
    ds = load_dataset(p)
    assert ds.source == "csv" and ds.kind == "tabular"
    assert ds.feature_names == ["f1", "f2"]
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, [[1, 0.5], [2, 1.5], [3, 2.5], [4, 3]])
    assert ds.classes == ["eggs", "ham", "spam"] and ds.y.tolist() == [2, 1, 2, 0]


def test_csv_numeric_labels_custom_column_and_declared_order(tmp_path):
    p = csv(tmp_path, "a,b,target\n1,2,5\n3,4,9\n5,6,5\n")
    ds = load_dataset(p, label_column="target", classes=[9, 5, 1])
    assert ds.classes == [9, 5, 1] and ds.y.tolist() == [1, 0, 1]


def test_csv_string_classes_keep_numeric_looking_labels_as_text(tmp_path):
    ds = load_dataset(csv(tmp_path, "a,label\n1,01\n2,2\n"), classes=["2", "01"])
    assert ds.classes == ["2", "01"] and ds.y.tolist() == [1, 0]


def test_csv_many_chunks(tmp_path, monkeypatch):
    import worker.datasets as mod
    monkeypatch.setattr(mod, "_CSV_CHUNK_CELLS", 10)  # 1,000-row chunks
    n = 3_500
    df = pd.DataFrame({"a": np.arange(n, dtype=float), "b": np.arange(n) * 2, "label": np.arange(n) % 3})
    p = tmp_path / "big.csv"
    df.to_csv(p, index=False)
    ds = load_dataset(p)
    assert ds.x.shape == (n, 2) and ds.x.flags.c_contiguous
    np.testing.assert_array_equal(ds.x[:, 1], np.arange(n) * 2)
    assert ds.y.tolist() == (np.arange(n) % 3).tolist()


def test_tsv(tmp_path):
    ds = load_dataset(csv(tmp_path, "a\tb\tlabel\n1\t2\tx\n3\t4\ty\n", name="d.tsv"))
    assert ds.feature_names == ["a", "b"] and ds.classes == ["x", "y"]


def test_parquet_string_labels_mapped(tmp_path):
    df = pd.DataFrame({"f1": [1.0, 2.0, 3.0, 4.0], "f2": np.array([1, 2, 3, 4], dtype=np.int32),
                       "label": ["b", "a", "c", "a"]}, index=[10, 11, 12, 13])  # stored index is not a feature
    ds = load_dataset(parquet(tmp_path, df))
    assert ds.source == "parquet" and ds.feature_names == ["f1", "f2"]
    assert ds.x.dtype == np.float32 and ds.x.shape == (4, 2)
    np.testing.assert_array_equal(ds.x[:, 1], [1, 2, 3, 4])
    assert ds.classes == ["a", "b", "c"] and ds.y.tolist() == [1, 0, 2, 0]


def test_parquet_many_batches(tmp_path, monkeypatch):
    import worker.datasets as mod
    monkeypatch.setattr(mod, "_PARQUET_BATCH_ROWS", 1000)
    n = 3_500
    df = pd.DataFrame({"a": np.arange(n, dtype=np.float64), "label": np.arange(n) % 2})
    ds = load_dataset(parquet(tmp_path, df, row_group_size=700))
    np.testing.assert_array_equal(ds.x[:, 0], np.arange(n))
    assert ds.classes == [0, 1] and ds.y.tolist() == (np.arange(n) % 2).tolist()


def test_float32_npz_is_loaded_without_extra_copies(tmp_path):
    x = np.random.default_rng(2).random((200_000, 50), dtype=np.float32)
    y = (np.arange(200_000) % 10).astype(np.int64)
    p = npz(tmp_path, x=x, y=y)
    nbytes = x.nbytes
    del x
    gc.collect()
    tracemalloc.start()
    try:
        ds = load_dataset(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.x.dtype == np.float32 and ds.x.flags.c_contiguous and ds.x.shape == (200_000, 50)
    # One copy of x (the read itself) plus labels and bounded temporaries: well under double.
    assert peak < 1.5 * nbytes, f"peak {peak / 1e6:.0f} MB for {nbytes / 1e6:.0f} MB of features"


# ------------------------------------------------------------------------------------------ wrong kind

def test_npy_is_refused(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((3, 2)))
    msg = error(p)
    assert "is npy, expected npz, csv or parquet" in msg and "np.savez" in msg


def test_other_kind_is_refused(tmp_path):
    assert "is safetensors, expected npz, csv or parquet" in error(tmp_path / "whatever", kind="safetensors")


def test_empty_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_bytes(b"")
    assert "empty" in error(p)
    assert "empty" in error(p, kind="csv")


# ------------------------------------------------------------------------------------------ npz errors

def test_npz_missing_arrays_listed(tmp_path):
    msg = error(npz(tmp_path, features=np.zeros((2, 2)), y=np.array([0, 1])))
    assert "no array 'x'" in msg and "'features'" in msg and "'y'" in msg


_UNPICKLED = []


def _record_unpickle():
    _UNPICKLED.append(True)
    return "payload"


class _Payload:
    def __reduce__(self):
        return (_record_unpickle, ())


@pytest.mark.parametrize("member", ["x", "y"])
def test_npz_object_array_refused_without_unpickling(tmp_path, member):
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = _Payload(), _Payload()
    arrays = {"x": np.zeros((2, 2)), "y": np.array([0, 1])}
    arrays[member] = obj if member == "y" else obj.reshape(2, 1)
    msg = error(npz(tmp_path, **arrays))
    assert "object arrays are not accepted" in msg and f"'{member}'" in msg
    assert not _UNPICKLED


def test_npz_zero_rows(tmp_path):
    assert "0 rows" in error(npz(tmp_path, x=np.zeros((0, 3)), y=np.zeros(0, dtype=int)))


def test_npz_length_mismatch(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((10, 3)), y=np.arange(9) % 2))
    assert "10 rows" in msg and "9 labels" in msg


def test_npz_x_one_dimensional(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros(10), y=np.arange(10) % 2))
    assert "'x'" in msg and "(10,)" in msg and "at least 2 dims" in msg


def test_npz_y_not_one_dimensional(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((4, 2)), y=np.eye(4)))
    assert "'y'" in msg and "(4, 4)" in msg and "1-D" in msg


def test_npz_string_features_refused(tmp_path):
    msg = error(npz(tmp_path, x=np.array([["a", "b"], ["c", "d"]]), y=np.array([0, 1])))
    assert "'x'" in msg and "numeric" in msg


def test_npz_max_rows(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((20, 2)), y=np.arange(20) % 2), max_rows=10)
    assert "20 rows" in msg and "10" in msg


# ------------------------------------------------------------------------------------- feature values

def test_nan_in_npz_features(tmp_path):
    x = np.zeros((8, 3), dtype=np.float32)
    x[5, 2] = np.nan
    x[7, 0] = np.inf
    msg = error(npz(tmp_path, x=x, y=np.arange(8) % 2))
    assert "2 NaN or infinite" in msg and "row 5" in msg and "column 2" in msg


def test_inf_in_image_features(tmp_path):
    x = np.zeros((4, 5, 5), dtype=np.float32)
    x[3, 1, 1] = -np.inf
    msg = error(npz(tmp_path, x=x, y=np.array([0, 1, 0, 1])))
    assert "1 NaN or infinite" in msg and "row 3" in msg


def test_nan_in_csv_features_names_column_and_line(tmp_path):
    msg = error(csv(tmp_path, "a,b,label\n1,2,x\n3,,y\n5,6,x\n"))
    assert "1 NaN or infinite" in msg and "row 1" in msg and "line 3" in msg and "'b'" in msg


# -------------------------------------------------------------------------------------- csv / parquet

def test_csv_header_only(tmp_path):
    assert "0 data rows" in error(csv(tmp_path, "a,b,label\n"))


def test_csv_missing_label_column(tmp_path):
    msg = error(csv(tmp_path, "a,b,class\n1,2,0\n3,4,1\n"))
    assert "no label column 'label'" in msg and "'a', 'b', 'class'" in msg and "label_column" in msg


def test_csv_non_numeric_column(tmp_path):
    msg = error(csv(tmp_path, "a,colour,label\n1,2,0\n3,red,1\n4,5,0\n"))
    assert "non-numeric" in msg and "'colour'" in msg and "row 1" in msg and "'red'" in msg
    assert "'a'" not in msg.split("must hold")[0]


def test_csv_max_rows(tmp_path):
    msg = error(csv(tmp_path, "a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(30))), max_rows=10)
    assert "more than the 10 rows" in msg


def test_parquet_missing_label_column(tmp_path):
    msg = error(parquet(tmp_path, pd.DataFrame({"a": [1.0, 2.0], "target": [0, 1]})))
    assert "no label column 'label'" in msg and "'a', 'target'" in msg


def test_parquet_non_numeric_column(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0], "city": [None, "Oslo"], "label": [0, 1]})
    msg = error(parquet(tmp_path, df))
    assert "non-numeric" in msg and "'city'" in msg and "'Oslo' at row 1" in msg


def test_parquet_zero_rows(tmp_path):
    df = pd.DataFrame({"a": pd.Series([], dtype=float), "label": pd.Series([], dtype=int)})
    assert "0 rows" in error(parquet(tmp_path, df))


def test_parquet_max_rows(tmp_path):
    df = pd.DataFrame({"a": np.arange(50.0), "label": np.arange(50) % 2})
    assert "50 rows" in error(parquet(tmp_path, df), max_rows=49)


def test_parquet_missing_label(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": ["x", None, "y"]})
    msg = error(parquet(tmp_path, df))
    assert "1 missing" in msg and "row 1" in msg and "'label'" in msg


# --------------------------------------------------------------------------------------------- labels

def test_nan_in_npz_labels(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((4, 2)), y=np.array([0.0, 1.0, np.nan, 1.0])))
    assert "'y'" in msg and "NaN" in msg and "row 2" in msg


def test_missing_csv_label(tmp_path):
    msg = error(csv(tmp_path, "a,label\n1,x\n2,\n3,y\n"))
    assert "label column 'label'" in msg and "1 missing" in msg and "row 1" in msg


def test_single_class(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((5, 2)), y=np.full(5, 4)))
    assert "only one class (value 4) present" in msg and "nothing to compare" in msg
    assert "only one class (value 'cat') present" in error(csv(tmp_path, "a,label\n1,cat\n2,cat\n"))


def test_labels_outside_declared_classes(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((6, 2)), y=np.array([0, 1, 2, 5, 1, 9])), classes=[0, 1, 2])
    assert "outside the declared classes" in msg and "[5, 9]" in msg and "row 3" in msg


def test_labels_vs_classes_type_hint(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, 1])), classes=["0", "1"])
    assert "numbers vs strings" in msg


def test_non_integer_float_labels(tmp_path):
    msg = error(npz(tmp_path, x=np.zeros((4, 2)), y=np.array([0.0, 1.0, 0.5, 1.0])))
    assert "non-integer" in msg and "0.5" in msg and "row 2" in msg
    msg = error(csv(tmp_path, "a,label\n1,0\n2,1.5\n"))
    assert "non-integer" in msg and "1.5" in msg and "line 3" in msg


def test_too_many_classes(tmp_path):
    n = MAX_CLASSES + 1
    msg = error(npz(tmp_path, x=np.zeros((n, 1), dtype=np.float32), y=np.arange(n)))
    assert f"{n} distinct values" in msg and str(MAX_CLASSES) in msg


def test_bad_declared_classes(tmp_path):
    p = npz(tmp_path, x=np.zeros((2, 2)), y=np.array([0, 1]))
    assert "more than once" in error(p, classes=[0, 1, 0])
    assert "ints or strings" in error(p, classes=[0.5, 1])


def test_npz_header_claiming_more_data_than_stored(tmp_path):
    import io
    import zipfile
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 100)})
    p = tmp_path / "lie.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", buf.getvalue() + b"\0" * 64)
        with zf.open("y.npy", "w") as f:
            np.save(f, np.arange(10))
    msg = error(p)
    assert "'x'" in msg and "truncated or corrupt" in msg


def test_npz_compressed_with_bytes_labels(tmp_path):
    p = tmp_path / "c.npz"
    np.savez_compressed(p, x=np.ones((4, 3), dtype=np.float32), y=np.array([b"a", b"b", b"a", b"b"]))
    ds = load_dataset(p)
    assert ds.classes == ["a", "b"] and ds.y.tolist() == [0, 1, 0, 1]
