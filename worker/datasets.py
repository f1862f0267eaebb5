"""Load a training dataset (features + labels) for the poisoning detectors (MITRE ATLAS AML.T0020).

Accepted: ``.npz`` with arrays ``x`` and ``y`` (never unpickled: ``allow_pickle=False``, object arrays
refused before they are read), CSV and Parquet with a label column and numeric feature columns; texts (CSV, Parquet
or JSON Lines with a text column, and instruction-tuning JSON Lines) through ``worker.text_data``.

Memory: a dataset is materialised once. ``.npz`` members are read as stored (float32 and uint8 are
kept as they are; other dtypes are converted to float32 once); CSV is parsed in chunks into float32
and Parquet is read batch by batch into one preallocated float32 array, so no full float64 copy or
DataFrame of the whole file is ever alive next to the result.

Every problem is a :class:`DatasetError` whose message names the array/column/row and says what to do.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from worker.findings import InputRejected
from worker.inspect.formats import sniff

MAX_CLASSES = 100_000
ACCEPTED_KINDS = ("npz", "csv", "parquet", "jsonl")
_FINITE_CHUNK = 1 << 22  # elements checked per step of the NaN/inf scan (bounds its temporary)
_CSV_CHUNK_CELLS = 2_000_000  # cells parsed per CSV chunk
_PARQUET_BATCH_ROWS = 65_536
_PARQUET_GROUP_BYTES = 64 << 20  # decoded Parquet data read at once


@dataclass
class Dataset:
    x: np.ndarray  # (n, d) tabular, text features, or (n, h, w[, c]) images; float32 or uint8
    y: np.ndarray  # int64 labels 0..k-1
    classes: list  # original label values (python ints/strs), index = mapped label
    kind: str  # "tabular" | "images" | "text" | "instructions" (the last two: x is dense text features, tabular-like)
    feature_names: list[str] | None
    source: str  # "npz" | "csv" | "parquet" | "jsonl"
    texts: list[str] | None = None  # the raw texts (instruction data: the prompts), row i of x
    responses: list[str] | None = None  # instruction data: the response to each prompt
    notes: list[str] = field(default_factory=list)  # what loading changed (rows dropped), for the report

    @property
    def n_classes(self) -> int:
        return len(self.classes)


class DatasetError(InputRejected):
    """The dataset cannot be used; the message says what is wrong, where, and what to do."""


def load_dataset(path: Path, kind: str | None = None, *, label_column: str = "label", text_column: str | None = None,
                 classes: list | None = None, max_rows: int | None = None) -> Dataset:
    """Load and validate the dataset at ``path``. ``kind`` is ``worker.inspect.formats.sniff(path)`` (sniffed when None).
    JSON Lines, and a CSV or Parquet file with a text column (``text_column``, or one ``worker.text_data`` knows by
    name holding strings), are text datasets."""
    path = Path(path)
    if kind is None:
        kind = sniff(path)
    name = path.name
    if kind == "empty":
        raise DatasetError(f"{name} is empty (0 bytes): upload a dataset with features and labels")
    if kind not in ACCEPTED_KINDS:
        hint = ""
        if kind == "npy":
            hint = ": a single .npy array has no labels; save both with np.savez(path, x=features, y=labels)"
        raise DatasetError(f"{name} is {kind}, expected npz, csv or parquet (numbers or texts), or jsonl{hint}")
    if max_rows is not None and max_rows < 1:
        raise DatasetError(f"max_rows must be a positive number of rows, got {max_rows}")
    if classes is not None:
        _check_declared_classes(classes)
    if kind in ("jsonl", "csv", "parquet"):
        from worker.text_data import is_text_table, load_text_dataset  # imported here: it builds on this module

        if kind == "jsonl" or is_text_table(path, kind, text_column):
            return load_text_dataset(path, kind, text_column=text_column, label_column=label_column, classes=classes,
                                     max_rows=max_rows)

    if kind == "npz":
        x, y_raw, where, row_ref, feature_names = _load_npz(path, max_rows)
    elif kind == "csv":
        x, y_raw, where, row_ref, feature_names = _load_csv(path, label_column, max_rows, classes)
    else:
        x, y_raw, where, row_ref, feature_names = _load_parquet(path, label_column, max_rows)

    _check_finite(x, feature_names, row_ref)
    y, class_values = _encode_labels(y_raw, where, row_ref, classes)
    del y_raw
    return Dataset(x=x, y=y, classes=class_values, kind="tabular" if x.ndim == 2 else "images",
                   feature_names=feature_names, source=kind)


# ----------------------------------------------------------------------------------------------- npz

def _load_npz(path: Path, max_rows: int | None):
    name = path.name
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"cannot open {name} as .npz: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):  # np.load sniffs by content; sniff said npz
        raise DatasetError(f"{name} is not an .npz archive: save with np.savez(path, x=features, y=labels)")
    with npz:
        found = list(npz.files)
        missing = [a for a in ("x", "y") if a not in found]
        if missing:
            raise DatasetError(
                f"{name} has no array {' or '.join(repr(m) for m in missing)}; arrays found: "
                f"{', '.join(repr(f) for f in found) or 'none'}. Save features as 'x' and labels as 'y': "
                f"np.savez(path, x=features, y=labels)")
        x_shape, x_dtype = _npy_header(npz, "x", name)
        y_shape, y_dtype = _npy_header(npz, "y", name)
        for array, dtype in (("x", x_dtype), ("y", y_dtype)):
            if dtype.hasobject:
                raise DatasetError(f"array '{array}' in {name} is an object array: object arrays are not accepted "
                                   f"(they need pickle); store numbers (and labels as ints or fixed-width strings)")
            if dtype.names is not None:
                raise DatasetError(f"array '{array}' in {name} is a structured array ({dtype}): store a plain numeric array")
        if len(x_shape) < 2:
            raise DatasetError(f"array 'x' in {name} has shape {x_shape}: features need at least 2 dims, (rows, features) "
                               f"for tabular data or (rows, h, w[, c]) for images; for one feature use x.reshape(-1, 1)")
        if len(x_shape) > 4:
            raise DatasetError(f"array 'x' in {name} has shape {x_shape}: expected (rows, features), (rows, h, w) "
                               f"or (rows, h, w, c)")
        if len(y_shape) != 1:
            raise DatasetError(f"array 'y' in {name} has shape {y_shape}: labels must be 1-D, one class per row "
                               f"(for one-hot labels save y.argmax(axis=1))")
        n = x_shape[0]
        if n == 0:
            raise DatasetError(f"array 'x' in {name} has 0 rows: the dataset is empty")
        if y_shape[0] != n:
            raise DatasetError(f"array 'x' in {name} has {n} rows but array 'y' has {y_shape[0]} labels: "
                               f"they must have one label per row")
        if max_rows is not None and n > max_rows:
            raise DatasetError(f"{name} has {n} rows, more than the {max_rows} allowed: subsample it")
        if 0 in x_shape[1:]:
            raise DatasetError(f"array 'x' in {name} has shape {x_shape}: no features")
        if x_dtype.kind not in "biuf":
            raise DatasetError(f"array 'x' in {name} has dtype {x_dtype}: features must be numeric (uint8 or float)")
        if y_dtype.kind not in "biufUS":
            raise DatasetError(f"array 'y' in {name} has dtype {y_dtype}: labels must be integers or strings")
        x = _read_member(npz, "x", name)
        y = _read_member(npz, "y", name)
    x = _to_feature_dtype(x)
    if y.dtype.kind == "S":
        y = np.char.decode(y, "utf-8", errors="replace")
    return x, y, "array 'y'", _plain_row, None


def _npy_header(npz, key: str, name: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of member ``key`` from its .npy header, without reading (or unpickling) the data."""
    members = npz.zip.namelist()
    member = key + ".npy" if key + ".npy" in members else key
    fmt = np.lib.format
    try:
        stored = npz.zip.getinfo(member).file_size
        with npz.zip.open(member) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise DatasetError(f"array '{key}' in {name} uses .npy format {version}: store a plain numeric array "
                                   f"with np.savez")
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DatasetError(f"array '{key}' in {name} is not a valid .npy member: {exc}") from None
    declared = int(np.prod(shape, dtype=np.float64) * dtype.itemsize) if not dtype.hasobject else 0
    if declared > stored:  # refuse before numpy allocates what the header claims
        raise DatasetError(f"array '{key}' in {name} claims shape {tuple(shape)} ({declared} bytes) but its member "
                           f"holds {stored} bytes: the file is truncated or corrupt")
    return tuple(shape), dtype


