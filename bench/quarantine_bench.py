"""Quarantine benchmark (issue 12): does poisonscan quarantine exactly the poisoned training samples, name the attack's
target, and does its remediation remove the backdoor, across domains, attacks and rates; side by side with ART's
ActivationDefence and SpectralSignatureDefense at their defaults and a plain Cleanlab find_label_issues.

    .venv/bin/python bench/quarantine_bench.py [--domains mnist,mnist-hard,digits,adult] [--cases clean,badnets-5%,...]
        [--modes model,dataset] [--n 10000] [--seed 0] [--quick] [--no-baselines] [--scan-config JSON]

(run from the repository root; victims are cached in bench/.cache/quarantine/, delete to rebuild. The full run takes
hours on 2 cores: every case is scanned twice with every default detector, remediation included. --quick is the smoke
configuration: MNIST only, n=1000, victims trained 1 epoch, cases clean, badnets-10%, flips-10%, and poisonscan's own
training shortened to 1 epoch / a 10 s Neural Cleanse budget through --scan-config.)

Data (everything seeded from --seed; each case starts from a fresh copy of the clean data):
  mnist       ../shared/data/mnist.npz: a stratified subset of --n training images (bench/backdoor_cases.load_mnist),
              the first 5,000 test images for accuracy and attack success.
  mnist-hard  a synthetic stand-in for a domain with naturally confusable classes: the same MNIST images block-averaged
              28 -> 7 -> 28 (4x4 blocks) plus fixed-seed Gaussian noise (sigma HARD_SIGMA = 0.3), clipped to [0, 1].
              sigma was tuned only so that a clean small CNN lands in 80-88% test accuracy (measured while tuning,
              n=10,000, 3 epochs: no noise 0.916, 0.3 -> 0.832, 0.4 -> 0.788, 0.5 -> 0.746); the clean victim's measured
              accuracy is recorded in every run (domains.mnist-hard.clean_accuracy). Triggers are stamped after the
              degradation (the attacker poisons the data as it is distributed).
  digits      scikit-learn's bundled 8x8 digits (1,797 images), split 75/25 stratified: 1,347 training images scanned,
              450 for accuracy and attack success (--n does not apply).
  adult       ../shared/data/adult.npz (UCI Adult, 14 columns, categorical ones as integer codes; real label noise: a
              clean model makes ~15% errors): a stratified subset of --n rows of x_train, 5,000 stratified test rows.
Images are uploaded as uint8 .npz (x (n, h, w), y), tabular data as float32 .npz (x (n, 14), y), as backdoor_cases does.

Victims (trained on the poisoned data, fixed seed, cached): MNIST and mnist-hard: backdoor_cases.victim_model (a Keras
CNN), 3 epochs at batch 128, and 6 epochs at batch 32 for badnets-1% and all-to-all (rare poison is not learned in 3
epochs at 128); digits: a smaller CNN, 40 epochs at batch 32; adult: an MLP (a Normalization layer inside the model
standardises the raw features, Dense 64-32), 10 epochs at batch 64. --quick: 1 epoch everywhere.

Cases (names as --cases takes them; image cases are skipped on adult, adult-trigger-3% on images):
  clean              the clean control.
  badnets-P%         (P = 1, 5, 10, 20) ART PoisoningAttackBackdoor + add_pattern_bd (4-pixel pattern near the
                     bottom-right corner), all-to-one to class 0, on P% of the training set drawn from the other classes.
  blend-10%          backdoor_cases' blended trigger (fixed noise image at 20%) -> class 7, 10%.
  randpatch-10%      a 3x3 checkerboard at a position drawn per sample (backdoor_cases.random_checker) -> class 3, 10%.
  source-7to1-50%    source-specific: a solid 3x3 square (top-left) stamped on 50% of class 7's samples, relabelled 1
                     (a minority of the samples labelled 1: about a third).
  all2all-5%         5% of all samples triggered (add_pattern_bd) and relabelled c -> c+1 mod k.
  flips-P%           (P = 5, 10, 20) random label flips: P% of the samples get a label drawn from the other classes
                     (data_bench.random_flips).
  targeted-1to7-10%  10% of class 1 relabelled 7 (data_bench.targeted_flips).
  adult-trigger-3%   (adult) two columns set to rare values on 3% of the rows, drawn from the negative rows and
                     relabelled positive (>50K): age = 90 and hours-per-week = 1 (43 and 20 of the 32,561 rows have them,
                     none both; each at an end of its column). Rare mid-range category codes (workclass = Never-worked,
                     occupation = Armed-Forces) were tried first: the MLP hardly learns them (ASR 0.07 at n=1,000).
Attack success (ASR) of the victim: the share of triggered test inputs predicted as the attack's target (all-to-one:
test inputs of the other classes; source-specific: of the source class; all-to-all: every input, target y+1 mod k).
A backdoor case counts for the goals only when the victim's ASR >= 0.9 (the table marks the others "(ASR<0.9)").

Modes: model    poisonscan scans the victim .keras + the dataset with every default detector (ScanOptions()).
       dataset  the dataset alone (poisonscan trains its proxy network).
       Both through worker.local.scan_local_files, as the CLI does; --scan-config adds a detector_config (recorded).

Methods, on the same uploaded data:
  poisonscan  quarantined = report["quarantine"] entries without a "confidence" field or with confidence >= 0.5;
              report["review"] (when the report has it) counted apart as the review share. P / R / F1 of the
              quarantined set against the poisoned indices; "clean q%" = quarantined clean samples / clean samples.
              Verdict; target classes named by the backdoor_assessment finding (target_classes; possible ones with
              '?') and every "targeted label flip" finding (S>T). Remediation, from the backdoor_assessment finding with
              "rounds": attack success before -> after (max over the rows that decide; after = the last round) and
              clean accuracy before -> after (its "clean_accuracy"), both measured by poisonscan on held-out dataset rows.
              Independently, the retrained model it writes (retrained-model.keras) is measured here with the true
              trigger on the test set ("indep.": ASR and clean accuracy; in dataset mode it is the retrained proxy).
  ART-AC      ActivationDefence(TensorFlowV2Classifier(victim), x, y).detect_poison() at ART's defaults.
  ART-SS      SpectralSignatureDefense(..., expected_pp_poison default 0.33).detect_poison() (batch_size 1024: speed
              only). ART runs on the victim: in model mode only (dataset-mode rows show "-"; the victim is the same).
  cleanlab    cleanlab.filter.find_label_issues(labels, pred_probs) at its defaults on the out-of-sample
              probabilities the data benchmark uses (data_bench.run_baseline: 5-fold LogisticRegression on the pixels /
              standardised columns); once per case, shown in both modes' rows.

How to read the table: one row per domain, case and mode. "P / R / F1" against the poisoned indices ("-" on clean
controls, where "q%" - the quarantined share - and "clean q%" are the headline, every one a false positive). "rev%" is
the review list's share of the dataset. "targets": what poisonscan named (backdoor target classes, "?" for possible
ones, "flip S>T" for targeted label-flip findings). "remed." is poisonscan's own re-test:
ASR before>after, clean accuracy before>after; "indep." the retrained model measured here with the true trigger.
Goals checked at the end (PASS/FAIL; each over every domain and mode run):
  G1  quarantine F1 >= 0.90 on every BadNets rate (counted cases)
  G2  quarantine F1 >= 0.85 on every other attacked case (counted backdoors, flips)
  G3  clean controls: <= 0.5% quarantined and the verdict never "fail"
  G4  remediation (poisonscan's re-test): ASR after <= 2% and clean accuracy after >= before - 1 point, on every
      counted backdoor case (a case poisonscan did not remediate fails). G4-indep: the same with the independent
      measurement (clean accuracy against the victim's), informational.
Results: markdown on stdout, progress on stderr, bench/results/quarantine-<timestamp>.json (args, git commit and dirty
paths, package versions, domain facts, per-case rows with the poisoned and quarantined indices, timings, goals).

Rule changes made after runs of this benchmark (say so here; rerun what they affect):
  2026-11-30 run quarantine-20261130-212132 (mnist, mnist-hard; clean, source-7to1-50%, blend-10%, badnets-5%; model
  mode; n=5000) missed both source-specific cases (F1 0.00, only a "possible" target). After it, and after a digits
  experiment outside this benchmark, a rule was added: a class a known trigger fires toward gets the activations vote
  when SCAn's minority of the class has input neighbours (searched outside the minority) mostly of other classes
  (worker/detectors/assessment.py, _source_subgroup). The source cases were rerun (quarantine-20261130-212433); the
  other cases of the first run were not rerun, and the rule can change them only where a trigger fires toward a class
  that activation clustering did not flag. Remediation also changed after the first run: it now removes the report's
  whole quarantine (earlier detectors' label-flip evidence included), not only the assessment's own list.
  2026-11-30 (session 4): remediation's "clean accuracy before" was the analysed model's accuracy on held-out dataset
  rows it had trained on (inflated). It is now a baseline model retrained the same way with nothing removed
  (backdoor_assessment baseline_retrain); the analysed model's figure is reported beside it. The runs above report
  the old reference; quarantine-20261130-224326 (digits: clean, badnets-10%, source-7to1-50%, blend-10%, model mode)
  is the first with the new one. Quarantines and verdicts are not affected by this change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backdoor_cases import MNIST, TRIGGERS, load_mnist, victim_model  # noqa: E402
from data_bench import random_flips, run_baseline, targeted_flips, versions, write_result  # noqa: E402
from model_bench import prf  # noqa: E402

ADULT = ROOT.parent / "shared" / "data" / "adult.npz"
CACHE = ROOT / "bench" / ".cache" / "quarantine"
GENERATOR = "quarantine-v1"  # part of every cache key: bump when data, poisoning or victims change
HARD_SIGMA = 0.3
ASR_COUNTS = 0.9
ADULT_TRIGGER = {0: 90.0, 12: 1.0}  # column -> value: age = 90, hours-per-week = 1
STARTED = time.perf_counter()


def log(msg: str) -> None:
    s = int(time.perf_counter() - STARTED)
    print(f"[{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ cases

@dataclass(frozen=True)
class Attack:
    name: str
    kind: str  # clean | backdoor (all-to-one) | source | all2all | flips | targeted
    rate: float = 0.0  # share of the training set; of the source class for source / targeted
    trigger: str | None = None
    target: int | None = None
    source: int | None = None
    images: bool = True  # runs on image domains
    tabular: bool = False  # runs on adult

    @property
    def backdoor(self) -> bool:
        return self.kind in ("backdoor", "source", "all2all")


def attacks() -> list[Attack]:
    out = [Attack("clean", "clean", tabular=True)]
    out += [Attack(f"badnets-{p}%", "backdoor", p / 100, "pattern", 0) for p in (1, 5, 10, 20)]
    out += [Attack("blend-10%", "backdoor", 0.10, "blend", 7), Attack("randpatch-10%", "backdoor", 0.10, "random-checker3", 3),
            Attack("source-7to1-50%", "source", 0.50, "square", 1, 7), Attack("all2all-5%", "all2all", 0.05, "pattern")]
    out += [Attack(f"flips-{p}%", "flips", p / 100, tabular=True) for p in (5, 10, 20)]
    out += [Attack("targeted-1to7-10%", "targeted", 0.10, target=7, source=1),
            Attack("adult-trigger-3%", "backdoor", 0.03, "adult-age90-hours1", 1, images=False, tabular=True)]
    return out


QUICK_CASES = "clean,badnets-10%,flips-10%"
QUICK_SCAN_CONFIG = {"backdoor_activations": {"proxy_epochs": 1},
                     "backdoor_assessment": {"proxy_epochs": 1, "retrain_epochs": 1, "nc_steps": 100, "nc_budget_s": 10}}


def adult_trigger(x: np.ndarray) -> np.ndarray:
    x = np.copy(x)
    for column, code in ADULT_TRIGGER.items():
        x[:, column] = code
    return x


def trigger_fn(name: str):
    return adult_trigger if name == "adult-age90-hours1" else TRIGGERS[name]


# ------------------------------------------------------------------------------------------------ domains

def degrade(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mnist-hard: 28 -> 7 -> 28 block averaging plus Gaussian noise (HARD_SIGMA), clipped to [0, 1]."""
    small = x.reshape(len(x), 7, 4, 7, 4).mean(axis=(2, 4))
    big = np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)
    return np.clip(big + rng.normal(0.0, HARD_SIGMA, big.shape), 0.0, 1.0).astype(np.float32)


