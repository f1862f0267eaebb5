"""Memory of loading a large text dataset: 1,000,000 short texts as CSV and as JSON Lines, through
``worker.datasets.load_dataset`` (streamed reading, then ``worker.text_features``: hashed TF-IDF -> SVD in chunks).

    .venv/bin/python bench/text_load_memory.py [--rows 1000000] [--formats csv,jsonl] [--folder /tmp/text-bench]
    .venv/bin/python bench/text_load_memory.py --scan [--rows 1000000]      # the whole dataset-only scan of the CSV

Texts: SMS messages of ../shared/data/sms_spam.npz resampled with replacement (seeded), label spam/ham.
Each load runs in a fresh child process so its peak RSS (VmHWM) is its own. The child reports:
  baseline_mb        RSS after the imports, before reading
  read_peak_mb       peak RSS while the file was read (texts and label codes only: before the features)
  peak_mb            peak RSS of the whole load (reading + features)
  texts_utf8_mb      the texts' own size (UTF-8 bytes); texts_python_mb: the same held as a list of Python strings
  features_mb        the (n, 128) float32 features
With ``--scan`` the texts are two SMS messages joined (label spam when either is: the content decides the label),
so that the rows are distinct, as a large real corpus's are (resampled copies would be one big near-duplicate group
each); a child process then runs the whole product on the CSV (``worker.local.scan_local_files``, dataset only,
default detectors) and reports its peak RSS, seconds, verdict, each detector's status and seconds, and its RSS every
5 s (``rss_series_mb``: [seconds, MB]; the detectors run in turn, so their durations place each stage in it).
"Does not hold them twice": read_peak - baseline stays near texts_python_mb, and peak - baseline near
texts_python_mb + features_mb plus one chunk's working set. Results: stdout and bench/results/text-memory-<ts>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SMS_SPAM = ROOT.parent / "shared" / "data" / "sms_spam.npz"
RSS_EVERY_S = 5.0


def write_files(rows: int, formats: list[str], folder: Path, seed: int, pairs: bool = False) -> dict[str, Path]:
    with np.load(SMS_SPAM, allow_pickle=False) as data:
        messages, spam = data["x"], data["y"]
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(messages), rows)
    texts = [str(messages[i]) for i in picked]
    labels = ["spam" if spam[i] else "ham" for i in picked]
    if pairs:
        second = rng.integers(0, len(messages), rows)
        texts = [f"{t} {messages[j]}" for t, j in zip(texts, second)]
        labels = ["spam" if spam[i] or spam[j] else "ham" for i, j in zip(picked, second)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    if "csv" in formats:
        paths["csv"] = folder / "texts.csv"
        with paths["csv"].open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(zip(texts, labels))
    if "jsonl" in formats:
        paths["jsonl"] = folder / "texts.jsonl"
        with paths["jsonl"].open("w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels))
    return paths


def status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process. Not ru_maxrss: Linux carries that over from the parent at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path: str) -> None:
    import worker.text_data as text_data
    from worker.datasets import load_dataset

    baseline = status_mb("VmRSS")
    seen = {}
    real_features = text_data.text_features

    def features_after_reading(*args, **kwargs):  # the peak so far is the reading's
        seen["read_peak_mb"] = status_mb("VmHWM")
        seen["features_started_s"] = time.perf_counter()
        return real_features(*args, **kwargs)

    text_data.text_features = features_after_reading
    started = time.perf_counter()
    ds = load_dataset(Path(path))
    done = time.perf_counter()
    texts_python = sys.getsizeof(ds.texts) + sum(sys.getsizeof(t) for t in ds.texts)
    print(json.dumps({
        "rows": len(ds.texts), "baseline_mb": baseline, "read_peak_mb": seen["read_peak_mb"],
        "peak_mb": status_mb("VmHWM"),
        "texts_utf8_mb": round(sum(len(t.encode()) for t in ds.texts) / 2**20, 1),
        "texts_python_mb": round(texts_python / 2**20, 1), "features_mb": round(ds.x.nbytes / 2**20, 1),
        "read_s": round(seen["features_started_s"] - started, 1),
        "features_s": round(done - seen["features_started_s"], 1), "classes": ds.classes,
    }))


def scan_child(path: str) -> None:
    import threading

    from worker.local import scan_local_files
    from worker.options import ScanOptions

    baseline = status_mb("VmRSS")
    started = time.perf_counter()
    series, done = [], threading.Event()

    def sample() -> None:  # RSS every RSS_EVERY_S: which stage (detectors run in turn, timed in the report) holds what
        while not done.wait(RSS_EVERY_S):
            series.append([round(time.perf_counter() - started, 1), status_mb("VmRSS")])

    threading.Thread(target=sample, daemon=True).start()
    report = scan_local_files({"dataset": Path(path)}, ScanOptions(), output_dir=Path(path).parent / "scan-out")
    done.set()
    print(json.dumps({
        "baseline_mb": baseline, "peak_mb": status_mb("VmHWM"), "seconds": round(time.perf_counter() - started, 1),
        "rss_series_mb": series,
        "verdict": report["verdict"], "verdict_reason": report["verdict_reason"],
        "quarantined": len(report["quarantine"]), "review": len(report["review"]),
        "detectors": [{"name": d["name"], "status": d["status"], "seconds": d.get("duration_s"),
                       "findings": [f["title"] for f in d.get("findings", []) if f.get("severity") != "info"]}
                      for d in report["detectors"]],
    }))


def measure(path: Path, mode: str = "--child") -> dict:
    res = subprocess.run([sys.executable, __file__, mode, str(path)], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,jsonl")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/text-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scan", action="store_true", help="scan the CSV of joined pairs with the whole product")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scan-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if args.scan_child:
        return scan_child(args.scan_child)
    if args.scan:
        path = write_files(args.rows, ["csv"], args.folder, args.seed, pairs=True)["csv"]
        results = {"args": {k: str(v) for k, v in vars(args).items() if "child" not in k},
                   "scan-csv": measure(path, "--scan-child") | {"file_mb": round(path.stat().st_size / 2**20, 1)}}
        print(json.dumps({k: v for k, v in results["scan-csv"].items() if k != "rss_series_mb"}, indent=1), flush=True)
        return _write(results, "text-scan")
    paths = write_files(args.rows, args.formats.split(","), args.folder, args.seed)
    results = {"args": {k: str(v) for k, v in vars(args).items() if "child" not in k}}
    for fmt, path in paths.items():
        results[f"load-{fmt}"] = measure(path) | {"file_mb": round(path.stat().st_size / 2**20, 1)}
        print(fmt, results[f"load-{fmt}"], flush=True)
    _write(results, "text-memory")


def _write(results: dict, prefix: str) -> None:
    results["git_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    out = ROOT / "bench" / "results" / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
