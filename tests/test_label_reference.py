"""Label flips against a trusted reference (worker.label_reference, the data layer's ``holdout`` path): a targeted flip
big enough to be the data's own definition of a class is found when a clean labelled holdout is uploaded, clean data
with a clean reference is not flagged, and a holdout labelled unlike the dataset is refused with the reason."""

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from tests.test_text_scans import sms
from worker.findings import InputRejected
from worker.label_reference import check_against_reference
from worker.local import scan_local_files
from worker.options import ScanOptions


def digits_split(seed: int = 0):
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    ref, data = order[:400], order[400:]
    return x[data] / 16.0, y[data].copy(), x[ref] / 16.0, y[ref]


def judge():
    return LogisticRegression(C=1.0, max_iter=2000)


def test_a_targeted_flip_of_most_of_a_class_is_seen_against_the_reference():
    x, y, rx, ry = digits_split()
    ones = np.flatnonzero(y == 1)
    flipped = np.random.default_rng(1).choice(ones, size=int(0.6 * len(ones)), replace=False)
    y[flipped] = 7  # 60% of the ones labelled seven: the data's own majority for "1"-looking digits is now mixed
    check = check_against_reference(x, y, rx, ry, 10, judge)
    (pair,) = check.poisoned
    assert (pair.given, pair.read_as) == (7, 1) and pair.p_value < 1e-4
    found = set(pair.rows[pair.posterior >= 0.5].tolist())
    truth = set(flipped.tolist())
    assert len(found & truth) >= 0.9 * len(truth) and len(found - truth) <= 0.1 * len(found), (len(found), len(truth))


def test_clean_labels_agree_with_a_clean_reference():
    x, y, rx, ry = digits_split()
    check = check_against_reference(x, y, rx, ry, 10, judge)
    assert not check.poisoned and check.judge_accuracy > 0.9


def test_a_class_the_reference_barely_has_is_not_judged():
    x, y, rx, ry = digits_split()
    keep = (ry != 3) | (np.cumsum(ry == 3) <= 2)  # two threes left in the reference
    check = check_against_reference(x, y, rx[keep], ry[keep], 10, judge)
    assert check.skipped_classes == [3] and all(3 not in (p.given, p.read_as) for p in check.pairs)


def write_csv(path: Path, texts, labels) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, label] for t, label in zip(texts, labels)])
    return path


def scan_with_holdout(tmp_path: Path, texts, y, ref_texts, ref_labels) -> dict:
    names = np.array(["ham", "spam"])
    files = {"dataset": write_csv(tmp_path / "data.csv", texts, names[y]),
             "holdout": write_csv(tmp_path / "holdout.csv", ref_texts, ref_labels)}
    return scan_local_files(files, ScanOptions(detectors=["data_poisoning"]), output_dir=tmp_path / "out")


def test_half_of_the_spam_relabelled_ham_fails_the_scan_with_a_holdout(tmp_path):
    texts, y = sms(2400)
    ref_texts, ref_y = texts[1600:], y[1600:]
    texts, y = texts[:1600], y[:1600].copy()
    spam = np.flatnonzero(y == 1)
    flipped = np.random.default_rng(0).choice(spam, size=len(spam) // 2, replace=False)
    y[flipped] = 0
    report = scan_with_holdout(tmp_path, texts, y, ref_texts, np.array(["ham", "spam"])[ref_y])
    assert report["verdict"] == "fail", report["verdict_reason"]
    (finding,) = [f for d in report["detectors"] for f in d["findings"] if "trusted reference" in f["title"]]
    assert finding["severity"] == "high" and finding["evidence"]["pairs"][0]["given"] == "ham"
    found = {e["index"] for e in report["quarantine"] if "label_reference" in e["methods"]}
    truth = set(flipped.tolist())
    assert len(found & truth) >= 0.8 * len(truth) and len(found & truth) >= 0.8 * len(found), (len(found), len(truth))


def test_a_clean_dataset_with_its_holdout_is_not_failed(tmp_path):
    texts, y = sms(2400)
    report = scan_with_holdout(tmp_path, texts[:1600], y[:1600], texts[1600:], np.array(["ham", "spam"])[y[1600:]])
    assert report["verdict"] != "fail", report["verdict_reason"]
    (finding,) = [f for d in report["detectors"] for f in d["findings"] if "trusted reference" in f["title"]]
    # the first 1,600 messages hold 19 spam-like texts labelled ham beyond what the judge predicts (1.4% of the ham):
    # annotation noise, for review at most
    assert finding["severity"] in ("info", "low") and finding["evidence"]["reference_size"] == 800
    assert not [e for e in report["quarantine"] if "label_reference" in e["methods"]]


def test_a_holdout_labelled_unlike_the_dataset_is_refused_with_the_reason(tmp_path):
    texts, y = sms(600)
    labels = np.array(["ham", "spam", "eggs"])[np.arange(200) % 3]
    with pytest.raises(InputRejected, match="labels the dataset does not: \\['eggs'\\]"):
        scan_with_holdout(tmp_path, texts[:400], y[:400], texts[400:], labels)


def test_flips_within_natural_annotation_noise_are_for_review(tmp_path):
    """3% of the data flipped spam -> ham against a holdout: beyond the judge's misreadings, but under 5% of the ham,
    which annotation errors reach: the flipped messages go to the review list, and the scan is not failed for them."""
    texts, y = sms(2400)
    order = np.random.default_rng(3).permutation(2400)
    ref, data = order[:800], order[800:]
    y_data = y[data].copy()
    flipped = np.random.default_rng(4).choice(np.flatnonzero(y_data == 1), size=48, replace=False)
    y_data[flipped] = 0
    report = scan_with_holdout(tmp_path, [texts[i] for i in data], y_data, [texts[i] for i in ref],
                               np.array(["ham", "spam"])[y[ref]])
    (finding,) = [f for d in report["detectors"] for f in d["findings"] if "trusted reference" in f["title"]]
    assert finding["severity"] == "low", finding["title"]
    reviewed = {r["index"] for r in finding["evidence"]["review"]}
    assert len(reviewed & set(flipped.tolist())) >= 0.6 * len(flipped)
    assert not {e["index"] for e in report["quarantine"] if "label_reference" in e["methods"]}