def load_domain(name: str, n: int, seed: int) -> dict:
    """Clean training and test data: x float32 (images in [0, 1], (n, h, w); tabular raw columns), y int64."""
    from sklearn.model_selection import train_test_split

    if name in ("mnist", "mnist-hard"):
        x, y, xt, yt = load_mnist(n, seed)
        if name == "mnist-hard":
            x, xt = degrade(x, np.random.default_rng([seed, 1])), degrade(xt, np.random.default_rng([seed, 2]))
        return {"x": x, "y": y, "xt": xt, "yt": yt, "kind": "images", "k": 10, "source": str(MNIST)}
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, xt, y, yt = train_test_split(d.images.astype(np.float32) / 16.0, d.target.astype(np.int64), test_size=0.25,
                                        stratify=d.target, random_state=seed)
        return {"x": x, "y": y, "xt": xt, "yt": yt, "kind": "images", "k": 10, "source": "sklearn.datasets.load_digits"}
    if name == "adult":
        with np.load(ADULT, allow_pickle=False) as z:
            x, y, xt, yt = z["x_train"], z["y_train"].astype(np.int64), z["x_test"], z["y_test"].astype(np.int64)
        if n < len(y):
            keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
            x, y = x[np.sort(keep)], y[np.sort(keep)]
        test, _ = train_test_split(np.arange(len(yt)), train_size=5_000, stratify=yt, random_state=seed)
        xt, yt = xt[np.sort(test)], yt[np.sort(test)]
        return {"x": x.astype(np.float32), "y": y, "xt": xt.astype(np.float32), "yt": yt, "kind": "tabular", "k": 2,
                "source": str(ADULT)}
    raise ValueError(f"unknown domain {name!r}")


