"""Scale benchmark for the data layer: a 1,000,000-row x 100-feature tabular set (and the same as CSV/Parquet loads).

    .venv/bin/python bench/scale_bench.py [--rows 1000000] [--features 100] [--flip 0.05] [--formats npz,parquet,csv]

Each measurement runs in a fresh child process so its peak RSS (VmHWM) is its own:
  load-<fmt>   worker.datasets.load_dataset on the file; peak RSS next to the size of x as float32 - loading "without
               copying the data more than once" means the peak stays near 1x that size (plus the interpreter).
  scan         the data_poisoning detector through worker.local.scan_local_files on the .npz (proxy features: the
               standardized columns; 5 folds of the MLP, each on at most 200,000 rows; Cleanlab; Datalab on a 50,000-row
               sample; exact duplicates): wall time, peak RSS, and P/R/F1 of its label issues against the flipped rows.
Data: a seeded Gaussian mixture of 10 classes (scikit-learn make_classification would hold several float64 copies),
--flip of the labels changed to another class at random. Results: stdout and bench/results/scale-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_data(rows: int, features: int, flip: float, seed: int, folder: Path) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.5, size=(10, features)).astype(np.float32)
    y = rng.integers(0, 10, rows)
    x = np.empty((rows, features), dtype=np.float32)
    for start in range(0, rows, 100_000):
        stop = min(rows, start + 100_000)
        x[start:stop] = centres[y[start:stop]] + rng.standard_normal((stop - start, features), dtype=np.float32)
    flipped = np.sort(rng.choice(rows, size=int(flip * rows), replace=False))
    noisy = y.copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, 10, len(flipped))) % 10
    np.savez(folder / "big.npz", x=x, y=noisy)
    np.save(folder / "flipped.npy", flipped)
    return {"x": x, "y": noisy}


def write_formats(data: dict, formats: list[str], folder: Path) -> None:
    if "parquet" in formats or "csv" in formats:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        columns = {f"f{i}": data["x"][:, i] for i in range(data["x"].shape[1])} | {"label": data["y"]}
        table = pa.table(columns)
        if "parquet" in formats:
            pq.write_table(table, folder / "big.parquet")
        if "csv" in formats:
            pacsv.write_csv(table, folder / "big.csv")


def child(kind: str, path: str) -> None:
    """Runs in a fresh process: one measurement, printed as JSON."""
    t0 = time.perf_counter()
    if kind == "load":
        from worker.datasets import load_dataset

        ds = load_dataset(Path(path))
        out = {"rows": int(len(ds.y)), "x_dtype": str(ds.x.dtype), "x_mb": round(ds.x.nbytes / 2**20, 1)}
    else:
        from worker.local import scan_local_files
        from worker.options import ScanOptions

        report = scan_local_files({"dataset": Path(path)}, ScanOptions(detectors=["data_poisoning"]))
        (det,) = report["detectors"]
        flagged = np.array(sorted(q["index"] for q in report["quarantine"] if any(r["reason"] == "label issue" for r in q["reasons"])))
        truth = np.load(Path(path).parent / "flipped.npy")
        tp = len(np.intersect1d(flagged, truth))
        p, r = tp / max(len(flagged), 1), tp / max(len(truth), 1)
        out = {"status": det["status"], "error": det["error"], "verdict": report["verdict"], "flagged": int(len(flagged)),
               "precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-9), 4)}
    out |= {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(kind: str, path: Path) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        return {"error": res.stderr[-2000:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", default="npz,parquet,csv")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    formats = args.formats.split(",")
    results = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="poisonscan-scale-") as tmp:
        folder = Path(tmp)
        data = make_data(args.rows, args.features, args.flip, args.seed, folder)
        write_formats(data, formats, folder)
        results["x_float32_mb"] = round(data["x"].nbytes / 2**20, 1)
        del data
        python_floor = measure_python_floor()
        results["python_baseline_rss_mb"] = python_floor
        for fmt in formats:
            path = folder / f"big.{fmt}"
            results[f"load-{fmt}"] = measure("load", path) | {"file_mb": round(path.stat().st_size / 2**20, 1)}
            print(fmt, results[f"load-{fmt}"], flush=True)
        results["scan"] = measure("scan", folder / "big.npz")
        print("scan", results["scan"], flush=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    results["git_commit"] = commit
    out = ROOT / "bench" / "results" / f"scale-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"x as float32: {results['x_float32_mb']} MB; interpreter + imports alone: {python_floor} MB\nresults: {out}")
    return 0


def measure_python_floor() -> float:
    code = "import numpy, pyarrow, worker.datasets; from bench.scale_bench import peak_rss_mb; print(peak_rss_mb())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return round(float(res.stdout.strip()), 1)


if __name__ == "__main__":
    sys.exit(main())
