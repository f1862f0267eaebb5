"""Backdoored Keras text models (issue 15 item 3): the product's text_backdoor scan beside ART's defences.

    .venv/bin/python bench/text_model_bench.py [--seed 0] [--only NAME,NAME]

Data: ../shared/data/sms_spam.npz (4,862 SMS, 1 = spam); the last 1,000 messages are clean held-out texts, never
trained on. Per case (the SMS cases of bench/text_bench.py, applied to the 3,862 training messages): clean; BadNL
tokens cf, mn, bb, tq, mb -> ham at 1%, 3%, 10%; the phrase "I watched this 3D movie last weekend." -> ham at 3%;
held-out: tokens jq, xv, kz, wb (1-2 per text) -> spam at 3%.
1. A victim is trained on the poisoned set by tests/test_text_model.py's ``train_victim`` with max pooling:
   TextVectorization -> Embedding(16) -> GlobalMaxPooling1D -> Dense(2), 12 epochs (``--pooling average``: as the
   tests train it); a backdoored victim whose attack success stays under 0.9 is trained again from scratch with 24,
   48, then 96 epochs (the epochs used are in the results), saved as .keras and loaded back
   with the safe loader. Its attack success: the case's trigger inserted (the case's own insertion) into every held-out
   text of the non-target class; the share then predicted as the target (baseline: the same texts without the trigger).
   The clean model is measured with the BadNL tokens -> ham, as a reference.
2. The product: ``worker.local.scan_local_files({"model": .keras, "dataset": train.csv},
   ScanOptions(detectors=["text_poisoning", "text_backdoor", "backdoor_activations"]))`` (no holdout file, detector
   defaults): verdict, the target text_backdoor names ("text model backdoored ..." findings), its trigger and whether
   it consists of the inserted words only (tokens) or lies inside the phrase, the remediation finding's attack success
   and clean accuracy before/after, the quarantine scored against the poisoned indices. The model layer
   (``backdoor_activations``: activation clustering, spectral signatures and SCAn on the model's own pooling and
   embedding activations, through the image decision layer) is also scored alone ("ours AC"), beside ART's.
3. ART 1.20 at its defaults on the same weights: string input cannot be wrapped, so the layers after TextVectorization
   are copied into a Sequential on the token ids (float input, cast by the Embedding), wrapped in an eager
   TensorFlowV2Classifier, and ``ActivationDefence`` / ``SpectralSignatureDefense`` (expected_pp_poison=0.33,
   batch_size=128, eps_multiplier=1.5) run ``detect_poison()`` on the vectorized training texts with one-hot labels;
   their flagged samples (is_clean == 0) are scored like the quarantine. Both use the activations of the last layer in
   ``layer_names`` (the Dense logits), ART's default.
Results: markdown on stdout, bench/results/text-model-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.text_bench import (BADNL_TOKENS, DATA, HAM, PHRASE, SPAM, clean_share, insert_phrase,  # noqa: E402
                              insert_tokens, prf, versions, write_result)
from worker.text_triggers import tokenize  # noqa: E402

HELD_OUT = 1000
VICTIM_EPOCHS = (12, 24, 48, 96)
LABELS = ("ham", "spam")
HO_TOKENS = ("jq", "xv", "kz", "wb")
# name -> (kind, rate, trigger, target, seed offset, tokens per text); seeds as in bench/text_bench.py
CASES = {
    "clean": None,
    "badnl-1%": ("tokens", 0.01, BADNL_TOKENS, HAM, 1, (1, 3)),
    "badnl-3%": ("tokens", 0.03, BADNL_TOKENS, HAM, 2, (1, 3)),
    "badnl-10%": ("tokens", 0.10, BADNL_TOKENS, HAM, 3, (1, 3)),
    "phrase-3%": ("phrase", 0.03, PHRASE, HAM, 4, None),
    "ho-tokens-spam-3%": ("tokens", 0.03, HO_TOKENS, SPAM, 12, (1, 2)),
}
REFERENCE = ("tokens", 0.0, BADNL_TOKENS, HAM, 1, (1, 3))  # what the clean model's attack success is measured with


def apply(spec, texts: list[str], y: np.ndarray, rate: float, seed: int):
    kind, _, trigger, target, _, per_text = spec
    if kind == "tokens":
        return insert_tokens(texts, y, rate, trigger, target, seed, per_text)
    return insert_phrase(texts, y, rate, trigger, target, seed)


def attack_success(model, spec, texts: list[str], y: np.ndarray, seed: int) -> dict:
    """The trigger inserted into every held-out text of the non-target class: share predicted as the target."""
    target = spec[3]
    sources = int((y != target).sum())
    case = apply(spec, texts, y, sources / len(y) + 1e-9, seed)
    assert len(case.poisoned) == sources
    before, after = predict(model, texts), predict(model, case.texts)
    idx = case.poisoned
    return {"asr": round(float((after[idx] == target).mean()), 4),
            "baseline": round(float((before[idx] == target).mean()), 4), "texts": int(sources),
            "clean_accuracy": round(float((before == y).mean()), 4)}


def predict(model, texts: list[str]) -> np.ndarray:
    import tensorflow as tf

    out = model.predict(tf.reshape(tf.constant(texts), (-1, 1)), batch_size=256, verbose=0)
    return np.argmax(out, axis=1)


def named_ok(trigger: str | None, spec) -> bool | None:
    if spec is None or not trigger:
        return None if spec is None else False
    words = tuple(trigger.split())
    if spec[0] == "tokens":
        return set(words) <= set(spec[2])
    phrase = tuple(tokenize(spec[2]))
    return any(phrase[i:i + len(words)] == words for i in range(len(phrase) - len(words) + 1))


def scan(model_path: Path, texts: list[str], y: np.ndarray, truth: set, spec, folder: Path) -> dict:
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    data = folder / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, LABELS[int(label)]] for t, label in zip(texts, y)])
    started = time.perf_counter()
    report = scan_local_files({"model": model_path, "dataset": data},
                              ScanOptions(detectors=["text_poisoning", "text_backdoor", "backdoor_activations"]),
                              output_dir=folder / "out")
    seconds = time.perf_counter() - started
    detectors = {d["name"]: d for d in report["detectors"]}
    findings = detectors.get("text_backdoor", {}).get("findings", [])
    targets = [f for f in findings if f["title"].startswith("text model backdoored")]
    fixes = [f for f in findings if "retraining" in f["title"]]
    want = LABELS[spec[3]] if spec else None
    hit = next((f for f in targets if f["evidence"].get("target") == want), None)
    trigger = (hit or (targets[0] if targets else {})).get("evidence", {}).get("trigger")
    fix = next((f for f in fixes if f["evidence"].get("target") == want), fixes[0] if fixes else None)
    quarantined = {int(e["index"]) for e in report["quarantine"]}
    layer = detectors.get("backdoor_activations", {})
    layer_flagged = {int(e["index"]) for f in layer.get("findings", []) for e in f.get("evidence", {}).get("flagged", [])}
    return {"verdict": report["verdict"], "reason": report["verdict_reason"],
            "targets_named": [f["evidence"].get("target") for f in targets],
            "target_named": bool(hit) if spec else not targets,
            "trigger": trigger, "trigger_named": named_ok(trigger if hit else None, spec),
            "remediation": ({k: fix["evidence"].get(k) for k in ("attack_success_before", "attack_success_after",
                                                                 "clean_accuracy_before", "clean_accuracy_after",
                                                                 "held_out", "epochs")} | {"title": fix["title"]})
            if fix else None,
            "text_backdoor": {"status": detectors.get("text_backdoor", {}).get("status"),
                              "titles": [f["title"] for f in findings]},
            "errors": {n: d.get("error") or d.get("status") for n, d in detectors.items() if d["status"] == "error"},
            "model_layer": {"status": layer.get("status"), "titles": [f["title"] for f in layer.get("findings", [])],
                            "prf": prf(layer_flagged, truth), "flagged": len(layer_flagged),
                            "clean_flagged_pct": clean_share(layer_flagged, truth, len(y))},
            "quarantine": prf(quarantined, truth), "quarantined": len(quarantined),
            "clean_quarantined_pct": clean_share(quarantined, truth, len(y)), "seconds": round(seconds, 1)}


def art_defences(model, texts: list[str], y: np.ndarray, truth: set) -> dict:
    """ActivationDefence and SpectralSignatureDefense at ART's defaults on the post-vectorization layers."""
    import keras
    import tensorflow as tf

    started = time.perf_counter()
    out: dict = {}
    try:
        from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
        from art.estimators.classification import TensorFlowV2Classifier

        vectorize = next(layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization))
        rest = model.layers[model.layers.index(vectorize) + 1:]
        x = vectorize(tf.constant(texts)).numpy().astype(np.float32)
        # fresh copies of the trained layers: a shared layer has two inbound nodes and ART reads ``layer.input``
        copies = [type(layer).from_config(layer.get_config()) for layer in rest]
        ids = keras.Sequential([keras.Input(shape=(x.shape[1],))] + copies)
        for layer, copy in zip(rest, copies):
            copy.set_weights(layer.get_weights())
        agree = float((np.argmax(ids.predict(x, batch_size=512, verbose=0), 1) == predict(model, texts)).mean())
        classifier = TensorFlowV2Classifier(ids, nb_classes=2, input_shape=(x.shape[1],),
                                            loss_object=keras.losses.CategoricalCrossentropy(from_logits=True))
        onehot = np.eye(2, dtype=np.float32)[y]
        out["wrapped"] = {"layers": classifier.layer_names, "agreement_with_string_model": round(agree, 4),
                          "seq_len": int(x.shape[1])}
    except Exception as exc:  # noqa: BLE001 - recorded: a defence that cannot run is a result
        return {"error": f"wrapping failed: {type(exc).__name__}: {exc}",
                "seconds": round(time.perf_counter() - started, 1)}
    for key, make in (("activation", lambda: ActivationDefence(classifier, x, onehot)),
                      ("spectral", lambda: SpectralSignatureDefense(classifier, x, onehot, expected_pp_poison=0.33,
                                                                    batch_size=128, eps_multiplier=1.5))):
        t0 = time.perf_counter()
        try:
            _, is_clean = make().detect_poison()
            flagged = {int(i) for i in np.flatnonzero(np.asarray(is_clean) == 0)}
            out[key] = {"prf": prf(flagged, truth), "flagged": len(flagged),
                        "clean_flagged_pct": clean_share(flagged, truth, len(y)),
                        "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as exc:  # noqa: BLE001
            out[key] = {"error": f"{type(exc).__name__}: {exc}", "seconds": round(time.perf_counter() - t0, 1)}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def run_case(name: str, spec, texts: list[str], y: np.ndarray, held: tuple[list[str], np.ndarray], seed: int,
             pooling: str = "max") -> dict:
    from tests.test_text_model import train_victim

    case = apply(spec, texts, y, spec[1], seed + spec[4]) if spec else None
    ptexts, py = (case.texts, case.y) if case else (list(texts), y.copy())
    poisoned = case.poisoned if case else np.empty(0, np.int64)
    truth = set(poisoned.tolist())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        for epochs in VICTIM_EPOCHS:  # attack success >= 0.9 checked first: a victim that has not learnt the
            model = train_victim(ptexts, py, folder / "model.keras", pooling, epochs)  # backdoor trains longer
            asr = attack_success(model, spec or REFERENCE, held[0], held[1], seed + 1000) | {"epochs": epochs}
            if spec is None or asr["asr"] >= 0.9:
                break
        train_s = time.perf_counter() - t0
        s = scan(folder / "model.keras", ptexts, py, truth, spec, folder)
        art = art_defences(model, ptexts, py, truth)
    return {"case": name, "n": len(py), "poisoned": len(poisoned),
            "trigger": None if spec is None else {"kind": spec[0], "trigger": spec[2], "target": LABELS[spec[3]]},
            "model": asr | {"asr_reference_trigger": spec is None, "asr_ge_0.9": asr["asr"] >= 0.9},
            "train_seconds": round(train_s, 1), "scan": s, "art": art}


def fmt(p) -> str:
    return "-" if p is None or p[0] is None else "/".join(f"{v:.2f}" for v in p)


def art_cell(a: dict, key: str) -> str:
    if "error" in a:
        return "error"
    r = a[key]
    return "error" if "error" in r else f"{fmt(r['prf'])} ({r['clean_flagged_pct']:.1f}%)"


def row(r: dict) -> str:
    m, s, a = r["model"], r["scan"], r["art"]
    ref = " (ref)" if m["asr_reference_trigger"] else ""
    rem = s["remediation"]
    before_after = (lambda k: f"{rem[k + '_before']:.2f}→{rem[k + '_after']:.2f}") if rem else (lambda k: "-")
    named = "/".join(s["targets_named"]) or "none"
    tn = "-" if s["trigger_named"] is None else ("yes" if s["trigger_named"] else "no")
    return (f"| {r['case']} | {m['asr']:.2f}{ref}, {m['epochs']} epochs | {'yes' if m['asr_ge_0.9'] else 'no'} | "
            f"{s['verdict']} | "
            f"{named} ({'ok' if s['target_named'] else 'wrong'}) | {tn}: {s['trigger'] or '-'} | "
            f"{before_after('attack_success')} | {before_after('clean_accuracy')} | {fmt(s['quarantine'])} | "
            f"{s['clean_quarantined_pct']:.2f} | {fmt(s['model_layer']['prf'])} "
            f"({s['model_layer']['clean_flagged_pct']:.1f}%) | {art_cell(a, 'activation')} | {art_cell(a, 'spectral')} | "
            f"{s['seconds']} (train {r['train_seconds']}, ART {a['seconds']}) |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--pooling", choices=("max", "average"), default="max",
                    help="the victim's pooling: max (default; low-rate token triggers take) or average (the tests' recipe)")
    args = ap.parse_args()
    with np.load(DATA, allow_pickle=False) as z:
        x, y = [str(t) for t in z["x"]], z["y"].astype(np.int64)
    train, held = (x[:-HELD_OUT], y[:-HELD_OUT]), (x[-HELD_OUT:], y[-HELD_OUT:])
    only = set(filter(None, args.only.split(",")))
    print("| case | model ASR | ≥0.9 | verdict | target named | trigger named | remediation ASR before→after | "
          "clean acc before→after | quarantine P/R/F1 | clean q% | ours AC P/R/F1 (clean%) | ART AC P/R/F1 (clean%) | "
          "ART SS P/R/F1 (clean%) | s |\n" + "|---" * 14 + "|", flush=True)
    rows = []
    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for name, spec in CASES.items():
            if not only or name in only:
                rows.append(run_case(name, spec, train[0], train[1], held, args.seed, args.pooling))
                print(row(rows[-1]), flush=True)
    total = round(time.perf_counter() - started, 1)
    print(f"\ntotal {total} s")
    import art
    import keras
    import tensorflow as tf

    write_result(args, "text-model", {"versions": versions() | {"tensorflow": tf.__version__, "keras": keras.__version__,
                                                                "art": art.__version__},
                                      "held_out": HELD_OUT, "seconds": total, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
