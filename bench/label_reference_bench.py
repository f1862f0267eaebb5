"""Label flips with and without a trusted reference: the data layer's holdout path (``worker.label_reference``)
against the data-only rules and Cleanlab, on text, images and tabular data.

    .venv/bin/python bench/label_reference_bench.py [--seed 0] [--only NAME,NAME]

Data (``../shared/data`` and ``bench/corpora``): SMS spam (text, 4,862 messages: 1,000 drawn as the reference, the
rest the dataset); AG News test split (text, 7,600 items, 4 topics: 1,000 reference); MNIST (images: 10,000 of the
training set as the dataset, 1,000 of the test set as the reference); UCI Adult (tabular, 14 features: 10,000 of the
training set, 1,000 of the test set). The reference is a clean labelled sample drawn like the dataset: what a user
uploads as ``holdout``. Cases: clean; targeted flips of half of one class into another (SMS: spam -> ham; AG:
Sci/Tech -> Business; MNIST: 1 -> 7; Adult: >50K -> <=50K); targeted flips of 10% of the dataset (the same
direction, capped at 90% of the source class); random flips of 10% and 3% (any class to any other). Scored per case:

  reference     ``check_against_reference`` with the data layer's judge for the kind (text: TF-IDF of the reference's
                words + class-balanced logistic regression; arrays: the proxy features over both, the proxy model),
                quarantine = the samples of poisoned pairs with posterior >= 0.5; with 1,000 and 300 reference samples
  data only     ``worker.detectors.data.label_findings`` on the dataset's own cross-validated probabilities (the
                data layer without a holdout: Cleanlab issues under the noise-excess rule, targeted pairs, flip floor)
  Cleanlab      ``find_label_issues`` on the same probabilities (what it flags, poisoning or not)

Goal (issue 15: flips >= 0.85 F1; clean <= 0.5% quarantined). Results: markdown on stdout,
bench/results/label-reference-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from data_bench import prf, versions, write_result  # noqa: E402
from text_bench import DATA as SMS  # noqa: E402
from text_corpus_bench import load_ag_news  # noqa: E402

from worker.label_reference import check_against_reference  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
REFERENCE_SIZES = (1000, 300)


@dataclass
class Domain:
    name: str
    kind: str  # text | images | tabular
    x: object  # list of texts or an array (the dataset)
    y: np.ndarray
    ref_x: object
    ref_y: np.ndarray
    classes: list[str]
    source: int  # targeted flips take this class ...
    target: int  # ... and label it this


def _take(x, rows):
    return [x[i] for i in rows] if isinstance(x, list) else x[rows]


def sms_domain(seed: int) -> Domain:
    with np.load(SMS, allow_pickle=False) as z:
        texts, y = [str(t) for t in z["x"]], z["y"].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    return Domain("sms-spam", "text", _take(texts, order[1000:]), y[order[1000:]], _take(texts, order[:1000]),
                  y[order[:1000]], ["ham", "spam"], 1, 0)


def ag_domain(seed: int) -> Domain:
    c = load_ag_news()
    order = np.random.default_rng(seed).permutation(len(c.y))
    return Domain("ag-news", "text", _take(c.texts, order[1000:]), c.y[order[1000:]], _take(c.texts, order[:1000]),
                  c.y[order[:1000]], list(c.classes), 3, 2)


def mnist_domain(seed: int) -> Domain:
    with np.load(SHARED / "mnist.npz", allow_pickle=False) as z:
        rng = np.random.default_rng(seed)
        train, test = rng.choice(60000, 10000, replace=False), rng.choice(10000, 1000, replace=False)
        return Domain("mnist", "images", z["x_train"][train], z["y_train"][train].astype(np.int64),
                      z["x_test"][test], z["y_test"][test].astype(np.int64), [str(d) for d in range(10)], 1, 7)


def adult_domain(seed: int) -> Domain:
    with np.load(SHARED / "adult.npz", allow_pickle=False) as z:
        rng = np.random.default_rng(seed)
        train, test = rng.choice(len(z["y_train"]), 10000, replace=False), rng.choice(len(z["y_test"]), 1000, replace=False)
        return Domain("adult", "tabular", z["x_train"][train], z["y_train"][train], z["x_test"][test], z["y_test"][test],
                      ["<=50K", ">50K"], 1, 0)


DOMAINS = {"sms-spam": sms_domain, "ag-news": ag_domain, "mnist": mnist_domain, "adult": adult_domain}


def targeted(d: Domain, share_of_source: float | None, share_of_data: float | None, seed: int):
    rng = np.random.default_rng(seed)
    source = np.flatnonzero(d.y == d.source)
    count = int(share_of_source * len(source)) if share_of_source else min(int(share_of_data * len(d.y)),
                                                                             int(0.9 * len(source)))
    rows = np.sort(rng.choice(source, count, replace=False))
    y = d.y.copy()
    y[rows] = d.target
    return y, rows


def random_flips(d: Domain, share: float, seed: int):
    rng = np.random.default_rng(seed)
    k = len(d.classes)
    rows = np.sort(rng.choice(len(d.y), int(share * len(d.y)), replace=False))
    y = d.y.copy()
    y[rows] = (y[rows] + rng.integers(1, k, len(rows))) % k
    return y, rows


CASES = {
    "clean": lambda d, s: (d.y.copy(), np.empty(0, np.int64)),
    "targeted-half-of-class": lambda d, s: targeted(d, 0.5, None, s + 1),
    "targeted-10%-of-data": lambda d, s: targeted(d, None, 0.10, s + 2),
    "random-10%": lambda d, s: random_flips(d, 0.10, s + 3),
    "random-3%": lambda d, s: random_flips(d, 0.03, s + 4),
}


def spaces(d: Domain, ref_rows: np.ndarray, seed: int):
    """Dataset and reference features in one space and the judge, as ``worker.detectors.data._reference_space``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from worker.proxy import features_for, make_model
    from worker.text_triggers import TOKEN

    if d.kind == "text":
        vectorizer = TfidfVectorizer(token_pattern=TOKEN.pattern, dtype=np.float32)
        ref = vectorizer.fit_transform(_take(d.ref_x, ref_rows))
        return vectorizer.transform(d.x), ref, lambda: LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000)
    both = features_for(np.concatenate([d.x, d.ref_x[ref_rows]]), d.kind, seed=seed)
    return both[:len(d.y)], both[len(d.y):], lambda: make_model("auto", len(ref_rows), seed)


