"""HTML report benchmark: how large the HTML report of a 20,000-image scan is and how long it takes to render, and how
long headless Chromium takes to open it.

    .venv/bin/python bench/html_report_bench.py [--n 20000] [--repeat 3] [--screenshot docs/report-screenshot.png]
    .venv/bin/python bench/html_report_bench.py --report REPORT.json [--repeat 3]   # an existing scan's report

(run from the repository root.) The scan: the model-layer benchmark's 10% BadNets case (bench/backdoor_cases.py:
ART's add_pattern_bd -> class 0 on 10% of --n stratified MNIST training images; the victim CNN is cached in
bench/.cache/backdoor/), scanned by worker.local.scan_local_files with every default detector (remediation on), the
first 5,000 MNIST test images as the holdout set and the true trigger uploaded as the user trigger, as
bench/trigger_bench.py's remediation case is. --report instead renders a report JSON that ``poisonscan scan --format
json --out DIR`` wrote (its outputs are read from their paths).

Measured: to_html (worker/report_formats/html.py) wall time, the first call (matplotlib imported, the template
compiled) and the best of --repeat after it; the page's size and what its images take; the JSON report's size and
figures.npz's. With --screenshot: Chromium (/usr/bin/chromium, playwright) loads the page from file:// at 1366 px
wide (time to the load event) and saves a full-page screenshot. Results: stdout and bench/results/html-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def scan(n: int, folder: Path) -> tuple[dict, float]:
    from backdoor_cases import Case, build
    from trigger_bench import holdout_file, trigger_file

    from worker.local import scan_local_files
    from worker.options import ScanOptions

    case = Case(0.10, n=n)
    victim = Path(build(case)["folder"])
    holdout, _, _ = holdout_file(folder)
    files = {"model": victim / "model.keras", "dataset": victim / "dataset.npz", "holdout": holdout,
             "trigger": trigger_file(folder, case.trigger)}
    started = time.perf_counter()
    report = scan_local_files(files, ScanOptions(), output_dir=folder / "out")
    return report, time.perf_counter() - started


def read_output(entry: dict) -> bytes | None:
    path = Path(entry["path"]) if entry.get("path") else None
    return path.read_bytes() if path is not None and path.is_file() else None


def render_times(report: dict, repeat: int) -> tuple[str, float, float]:
    from worker.report_formats.html import to_html

    started = time.perf_counter()
    page = to_html(report, read_output)
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        to_html(report, read_output)
        best = min(best, time.perf_counter() - started)
    return page, first, best


def open_in_chromium(page: Path, screenshot: Path) -> float:
    """Seconds to the load event of the page opened from file:// in headless Chromium; saves a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        tab = browser.new_page(viewport={"width": 1366, "height": 768})
        started = time.perf_counter()
        tab.goto(page.resolve().as_uri(), wait_until="load")
        loaded = time.perf_counter() - started
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=screenshot, full_page=True)
        browser.close()
    return loaded


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="MNIST training images scanned (default 20000)")
    ap.add_argument("--report", type=Path, help="render this report JSON instead of scanning")
    ap.add_argument("--repeat", type=int, default=3, help="timed renders after the first (best is reported)")
    ap.add_argument("--screenshot", type=Path, help="open the page in headless Chromium and save a screenshot here")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.report:
            report, scan_s = json.loads(args.report.read_text()), None
        else:
            report, scan_s = scan(args.n, folder)
            print(f"scan of {args.n} images: {scan_s:.0f} s, verdict {report['verdict']}", flush=True)
        page, first, best = render_times(report, args.repeat)
        path = folder / "report.html"
        path.write_text(page, encoding="utf-8")
        load_s = open_in_chromium(path, args.screenshot) if args.screenshot else None
        figures = next((o["size"] for o in report.get("outputs", []) if o["name"] == "figures.npz"), None)
        result = {"images": None if args.report else args.n, "scan_s": scan_s and round(scan_s, 1),
                  "verdict": report.get("verdict"), "json_report_bytes": len(json.dumps(report)),
                  "figures_npz_bytes": figures, "html_bytes": len(page.encode()),
                  "html_image_bytes": sum(len(uri) for uri in re.findall(r'src="(data:[^"]+)"', page)),
                  "render_first_s": round(first, 3), "render_best_s": round(best, 3),
                  "chromium_load_s": load_s and round(load_s, 3), "screenshot": str(args.screenshot or "") or None}
    print(json.dumps(result, indent=1))
    save(args, result)
    return 0


def save(args, result: dict) -> None:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"html-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "git_commit": commit, "result": result}, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
