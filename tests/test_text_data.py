"""worker.text_data and worker.text_features: text datasets (CSV/TSV, JSON Lines, Parquet, instruction-tuning
JSON Lines) loaded as a Dataset with dense features, and every refusal with its reason."""

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from worker.datasets import Dataset, DatasetError, load_dataset
from worker.inspect.formats import sniff, wrong_kind_for_role
from worker.text_data import MAX_LINE_BYTES
from worker.text_features import text_features

SMS_SPAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam.npz"
TOPICS = {
    "sport": "match goal team coach season league striker keeper score final win referee stadium fans".split(),
    "food": "recipe oven flour butter sugar dinner taste salt pepper garlic bake sauce kitchen soup".split(),
}
COMMON = "the a today we really think this was very good and then it".split()


def sentences(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` short sentences about two topics, alternating, and their topic."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        topic = list(TOPICS)[i % 2]
        words = list(rng.choice(TOPICS[topic], 5)) + list(rng.choice(COMMON, 4))
        texts.append(" ".join(rng.permutation(words)).capitalize() + ", \"quoted\"\tok.")
        labels.append(topic)
    return texts, labels


def write_table(path: Path, rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def load(path: Path, **kw) -> Dataset:
    return load_dataset(path, sniff(path), **kw)


def error(path: Path, **kw) -> str:
    with pytest.raises(DatasetError) as info:
        load(path, **kw)
    return str(info.value)


def assert_text_dataset(ds: Dataset, texts: list[str], labels: list[str], source: str) -> None:
    assert ds.kind == "text" and ds.source == source and ds.responses is None
    assert ds.texts == texts
    assert ds.classes == sorted(set(labels)) and [ds.classes[i] for i in ds.y] == labels
    assert ds.x.dtype == np.float32 and ds.x.shape == (len(texts), min(len(texts), 128))
    np.testing.assert_allclose(np.linalg.norm(ds.x, axis=1), 1.0, rtol=1e-4)


# ------------------------------------------------------------------------------------------- formats round-trip

@pytest.mark.parametrize("delimiter,name", [(",", "d.csv"), ("\t", "d.tsv")])
def test_csv_and_tsv_round_trip(tmp_path, delimiter, name):
    texts, labels = sentences(200)
    path = write_table(tmp_path / name, [["id", "text", "label"], *([i, t, y] for i, (t, y) in
                                                                      enumerate(zip(texts, labels)))], delimiter)
    assert sniff(path) == "csv"
    assert_text_dataset(load(path), texts, labels, "csv")


def test_csv_configurable_columns_bom_and_multiline_texts(tmp_path):
    texts, labels = sentences(100)
    texts[3] = "a text over\ntwo lines"
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
        csv.writer(f).writerows([["topic", "body"], *([y, t] for t, y in zip(texts, labels))])
    assert_text_dataset(load(path, text_column="body", label_column="topic"), texts, labels, "csv")


def test_csv_default_text_column_alternatives(tmp_path):
    texts, labels = sentences(60)
    path = write_table(tmp_path / "d.csv", [["review", "label"], *zip(texts, labels)])
    assert load(path).texts == texts


def test_csv_integer_labels(tmp_path):
    texts, _ = sentences(60)
    path = write_table(tmp_path / "d.csv", [["text", "label"], *([t, i % 2] for i, t in enumerate(texts))])
    ds = load(path)
    assert ds.classes == [0, 1] and ds.y.tolist() == [i % 2 for i in range(60)]


def test_csv_of_sentences_used_to_be_refused_and_is_now_text(tmp_path):
    texts, labels = sentences(60)
    path = write_table(tmp_path / "d.csv", [["sentence", "label"], *zip(texts, labels)])
    ds = load(path)
    assert ds.kind == "text" and ds.texts == texts


def test_numeric_csv_stays_tabular(tmp_path):
    path = write_table(tmp_path / "d.csv", [["content", "label"], *([i * 0.5, i % 2] for i in range(40))])
    ds = load(path)
    assert ds.kind == "tabular" and ds.texts is None and ds.feature_names == ["content"]


def test_parquet_round_trip_and_configurable_columns(tmp_path):
    texts, labels = sentences(150)
    path = tmp_path / "d.parquet"
    pd.DataFrame({"n": range(150), "body": texts, "topic": labels}).to_parquet(path, row_group_size=40)
    assert_text_dataset(load(path, text_column="body", label_column="topic"), texts, labels, "parquet")
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(path)
    assert_text_dataset(load(path), texts, labels, "parquet")


def test_jsonl_labelled_texts(tmp_path):
    texts, labels = sentences(120)
    path = write_jsonl(tmp_path / "d.jsonl", [{"message": t, "label": y, "extra": [1]} for t, y in zip(texts, labels)])
    assert sniff(path) == "jsonl" and wrong_kind_for_role("dataset", "jsonl") is None
    assert_text_dataset(load(path), texts, labels, "jsonl")


def test_jsonl_sniffed_by_content_whatever_the_name(tmp_path):
    texts, labels = sentences(20)
    path = write_jsonl(tmp_path / "data.json", [{"text": t, "label": y} for t, y in zip(texts, labels)])
    assert sniff(path) == "jsonl"
    (tmp_path / "settings.json").write_text('{"a": 1}\n')
    assert sniff(tmp_path / "settings.json") == "json"


def test_chat_instructions(tmp_path):
    texts, labels = sentences(80)
    records = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": t},
                             {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "More?"},
                             {"role": "assistant", "content": f"It is about {y}."}]} for t, y in zip(texts, labels)]
    ds = load(write_jsonl(tmp_path / "chat.jsonl", records))
    assert ds.kind == "instructions" and ds.source == "jsonl"
    assert ds.texts == [f"Be brief.\n{t}\nMore?" for t in texts]
    assert ds.responses == [f"It is about {y}." for y in labels]
    assert ds.classes == ["instruction"] and not ds.y.any() and ds.x.shape == (80, 80)


def test_alpaca_instructions_with_labels(tmp_path):
    texts, labels = sentences(80)
    records = [{"instruction": "Name the topic.", "input": t if i % 2 else "", "output": y, "label": y}
               for i, (t, y) in enumerate(zip(texts, labels))]
    ds = load(write_jsonl(tmp_path / "alpaca.jsonl", records))
    assert ds.kind == "instructions"
    assert ds.texts == ["Name the topic.\n" + t if i % 2 else "Name the topic." for i, t in enumerate(texts)]
    assert ds.responses == labels and ds.classes == ["food", "sport"]


def test_jsonl_configurable_text_column_wins_over_shapes(tmp_path):
    texts, labels = sentences(40)
    records = [{"instruction": "x", "output": "y", "prompt": t, "cls": y} for t, y in zip(texts, labels)]
    ds = load(write_jsonl(tmp_path / "d.jsonl", records), text_column="prompt", label_column="cls")
    assert ds.kind == "text" and ds.texts == texts


# ------------------------------------------------------------------------------------------------------ refusals

def test_invalid_utf8_names_line_and_byte(tmp_path):
    texts, labels = sentences(30)
    path = write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels)])
    data = path.read_bytes().splitlines(keepends=True)
    data[7] = b"caf\xe9 au lait," + data[7].split(b",")[-1]
    path.write_bytes(b"".join(data))
    offset = sum(len(line) for line in data[:7]) + 3
    assert error(path) == f"d.csv is not valid UTF-8: line 8, byte offset {offset} (b'\\xe9 au'): save it as UTF-8"


def test_invalid_utf8_in_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "fine", "label": 0}\n{"text": "ok", "label": 1}\n{"text": "bad \xff", "label": 1}\n')
    assert "d.jsonl is not valid UTF-8: line 3, byte offset 70" in error(path)
    path.write_bytes(b'{"text": "caf\xe9", "label": 0}\n{"text": "ok", "label": 1}\n')
    assert "d.jsonl is not valid UTF-8: line 1, byte offset 13" in error(path)


@pytest.mark.parametrize("columns,kw,expected", [
    (["body", "label"], {}, "non-numeric feature column(s) 'body'"),  # not known as a text column: a table's reason
    (["body", "label"], {}, "(a column of texts: name it 'text')"),
    (["text", "topic"], {}, "no label column 'label'; columns: 'text', 'topic'"),
    (["text", "label"], {"text_column": "body"}, "no text column 'body'; columns: 'text', 'label'"),
])
def test_missing_column_names_the_columns_found(tmp_path, columns, kw, expected):
    texts, labels = sentences(20)
    path = write_table(tmp_path / "d.csv", [columns, *zip(texts, labels)])
    assert expected in error(path, **kw)


def test_missing_key_in_jsonl_names_the_keys_found(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "hello there", "label": 1}, {"body": "x", "label": 0}])
    assert "d.jsonl has no text column ('text', 'sentence', 'content', 'message', 'review'); keys (line 1): 'body', " \
           "'label'. Name the text column (text_column=...) or rename it to 'text'" == error(path)
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Say hi.", "input": "hi"}] * 20)
    assert error(path) == "d.jsonl: line 1 has no 'output'; keys: 'instruction', 'input'"


def test_missing_label(tmp_path):
    texts, labels = sentences(30)
    labels[4] = ""
    path = write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels)])
    assert "the label is missing at line 6 of d.csv: label every row" in error(path)
    records = [{"text": t, "label": y} for t, y in zip(*sentences(30))]
    records[9]["label"] = None
    assert "the label is missing at line 10 of d.jsonl" in error(write_jsonl(tmp_path / "d.jsonl", records))


def test_mixed_label_types(tmp_path):
    texts, _ = sentences(20)
    records = [{"text": t, "label": 1 if i % 2 else "spam"} for i, t in enumerate(texts)]
    assert "labels mix numbers and strings" in error(write_jsonl(tmp_path / "d.jsonl", records))


def test_huge_line(tmp_path):
    path = tmp_path / "d.jsonl"
    huge = json.dumps({"text": "x" * MAX_LINE_BYTES, "label": 1})
    path.write_text('{"text": "short", "label": 0}\n' * 3 + huge + "\n")
    assert "line 4 (at byte 90) is longer than 1,048,576 bytes" in error(path)


@pytest.mark.parametrize("line,expected", [
    ("[1, 2]", "line 2 is a JSON list, not an object"),
    ('"text"', "line 2 is a JSON str, not an object"),
    ("{not json", "line 2 is not valid JSON"),
])
def test_jsonl_line_that_is_not_an_object(tmp_path, line, expected):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": 0}\n' + line + "\n" + '{"text": "fine", "label": 1}\n')
    assert expected in error(path, text_column="text")


def test_chat_without_assistant_turn(tmp_path):
    ok = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]}
    msg = error(write_jsonl(tmp_path / "d.jsonl", [ok] * 12 + [bad]))
    assert msg.startswith("d.jsonl: line 13: the chat has no assistant turn (roles: system, user)")


def test_few_empty_texts_are_dropped_with_a_note(tmp_path):
    texts, labels = sentences(300)
    texts[10] = "   "
    path = write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels)])
    ds = load(path)
    assert len(ds.texts) == 299 and "   " not in ds.texts and len(ds.y) == 299 == len(ds.x)
    assert ds.notes == ["1 row(s) with an empty text dropped (line 12); sample indices count the remaining rows"]


def test_many_empty_texts_are_refused(tmp_path):
    texts, labels = sentences(100)
    for i in (5, 6, 40):
        texts[i] = ""
    msg = error(write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels)]))
    assert msg == "d.csv: 3 of 100 rows have an empty text (line 7, line 8, line 42), more than 1%: fill or drop them"


def test_too_few_rows_and_one_class(tmp_path):
    texts, labels = sentences(30)
    assert "at least 10 are needed" in error(write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts[:5], labels)]))
    assert "only one class" in error(write_table(tmp_path / "d.csv", [["text", "label"], *([t, "a"] for t in texts)]))


def test_ragged_csv_row(tmp_path):
    texts, labels = sentences(20)
    path = write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels), ["one", "two", "three"]])
    assert "line 22 has 3 field(s), the header has 2" in error(path)


def test_max_rows(tmp_path):
    texts, labels = sentences(50)
    assert "more than the 20 rows" in error(write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels)]),
                                             max_rows=20)


# ------------------------------------------------------------------------------------------------------- features

def test_features_are_deterministic_and_seeded():
    texts, _ = sentences(300)
    a, b = text_features(texts, dims=32, seed=3), text_features(texts, dims=32, seed=3)
    assert a.dtype == np.float32 and a.shape == (300, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, text_features(texts, dims=32, seed=4))


def test_features_of_a_tiny_corpus_have_fewer_dims():
    assert text_features(["spam spam eggs", "eggs ham", "ham spam"], dims=128).shape == (3, 3)


@pytest.mark.skipif(not SMS_SPAM.exists(), reason=f"needs {SMS_SPAM}")
def test_features_separate_spam_from_ham():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    with np.load(SMS_SPAM, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(np.flatnonzero(y == c), 250, replace=False) for c in (0, 1)])  # chance: 0.5
    features = text_features([str(t) for t in x[rows]])
    accuracy = cross_val_score(LogisticRegression(max_iter=1000), features, y[rows], cv=5).mean()
    assert accuracy >= 0.9


# ----------------------------------------------------------------------------------------------------------- scan

def test_scan_of_a_clean_text_csv(tmp_path):
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    texts, labels = sentences(300)
    path = write_table(tmp_path / "d.csv", [["text", "label"], *zip(texts, labels)])
    options = ScanOptions(detectors=["format_identification", "unsafe_serialization", "data_poisoning"])
    report = scan_local_files({"dataset": path}, options, output_dir=tmp_path / "out")
    assert {d["name"]: d["status"] for d in report["detectors"]} == dict.fromkeys(options.detectors, "ok")
    assert report["verdict"] != "fail"
