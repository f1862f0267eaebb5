"""Near-duplicate floods in labelled text: ``worker.text_floods`` against Cleanlab, on SMS spam and three other corpora.

    .venv/bin/python bench/text_flood_bench.py [--seed 0] [--only NAME,NAME] [--no-pipeline]

A flood poisons by weight: a few texts of one class, many near-copies of each, all labelled with the target class,
appended to the data. Cases per corpus (SMS spam from ../shared/data, and bench/corpora's uci-sentiment, ag-news and
trec, sources and licences in bench/corpora/README.md):

  clean                 the corpus as shipped
  flood-5x30            5 texts of a source class, 30 near-copies each (1-3 small edits: a word dropped, neighbours
                        swapped, a filler word inserted, case or final punctuation changed), labelled target
  flood-10x15           10 texts x 15 copies, the same edits
  ho-flood-3x40-back    held out: 3 texts of the *target* class x 40 copies labelled the source class
  ho2-flood-8x20-heavy  written after the detector: 8 x 20 copies, each with a quarter of its words dropped and two
                        neighbour pairs swapped

SMS: source spam, target ham (spam that gets through). Other corpora: target = the corpus's target class (positive,
Sci/Tech, HUM), source = the next class. Scored: ``find_floods``' significant floods (what the detector quarantines)
as precision/recall/F1 against the added copies; clean q% = share of the original texts quarantined; the groups it
disputes without significance (the review list) are counted. Side by side: Cleanlab ``find_label_issues`` on a TF-IDF
+ logistic regression's 5-fold out-of-sample probabilities. The whole product (``worker.local``, dataset only, default
detectors) scans clean and flood-5x30 of each corpus as a CSV.

Goals (issue 15: floods are found; clean corpora are never ``fail`` and keep <= 0.5% quarantined): quarantine F1 >=
0.85 on the flood cases. Results: markdown on stdout, bench/results/text-floods-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from data_bench import prf, versions, write_result  # noqa: E402
from text_bench import DATA, TextCase, clean_share  # noqa: E402
from text_corpus_bench import Corpus, load_ag_news, load_trec, load_uci_sentiment, score_scan  # noqa: E402

from worker.text_floods import find_floods  # noqa: E402

FILLERS = ("pls", "now", "today", "ok", "so", "just", "really", "hey")


def load_sms() -> Corpus:
    with np.load(DATA, allow_pickle=False) as z:
        texts, y = [str(t) for t in z["x"]], z["y"].astype(np.int64)
    return Corpus("sms-spam", "SMS messages", texts, y, ("ham", "spam"), 0, {"path": "../shared/data/sms_spam.npz"})


CORPORA: dict[str, Callable[[], Corpus]] = {"sms-spam": load_sms, "uci-sentiment": load_uci_sentiment,
                                            "ag-news": load_ag_news, "trec": load_trec}


def vary(text: str, rng) -> str:
    """A near-copy: one to three small edits, as a flood's author makes copies that are not byte-identical."""
    words = text.split(" ")
    for _ in range(int(rng.integers(1, 4))):
        edit, k = int(rng.integers(0, 5)), int(rng.integers(0, len(words)))
        if edit == 0 and len(words) > 4:
            del words[k]
        elif edit == 1 and len(words) > 1:
            k = min(k, len(words) - 2)
            words[k], words[k + 1] = words[k + 1], words[k]
        elif edit == 2:
            words.insert(k, str(rng.choice(FILLERS)))
        elif edit == 3:
            words[k] = words[k].upper() if rng.random() < 0.5 else words[k].lower()
        else:
            words[-1] = words[-1].rstrip(".!?") + str(rng.choice([".", "!", "!!", "?", ""]))
    return " ".join(words)


def vary_heavily(text: str, rng) -> str:
    """A quarter of the words dropped, then two neighbour pairs swapped."""
    words = [w for w in text.split(" ") if rng.random() >= 0.25] or text.split(" ")[:1]
    for _ in range(2):
        if len(words) > 1:
            k = int(rng.integers(0, len(words) - 1))
            words[k], words[k + 1] = words[k + 1], words[k]
    return " ".join(words)