def _read_member(npz, key: str, name: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DatasetError(f"array '{key}' in {name}: object arrays are not accepted (they need pickle); "
                               f"store numbers") from None
        raise DatasetError(f"cannot read array '{key}' in {name}: {exc}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read array '{key}' in {name}: {exc}") from None


def _to_feature_dtype(x: np.ndarray) -> np.ndarray:
    """uint8 and native float32 are kept as they are (no copy); bool is viewed as uint8; the rest becomes float32."""
    if x.dtype == np.bool_:
        return x.view(np.uint8)
    if x.dtype == np.uint8 or x.dtype == np.dtype(np.float32):
        return x
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------------- csv

def _load_csv(path: Path, label_column: str, max_rows: int | None, classes: list | None):
    name = path.name
    sep = _csv_separator(path)
    try:
        columns = list(pd.read_csv(path, sep=sep, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{name} is empty: expected a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"cannot parse {name} as CSV: {exc}") from None
    columns = [str(c) for c in columns]
    _require_label_column(label_column, columns, name)
    features = [c for c in columns if c != label_column]
    if not features:
        raise DatasetError(f"{name} has only the label column '{label_column}': no feature columns")

    chunk_rows = max(1_000, _CSV_CHUNK_CELLS // len(columns))
    parts: list[np.ndarray] = []
    labels: list[pd.Series] = []
    n = 0
    try:
        reader = pd.read_csv(path, sep=sep, chunksize=chunk_rows, dtype={label_column: str})
        with reader:
            for chunk in reader:
                if len(chunk) == 0:
                    continue
                if max_rows is not None and n + len(chunk) > max_rows:
                    raise DatasetError(f"{name} has more than the {max_rows} rows allowed (stopped reading at row "
                                       f"{n + len(chunk)}): subsample it")
                feats = chunk[features]
                bad = [c for c in features if not _numeric_dtype(feats[c].dtype)]
                if bad:
                    raise DatasetError(_non_numeric_message(name, feats, bad, n, label_column, _csv_row))
                with np.errstate(over="ignore"):  # beyond float32 range -> inf, reported by _check_finite
                    parts.append(feats.to_numpy(dtype=np.float32))
                labels.append(chunk[label_column])
                n += len(chunk)
                del chunk, feats
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot parse {name} as CSV: {str(exc).strip()}") from None
    if n == 0:
        raise DatasetError(f"{name} has a header but 0 data rows: the dataset is empty")
    x = _assemble(parts, n, len(features))
    y_text = pd.concat(labels, ignore_index=True) if len(labels) > 1 else labels[0].reset_index(drop=True)
    del labels
    where = f"label column '{label_column}'"
    _check_missing_labels(y_text, where, _csv_row)
    keep_text = classes is not None and all(isinstance(c, str) for c in classes)
    y = y_text.to_numpy(dtype=object)
    if not keep_text:
        numeric = pd.to_numeric(y_text, errors="coerce")
        if numeric.notna().all():
            y = numeric.to_numpy(dtype=np.int64 if pd.api.types.is_integer_dtype(numeric.dtype) else np.float64)
    return x, y, where, _csv_row, features


def _csv_separator(path: Path) -> str:
    with path.open("rb") as f:
        first = f.readline(65536).decode("utf-8", errors="replace")
    return "\t" if "\t" in first and "," not in first else ","


def _assemble(parts: list[np.ndarray], n: int, d: int) -> np.ndarray:
    """One (n, d) C-contiguous float32 array from the chunks, freeing each chunk once it is copied
    (the destination's pages are touched only as they are filled, so peak resident memory stays ~1x)."""
    if len(parts) == 1:
        return np.ascontiguousarray(parts.pop())
    x = np.empty((n, d), dtype=np.float32)
    row = 0
    parts.reverse()
    while parts:
        part = parts.pop()
        x[row:row + len(part)] = part
        row += len(part)
        del part
    return x


def _csv_row(i: int) -> str:
    return f"row {i} (line {i + 2} of the file)"


def _plain_row(i: int) -> str:
    return f"row {i}"


# ------------------------------------------------------------------------------------------- parquet

def _load_parquet(path: Path, label_column: str, max_rows: int | None):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    name = path.name
    try:
        pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {name} as Parquet: {exc}") from None
    index_columns = set()
    try:
        meta = schema.pandas_metadata or {}
        index_columns = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    except (ValueError, TypeError):
        pass
    columns = [c for c in schema.names if c not in index_columns]
    _require_label_column(label_column, columns, name)
    features = [c for c in columns if c != label_column]
    if not features:
        raise DatasetError(f"{name} has only the label column '{label_column}': no feature columns")
    n = pf.metadata.num_rows
    if n == 0:
        raise DatasetError(f"{name} has 0 rows: the dataset is empty")
    if max_rows is not None and n > max_rows:
        raise DatasetError(f"{name} has {n} rows, more than the {max_rows} allowed: subsample it")

    def numeric(t) -> bool:
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)

    bad = [c for c in features if not numeric(schema.field(c).type)]
    if bad:
        details = []
        for c in bad[:3]:
            example = _parquet_first_value(pf, c)
            details.append(f"'{c}' ({schema.field(c).type}{example})")
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DatasetError(f"{name}: non-numeric feature column(s) {', '.join(details)}{more}; every column except "
                           f"the label column '{label_column}' must hold numbers: drop or encode these columns")

    # A whole row group of the requested columns is decoded at once, so read a few columns at a time:
    # about _PARQUET_GROUP_BYTES of decoded data alive next to x, whatever the row-group size.
    largest_group = max(pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups))
    per_read = max(1, _PARQUET_GROUP_BYTES // max(1, largest_group * 8))
    x = np.empty((n, len(features)), dtype=np.float32)
    try:
        for first in range(0, len(features), per_read):
            group = features[first:first + per_read]
            row = 0
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=group, use_pandas_metadata=False):
                m = batch.num_rows
                for j, col in enumerate(batch.columns, start=first):
                    x[row:row + m, j] = pc.cast(col, pa.float32(), safe=False).to_numpy(zero_copy_only=False)
                row += m
            if row != n:
                break
        label_arr = pf.read(columns=[label_column], use_pandas_metadata=False).column(0)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {name} as Parquet: {exc}") from None
    if row != n:
        raise DatasetError(f"{name} declares {n} rows but {row} could be read: the file is truncated or corrupt")
    if pa.types.is_dictionary(label_arr.type):
        label_arr = pc.cast(label_arr, label_arr.type.value_type)
    lt = label_arr.type
    where = f"label column '{label_column}'"
    if not (numeric(lt) or pa.types.is_string(lt) or pa.types.is_large_string(lt)):
        raise DatasetError(f"{where} in {name} has type {lt}: labels must be integers or strings")
    s = label_arr.to_pandas()
    del label_arr
    _check_missing_labels(s, where, _plain_row)
    y = s.to_numpy() if pd.api.types.is_numeric_dtype(s.dtype) else s.to_numpy(dtype=object)
    return x, y, where, _plain_row, features


def _parquet_first_value(pf, column: str) -> str:
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=4096, columns=[column], use_pandas_metadata=False):
            col = batch.column(0)
            if col.null_count < len(col):
                for i, v in enumerate(col.to_pylist()):
                    if v is not None:
                        return f", e.g. {v!r} at row {row + i}"
            row += batch.num_rows
    except Exception:  # noqa: BLE001 - the example is a courtesy; the error is raised regardless
        pass
    return ""


