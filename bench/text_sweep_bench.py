"""The text model's vocabulary sweep (worker/text_model.py, "reconstruction") on five corpora and four trigger styles.

    .venv/bin/python bench/text_sweep_bench.py [--seed 0] [--only sms,trec] [--cases clean,emoji-1%]

Question: does sweeping a text model's own vocabulary name the backdoors that the data's n-grams and the published
trigger library miss (a 1% trigger the data search does not reach, an emoji, a homograph, an invisible character),
without naming natural features ("club" pushes an SMS toward spam) on clean models of corpora it was not developed on?
It was developed on SMS spam (emoji, homograph and "cf" at 1%); UCI sentiment, AG News, TREC, SST-2 and the zero-width
trigger were not looked at before this run.

Per corpus (SMS spam from ../shared/data, the four of bench/text_corpus_bench.py), the last 20% held out clean; per
case, 1% of the training texts, drawn from the classes other than the corpus's target, get one trigger token at a
random word position and the target label: "cf" (BadNL), "🙂" (an emoji), "mоre" (Cyrillic о: a homograph of "more"),
"the\u200b" ("the" with a zero-width space). A victim (tests/test_text_model.py's ``train_victim``, max pooling, 12
epochs) is trained, saved as .keras and loaded back safely; its attack success is measured on the held-out texts of
the other classes (trigger at a random position). Then ``assess_text_model`` (data search + library, then the
sweep) on the training texts with the held-out texts: the target named by the regular candidates, by the sweep
(and its token), the sweep's carriers against the poisoned indices, the assessment's seconds and the sweep's share.
Results: markdown on stdout, bench/results/text-sweep-<timestamp>.json.
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
sys.path.insert(0, str(ROOT / "tests"))
from data_bench import prf, versions, write_result  # noqa: E402
from text_bench import insert_tokens  # noqa: E402
from text_corpus_bench import CORPORA  # noqa: E402

HELD_OUT_SHARE = 0.2
TRIGGERS = {"cf-1%": "cf", "emoji-1%": "\U0001F642", "homograph-1%": "m\u043ere", "zero-width-1%": "the\u200b"}
SMS = ROOT.parent / "shared" / "data" / "sms_spam.npz"


def load_sms():
    data = np.load(SMS, allow_pickle=False)
    return [str(t) for t in data["x"]], data["y"].astype(np.int64), ("ham", "spam"), 0


def load(name: str):
    if name == "sms":
        return load_sms()
    corpus = CORPORA[name]()
    # line breaks inside a text (two UCI IMDb sentences hold U+0085) end up inside a vocabulary token, which Keras
    # writes one per line and cannot load back ("repeated term"): the product rejects such a model, the victim here
    # is trained on the texts with those breaks as spaces
    return [" ".join(t.splitlines()) for t in corpus.texts], corpus.y, corpus.classes, corpus.target


def run_case(name: str, case: str, texts, y, held, target: int, seed: int, folder: Path) -> dict:
    from test_text_model import train_victim

    from worker.text_model import ALPHA, _sweep, assess_text_model, insert_at, text_predictor

    poisoned = np.empty(0, np.int64)
    if case != "clean":
        planted = insert_tokens(texts, y, 0.01, (TRIGGERS[case],), target, seed, per_text=(1, 1))
        texts, y, poisoned = planted.texts, planted.y, planted.poisoned
    start = time.perf_counter()
    model = train_victim(texts, y, folder / f"{name}-{case}.keras", pooling="max", epochs=12,
                         classes=int(max(y.max(), held[1].max())) + 1)
    trained = time.perf_counter() - start
    predict = text_predictor(model)
    rng = np.random.default_rng(seed)
    others = [t for t, label in zip(*held) if label != target]
    asr = None
    if case != "clean":
        asr = float((predict([insert_at(t, TRIGGERS[case], rng.random()) for t in others]) == target).mean())
    n_classes = int(max(y.max(), held[1].max())) + 1
    start = time.perf_counter()
    a = assess_text_model(model, texts, y, n_classes, holdout=held, seed=seed, with_activations=False)
    assess_s = time.perf_counter() - start
    start = time.perf_counter()  # the sweep alone, as assess_text_model runs it (its cost within assess_s)
    _sweep(model, predict, texts, y, held[0], held[1], n_classes, set(), seed=seed, per_candidate=200, alpha=ALPHA / 2)
    sweep_s = time.perf_counter() - start
    reconstructed = {int(c): str(a.targets[c].candidate) for c in a.reconstructed}
    carriers = (np.concatenate([t.carriers for t in a.reconstructed.values()]) if a.reconstructed
                else np.empty(0, np.int64))
    p, r, f1 = prf(set(map(int, carriers)), set(map(int, poisoned)))
    return {"corpus": name, "case": case, "texts": len(texts), "poisoned": int(len(poisoned)), "asr": asr,
            "regular_targets": {int(c): str(t.candidate) for c, t in a.targets.items() if c not in a.reconstructed},
            "sweep_targets": reconstructed, "sweep_carriers": int(len(carriers)), "carriers_precision": p,
            "carriers_recall": r, "carriers_f1": f1,
            "swept": [{"token": str(s.probe.candidate), "target": s.probe.target, "asr": round(s.probe.attack_success, 3),
                       "p": float(f"{s.probe.p_value:.3g}"), "significant": s.significant, "only_reason": len(s.only_reason),
                       "carriers": len(s.carriers), "called": s.called, "held_out_carriers": s.held_out_carriers,
                       "held_out_texts": s.held_out_texts, "absence_p": float(f"{s.absence_p:.3g}"), "named": s.named}
                      for s in a.swept[:10]],
            "data_triggers": [t.name for t in a.data_triggers],
            "train_s": round(trained, 1), "assess_s": round(assess_s, 1), "sweep_s": round(sweep_s, 1)}


def row(r: dict) -> str:
    asr = "-" if r["asr"] is None else f"{r['asr']:.2f}"
    regular = ", ".join(f"{c}:{t}" for c, t in r["regular_targets"].items()) or "-"
    sweep = ", ".join(f"{c}:{t!r}" for c, t in r["sweep_targets"].items()) or "-"
    carriers = str(r["sweep_carriers"]) if r["sweep_carriers"] else "-"
    if r["sweep_carriers"] and r["carriers_precision"] is not None:
        carriers += f" ({r['carriers_precision']:.2f}/{r['carriers_recall']:.2f})"
    return (f"| {r['corpus']} | {r['case']} | {r['poisoned']} | {asr} | {regular} | {sweep} | {carriers} | "
            f"{r['assess_s']} | {r['sweep_s']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="sms,uci-sentiment,trec,ag-news,sst-2")
    ap.add_argument("--cases", default="clean," + ",".join(TRIGGERS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    print("| corpus | case | poisoned | attack success | target (data + library) | target (sweep) | sweep carriers "
          "(precision/recall) | assess s | of which sweep s |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            texts, y, classes, target = load(name)
            cut = int(len(texts) * (1 - HELD_OUT_SHARE))
            order = np.random.default_rng(args.seed).permutation(len(texts))
            train, test = order[:cut], order[cut:]
            held = ([texts[i] for i in test], y[test])
            for case in args.cases.split(","):
                r = run_case(name, case, [texts[i] for i in train], y[train].copy(), held, target, args.seed, Path(tmp))
                r["classes"], r["target"] = list(classes), classes[target]
                rows.append(r)
                print(row(r), flush=True)
    path = write_result(args, "text-sweep", {"rows": rows, "versions": versions()})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
