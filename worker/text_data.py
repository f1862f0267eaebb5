"""Load a text dataset: labelled texts, or instruction-tuning records, as a :class:`worker.datasets.Dataset`.

Formats (``kind`` is what ``worker.inspect.formats.sniff`` says):
- ``csv`` (comma- or tab-separated; UTF-8, a BOM tolerated) and ``parquet``: a text column and a label column (other
  columns are not read).
- ``jsonl``, one JSON object per line, in one of three shapes (the first record decides):
    labelled texts  ``{"text": ..., "label": ...}``
    chat            ``{"messages": [{"role": "system|user|assistant", "content": ...}, ...]}``: prompt = the system and
                    user turns before the last assistant turn, response = that last assistant turn
    instruction     ``{"instruction": ..., "input": ... (optional), "output": ...}``: prompt = instruction + "\\n" +
                    input, response = output
  Instruction data (chat or instruction) may carry a label; without one every record is class 0, "instruction".

The text column is ``text_column``; when None, the first of ``text``, ``sentence``, ``content``, ``message``,
``review`` present. The label column is ``label_column`` (default ``label``).

The result's ``texts`` (the prompts of instruction data) and ``responses`` (instruction data only) hold the raw
strings; ``x`` holds their dense features (``worker.text_features``), so every array-based detector runs unchanged.
``kind`` is "text" or "instructions".

Streaming: CSV and JSON Lines are read a line at a time (a line over ``MAX_LINE_BYTES`` is refused, so no line is
ever held whole when it is huge), Parquet a batch at a time with only the two columns read; labels are kept as small
codes. What stays is the list of texts, once, and its features. Nothing is executed or evaluated: JSON is parsed
with ``json.loads``, CSV with the ``csv`` module (whose fields are limited to 131,072 characters).

Every problem is a :class:`worker.datasets.DatasetError` naming the line (row, for Parquet) and what to do. Empty
texts are dropped, and said so in ``notes``, when at most ``MAX_EMPTY_SHARE`` of the rows are empty; more refuse the
dataset.
"""

from __future__ import annotations

import csv
import json
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from worker.datasets import Dataset, DatasetError, _encode_labels
from worker.text_features import text_features

TEXT_COLUMNS = ("text", "sentence", "content", "message", "review")  # tried in this order when none is named
MAX_LINE_BYTES = 1 << 20
MAX_EMPTY_SHARE = 0.01
MIN_ROWS = 10  # cross-validation folds and the SVD need a few rows of each class
UNLABELLED_CLASS = "instruction"
PROMPT_ROLES = ("system", "user")
_PARQUET_BATCH_ROWS = 65_536
_PEEKED_ROWS = 100  # rows looked at to tell a text column from a numeric one
_NAMED = 10  # lines named in a message or note
_BOM = b"\xef\xbb\xbf"
_ABSENT = object()  # a record without the label key (JSON null is a missing label, not an absent one)

Record = tuple[int, "str | None", "str | None", object]  # place (line or row), text, response, label


@dataclass
class _Source:
    """What one format reader found: the dataset kind, whether rows carry labels, and the records."""

    kind: str  # "text" | "instructions"
    labelled: bool
    records: Iterator[Record]
    place: Callable[[int], str]  # "line 7" / "row 6"


def load_text_dataset(path: Path, kind: str, *, text_column: str | None = None, label_column: str = "label",
                      classes: list | None = None, max_rows: int | None = None, seed: int = 0) -> Dataset:
    """The text dataset at ``path`` (``kind``: "csv", "parquet" or "jsonl"), its features made with ``seed``."""
    path = Path(path)
    name = path.name
    if kind == "csv":
        source = _csv_source(path, name, text_column, label_column)
    elif kind == "parquet":
        source = _parquet_source(path, name, text_column, label_column)
    elif kind == "jsonl":
        source = _jsonl_source(path, name, text_column, label_column)
    else:
        raise DatasetError(f"{name} is {kind}: texts are read from csv, parquet or jsonl")
    rows = _collect(source, name, max_rows)
    if source.labelled:
        place = _place_of_row(rows.places, source.place)
        y, class_values = _encode_labels(rows.labels.values_per_row(name, source.place, classes),
                                         f"label column '{label_column}'", place, classes)
    else:
        y, class_values = np.zeros(len(rows.texts), np.int64), [UNLABELLED_CLASS]
    x = text_features(rows.texts, seed=seed, responses=rows.responses)
    return Dataset(x=x, y=y, classes=class_values, kind=source.kind, feature_names=None, source=kind,
                   texts=rows.texts, responses=rows.responses, notes=rows.notes)