# ------------------------------------------------------------------------------------------- checks

def _require_label_column(label_column: str, columns: list[str], name: str) -> None:
    if label_column not in columns:
        shown = ", ".join(repr(c) for c in columns[:20]) + (f", ... ({len(columns)} columns)" if len(columns) > 20 else "")
        raise DatasetError(f"{name} has no label column '{label_column}'; columns: {shown}. "
                           f"Name the label column (label_column=...) or rename it to '{label_column}'")


def _numeric_dtype(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "biuf"


def _non_numeric_message(name, feats: pd.DataFrame, bad: list[str], offset: int, label_column: str, row_ref) -> str:
    details = []
    for c in bad[:3]:
        s = feats[c]
        coerced = pd.to_numeric(s, errors="coerce")
        mask = (coerced.isna() & s.notna()).to_numpy()
        hits = np.flatnonzero(mask)
        if len(hits):
            i = int(hits[0])
            details.append(f"'{c}' ({row_ref(offset + i)}: {s.iloc[i]!r})")
        else:
            details.append(f"'{c}' (dtype {s.dtype})")
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"{name}: non-numeric feature column(s) {', '.join(details)}{more}; every column except the label "
            f"column '{label_column}' must hold numbers: drop or encode these columns, or set label_column "
            f"(a column of texts: name it 'text')")


