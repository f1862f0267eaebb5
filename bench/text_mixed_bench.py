"""A text trigger and random label flips in one dataset: does each attack still get found beside the other?

    .venv/bin/python bench/text_mixed_bench.py [--seed 0] [--only ag-news,uci-sentiment,sst-2]

The data layer's label-flip tests leave out the samples the trigger search already holds (``data_poisoning`` runs
after ``text_poisoning`` and judges the other labels, with a proxy refitted without the trigger's carriers). This
checks the other side of that rule: flips planted beside a trigger are found as well as the same flips alone.

Per corpus (bench/corpora/, as in bench/text_corpus_bench.py), three datasets, each scanned whole (``worker.local``
``scan_local_files``, dataset only, default options, every default detector) as a CSV:
  trigger        "zx" once per text in 2% of the texts, drawn from the classes other than the target, relabelled target
  flips          5% of the other texts given another label at random (the same rows and labels as below)
  trigger+flips  both
Scored per attack: recall of the trigger's carriers and of the flips in the quarantine, and the clean texts (neither)
quarantined. Results: markdown on stdout, bench/results/text-mixed-<timestamp>.json.
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
from data_bench import versions, write_result  # noqa: E402
from text_bench import insert_tokens  # noqa: E402
from text_corpus_bench import CORPORA  # noqa: E402

TRIGGER_RATE, FLIP_RATE = 0.02, 0.05


def attacks(corpus, seed: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], list[str]]:
    """({name: (labels, carriers, flips)}, the texts with the trigger): the datasets with the trigger use those texts."""
    trigger = insert_tokens(corpus.texts, corpus.y, TRIGGER_RATE, ("zx",), corpus.target, seed + 1, per_text=(1, 1))
    rng = np.random.default_rng(seed + 2)
    others = np.setdiff1d(np.arange(len(corpus.y)), trigger.poisoned)
    flips = np.sort(rng.choice(others, int(FLIP_RATE * len(corpus.y)), replace=False))
    shift = rng.integers(1, len(corpus.classes), len(flips))
    flipped, both = corpus.y.copy(), trigger.y.copy()
    flipped[flips] = (flipped[flips] + shift) % len(corpus.classes)
    both[flips] = (both[flips] + shift) % len(corpus.classes)
    none = np.empty(0, np.int64)
    return {"trigger": (trigger.y, trigger.poisoned, none), "flips": (flipped, none, flips),
            "trigger+flips": (both, trigger.poisoned, flips)}, trigger.texts


def scan(corpus, texts: list[str], y: np.ndarray) -> tuple[dict, float]:
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{corpus.name}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text", "label"]] + [[t, corpus.classes[int(label)]]
                                                           for t, label in zip(texts, y, strict=True)])
        started = time.perf_counter()
        report = scan_local_files({"dataset": path}, ScanOptions(), output_dir=Path(tmp) / "out")
        return report, time.perf_counter() - started


def score(report: dict, carriers: np.ndarray, flips: np.ndarray, n: int) -> dict:
    held = {e["index"] for e in report["quarantine"]}
    carriers, flips = set(carriers.tolist()), set(flips.tolist())
    clean = held - carriers - flips
    return {"verdict": report["verdict"], "quarantined": len(held),
            "carriers_found": len(held & carriers), "carriers": len(carriers),
            "flips_found": len(held & flips), "flips": len(flips),
            "clean_quarantined": len(clean), "clean_quarantined_pct": round(100 * len(clean) / n, 2),
            "findings": [f"{d['name']}: {f['title']}" for d in report["detectors"] for f in d.get("findings", [])
                         if f.get("severity") not in ("info", "low")]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="ag-news,uci-sentiment,sst-2", help="comma-separated corpora")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    rows = []
    print("| corpus | dataset | verdict | carriers found | flips found | clean quarantined (%) | s |\n" + "|---" * 7 + "|")
    for name in args.only.split(","):
        corpus = CORPORA[name]()
        cases, trigger_texts = attacks(corpus, args.seed)
        for case, (y, carriers, flips) in cases.items():
            texts = trigger_texts if len(carriers) else corpus.texts
            report, seconds = scan(corpus, texts, y)
            row = {"corpus": name, "dataset": case, "n": len(y), **score(report, carriers, flips, len(y)),
                   "seconds": round(seconds, 1)}
            rows.append(row)
            print(f"| {name} | {case} | {row['verdict']} | {row['carriers_found']}/{row['carriers']} | "
                  f"{row['flips_found']}/{row['flips']} | {row['clean_quarantined']} ({row['clean_quarantined_pct']}) "
                  f"| {row['seconds']} |", flush=True)
    write_result(args, "text-mixed", {"versions": versions(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