def flood(texts, y, sources, copies, source, target, seed, edit=vary) -> TextCase:
    """``sources`` texts of class ``source`` (8 words or more), ``copies`` edited copies of each labelled ``target``,
    appended. Poisoned: the copies."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero((y == source) & (np.array([len(t.split()) for t in texts]) >= 8))
    added = [edit(texts[i], rng) for i in rng.choice(pool, sources, replace=False) for _ in range(copies)]
    out = list(texts) + added
    return TextCase(out, np.concatenate([y, np.full(len(added), target)]),
                    np.arange(len(texts), len(out), dtype=np.int64), None)


def _source(c: Corpus) -> int:
    return 1 if c.name == "sms-spam" else (c.target + 1) % len(c.classes)


CASES: dict[str, Callable[[Corpus, int], TextCase]] = {
    "clean": lambda c, s: TextCase(list(c.texts), c.y.copy(), np.empty(0, np.int64), None),
    "flood-5x30": lambda c, s: flood(c.texts, c.y, 5, 30, _source(c), c.target, s + 1),
    "flood-10x15": lambda c, s: flood(c.texts, c.y, 10, 15, _source(c), c.target, s + 2),
    "ho-flood-3x40-back": lambda c, s: flood(c.texts, c.y, 3, 40, c.target, _source(c), s + 3),
    "ho2-flood-8x20-heavy": lambda c, s: flood(c.texts, c.y, 8, 20, _source(c), c.target, s + 4, vary_heavily),
}
PIPELINE_CASES = ("clean", "flood-5x30")


def score_floods(corpus: Corpus, case: TextCase) -> dict:
    started = time.perf_counter()
    floods = find_floods(case.texts, case.y, len(corpus.classes))
    seconds = time.perf_counter() - started
    truth = set(case.poisoned.tolist())
    quarantined = {int(i) for f in floods if f.significant for i in f.members}
    return {"quarantine": prf(quarantined, truth), "quarantined": len(quarantined),
            "clean_quarantined_pct": clean_share(quarantined, truth, len(case.y)),
            "floods": sum(f.significant for f in floods), "disputed": sum(not f.significant for f in floods),
            "groups": [{"label": corpus.classes[f.label], "reads_as": corpus.classes[f.reads_as], "size": f.size,
                        "copies": len(f.members), "poisoned": len(truth & set(f.members.tolist())),
                        "confidence": round(f.confidence, 4), "p_value": f.p_value, "significant": f.significant,
                        "example": case.texts[f.example][:200]} for f in floods],
            "seconds": round(seconds, 1)}


def score_cleanlab(corpus: Corpus, case: TextCase, seed: int) -> dict:
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    features = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2).fit_transform(case.texts)
    probs = np.zeros((len(case.y), len(corpus.classes)))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(case.y, case.y):
        probs[test] = LogisticRegression(max_iter=1000).fit(features[train], case.y[train]).predict_proba(features[test])
    truth = set(case.poisoned.tolist())
    flagged = set(np.flatnonzero(find_label_issues(case.y, probs, n_jobs=1)).tolist())
    return {"flagged": prf(flagged, truth), "flagged_pct": round(100 * len(flagged) / len(case.y), 2)}


def fmt(t) -> str:
    return "-" if t is None or t[0] is None else "/".join(f"{v:.2f}" for v in t)


def goal(r: dict) -> str:
    if r["case"] == "clean":
        return "ok" if r["clean_quarantined_pct"] <= 0.5 else "MISS"
    return "ok" if r["quarantine"][2] is not None and r["quarantine"][2] >= 0.85 else "MISS"


def row_line(r: dict) -> str:
    return (f"| {r['corpus']} | {r['case']} | {r['n']} | {r['poisoned']} | {fmt(r['quarantine'])} | "
            f"{r['clean_quarantined_pct']:.2f} | {r['floods']} | {r['disputed']} | {fmt(r['cleanlab']['flagged'])} "
            f"({r['cleanlab']['flagged_pct']:.1f}) | {goal(r)} | {r['seconds']} |")


def scan_line(r: dict) -> str:
    s = r["scan"]
    others = "; ".join(f"{f['detector']}: {f['title']}" for f in s["findings"]) or "-"
    return (f"| {r['corpus']} | {r['case']} | {s['verdict']} | {s['quarantined']} | {fmt(s['quarantine'])} | "
            f"{s['clean_quarantined_pct']:.2f} | {', '.join(s['errors']) or '-'} | {others[:300]} | {s['seconds']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated corpus and/or case names")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the whole-product scans")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    if unknown := only - set(CORPORA) - set(CASES):
        ap.error(f"unknown names {sorted(unknown)}")
    corpora = [c for c in CORPORA if c in only] or list(CORPORA)
    cases = [c for c in CASES if c in only] or list(CASES)
    rows = []
    print("\n### floods (worker.text_floods.find_floods) vs Cleanlab find_label_issues\n\n| corpus | case | n | "
          "poisoned | quarantine P/R/F1 | clean q% | floods | disputed (review) | Cleanlab P/R/F1 (flag%) | goal | s |\n"
          + "|---" * 11 + "|", flush=True)
    with threadpool_limits(limits=1, user_api="blas"):
        for name in corpora:
            corpus = CORPORA[name]()
            for case_name in cases:
                case = CASES[case_name](corpus, args.seed)
                row = {"corpus": name, "case": case_name, "n": len(case.y), "poisoned": len(case.poisoned),
                       **score_floods(corpus, case), "cleanlab": score_cleanlab(corpus, case, args.seed)}
                if not args.no_pipeline and case_name in PIPELINE_CASES:
                    row["scan"] = score_scan(corpus, case)
                rows.append(row)
                print(row_line(row), flush=True)
    if any("scan" in r for r in rows):
        print("\n### the whole scan (worker.local, dataset only, default detectors)\n\n| corpus | case | verdict | "
              "quarantined | quarantine P/R/F1 | clean q% | errors | non-info findings | s |\n" + "|---" * 9 + "|")
        for r in rows:
            if "scan" in r:
                print(scan_line(r))
    misses = [f"{r['corpus']} {r['case']}" for r in rows if goal(r) != "ok"]
    misses += [f"{r['corpus']} clean (whole scan: fail)" for r in rows
               if r["case"] == "clean" and r.get("scan", {}).get("verdict") == "fail"]
    print(f"\ngoals missed: {', '.join(misses) or 'none'}")
    write_result(args, "text-floods", {"versions": versions(), "rows": rows, "goals_missed": misses})
    return 0


if __name__ == "__main__":
    sys.exit(main())
