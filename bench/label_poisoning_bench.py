"""Label-poisoning benchmark of the data layer's two lists: quarantine (poisoning evidence) vs review (data quality).

    .venv/bin/python bench/label_poisoning_bench.py [--domains mnist,mnist-hard,digits,adult] [--n 10000] [--seed 0]

Runs the whole pipeline as the CLI does (``worker.local.scan_local_files``, detector ``data_poisoning`` only, default
settings, dataset only) on clean and poisoned copies of four domains:
  mnist       ../shared/data/mnist.npz, the first --n training images
  mnist-hard  the same images block-averaged 28->7->28 with Gaussian noise (sigma 0.35, seed 0): a stand-in for a
              domain whose classes are naturally confusable (its clean proxy makes ~13% errors)
  digits      scikit-learn's 8x8 digits (1797)
  adult       ../shared/data/adult.npz, the first --n rows (binary, ~15% natural errors, real label noise)
Cases: clean; random flips at 5/10/20% (to a uniformly drawn other class); targeted flips (25% of class 1 labelled
7; on adult, class 1 labelled 0). Per case: quarantine P/R/F1 against the flipped rows, clean share quarantined,
review share, verdict, targeted findings; beside it, Cleanlab's ``find_label_issues`` at its defaults on the same
out-of-sample probabilities (Cleanlab's own list, which the review/quarantine split starts from).
Goals (issue 12): clean controls <= 0.5% quarantined and never ``fail``; F1 >= 0.85 on attacked cases.
The rules (``worker/label_evidence.py``) were written from the threat (calibration excess, one-way pairs) and checked
on experiments over these same domains while they were written: this table is therefore not an unseen test.
Results: markdown on stdout, bench/results/labels-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from data_bench import prf, versions, write_result  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def domain(name: str, n: int):
    if name in ("mnist", "mnist-hard"):
        with np.load(DATA / "mnist.npz", allow_pickle=False) as z:
            x, y = z["x_train"][:n].astype(np.float32) / 255, z["y_train"][:n].astype(np.int64)
        if name == "mnist-hard":
            x = x.reshape(len(x), 7, 4, 7, 4).mean(axis=(2, 4)).repeat(4, 1).repeat(4, 2)
            x = np.clip(x + np.random.default_rng(0).normal(0, 0.35, x.shape), 0, 1)
        return np.round(x * 255).astype(np.uint8), y
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images * 16).astype(np.uint8), d.target.astype(np.int64)
    with np.load(DATA / "adult.npz", allow_pickle=False) as z:
        return z["x_train"][:n].astype(np.float32), z["y_train"][:n].astype(np.int64)


def cases(y: np.ndarray, seed: int):
    k = int(y.max()) + 1
    yield "clean", y, np.empty(0, np.int64)
    for rate in (0.05, 0.10, 0.20):
        rng = np.random.default_rng(seed + 1)
        idx = np.sort(rng.choice(len(y), int(rate * len(y)), replace=False))
        flipped = y.copy()
        flipped[idx] = (flipped[idx] + rng.integers(1, k, len(idx))) % k
        yield f"random-{rate:.0%}", flipped, idx
    src, dst = (1, 7) if k > 2 else (1, 0)
    rng = np.random.default_rng(seed + 2)
    members = np.flatnonzero(y == src)
    idx = np.sort(rng.choice(members, int(0.25 * len(members)), replace=False))
    flipped = y.copy()
    flipped[idx] = dst
    yield f"targeted-{src}>{dst}-25%", flipped, idx


def run_case(x, y, truth, tmp: Path):
    import worker.proxy as proxy
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    captured = {}
    original = proxy.fit_proxy

    def capture(*a, **kw):  # the same probabilities the detector used, for Cleanlab's own list
        probs, C = original(*a, **kw)
        captured["probs"] = probs  # the first fit's, at the chosen C (the flip-floor refit does not go through here)
        return probs, C

    proxy.fit_proxy = capture
    try:
        path = tmp / "d.npz"
        np.savez(path, x=x, y=y)
        started = time.perf_counter()
        report = scan_local_files({"dataset": path}, ScanOptions(detectors=["data_poisoning"]))
        seconds = time.perf_counter() - started
    finally:
        proxy.fit_proxy = original
    from cleanlab.filter import find_label_issues

    baseline = set(np.flatnonzero(find_label_issues(y, captured["probs"], n_jobs=1)).tolist())
    quarantined = {q["index"] for q in report["quarantine"]}
    truth_set = set(truth.tolist())
    clean = len(y) - len(truth_set)
    findings = [f for d in report["detectors"] for f in d["findings"]]
    return {"n": len(y), "poisoned": len(truth_set), "quarantine": prf(quarantined, truth_set),
            "clean_quarantined_pct": round(100 * len(quarantined - truth_set) / clean, 3),
            "quarantined": len(quarantined), "review": len(report["review"]), "verdict": report["verdict"],
            "targeted": [f"{f['title']} [{f['severity']}, confidence {f['evidence']['confidence']}]" for f in findings
                         if f["title"].startswith("targeted")],
            "cleanlab_default": prf(baseline, truth_set), "cleanlab_flagged_pct": round(100 * len(baseline) / len(y), 3),
            "seconds": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", default="mnist,mnist-hard,digits,adult")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    rows = []
    print("| domain | case | quarantine P/R/F1 | clean q% | review | verdict | targeted | Cleanlab default P/R/F1 (flag%) | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.domains.split(","):
            x, y = domain(name, args.n)
            for case, labels, truth in cases(y, args.seed):
                row = {"domain": name, "case": case, **run_case(x, labels, truth, Path(tmp))}
                rows.append(row)
                fmt = lambda t: "-" if t[0] is None else "/".join(f"{v:.2f}" for v in t)  # noqa: E731
                print(f"| {name} | {case} | {fmt(row['quarantine'])} | {row['clean_quarantined_pct']:.2f} | {row['review']} | "
                      f"{row['verdict']} | {'; '.join(row['targeted']) or '-'} | {fmt(row['cleanlab_default'])} "
                      f"({row['cleanlab_flagged_pct']:.1f}) | {row['seconds']} |", flush=True)
    clean = [r for r in rows if r["case"] == "clean"]
    print(f"\nclean controls: max {max(r['clean_quarantined_pct'] for r in clean):.2f}% quarantined; "
          f"verdicts {sorted({r['verdict'] for r in clean})}")
    write_result(args, "labels", {"versions": versions(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