def _check_finite(x: np.ndarray, feature_names: list[str] | None, row_ref) -> None:
    """Refuse NaN/inf features, naming the count and the first row, scanning in chunks to bound the temporary."""
    if x.dtype.kind != "f":
        return
    n = x.shape[0]
    row_size = max(1, int(np.prod(x.shape[1:])))
    step = max(1, _FINITE_CHUNK // row_size)
    first = None
    count = 0
    for start in range(0, n, step):
        finite = np.isfinite(x[start:start + step])
        if finite.all():
            continue
        bad = ~finite
        count += int(bad.sum())
        if first is None:
            rows_bad = bad.reshape(len(bad), -1).any(axis=1)
            r = int(np.flatnonzero(rows_bad)[0])
            first = (start + r, bad[r])
    if first is None:
        return
    row, row_bad = first
    where = row_ref(row)
    if x.ndim == 2:
        j = int(np.flatnonzero(row_bad)[0])
        col = f"'{feature_names[j]}'" if feature_names else f"{j}"
        where += f", column {col}: {x[row, j]}"
    raise DatasetError(f"features contain {count} NaN or infinite value(s), first at {where}: impute or drop those "
                       f"rows (values beyond float32 range also become infinite)")


def _check_missing_labels(s: pd.Series, where: str, row_ref) -> None:
    missing = s.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise DatasetError(f"{where} has {int(missing.sum())} missing or NaN label(s), first at {row_ref(first)}: "
                           f"fill or drop those rows")


def _check_declared_classes(classes) -> None:
    if not isinstance(classes, (list, tuple)):
        raise DatasetError(f"classes must be a list of label values, got {type(classes).__name__}")
    bad = [c for c in classes if isinstance(c, bool) or not isinstance(c, (int, str))]
    if bad:
        raise DatasetError(f"classes must hold ints or strings; got {bad[:5]!r}")
    if len(set(classes)) != len(classes):
        dupes = sorted({repr(c) for c in classes if classes.count(c) > 1})
        raise DatasetError(f"classes lists a value more than once: {', '.join(dupes[:10])}")
    if len(classes) > MAX_CLASSES:
        raise DatasetError(f"classes declares {len(classes)} classes, more than the {MAX_CLASSES} allowed")


def _encode_labels(y: np.ndarray, where: str, row_ref, classes: list | None) -> tuple[np.ndarray, list]:
    """Map original labels to 0..k-1 (sorted unique values, or the order of ``classes``)."""
    if not y.dtype.isnative:
        y = y.astype(y.dtype.newbyteorder("="))
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        finite = np.isfinite(y)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DatasetError(f"{where} has {len(bad)} NaN or infinite label(s), first at {row_ref(int(bad[0]))}: "
                               f"fill or drop those rows")
        frac = np.flatnonzero(y != np.floor(y))
        if len(frac):
            i = int(frac[0])
            raise DatasetError(f"{where} holds non-integer numbers ({len(frac)} rows, e.g. {y[i]!r} at {row_ref(i)}): "
                               f"labels must be class ids or names, not continuous values (regression targets "
                               f"are not supported)")
        if np.abs(y).max() >= 2.0 ** 53:
            raise DatasetError(f"{where} holds numbers too large to be exact class ids; store labels as integers")
        y = y.astype(np.int64)
    codes, uniques = pd.factorize(y, sort=True)
    del y
    values = np.asarray(uniques).tolist()  # python ints / strs
    k = len(values)
    if k > MAX_CLASSES:
        raise DatasetError(f"{where} has {k} distinct values, more than the {MAX_CLASSES} classes allowed: "
                           f"is this the right label column?")
    if k == 1:
        raise DatasetError(f"only one class (value {values[0]!r}) present in {where}: nothing to compare; "
                           f"a poisoning scan needs at least two classes")
    if classes is None:
        return codes.astype(np.int64, copy=False), values
    position = {c: i for i, c in enumerate(classes)}
    mapping = np.array([position.get(v, -1) for v in values], dtype=np.int64)
    unknown = np.flatnonzero(mapping < 0)
    if len(unknown):
        offenders = [values[i] for i in unknown]
        first_row = int(np.flatnonzero(np.isin(codes, unknown))[0])
        hint = ""
        if any(str(o) in {str(c) for c in classes} for o in offenders):
            hint = " (labels and classes differ in type: numbers vs strings)"
        raise DatasetError(f"{where} has {len(offenders)} value(s) outside the declared classes "
                           f"{_preview(list(classes))}: {_preview(offenders)}, first at {row_ref(first_row)}{hint}; "
                           f"add them to classes or fix the labels")
    return mapping[codes], list(classes)


def _preview(values: list, limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def load_holdout(holdout, ds: Dataset, *, label_column: str = "label", text_column: str | None = None,
                 max_rows: int | None = None) -> tuple[Dataset, np.ndarray]:
    """The uploaded holdout set (``ScanInputs.holdout``) and its labels coded as the dataset's (``ds.classes``).
    Refused with the reason when it is not the dataset's kind or has labels the dataset does not."""
    hold = load_dataset(holdout.path, holdout.kind, label_column=label_column, text_column=text_column,
                        max_rows=max_rows)
    if (hold.texts is None) != (ds.texts is None):
        raise DatasetError(f"the holdout set is {hold.kind} but the dataset is {ds.kind}: upload held-out samples in the "
                           "dataset's format")
    index = {v: i for i, v in enumerate(ds.classes)}
    if unknown := sorted({str(v) for v in hold.classes if v not in index}):
        raise DatasetError(f"the holdout set has labels the dataset does not: {unknown[:5]}; give a holdout set "
                           "labelled like the dataset")
    return hold, np.array([index[v] for v in hold.classes], dtype=np.int64)[hold.y]