def data_features(d: Domain, seed: int) -> np.ndarray:
    from worker.proxy import features_for
    from worker.text_features import text_features

    return text_features(d.x, seed=seed) if d.kind == "text" else features_for(d.x, d.kind, seed=seed)


def score(found: set, truth: set, n: int) -> dict:
    return {"quarantine": prf(found, truth), "quarantined": len(found),
            "clean_quarantined_pct": round(100 * len(found - truth) / max(n - len(truth), 1), 3)}


def run_case(d: Domain, features: np.ndarray, case: str, seed: int) -> dict:
    from cleanlab.filter import find_label_issues

    from worker.detectors.data import label_findings
    from worker.proxy import cross_val_probs, fit_proxy

    y, poisoned = CASES[case](d, seed)
    truth = set(poisoned.tolist())
    row = {"domain": d.name, "case": case, "n": len(y), "poisoned": len(truth)}
    for size in REFERENCE_SIZES:
        ref_rows = np.arange(min(size, len(d.ref_y)))
        started = time.perf_counter()
        data_x, ref_x, judge = spaces(d, ref_rows, seed)
        check = check_against_reference(data_x, y, ref_x, d.ref_y[ref_rows], len(d.classes), judge,
                                        balanced=d.kind == "text", seed=seed)
        found = {int(i) for p in check.poisoned for i, c in zip(p.rows, p.posterior, strict=True) if c >= 0.5}
        row[f"reference_{size}"] = score(found, truth, len(y)) | {
            "judge_accuracy": round(check.judge_accuracy, 4), "seconds": round(time.perf_counter() - started, 1),
            "pairs": [{"given": d.classes[p.given], "read_as": d.classes[p.read_as], "observed": p.observed,
                       "expected": round(p.expected, 1), "p_value": p.p_value, "excess_share": round(p.excess_share, 4),
                       "poisoned": p.poisoned} for p in check.pairs[:6]]}
    started = time.perf_counter()
    probs, C = fit_proxy(features, y, seed=seed)
    ds = SimpleNamespace(y=y, classes=d.classes, n_classes=len(d.classes))
    findings = label_findings(ds, probs, lambda suspects: cross_val_probs(features, y, seed=seed, C=C or 1.0,
                                                                          exclude=suspects))
    found = {r["index"] for f in findings for r in f.evidence.get("flagged", []) if r["confidence"] >= 0.5}
    row["data_only"] = score(found, truth, len(y)) | {"seconds": round(time.perf_counter() - started, 1)}
    flagged = set(np.flatnonzero(find_label_issues(y, probs, n_jobs=1)).tolist())
    row["cleanlab"] = score(flagged, truth, len(y))
    return row


def fmt(t) -> str:
    return "-" if t is None or t[0] is None else "/".join(f"{v:.2f}" for v in t)


def cell(r: dict) -> str:
    return f"{fmt(r['quarantine'])} ({r['clean_quarantined_pct']:.2f}%)"


def line(r: dict) -> str:
    refs = " | ".join(cell(r[f"reference_{s}"]) for s in REFERENCE_SIZES)
    return (f"| {r['domain']} | {r['case']} | {r['n']} | {r['poisoned']} | {refs} | {cell(r['data_only'])} | "
            f"{cell(r['cleanlab'])} | {r[f'reference_{REFERENCE_SIZES[0]}']['judge_accuracy']:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated domain and/or case names")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    if unknown := only - set(DOMAINS) - set(CASES):
        ap.error(f"unknown names {sorted(unknown)}")
    domains = [n for n in DOMAINS if n in only] or list(DOMAINS)
    cases = [c for c in CASES if c in only] or list(CASES)
    sizes = " | ".join(f"reference {s}: P/R/F1 (clean q%)" for s in REFERENCE_SIZES)
    print(f"\n| domain | case | n | flipped | {sizes} | data only | Cleanlab find_label_issues | judge accuracy "
          f"(CV on the reference) |\n" + "|---" * (7 + len(REFERENCE_SIZES)) + "|", flush=True)
    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        for name in domains:
            d = DOMAINS[name](args.seed)
            features = data_features(d, args.seed)
            for case in cases:
                rows.append(run_case(d, features, case, args.seed))
                print(line(rows[-1]), flush=True)
    write_result(args, "label-reference", {"versions": versions(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