def is_text_table(path: Path, kind: str, text_column: str | None = None) -> bool:
    """Whether the CSV or Parquet file at ``path`` holds texts: a text column was named, or one of ``TEXT_COLUMNS``
    is there and holds strings that are not numbers."""
    if text_column is not None:
        return True
    if kind == "parquet":
        return _parquet_text_column(path) is not None
    try:
        header, reader = _csv_reader(path, path.name)
    except DatasetError:
        return False  # the tabular loader gives its own reason
    column = next((c for c in TEXT_COLUMNS if c in header), None)
    if column is None:
        return False
    at = header.index(column)
    try:
        for fields, _ in zip(reader, range(_PEEKED_ROWS)):
            if len(fields) > at and fields[at].strip() and not _is_number(fields[at]):
                return True
    except (DatasetError, csv.Error):
        return True  # the text loader names the line
    return False


# ------------------------------------------------------------------------------------------------ collecting rows

class _LabelCodes:
    """Labels as one small code per row while streaming: each distinct value is held once, with where it came first."""

    def __init__(self) -> None:
        self.code_of: dict = {}
        self.first_place: list[int] = []
        self.codes = array("q")

    def add(self, label, place: int, where: Callable[[int], str]) -> None:
        if label is None or label is _ABSENT or (isinstance(label, str) and not label.strip()):
            raise DatasetError(f"the label is missing at {where(place)}: label every row, or drop the unlabelled ones")
        if not isinstance(label, (str, int, float)):
            raise DatasetError(f"the label at {where(place)} is a {type(label).__name__}: labels must be integers or "
                               f"strings")
        code = self.code_of.setdefault(label, len(self.code_of))
        if code == len(self.first_place):
            self.first_place.append(place)
        self.codes.append(code)

    def values_per_row(self, name: str, place: Callable[[int], str], classes: list | None) -> np.ndarray:
        """The label of each row: integers when every value is one (or a string of digits, as CSV cells are),
        else the strings; numbers and strings mixed are refused."""
        values = list(self.code_of)
        texts = [v for v in values if isinstance(v, str)]
        keep_strings = classes is not None and all(isinstance(c, str) for c in classes)
        if texts and not keep_strings and len(texts) == len(values) and all(_is_integer(v) for v in values):
            values = [int(v) for v in values]
        elif texts and len(texts) < len(values):
            number = next(i for i, v in enumerate(values) if not isinstance(v, str))
            text = next(i for i, v in enumerate(values) if isinstance(v, str))
            raise DatasetError(f"{name}: labels mix numbers and strings ({values[number]!r} at "
                               f"{place(self.first_place[number])}, {values[text]!r} at "
                               f"{place(self.first_place[text])}): use one type for every label")
        if all(isinstance(v, str) for v in values):
            table = np.array(values, dtype=object)
        else:
            table = np.array(values, dtype=np.float64 if any(isinstance(v, float) for v in values) else np.int64)
        return table[np.frombuffer(self.codes, dtype=np.int64)]


@dataclass
class _Rows:
    texts: list[str] = field(default_factory=list)
    responses: list[str] | None = None
    labels: _LabelCodes = field(default_factory=_LabelCodes)
    places: array = field(default_factory=lambda: array("q"))  # the line (row) of each kept row
    notes: list[str] = field(default_factory=list)


def _collect(source: _Source, name: str, max_rows: int | None) -> _Rows:
    rows = _Rows(responses=[] if source.kind == "instructions" else None)
    empty: list[int] = []

    def where(place: int) -> str:  # formatted only for an error
        return f"{source.place(place)} of {name}"

    for place, text, response, label in source.records:
        if _blank(text) or (rows.responses is not None and _blank(response)):
            empty.append(place)
            continue
        if max_rows is not None and len(rows.texts) >= max_rows:
            raise DatasetError(f"{name} has more than the {max_rows} rows allowed (stopped at "
                               f"{source.place(place)}): subsample it")
        if source.labelled:
            rows.labels.add(label, place, where)
        elif label is not _ABSENT:
            raise DatasetError(f"{name}: {source.place(place)} has a label but the first record has none: label "
                               f"every record or none")
        rows.texts.append(text)
        if rows.responses is not None:
            rows.responses.append(response)
        rows.places.append(place)
    _account_for_empty(rows, empty, name, source)
    if len(rows.texts) < MIN_ROWS:
        raise DatasetError(f"{name} has {len(rows.texts)} non-empty texts: at least {MIN_ROWS} are needed")
    return rows


