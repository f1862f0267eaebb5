"""The data layer's label tests on small samples (1,000-2,000 rows) of clean corpora of other domains, and on small
samples with labels flipped at random: does natural label noise pass, and do flips still fail?

    .venv/bin/python bench/label_noise_samples.py [--only clean|flips] [--corpora sst-2,digits] [--out bench/results]

Runs the whole pipeline as the CLI does (``worker.local.scan_local_files``, detector ``data_poisoning`` only, default
settings, dataset only). Clean: the 18 samples of each text corpus that ``text_corpus_bench.py --samples`` draws
(TREC questions, AG News, UCI review sentences, SST-2 sentences; bench/corpora/), and 1,000-row samples of MNIST,
MNIST-hard and UCI Adult (seeds 0-3). Flips: 3% of a 1,000-text sample relabelled at random (TREC, AG News, UCI,
SST-2; seeds 0-2), and 2% and 5% of scikit-learn's digits. ``--corpora``: only those corpora or domains. Per case: verdict, the label finding's title, what the random-flip excess test measured
(observed, expected, cut-off), the proxy (model and C), quarantine against the flipped rows.
Results: markdown on stdout, bench/results/label-noise-samples-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from data_bench import prf, random_flips, versions, write_result  # noqa: E402
from label_poisoning_bench import domain  # noqa: E402
from text_corpus_bench import CORPORA, SAMPLES  # noqa: E402


def _csv(texts, y, classes):
    def write(tmp: Path) -> Path:
        path = tmp / "dataset.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text", "label"]] + [[t, classes[int(c)]] for t, c in zip(texts, y, strict=True)])
        return path
    return write


def _npz(x, y):
    def write(tmp: Path) -> Path:
        path = tmp / "dataset.npz"
        np.savez(path, x=x, y=y)
        return path
    return write


def flip(y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rate`` of the labels moved to a uniformly drawn other class (``data_bench.random_flips``, seeded here)."""
    return random_flips(y, rate, np.random.default_rng(seed))


TEXT_CORPORA = ("trec", "ag-news", "uci-sentiment", "sst-2")


def clean_cases(include=lambda name: True):
    """``include(name)``: whether to load and sample that corpus or domain at all."""
    for name in filter(include, TEXT_CORPORA):
        corpus = CORPORA[name]()
        for n, seed in SAMPLES:
            keep = np.sort(np.random.default_rng(seed).choice(len(corpus.y), n, replace=False))
            yield name, f"{n}/{seed}", _csv([corpus.texts[i] for i in keep], corpus.y[keep], corpus.classes), []
    for name in filter(include, ("mnist", "mnist-hard", "adult")):
        x, y = domain(name, 60_000)
        for seed in range(4):
            keep = np.sort(np.random.default_rng(seed).choice(len(y), 1000, replace=False))
            yield name, f"1000/{seed}", _npz(x[keep], y[keep]), []


def flip_cases(include=lambda name: True):
    for name in filter(include, TEXT_CORPORA):
        corpus = CORPORA[name]()
        for seed in range(3):
            keep = np.sort(np.random.default_rng(seed).choice(len(corpus.y), 1000, replace=False))
            y, chosen = flip(corpus.y[keep], 0.03, 100 + seed)
            yield name, f"1000/{seed} flips 3%", _csv([corpus.texts[i] for i in keep], y, corpus.classes), chosen
    if not include("digits"):
        return
    x, y = domain("digits", 0)
    for rate in (0.02, 0.05):
        flipped, chosen = flip(y, rate, 5)
        yield "digits", f"1797 flips {rate:.0%}", _npz(x, flipped), chosen


def run(write, truth) -> dict:
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = scan_local_files({"dataset": write(Path(tmp))}, ScanOptions(detectors=["data_poisoning"]))
        seconds = time.perf_counter() - started
    findings = [f for d in report["detectors"] for f in d["findings"]]
    labels = next(f for f in findings if "noise_excess" in f["evidence"])
    excess = labels["evidence"]["noise_excess"]
    quarantined, truth = {q["index"] for q in report["quarantine"]}, set(np.asarray(truth).tolist())
    return {"verdict": report["verdict"], "label_finding": labels["title"], "proxy": labels["evidence"].get("proxy"),
            "excess": {k: excess[k] for k in ("poisoned", "cutoff", "observed", "expected")},
            "failing": [f["title"] for f in findings if f["severity"] in ("high", "critical")],
            "quarantined": len(quarantined), "quarantined_clean": len(quarantined - truth),
            "quarantine": prf(quarantined, truth) if truth else None, "seconds": round(seconds, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("clean", "flips"))
    ap.add_argument("--corpora", default="", help="comma-separated corpus or domain names (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    groups = [g for g in ("clean", "flips") if args.only in (None, g)]
    wanted = set(filter(None, args.corpora.split(",")))
    rows = []
    print("| group | corpus | sample | verdict | label finding | excess obs/exp @cut | proxy C | quarantined (clean) | "
          "P/R/F1 |\n" + "|---" * 9 + "|", flush=True)
    for group in groups:
        cases = clean_cases if group == "clean" else flip_cases
        for corpus, sample, write, truth in cases(lambda name: not wanted or name in wanted):
            r = {"group": group, "corpus": corpus, "sample": sample, **run(write, truth)}
            rows.append(r)
            e, q = r["excess"], r["quarantine"]
            print(f"| {group} | {corpus} | {sample} | {r['verdict']} | {r['label_finding'][:60]} | "
                  f"{e['observed']}/{e['expected']:.1f} @{e['cutoff']} | {(r['proxy'] or {}).get('C', '-')} | "
                  f"{r['quarantined']} ({r['quarantined_clean']}) | "
                  f"{'-' if not q or q[0] is None else '/'.join(f'{v:.2f}' for v in q)} |", flush=True)
    print("\n| group | corpus | samples | fail | warn | pass | called label poisoning |\n" + "|---" * 7 + "|")
    for group in groups:
        for corpus in dict.fromkeys(r["corpus"] for r in rows if r["group"] == group):
            mine = [r for r in rows if r["group"] == group and r["corpus"] == corpus]
            count = lambda v: sum(r["verdict"] == v for r in mine)  # noqa: E731
            called = sum(r["label_finding"].startswith("label poisoning") for r in mine)
            print(f"| {group} | {corpus} | {len(mine)} | {count('fail')} | {count('warn')} | {count('pass')} | {called} |")
    write_result(args, "label-noise-samples", {"versions": versions(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