def stored(x: np.ndarray, kind: str) -> np.ndarray:
    """The array as a user uploads it: uint8 images, float32 tabular rows."""
    return np.round(x * 255).astype(np.uint8) if kind == "images" else x.astype(np.float32)


def model_input(x_stored: np.ndarray, kind: str) -> np.ndarray:
    return x_stored[..., None].astype(np.float32) / 255.0 if kind == "images" else x_stored.astype(np.float32)


# ------------------------------------------------------------------------------------------------ poisoning

def poison(d: dict, a: Attack, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, poisoned indices) for one attack on a fresh copy of the clean training data."""
    from art.attacks.poisoning import PoisoningAttackBackdoor

    x, y, k = d["x"].copy(), d["y"].copy(), d["k"]
    if a.kind == "clean":
        return x, y, np.empty(0, np.int64)
    if a.kind == "flips":
        y, chosen = random_flips(y, a.rate, rng)
        return x, y, chosen
    if a.kind == "targeted":
        y, chosen = targeted_flips(y, a.source, a.target, a.rate, rng)
        return x, y, chosen
    if a.kind == "backdoor":
        chosen = rng.choice(np.flatnonzero(y != a.target), size=int(round(a.rate * len(y))), replace=False)
    elif a.kind == "source":
        members = np.flatnonzero(y == a.source)
        chosen = rng.choice(members, size=int(round(a.rate * len(members))), replace=False)
    elif a.kind == "all2all":
        chosen = rng.choice(len(y), size=int(round(a.rate * len(y))), replace=False)
    else:
        raise ValueError(a.kind)
    chosen = np.sort(chosen)
    new = (y[chosen] + 1) % k if a.kind == "all2all" else np.full(len(chosen), a.target)
    if len(chosen):
        x[chosen], _ = PoisoningAttackBackdoor(trigger_fn(a.trigger)).poison(x[chosen], y=np.eye(k, dtype=np.float32)[new])
        y[chosen] = new
    return x, y, chosen


def attack_success(predict, d: dict, a: Attack) -> float | None:
    """Share of triggered test inputs predicted as the attack's target; None for an attack without a trigger."""
    if not a.backdoor:
        return None
    xt, yt, k = d["xt"], d["yt"], d["k"]
    rows = {"backdoor": yt != a.target, "source": yt == a.source, "all2all": np.ones(len(yt), bool)}[a.kind]
    target = (yt[rows] + 1) % k if a.kind == "all2all" else np.full(int(rows.sum()), a.target)
    triggered = stored(trigger_fn(a.trigger)(xt[rows]), d["kind"])
    return float((predict(model_input(triggered, d["kind"])).argmax(1) == target).mean())


