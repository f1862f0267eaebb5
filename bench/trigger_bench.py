"""Model-level backdoor benchmark: is each model backdoored, toward which class (poisonscan's backdoor_assessment vs
ART's Neural Cleanse at its defaults), and does remediation remove the backdoor.

    .venv/bin/python bench/trigger_bench.py [--art-cap-s 30] [--skip-detection] [--skip-remediation] [--extra]

(run from the repository root; victims are cached in bench/.cache/backdoor/, about 10 s each to train on 2 cores).

Detection: ten small MNIST CNNs (bench/backdoor_cases.py, 10,000 stratified training images, 3 epochs): five clean
(seeds 21-25) and five backdoored at 10% (all-to-one, dirty label) with different seeds, targets and triggers:
ART's add_pattern_bd (bottom right) -> 2, a solid 3x3 square top-left -> 3, a 4x4 checkerboard top-right -> 5, a
3x3 square bottom-left -> 7, a 3x3 checkerboard at the left middle -> 9 (no library candidate sits there).
Each model is scanned with its training set and a clean holdout set (the first 5,000 MNIST test images), detectors
backdoor_activations + backdoor_assessment, remediation off. --model-only: without the training data, the holdout
set standing in as the dataset (the activation analysis then has nothing to find).
Reported: the verdict finding (backdoored / possible / none, target classes, votes per method), Neural Cleanse's own
target (anomaly index > 2) and its time, and the whole assessment's time. "Flagged" = the verdict names a target
class (critical or medium).

ART: NeuralCleanse(KerasClassifier(model))(...) at its defaults (steps 1000, batch 32, ...), outlier_detection on
the same 1,000 held-out images, in a subprocess capped at --art-cap-s seconds per model; the table gives what it
reached (class and step) and the projected time to finish (linear, ignoring early stopping: an upper bound).

Remediation: the model layer benchmark's 10% BadNets case (add_pattern_bd -> 0, 20,000 images), scanned with the
true trigger uploaded as the user trigger; remediation on (quarantine = intersection, escalating to union). The
retrained model (an output of the scan) is then measured here, independently: attack success with the true trigger
on all non-target test images, and clean accuracy on the 5,000 test images, before and after.
--extra: remediation on the model layer benchmark's blended-noise case (20% noise -> 7, 10%), which the activation
analysis misses; no user trigger (the attack success is measured here with the true blend).
Goals: five backdoored flagged with the right target, no clean one flagged; after remediation attack success <= 2%
and clean accuracy within 1 point; reconstruction <= 120 s per model.
Results: markdown on stdout and bench/results/trigger-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backdoor_cases import TRIGGERS, Case, build, load_mnist  # noqa: E402

BACKDOORED = [("pattern", 2, 11), ("square", 3, 12), ("checker4-top-right", 5, 13), ("square3-bottom-left", 7, 14),
              ("checker3-left-middle", 9, 15)]
CLEAN_SEEDS = (21, 22, 23, 24, 25)
N_DETECT = 10_000

ART_SCRIPT = r"""
import sys, warnings; warnings.filterwarnings("ignore")
import numpy as np, keras
from art.estimators.classification import KerasClassifier
from art.defences.transformer.poisoning import NeuralCleanse
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
z = np.load(sys.argv[2], allow_pickle=False)
x, y = z["x"].astype(np.float32)[..., None] / 255.0, np.eye(10)[z["y"]]
classifier = KerasClassifier(model, clip_values=(0.0, 1.0))
defended = NeuralCleanse(classifier)(classifier)
print("ART_TARGETS", [int(label) for label, _, _ in defended.outlier_detection(x, y)], flush=True)
"""


def detection_cases() -> list[Case]:
    return ([Case(0.10, t, target, n=N_DETECT, seed=s) for t, target, s in BACKDOORED]
            + [Case(0.0, n=N_DETECT, seed=s) for s in CLEAN_SEEDS])


def holdout_file(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    _, _, xt, yt = load_mnist(10, 0)
    path = folder / "holdout.npz"
    np.savez(path, x=np.round(xt * 255).astype(np.uint8), y=yt)
    return path, xt, yt


def trigger_file(folder: Path, name: str) -> Path:
    """The true trigger of a patch case as the user would upload it: mask where the trigger writes, its pixel values."""
    fn = TRIGGERS[name]
    zeros, halves = np.zeros((1, 28, 28), np.float32), np.full((1, 28, 28), 0.5, np.float32)
    mask = ((fn(zeros) != zeros) | (fn(halves) != halves))[0].astype(np.float32)
    path = folder / f"trigger-{name}.npz"
    np.savez(path, mask=mask, pattern=fn(zeros)[0] * mask)
    return path


def scan(folder: Path, holdout: Path, config: dict, trigger: Path | None = None, output_dir: Path | None = None,
         model_only: bool = False) -> tuple[dict, float]:
    """``model_only``: the clean holdout set stands in for the training data (a model assessed without its data)."""
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    files = {"model": folder / "model.keras", "dataset": holdout if model_only else folder / "dataset.npz", "holdout": holdout}
    if trigger:
        files["trigger"] = trigger
    options = ScanOptions(detectors=["backdoor_activations", "backdoor_assessment"],
                          detector_config={"backdoor_assessment": config})
    t0 = time.perf_counter()
    report = scan_local_files(files, options, output_dir=output_dir)
    wall = time.perf_counter() - t0
    for d in report["detectors"]:
        if d["status"] != "ok":
            raise RuntimeError(f"{d['name']}: {d['error']}")
    return report, wall


def assessment(report: dict) -> tuple[dict, list[dict]]:
    det = next(d for d in report["detectors"] if d["name"] == "backdoor_assessment")
    return det, det["findings"]


def run_art(folder: Path, holdout_1000: Path, cap_s: float) -> dict:
    t0 = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", ART_SCRIPT, str(folder / "model.keras"), str(holdout_1000)],
                              capture_output=True, text=True, timeout=cap_s, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
        out, err, finished = done.stdout, done.stderr, True
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        finished = False
    seconds = time.perf_counter() - t0
    progress = re.findall(r"Generating backdoor for class (\d+):\s+\d+%\S*\s*\|\s*(\d+)/(\d+)", err + out)
    reached = {"class": int(progress[-1][0]), "step": int(progress[-1][1]), "of": int(progress[-1][2])} if progress else None
    targets = re.findall(r"ART_TARGETS \[(.*)\]", out)
    result = {"finished": finished, "seconds": round(seconds, 1), "reached": reached,
              "targets": [int(t) for t in targets[0].split(",") if t.strip()] if targets else None}
    if not finished and reached and reached["step"]:
        total = 10 * reached["of"]
        done_steps = reached["class"] * reached["of"] + reached["step"]
        result["projected_s"] = round(seconds * total / done_steps)
    if finished and targets is None:
        result["error"] = (err.strip().splitlines() or ["no output"])[-1][:300]
    return result


def detection(args, tmp: Path, holdout: Path) -> list[dict]:
    z = np.load(holdout, allow_pickle=False)
    small = tmp / "holdout-1000.npz"
    np.savez(small, x=z["x"][:1000], y=z["y"][:1000])
    rows = []
    for case in detection_cases():
        meta = build(case)
        folder = Path(meta["folder"])
        report, wall = scan(folder, holdout, {"remediate": "never"}, model_only=args.model_only)
        det, findings = assessment(report)
        verdict = findings[0]
        ev = verdict["evidence"]
        nc = ev["reconstruction"]
        row = {"case": case.name, "seed": case.seed, "backdoored": case.rate > 0, "target": case.target if case.rate else None,
               "clean_accuracy": meta["clean_accuracy"], "attack_success": meta["attack_success"],
               "verdict": verdict["title"], "severity": verdict["severity"], "scan_verdict": report["verdict"],
               "targets": ev["target_classes"] + ev["possible_target_classes"], "votes": ev["votes"],
               "nc_targets": nc["targets"], "nc_anomaly": {k: v["anomaly_index"] for k, v in nc["per_class"].items()},
               "nc_s": nc["seconds"], "nc_steps": nc["steps"], "nc_stopped_by": nc["stopped_by"],
               "assessment_s": round(det["duration_s"], 1), "scan_wall_s": round(wall, 1),
               "strip": ev["strip"], "probing_suspected": ev["probing"]["suspected"]}
        row["flagged"] = bool(row["targets"])
        row["correct"] = (row["targets"] == [case.target]) if case.rate else not row["flagged"]
        if args.art_cap_s > 0:
            row["art"] = run_art(folder, small, args.art_cap_s)
        print(f"[{case.name} seed {case.seed}] {row['severity']}: {row['verdict']} votes {row['votes']} | NC targets "
              f"{row['nc_targets']} in {row['nc_s']} s | assessment {row['assessment_s']} s | ART {row.get('art')}", flush=True)
        rows.append(row)
    return rows


def remediation(tmp: Path, holdout: Path, xt: np.ndarray, yt: np.ndarray, case: Case, with_trigger: bool) -> dict:
    """Scan with remediation on; then measure the scan's retrained model here, with the true trigger function."""
    import keras

    meta = build(case)
    folder = Path(meta["folder"])
    trigger = trigger_file(tmp, case.trigger) if with_trigger else None
    out_dir = tmp / f"outputs-{case.trigger}"
    report, wall = scan(folder, holdout, {"remediate": "auto"}, trigger=trigger, output_dir=out_dir)
    _, findings = assessment(report)
    fix = next(f for f in findings if f["title"].startswith("retraining"))
    before = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    after = keras.saving.load_model(out_dir / "retrained-model.keras", safe_mode=True)
    others = yt != case.target
    stamped = TRIGGERS[case.trigger](xt[others])[..., None]

    def measure(model):
        acc = float((model.predict(xt[..., None], batch_size=1024, verbose=0).argmax(1) == yt).mean())
        asr = float((model.predict(stamped, batch_size=1024, verbose=0).argmax(1) == case.target).mean())
        return {"clean_accuracy": round(acc, 4), "attack_success": round(asr, 4)}

    result = {"case": case.name, "n": case.n, "user_trigger": with_trigger, "scan_verdict": report["verdict"],
              "verdict": findings[0]["title"], "votes": findings[0]["evidence"]["votes"],
              "finding": fix["title"], "explanation": fix["explanation"], "rounds": fix["evidence"]["rounds"],
              "before": measure(before), "after": measure(after), "scan_wall_s": round(wall, 1),
              "timings_s": findings[0]["evidence"]["timings_s"]}
    with np.load(out_dir / "cleaned-dataset.npz", allow_pickle=False) as z:
        kept = z["index"]
    removed = np.setdiff1d(np.arange(case.n), kept)
    truth = np.load(folder / "poisoned.npy", allow_pickle=False)
    hit = len(np.intersect1d(removed, truth))
    result["quarantine"] = {"removed": int(len(removed)), "poisoned": int(len(truth)),
                            "precision": round(hit / max(len(removed), 1), 4), "recall": round(hit / max(len(truth), 1), 4)}
    result["goal_met"] = (result["after"]["attack_success"] <= 0.02
                          and result["after"]["clean_accuracy"] >= result["before"]["clean_accuracy"] - 0.01)
    print(f"[remediation {case.name}] before {result['before']} after {result['after']} rounds "
          f"{[(r['step'], r['removed_samples'], r['removed']) for r in result['rounds']]}", flush=True)
    return result