def _account_for_empty(rows: _Rows, empty: list[int], name: str, source: _Source) -> None:
    """Refuse the dataset when more than MAX_EMPTY_SHARE of its rows are empty; else note the dropped ones."""
    if not empty:
        return
    total = len(rows.texts) + len(empty)
    what = "prompt or response" if source.kind == "instructions" else "text"
    listed = ", ".join(source.place(p) for p in empty[:_NAMED]) + (", ..." if len(empty) > _NAMED else "")
    if len(empty) > MAX_EMPTY_SHARE * total:
        raise DatasetError(f"{name}: {len(empty)} of {total} rows have an empty {what} ({listed}), more than "
                           f"{MAX_EMPTY_SHARE:.0%}: fill or drop them")
    rows.notes.append(f"{len(empty)} row(s) with an empty {what} dropped ({listed}); sample indices count the "
                      f"remaining rows")


def _place_of_row(places: array, place: Callable[[int], str]) -> Callable[[int], str]:
    return lambda i: f"row {i} ({place(places[i])})"


# ------------------------------------------------------------------------------------------------------ CSV / TSV

def _csv_source(path: Path, name: str, text_column: str | None, label_column: str) -> _Source:
    header, reader = _csv_reader(path, name)
    text_at = header.index(_text_column(header, text_column, name, "columns"))
    label_at = header.index(_require(label_column, header, name, "label", "columns"))

    def records() -> Iterator[Record]:
        line = 1
        try:
            for fields in reader:
                start, line = line + 1, reader.line_num
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):
                    raise DatasetError(f"{name}: line {start} has {len(fields)} field(s), the header has "
                                       f"{len(header)}: quote fields that hold the separator")
                yield start, fields[text_at], None, fields[label_at]
        except csv.Error as exc:
            raise DatasetError(f"cannot parse {name} as CSV at line {reader.line_num}: {exc}") from None

    return _Source("text", True, records(), lambda line: f"line {line}")


def _csv_reader(path: Path, name: str):
    """The header's fields and a ``csv.reader`` positioned after it (tab-separated when the header has tabs and no
    comma); the reader's ``line_num`` is the file's line number."""
    lines = _utf8_lines(path, name)
    first = next(lines, None)
    if first is None:
        raise DatasetError(f"{name} is empty: expected a header row and data rows")
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(chain([first], lines), delimiter=delimiter)
    return [c.strip() for c in next(reader)], reader


def _utf8_lines(path: Path, name: str) -> Iterator[str]:
    """The file's lines, strictly decoded, one at a time (a BOM at the start dropped); a line longer than
    MAX_LINE_BYTES or invalid UTF-8 is refused with its line number and byte offset."""
    with path.open("rb") as f:
        offset, number = 0, 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DatasetError(f"{name}: line {number} (at byte {offset}) is longer than {MAX_LINE_BYTES:,} "
                                   f"bytes: split or shorten that record")
            body = raw[len(_BOM):] if number == 1 and raw.startswith(_BOM) else raw
            try:
                yield body.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = offset + len(raw) - len(body) + exc.start
                raise DatasetError(f"{name} is not valid UTF-8: line {number}, byte offset {at} "
                                   f"({body[exc.start:exc.start + 4]!r}): save it as UTF-8") from None
            offset += len(raw)


# --------------------------------------------------------------------------------------------------------- Parquet

def _parquet_source(path: Path, name: str, text_column: str | None, label_column: str) -> _Source:
    import pyarrow as pa

    pf = _open_parquet(path, name)
    schema = pf.schema_arrow
    text = _text_column(schema.names, text_column, name, "columns")
    _require(label_column, schema.names, name, "label", "columns")
    if not _is_string(schema.field(text).type):
        raise DatasetError(f"{name}: text column '{text}' has type {schema.field(text).type}: texts must be strings")

    def records() -> Iterator[Record]:
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text, label_column],
                                         use_pandas_metadata=False):
                texts, labels = batch.column(0).to_pylist(), batch.column(1).to_pylist()
                yield from ((row + i, t, None, label) for i, (t, label) in enumerate(zip(texts, labels)))
                row += batch.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {name} as Parquet after row {row}: {exc}") from None

    return _Source("text", True, records(), lambda row: f"row {row}")


def _parquet_text_column(path: Path) -> str | None:
    """The first of TEXT_COLUMNS the Parquet file has as a string column (None also when it cannot be opened)."""
    try:
        schema = _open_parquet(path, path.name).schema_arrow
    except DatasetError:
        return None
    return next((c for c in TEXT_COLUMNS if c in schema.names and _is_string(schema.field(c).type)), None)