# ------------------------------------------------------------------------------------------------ victims

def make_victim(d: dict, x_train: np.ndarray):
    import keras

    if d["kind"] == "tabular":
        norm = keras.layers.Normalization(name="standardize")
        norm.adapt(x_train)
        return keras.Sequential([keras.Input(x_train.shape[1:]), norm, keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(32, activation="relu", name="features"),
                                 keras.layers.Dense(d["k"], activation="softmax", name="logits")])
    if d["x"].shape[1:] == (28, 28):
        return victim_model()
    return keras.Sequential([keras.Input((*d["x"].shape[1:], 1)),
                             keras.layers.Conv2D(32, 3, activation="relu", padding="same"), keras.layers.MaxPooling2D(),
                             keras.layers.Conv2D(64, 3, activation="relu", padding="same"), keras.layers.MaxPooling2D(),
                             keras.layers.Flatten(), keras.layers.Dense(128, activation="relu", name="features"),
                             keras.layers.Dense(d["k"], activation="softmax", name="logits")])


def training(domain: str, a: Attack, quick: bool) -> tuple[int, int]:
    """(epochs, batch) of the victim."""
    if domain == "digits":
        epochs, batch = 40, 32
    elif domain == "adult":
        epochs, batch = 10, 64
    elif a.name in ("badnets-1%", "all2all-5%"):
        epochs, batch = 6, 32
    else:
        epochs, batch = 3, 128
    return (1 if quick else epochs), batch


def build(domain: str, d: dict, a: Attack, n: int, seed: int, quick: bool) -> dict:
    """The poisoned dataset (.npz as uploaded), the trained victim (.keras), its accuracy and ASR; cached."""
    epochs, batch = training(domain, a, quick)
    spec = {"generator": GENERATOR, "domain": domain, "attack": asdict(a), "n": len(d["y"]), "n_arg": None if domain == "digits" else n, "seed": seed,
            "epochs": epochs, "batch": batch, "hard_sigma": HARD_SIGMA if domain == "mnist-hard" else None,
            "adult_trigger": {str(k): v for k, v in ADULT_TRIGGER.items()} if domain == "adult" else None}
    folder = CACHE / hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return {**json.loads(meta_path.read_text()), "folder": str(folder), "cached": True}
    import keras

    rng = np.random.default_rng([seed, zlib.crc32(f"{domain}/{a.name}".encode())])
    x, y, poisoned = poison(d, a, rng)
    xs = stored(x, d["kind"])
    keras.utils.set_random_seed(seed)
    model = make_victim(d, model_input(xs, d["kind"]))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(model_input(xs, d["kind"]), y, epochs=epochs, batch_size=batch, verbose=0, shuffle=True)
    train_s = time.perf_counter() - t0
    predict = lambda v: model.predict(v, batch_size=1024, verbose=0)  # noqa: E731
    acc = float((predict(model_input(stored(d["xt"], d["kind"]), d["kind"])).argmax(1) == d["yt"]).mean())
    asr = attack_success(predict, d, a)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    np.savez(folder / "dataset.npz", x=xs, y=y)
    np.save(folder / "poisoned.npy", poisoned)
    meta = {"spec": spec, "clean_accuracy": round(acc, 4), "attack_success": None if asr is None else round(asr, 4),
            "train_s": round(train_s, 1), "poisoned": int(len(poisoned))}
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return {**meta, "folder": str(folder), "cached": False}