def print_tables(rows: list[dict], fix: dict | None) -> None:
    if rows:
        print_detection(rows)
    if fix:
        print_remediation(fix)


def print_detection(rows: list[dict]) -> None:
    print("\n| model | truth | poisonscan verdict | target(s) | votes | NC target (anomaly index of truth) | NC s | assessment s | ART NC defaults |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        truth = f"backdoor -> {r['target']}" if r["backdoored"] else "clean"
        idx = r["nc_anomaly"].get(str(r["target"])) if r["backdoored"] else max(r["nc_anomaly"].values())
        art = r.get("art") or {}
        art_text = ("targets " + str(art["targets"]) + f" in {art['seconds']} s") if art.get("finished") and art.get("targets") is not None \
            else (f"not finished in {art['seconds']} s (class {art['reached']['class']}, step {art['reached']['step']}/{art['reached']['of']}; "
                  f"projected {art.get('projected_s', '?')} s)" if art.get("reached") else str(art.get("error", "-")))
        print(f"| {r['case']} s{r['seed']} | {truth} | {r['severity']}: {r['verdict']} | {r['targets']} | {r['votes']} | "
              f"{r['nc_targets']} ({'max ' if not r['backdoored'] else ''}{idx}) | {r['nc_s']} | {r['assessment_s']} | {art_text} |")


def print_remediation(fix: dict) -> None:
    print(f"\nremediation on {fix['case']} ({fix['n']} images, votes {fix['votes']}): {fix['finding']}; quarantine vs the "
          f"true poison: {fix['quarantine']}")
    print("| | attack success (true trigger, test set) | clean accuracy (5,000 test images) |\n|---|---|---|")
    print(f"| before | {fix['before']['attack_success']:.2%} | {fix['before']['clean_accuracy']:.2%} |")
    print(f"| after | {fix['after']['attack_success']:.2%} | {fix['after']['clean_accuracy']:.2%} |")
    for r in fix["rounds"]:
        print(f"  round {r['round']} ({r['step']}): {r['removed_samples']} samples left out ({r['rule']}), removed backdoor: {r['removed']}, "
              f"retrain {r['retraining']['train_s']} s")


def goals(rows: list[dict], fix: dict | None) -> dict:
    g = {"G1 backdoored flagged with the right target": {f"{r['case']} s{r['seed']}": r["correct"] for r in rows if r["backdoored"]},
         "G2 clean not flagged": {f"s{r['seed']}": r["correct"] for r in rows if not r["backdoored"]},
         "G4 reconstruction <= 120 s per model": max((r["nc_s"] for r in rows), default=None)}
    if fix:
        g["G3 remediation: ASR <= 2%, clean accuracy within 1 point"] = fix["goal_met"]
    print("\nGoals:", json.dumps(g, indent=1))
    return g


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--art-cap-s", type=float, default=30, help="seconds ART's Neural Cleanse may run per model (0: skip)")
    ap.add_argument("--skip-remediation", action="store_true")
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--model-only", action="store_true",
                    help="detection without the training data: the clean holdout set is the scan's dataset")
    ap.add_argument("--extra", action="store_true", help="also remediate the blended-noise case (20%% noise -> class 7, 10%%)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="trigger-bench-") as tmp_name:
        tmp = Path(tmp_name)
        holdout, xt, yt = holdout_file(tmp)
        rows = [] if args.skip_detection else detection(args, tmp, holdout)
        fix = None if args.skip_remediation else remediation(tmp, holdout, xt, yt, Case(0.10), with_trigger=True)
        extra = remediation(tmp, holdout, xt, yt, Case(0.10, trigger="blend", target=7), with_trigger=False) if args.extra else None
    print_tables(rows, fix)
    if extra:
        print("\nextra, outside the goals: a trigger blended over the whole image (the model layer's known gap), no user trigger")
        print_tables([], extra)
    g = goals(rows, fix)
    save(args, rows, fix, g, extra)
    return 0


def save(args, rows, fix, g, extra=None) -> None:
    import art
    import keras
    import tensorflow as tf

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"trigger-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "git_commit": commit,
                                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                "versions": {"art": art.__version__, "keras": keras.__version__, "tensorflow": tf.__version__},
                                "detection": rows, "remediation": fix, "extra_remediation": extra, "goals": g}, indent=1,
                                default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