def _open_parquet(path: Path, name: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {name} as Parquet: {exc}") from None


def _is_string(arrow_type) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


# ---------------------------------------------------------------------------------------------------- JSON Lines

def _jsonl_source(path: Path, name: str, text_column: str | None, label_column: str) -> _Source:
    objects = _json_objects(path, name)
    first = next(objects, None)
    if first is None:
        raise DatasetError(f"{name} has no JSON records: expected one JSON object per line")
    line, record = first
    if text_column is None and "messages" in record:
        kind, fields = "instructions", _chat_fields
    elif text_column is None and "instruction" in record:
        kind, fields = "instructions", _instruction_fields
    else:
        kind, fields = "text", _text_fields(_text_column(list(record), text_column, name, f"keys (line {line})"))
    labelled = label_column in record
    if kind == "text" and not labelled:
        _require(label_column, list(record), name, "label", f"keys (line {line})")

    def records() -> Iterator[Record]:
        for number, obj in chain([first], objects):
            try:
                text, response = fields(number, obj)
            except DatasetError as exc:
                raise DatasetError(f"{name}: {exc}") from None
            yield number, text, response, obj.get(label_column, _ABSENT)

    return _Source(kind, labelled, records(), lambda n: f"line {n}")


def _json_objects(path: Path, name: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(_utf8_lines(path, name), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}): "
                               f"write one JSON object per line") from None
        except RecursionError:
            raise DatasetError(f"{name}: line {number} nests too deeply to parse") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{name}: line {number} is a JSON {type(record).__name__}, not an object: write one "
                               f"JSON object per line")
        yield number, record


def _text_fields(column: str) -> Callable[[int, dict], tuple[str, None]]:
    def fields(line: int, record: dict) -> tuple[str, None]:
        return _string(_key(record, column, line), column, line), None

    return fields


def _chat_fields(line: int, record: dict) -> tuple[str, str]:
    """(prompt, response): the system and user turns before the last assistant turn, and that turn."""
    messages = _key(record, "messages", line)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DatasetError(f"line {line}: 'messages' must be a list of objects with 'role' and 'content'")
    roles = [m.get("role") for m in messages]
    if "assistant" not in roles:
        raise DatasetError(f"line {line}: the chat has no assistant turn (roles: {', '.join(map(str, roles)) or 'none'})"
                           f": a training record needs the response to learn")
    last = len(roles) - 1 - roles[::-1].index("assistant")
    prompt = [_string(m.get("content"), f"messages[{i}].content", line)
              for i, m in enumerate(messages[:last]) if m.get("role") in PROMPT_ROLES]
    return "\n".join(p for p in prompt if p), _string(messages[last].get("content"), f"messages[{last}].content", line)


def _instruction_fields(line: int, record: dict) -> tuple[str, str]:
    """(prompt, response): instruction + "\\n" + input (when there is one), and output."""
    instruction = _string(_key(record, "instruction", line), "instruction", line)
    extra = _string(record.get("input"), "input", line)
    return instruction + "\n" + extra if extra else instruction, _string(_key(record, "output", line), "output", line)


def _key(record: dict, key: str, line: int):
    if key not in record:
        raise DatasetError(f"line {line} has no '{key}'; keys: {_shown(list(record))}")
    return record[key]


def _string(value, key: str, line: int) -> str:
    """A JSON value that must be text (null or absent: empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"line {line}: '{key}' is a {type(value).__name__}, not a string")
    return value


# --------------------------------------------------------------------------------------------------------- helpers

def _text_column(found: list[str], text_column: str | None, name: str, what: str) -> str:
    if text_column is not None:
        return _require(text_column, found, name, "text", what)
    column = next((c for c in TEXT_COLUMNS if c in found), None)
    if column is None:
        raise DatasetError(f"{name} has no text column ({', '.join(repr(c) for c in TEXT_COLUMNS)}); {what}: "
                           f"{_shown(found)}. Name the text column (text_column=...) or rename it to 'text'")
    return column


def _require(column: str, found: list[str], name: str, role: str, what: str) -> str:
    if column not in found:
        raise DatasetError(f"{name} has no {role} column '{column}'; {what}: {_shown(found)}. Name the {role} column "
                           f"({role}_column=...) or rename it to '{column}'")
    return column


def _shown(columns: list[str]) -> str:
    more = f", ... ({len(columns)} in all)" if len(columns) > 20 else ""
    return (", ".join(repr(c) for c in columns[:20]) or "none") + more


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