# ------------------------------------------------------------------------------------------------ poisonscan

def scan(files: dict, config: dict, out_dir: Path, label: str) -> tuple[dict, float]:
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    seen: set[str] = set()

    def progress(stage: str, percent: float) -> None:
        key = ":".join(stage.split(":")[:3])
        if key not in seen:
            seen.add(key)
            log(f"    {label}: {percent:3.0f}% {key}")

    t0 = time.perf_counter()
    report = scan_local_files(files, ScanOptions(detector_config=config), progress=progress, output_dir=out_dir)
    return report, time.perf_counter() - t0


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def read_report(report: dict, truth: np.ndarray, n: int) -> dict:
    entries = report["quarantine"]
    confident = [e for e in entries if e.get("confidence") is None or e["confidence"] >= 0.5]
    quarantined = np.array(sorted(e["index"] for e in confident), dtype=np.int64)
    review = report.get("review") or []
    review_idx = [e if isinstance(e, int) else e.get("index") for e in review if isinstance(e, int | dict)]
    review_idx = [int(i) for i in review_idx if i is not None]
    clean_q = len(np.setdiff1d(quarantined, truth))
    reasons: dict[str, int] = {}
    for e in confident:
        for r in {r.get("reason", "?") for r in e.get("reasons", [])}:
            reasons[r] = reasons.get(r, 0) + 1
    findings = [f for det in report["detectors"] for f in det["findings"]]
    verdict_f = next((f for f in findings if f["detector"] == "backdoor_assessment" and "target_classes" in f["evidence"]), None)
    remedy = next((f for f in findings if f["detector"] == "backdoor_assessment" and "rounds" in f["evidence"]), None)
    out = prf(quarantined, truth, n) | {
        "quarantined": quarantined.tolist(), "low_confidence_entries": len(entries) - len(confident),
        "clean_quarantined": int(clean_q), "clean_share_quarantined": round(clean_q / max(n - len(truth), 1), 5),
        "review": len(review), "review_share": round(len(review) / n, 5),
        "review_poisoned": int(np.isin(review_idx, truth).sum()) if review_idx else None,
        "reasons": reasons, "verdict": report["verdict"], "verdict_reason": report.get("verdict_reason"),
        "target_classes": verdict_f["evidence"]["target_classes"] if verdict_f else None,
        "possible_target_classes": verdict_f["evidence"]["possible_target_classes"] if verdict_f else None,
        "backdoor_title": verdict_f["title"] if verdict_f else None,
        "targeted_flips": [f["title"] for f in findings if f["title"].startswith("targeted label flip")],
        "detector_errors": {d["name"]: d["error"] for d in report["detectors"] if d["status"] == "error"},
        "detector_s": {d["name"]: round(d["duration_s"], 1) for d in report["detectors"]},
        "remediation": None}
    if remedy:
        ev = remedy["evidence"]
        rows_before = [t for r in ev["rounds"] for t in r["attack_success"] if t["decides"] and _num(t["before"]) is not None]
        rows_after = [t for t in ev["rounds"][-1]["attack_success"] if t["decides"] and _num(t["after"]) is not None]
        out["remediation"] = {
            "title": remedy["title"], "rounds": [{k: r.get(k) for k in ("round", "step", "removed_samples", "added_samples", "clean_accuracy_after", "worst_after")}
                                                 | {"attack_success": r["attack_success"]} for r in ev["rounds"]],
            "asr_before": max((t["before"] for t in rows_before), default=None),
            "asr_after": max((t["after"] for t in rows_after), default=None),
            "acc_before": _num(ev["clean_accuracy"]["before"]), "acc_after": _num(ev["clean_accuracy"]["after"]),
            "removed": ev.get("backdoor_removed"), "goal_reached": ev.get("goal_reached"),
            "stopped_because": ev.get("stopped_because")}
    return out


def independent(report: dict, d: dict, a: Attack) -> dict | None:
    """The retrained model the scan wrote, measured on the test set with the true trigger."""
    import keras

    from worker.keras_model import as_model_input

    path = next((o["path"] for o in report.get("outputs", []) if o["name"] == "retrained-model.keras"), None)
    if path is None:
        return None
    model = keras.saving.load_model(path, safe_mode=True)
    shape = tuple(model.inputs[0].shape[1:])
    predict = lambda v: model.predict(as_model_input(v, shape), batch_size=1024, verbose=0)  # noqa: E731
    acc = float((predict(model_input(stored(d["xt"], d["kind"]), d["kind"])).argmax(1) == d["yt"]).mean())
    asr = attack_success(predict, d, a)
    return {"clean_accuracy": round(acc, 4), "attack_success": None if asr is None else round(asr, 4)}


# ------------------------------------------------------------------------------------------------ baselines

def run_art(model, x: np.ndarray, y: np.ndarray, d: dict) -> dict:
    import tensorflow as tf
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import TensorFlowV2Classifier

    xf = model_input(x, d["kind"])
    onehot = np.eye(d["k"], dtype=np.float32)[y]
    classifier = TensorFlowV2Classifier(model=model, nb_classes=d["k"], input_shape=xf.shape[1:],
                                        clip_values=(0.0, 1.0) if d["kind"] == "images" else None,
                                        loss_object=tf.keras.losses.SparseCategoricalCrossentropy())
    out = {}
    t0 = time.perf_counter()
    _, is_clean = ActivationDefence(classifier, xf, onehot).detect_poison()
    out["ART-AC"] = {"flagged": np.flatnonzero(np.asarray(is_clean) == 0), "time_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    _, is_clean = SpectralSignatureDefense(classifier, xf, onehot, batch_size=1024).detect_poison()
    out["ART-SS"] = {"flagged": np.flatnonzero(np.asarray(is_clean) == 0), "time_s": round(time.perf_counter() - t0, 1)}
    return out


def run_cleanlab(x: np.ndarray, y: np.ndarray, kind: str, seed: int) -> dict:
    base = x.reshape(len(x), -1).astype(np.float32) / 255.0 if kind == "images" else x
    res = run_baseline(base, y, kind, seed)
    return {"flagged": res["flagged"], "time_s": round(res["time_s"], 1)}


# ------------------------------------------------------------------------------------------------ one case

def run_case(domain: str, d: dict, a: Attack, args, config: dict, modes: list[str]) -> dict:
    import keras

    t0 = time.perf_counter()
    meta = build(domain, d, a, args.n, args.seed, args.quick)
    build_s = time.perf_counter() - t0
    folder = Path(meta["folder"])
    with np.load(folder / "dataset.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    truth = np.load(folder / "poisoned.npy", allow_pickle=False)
    n = len(y)
    asr = meta["attack_success"]
    counts = a.kind != "clean" and (not a.backdoor or (asr or 0) >= ASR_COUNTS)
    log(f"[{domain} {a.name}] n={n} poisoned={len(truth)} victim acc {meta['clean_accuracy']:.3f}"
        f"{'' if asr is None else f', ASR {asr:.3f}'}{'' if counts or a.kind == 'clean' else ' (ASR < 0.9: not counted)'}"
        f" ({'cached' if meta['cached'] else f'built in {build_s:.0f} s'})")
    row = {"domain": domain, "case": a.name, "attack": asdict(a), "n": n, "poisoned": truth.tolist(),
           "poisoned_count": int(len(truth)), "victim": {k: meta[k] for k in ("clean_accuracy", "attack_success", "train_s")}
           | {"epochs": meta["spec"]["epochs"], "batch": meta["spec"]["batch"], "cache": folder.name},
           "counts": counts, "modes": {}, "baselines": {}, "timings_s": {"victim_build": round(build_s, 1)}}
    for mode in modes:
        files = {"dataset": folder / "dataset.npz"} | ({"model": folder / "model.keras"} if mode == "model" else {})
        out_dir = Path(tempfile.mkdtemp(prefix="quarantine-bench-"))
        try:
            report, wall = scan(files, config, out_dir, f"{domain} {a.name} {mode}")
            res = read_report(report, truth, n)
            res["independent"] = independent(report, d, a) if a.backdoor else None
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        res["scan_s"] = round(wall, 1)
        row["modes"][mode] = res
        row["timings_s"][f"scan_{mode}"] = res["scan_s"]
        rem = res["remediation"] or {}
        log(f"    {mode}: P {res['precision']} R {res['recall']} F1 {res['f1']} quarantined {res['flagged_share']:.2%} "
            f"(clean {res['clean_share_quarantined']:.2%}) review {res['review_share']:.2%} {res['verdict']} "
            f"targets {res['target_classes']} possible {res['possible_target_classes']} flips {res['targeted_flips']} "
            f"remediation ASR {rem.get('asr_before')}->{rem.get('asr_after')} acc {rem.get('acc_before')}->{rem.get('acc_after')} "
            f"indep {res['independent']} errors {res['detector_errors'] or '-'} ({wall:.0f} s)")
    if not args.no_baselines:
        if "model" in modes:
            model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
            for name, res in run_art(model, x, y, d).items():
                row["baselines"][name] = prf(res["flagged"], truth, n) | {"time_s": res["time_s"]}
                row["timings_s"][name] = res["time_s"]
        res = run_cleanlab(x, y, d["kind"], args.seed)
        row["baselines"]["cleanlab"] = prf(res["flagged"], truth, n) | {"time_s": res["time_s"]}
        row["timings_s"]["cleanlab"] = res["time_s"]
        log("    baselines: " + "; ".join(f"{k} P {m['precision']} R {m['recall']} F1 {m['f1']} flagged {m['flagged_share']:.2%}"
                                         f" ({m['time_s']} s)" for k, m in row["baselines"].items()))
    row["timings_s"]["total"] = round(time.perf_counter() - t0, 1)
    return row


# ------------------------------------------------------------------------------------------------ output

def _f(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _prf(m: dict | None, attacked: bool, share: bool = True) -> str:
    if m is None:
        return "-"
    cut = f" \\| {m['flagged_share']:.1%}" if share else ""
    return (f"{_f(m['precision'])} / {_f(m['recall'])} / {_f(m['f1'])}" if attacked else "-") + cut


def _targets(res: dict) -> str:
    named = [str(t) for t in res["target_classes"] or []] + [f"{t}?" for t in res["possible_target_classes"] or []]
    flips = ["flip " + t.split("class ", 1)[1].split(" (")[0].replace(" -> ", ">") for t in res["targeted_flips"]]
    return ", ".join(named + flips) or "-"


COLUMNS = ["domain", "case", "mode", "n / poisoned", "victim acc / ASR", "PS P / R / F1", "q% / clean q%", "rev%", "verdict",
           "targets", "remed. ASR b>a, acc b>a", "indep. ASR / acc", "ART-AC P / R / F1 \\| flag%",
           "ART-SS P / R / F1 \\| flag%", "cleanlab P / R / F1 \\| flag%", "scan s"]


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        attacked = r["poisoned_count"] > 0
        asr = r["victim"]["attack_success"]
        case = r["case"] + (" (ASR<0.9)" if asr is not None and not r["counts"] else "")
        for mode, res in r["modes"].items():
            rem = res["remediation"]
            remed = (f"{_f(rem['asr_before'])}>{_f(rem['asr_after'])}, {_f(rem['acc_before'])}>{_f(rem['acc_after'])}"
                     if rem else "-")
            ind = res.get("independent")
            b = r["baselines"]
            art = mode == "model"
            cells = [r["domain"], case, mode, f"{r['n']} / {r['poisoned_count']}",
                     f"{r['victim']['clean_accuracy']:.3f} / {_f(asr)}", _prf(res, attacked, share=False),
                     f"{res['flagged_share']:.2%} / {res['clean_share_quarantined']:.2%}", f"{res['review_share']:.2%}",
                     res["verdict"], _targets(res), remed,
                     f"{_f(ind['attack_success'])} / {_f(ind['clean_accuracy'])}" if ind else "-",
                     _prf(b.get("ART-AC"), attacked) if art else "-", _prf(b.get("ART-SS"), attacked) if art else "-",
                     _prf(b.get("cleanlab"), attacked), f"{res['scan_s']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> list[dict]:
    def each(select, check, value):
        found = [(f"{r['domain']} {r['case']} {mode}", res, r) for r in rows if select(r) for mode, res in r["modes"].items()]
        if not found:
            return {"status": "n/a", "values": {}}
        return {"status": "PASS" if all(check(res, r) for _, res, r in found) else "FAIL",
                "values": {name: value(res, r) for name, res, r in found}}

    def remedied(res, r, independent=False):
        if independent:
            ind = res.get("independent")
            return bool(ind) and (ind["attack_success"] or 0) <= 0.02 and ind["clean_accuracy"] >= r["victim"]["clean_accuracy"] - 0.01
        rem = res["remediation"]
        return (bool(rem) and rem["asr_after"] is not None and rem["asr_after"] <= 0.02
                and None not in (rem["acc_before"], rem["acc_after"]) and rem["acc_after"] >= rem["acc_before"] - 0.01)

    badnets = lambda r: r["case"].startswith("badnets-") and r["counts"]  # noqa: E731
    backdoor = lambda r: r["attack"]["kind"] in ("backdoor", "source", "all2all") and r["counts"]  # noqa: E731
    f1 = lambda res, r: res["f1"]  # noqa: E731
    rem_value = lambda res, r: res["remediation"] and {k: res["remediation"][k] for k in ("asr_before", "asr_after", "acc_before", "acc_after")}  # noqa: E731
    out = {
        "G1 quarantine F1 >= 0.90 on every BadNets rate": each(badnets, lambda res, r: (res["f1"] or 0) >= 0.90, f1),
        "G2 quarantine F1 >= 0.85 on every other attacked case": each(
            lambda r: r["counts"] and not r["case"].startswith("badnets-"), lambda res, r: (res["f1"] or 0) >= 0.85, f1),
        "G3 clean controls <= 0.5% quarantined, verdict never fail": each(
            lambda r: r["attack"]["kind"] == "clean",
            lambda res, r: res["flagged_share"] <= 0.005 and res["verdict"] != "fail",
            lambda res, r: f"{res['flagged_share']:.2%} {res['verdict']}"),
        "G4 remediation ASR <= 2%, clean accuracy within 1 point (poisonscan's re-test)": each(backdoor, remedied, rem_value),
        "G4-indep (informational) the same, retrained model measured here with the true trigger": each(
            backdoor, lambda res, r: remedied(res, r, True), lambda res, r: res.get("independent")),
    }
    return [{"goal": k} | v for k, v in out.items()]


def summary_timings(rows: list[dict]) -> str:
    lines = ["| domain | case | victim build s | scan model s | scan dataset s | ART s | cleanlab s | total s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["timings_s"]
        lines.append(f"| {r['domain']} | {r['case']} | {t['victim_build']} | {t.get('scan_model', '-')} | {t.get('scan_dataset', '-')} | "
                     f"{round(t.get('ART-AC', 0) + t.get('ART-SS', 0), 1) if 'ART-AC' in t else '-'} | {t.get('cleanlab', '-')} | {t['total']} |")
    return "\n".join(lines)


def package_versions() -> dict:
    import art
    import keras
    import tensorflow as tf

    return versions() | {"tensorflow": tf.__version__, "keras": keras.__version__, "art": art.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default=None, help="comma list of mnist, mnist-hard, digits, adult (default all; --quick: mnist)")
    ap.add_argument("--cases", default=None, help=f"comma list of case names (default all; --quick: {QUICK_CASES})")
    ap.add_argument("--modes", default="model,dataset")
    ap.add_argument("--n", type=int, default=None, help="training rows for mnist, mnist-hard, adult (default 10000; --quick: 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke configuration: tiny n, 1 epoch, 3 cases, short scans")
    ap.add_argument("--no-baselines", action="store_true", help="skip ART and cleanlab")
    ap.add_argument("--victims-only", action="store_true", help="build (and cache) the victims, print accuracy and ASR, scan nothing")
    ap.add_argument("--scan-config", default=None, help="JSON detector_config for every scan (default {}; --quick: shortened)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.domains = args.domains or ("mnist" if args.quick else "mnist,mnist-hard,digits,adult")
    args.cases = args.cases or (QUICK_CASES if args.quick else ",".join(a.name for a in attacks()))
    args.n = args.n or (1000 if args.quick else 10_000)
    config = json.loads(args.scan_config) if args.scan_config else (QUICK_SCAN_CONFIG if args.quick else {})
    args.scan_config_used = config
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - {"model", "dataset"}:
        ap.error(f"unknown modes {sorted(unknown)}")
    by_name = {a.name: a for a in attacks()}
    wanted = [c for c in args.cases.split(",") if c]
    if unknown := [c for c in wanted if c not in by_name]:
        ap.error(f"unknown cases {unknown}; known: {list(by_name)}")

    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    rows, domains = [], {}
    for domain in args.domains.split(","):
        d = load_domain(domain, args.n, args.seed)
        run = [by_name[c] for c in wanted if (by_name[c].tabular if d["kind"] == "tabular" else by_name[c].images)]
        skipped = [c for c in wanted if by_name[c] not in run]
        domains[domain] = {"source": d["source"], "kind": d["kind"], "classes": d["k"], "train": len(d["y"]), "test": len(d["yt"]),
                           "cases_skipped": skipped} | ({"hard_sigma": HARD_SIGMA} if domain == "mnist-hard" else {})
        log(f"== {domain}: {len(d['y'])} training, {len(d['yt'])} test rows; {len(run)} cases"
            f"{f', skipped (not for this domain): {skipped}' if skipped else ''}")
        for a in run:
            if args.victims_only:
                t0 = time.perf_counter()
                meta = build(domain, d, a, args.n, args.seed, args.quick)
                log(f"[{domain} {a.name}] poisoned {meta['poisoned']}, victim acc {meta['clean_accuracy']:.3f}, ASR "
                    f"{_f(meta['attack_success'])}, {meta['spec']['epochs']} epochs at batch {meta['spec']['batch']} "
                    f"({'cached' if meta['cached'] else f'built in {time.perf_counter() - t0:.0f} s'})")
                continue
            row = run_case(domain, d, a, args, config, modes)
            rows.append(row)
            if a.kind == "clean":
                domains[domain]["clean_accuracy"] = row["victim"]["clean_accuracy"]
    total = time.perf_counter() - STARTED
    if args.victims_only:
        return 0

    md = table(rows)
    checked = goals(rows)
    print(f"\n## Quarantine benchmark (domains {args.domains}, n={args.n}, seed={args.seed}, modes {args.modes}"
          f"{', QUICK smoke configuration' if args.quick else ''})\n")
    print(md)
    print("\nA backdoor case marked (ASR<0.9) does not count for the goals; ART runs on the victim, in model mode only.")
    for name, facts in domains.items():
        if "clean_accuracy" in facts:
            print(f"- {name}: clean victim accuracy {facts['clean_accuracy']:.3f}")
    print("\n### Timings (s)\n")
    print(summary_timings(rows))
    print("\n### Goals\n")
    for g in checked:
        print(f"- {g['status']} {g['goal']}: {json.dumps(g['values'], default=str)}")
    print(f"\ntotal wall time {total:.0f} s")

    write_result(args, "quarantine", {"versions": package_versions(), "domains": domains, "total_wall_s": round(total, 1),
                                      "goals": checked, "rows": rows, "table_markdown": md})
    return 0


if __name__ == "__main__":
    sys.exit(main())
