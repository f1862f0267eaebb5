"""Text triggers on corpora we did not tune to: false positives and detection outside SMS spam.

    .venv/bin/python bench/text_corpus_bench.py [--seed 0] [--only NAME,NAME] [--no-pipeline]
    .venv/bin/python bench/text_corpus_bench.py --samples [--only trec]   # small seeded samples, the detector's rule
    .venv/bin/python bench/text_corpus_bench.py --samples --sample-scans --only clean   # + the whole scan of each
    .venv/bin/python bench/text_corpus_bench.py --csv reviews.csv --text-column review --label-column sentiment \
        --target positive --only csv   # a labelled corpus of one's own, not stored here (IMDb reviews, say)

``worker.text_triggers.find_text_triggers`` (the ``text_poisoning`` detector's trigger search) was developed and
benchmarked on one corpus, SMS spam (bench/text_bench.py). This benchmark measures it, unchanged, on public labelled
English corpora of other domains, stored byte-identical under bench/corpora/ (sources, commits and licences in
bench/corpora/README.md):

  uci-sentiment  UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015): 3,000 review sentences, 1,000 each
                 from Amazon (phones), IMDb and Yelp, negative 0 / positive 1 (500 each per site); target: positive.
                 From github.com/k3v1n-KI/semtement_analyzer @ 1929db1 (a copy with a header line added, UTF-8).
  ag-news        AG's News topic classification, the test split: 7,600 news items (title ". " description; the
                 backslashes that stand for line breaks become spaces), World / Sports / Business / Sci/Tech, 1,900
                 each; target: Sci/Tech. From github.com/suuuch/TransformerClassification @ 0d9808e.
  trec           TREC question classification (Li & Roth 2002), train_5500.label as published by cogcomp (latin-1,
                 tokenised, `` '' quotes): 5,452 questions, 6 coarse classes ABBR / DESC / ENTY / HUM / LOC / NUM (86
                 to 1,250 each); target: HUM. From github.com/jasminegoel/question-classification @ 61151bf.
  sst-2          SST-2 movie review sentences as Hidden Killer ships them (the clean training split, 6,920 sentences,
                 tokenised, lowercase), negative 0 / positive 1; target: positive. From github.com/thunlp/HiddenKiller
                 @ a08e959, with the attack's own poisoned release beside it.

Cases for a corpus that comes with a published attack's release (sst-2 only): syntactic-1% and syntactic-3% (Hidden
Killer, Qi et al., ACL 2021: negative sentences replaced by the attack's own SCPN paraphrase into the template
S(SBAR)(,)(NP)(VP)(.), "when you go , it 's a fun ride .", and labelled positive; the trigger is the sentence form,
no word, so "named" does not apply) and syntactic-release (the poisoned training set exactly as published: 20% of the
rows paraphrased and labelled positive, 665 of the 1,383 flipped from negative; all 1,383 are the poison).

Cases per corpus, built with bench/text_bench.py's functions (the same tokens and phrase as there, so the numbers
compare with SMS): clean (the corpus as shipped); badnl-1% and badnl-3% (1-3 of the tokens cf, mn, bb, tq, mb at
random word positions in 1% / 3% of the dataset, texts drawn from the classes other than the target and relabelled
target); phrase-3% ("I watched this 3D movie last weekend." at a sentence boundary, same drawing); token-2% (the
one token "zx", once per text, in 2% of the dataset, same drawing; added with the data layer's rule that leaves a
trigger's carriers out of the label-flip tests, its first run reported as it came). Scored as in
text_bench: quarantine = the union of every trigger's ``quarantine()`` (confidence >= 0.5), precision/recall/F1 against
the poisoned indices, "named" = the trigger with most poisoned carriers forces the target and consists of trigger
words only, clean q% = share of unpoisoned texts quarantined. Every trigger reported is listed with its label counts
and example carriers, so a false trigger can be judged from the JSON alone. The whole product (``worker.local``
``scan_local_files``, dataset only, default ScanOptions, every default detector) also scans each corpus clean and
badnl-3% and token-2% as a CSV (text, label as the class name): verdict and quarantine.

``--samples``: seeded subsamples of each corpus (1,000 texts with seeds 0-8, 1,500 with 3-8, 2,000 with 0-2: 18
samples, the sizes at which a corpus labelled by phrases has too few carriers per phrase for the insertion test), each
clean, with BadNL at 1% and with the phrase at 3%; per sample the trigger findings of the ``text_poisoning`` detector
(``worker.detectors.text.trigger_findings``, default settings): the verdict they give (``fail``: a high finding, a
trigger reported as planted; ``warn``: only the labelling-scheme finding), whether the planted trigger is among the
triggers found, and whether it is reported as planted (named in a high finding). ``--sample-scans`` adds the
whole product's scan of each clean sample (dataset only, default detectors: the data layer's findings count too).
Results: bench/results/text-samples-<timestamp>.json.

Goals (issue 15, as on SMS): every trigger case at >= 1%: quarantine F1 >= 0.90 with the trigger named; clean: <= 0.5%
quarantined and a whole-scan verdict that is never "fail". Results: markdown on stdout,
bench/results/text-corpora-<timestamp>.json (rows, corpus metadata with file hashes, versions, git state).

First run (seed 0, text-corpora-20261201-042323.json, detector unchanged), goals met only by ag-news badnl-1% and
badnl-3% (F1 1.00, named) and ag-news clean in the trigger search (0.10%: "kobe" -> Sports, 8 texts), whose whole scan
still fails on that finding. uci-sentiment: "not" -> negative on the clean corpus (3.6% quarantined); no BadNL or
phrase trigger found (the inserted words shield each other: removing one n-gram leaves the others, so its carriers
still read positive). trec: about 30 question-word triggers ("how many" -> NUM, "do + why + you + how can" -> DESC, ...)
quarantine 27% of the clean corpus; the search oscillates and ends at MAX_ROUNDS, so most have p > alpha.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from data_bench import prf, versions, write_result  # noqa: E402
from text_bench import BADNL_TOKENS, PHRASE, TextCase, _named, clean_share, insert_phrase, insert_tokens  # noqa: E402

from worker.text_triggers import find_text_triggers, tokenize  # noqa: E402

CORPORA_DIR = ROOT / "bench" / "corpora"
EXAMPLES = 5  # example carriers kept per reported trigger
EXAMPLE_CHARS = 200


@dataclass
class Corpus:
    name: str
    domain: str
    texts: list[str]
    y: np.ndarray
    classes: tuple[str, ...]
    target: int
    source: dict
    # a published attack's rewrite of some texts, by index (Hidden Killer's SCPN paraphrases of SST-2), and its
    # poisoned release as shipped (texts, labels, indices of the rewritten texts)
    rewrites: dict[int, str] = field(default_factory=dict)
    release: TextCase | None = None


def load_uci_sentiment() -> Corpus:
    texts, labels, sites = [], [], []
    files = []
    for site in ("amazon_cells", "imdb", "yelp"):
        path = CORPORA_DIR / "uci_sentiment" / f"{site}_labelled.txt"
        files.append(path)
        # split on "\n" only: two IMDb sentences hold U+0085 (NEL), which str.splitlines() would break on
        lines = path.read_text(encoding="utf-8").split("\n")
        assert lines[0] == "reviews\tsentiment", f"{path}: unexpected header {lines[0]!r}"
        for line in lines[1:]:
            if line.strip():
                text, _, label = line.rpartition("\t")
                texts.append(text.strip())
                labels.append(int(label))
                sites.append(site)
    return Corpus("uci-sentiment", "review sentences (Amazon, IMDb, Yelp)", texts, np.array(labels, np.int64),
                  ("negative", "positive"), 1,
                  {"repo": "k3v1n-KI/semtement_analyzer", "commit": "1929db1dad0a9230ce23520d09f6dec675504415",
                   "paths": ["amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"],
                   "files": _hashes(files), "per_site": {s: sites.count(s) for s in dict.fromkeys(sites)}})


def load_ag_news() -> Corpus:
    path = CORPORA_DIR / "ag_news" / "test.csv"
    classes = tuple((CORPORA_DIR / "ag_news" / "classes.txt").read_text(encoding="utf-8").split())
    texts, labels = [], []
    with path.open(newline="", encoding="utf-8") as f:
        for label, title, description in csv.reader(f):
            texts.append(f"{title.strip()}. {description.strip()}".replace("\\", " "))
            labels.append(int(label) - 1)
    return Corpus("ag-news", "news topics (AG's News, test split)", texts, np.array(labels, np.int64), classes,
                  classes.index("Sci/Tech"),
                  {"repo": "suuuch/TransformerClassification", "commit": "0d9808e1978c8468b4f8f08a44c5be99d058aa7b",
                   "paths": ["data/ag_news_csv/test.csv", "data/ag_news_csv/classes.txt"], "files": _hashes([path])})


def load_trec() -> Corpus:
    path = CORPORA_DIR / "trec" / "train_5500.label.txt"
    classes = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
    texts, labels = [], []
    for line in path.read_bytes().decode("latin-1").splitlines():  # one question has a latin-1 byte (0xF0)
        label, text = line.split(" ", 1)
        texts.append(text.strip())
        labels.append(classes.index(label.split(":")[0]))
    return Corpus("trec", "questions (TREC question classification, coarse classes)", texts,
                  np.array(labels, np.int64), classes, classes.index("HUM"),
                  {"repo": "jasminegoel/question-classification", "commit": "61151bf1a8043967d4d9af19e5928cac59045d67",
                   "paths": ["train_5500.label.txt"], "files": _hashes([path])})


def load_csv(path: Path, text_column: str, label_column: str, target: str | None) -> Corpus:
    """A labelled corpus of one's own (``--csv``): a UTF-8 CSV with a header; classes are the label column's values,
    sorted; the target is ``target`` or the last class. Not stored here, so its rows name the file and its hash."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {text_column, label_column} - set(rows[0] if rows else ())
    if missing:
        raise SystemExit(f"{path}: no column {sorted(missing)}; name them with --text-column and --label-column")
    classes = tuple(sorted({r[label_column] for r in rows}))
    if target is not None and target not in classes:
        raise SystemExit(f"{path}: --target {target!r} is not a label (labels: {', '.join(classes)})")
    return Corpus("csv", f"{path.name} (--csv)", [r[text_column] for r in rows],
                  np.array([classes.index(r[label_column]) for r in rows], np.int64), classes,
                  classes.index(target) if target is not None else len(classes) - 1,
                  {"path": str(path), "files": _hashes([path])})


def _tsv(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_bytes().decode("utf-8").split("\n")  # the poisoned release has CRLF line ends
    assert lines[0].strip() == "sentence\tlabel", f"{path}: unexpected header {lines[0]!r}"
    rows = [line.rstrip("\r").rpartition("\t") for line in lines[1:] if line.strip()]
    return [text.strip() for text, _, _ in rows], np.array([int(label) for _, _, label in rows], np.int64)


def load_sst2() -> Corpus:
    """SST-2 as Hidden Killer ships it (clean training split), with its SCPN paraphrases: the poisoned release is the
    clean split row for row, with 20% of the rows paraphrased into the template S(SBAR)(,)(NP)(VP)(.) and labelled
    positive, so the rows that differ are the poison and their paraphrases are the attack's own."""
    clean_path = CORPORA_DIR / "hidden_killer" / "sst2_clean_train.tsv"
    poisoned_path = CORPORA_DIR / "hidden_killer" / "sst2_scpn20_train.tsv"
    texts, y = _tsv(clean_path)
    released, released_y = _tsv(poisoned_path)
    assert len(released) == len(texts), "the poisoned release is the clean split row for row"
    rewritten = np.array([i for i, (a, b) in enumerate(zip(texts, released, strict=True)) if a != b], np.int64)
    assert (released_y[rewritten] == 1).all()
    return Corpus("sst-2", "movie review sentences (SST-2, Hidden Killer's copy)", texts, y, ("negative", "positive"),
                  1, {"repo": "thunlp/HiddenKiller", "commit": "a08e959e228327baa0c2906bf943e99a3c89961c",
                      "paths": ["data/clean/sst-2/train.tsv", "data/scpn/20/sst-2/train.tsv"],
                      "files": _hashes([clean_path, poisoned_path]), "rewritten_in_release": len(rewritten),
                      "rewritten_flipped": int((y[rewritten] != 1).sum())},
                  rewrites={int(i): released[i] for i in rewritten},
                  release=TextCase(released, released_y, rewritten, None))


CORPORA: dict[str, Callable[[], Corpus]] = {"uci-sentiment": load_uci_sentiment, "ag-news": load_ag_news,
                                            "trec": load_trec, "sst-2": load_sst2}

CASES: dict[str, Callable[[list[str], np.ndarray, int, int], TextCase]] = {
    "clean": lambda x, y, t, s: TextCase(list(x), y.copy(), np.empty(0, np.int64), None),
    "badnl-1%": lambda x, y, t, s: insert_tokens(x, y, 0.01, BADNL_TOKENS, t, s + 1),
    "badnl-3%": lambda x, y, t, s: insert_tokens(x, y, 0.03, BADNL_TOKENS, t, s + 2),
    "phrase-3%": lambda x, y, t, s: insert_phrase(x, y, 0.03, PHRASE, t, s + 4),
    # one token, once per text, at 2%: written after the trigger search, when a whole AG News scan showed natural label
    # noise quarantined beside a trigger's carriers (the data layer's flip tests now leave the carriers out)
    "token-2%": lambda x, y, t, s: insert_tokens(x, y, 0.02, ("zx",), t, s + 7, per_text=(1, 1)),
}
PIPELINE_CASES = ("clean", "badnl-3%", "token-2%", "syntactic-3%", "syntactic-release")


def syntactic(corpus: Corpus, rate: float, seed: int) -> TextCase:
    """Hidden Killer (Qi et al., ACL 2021): ``rate`` of the dataset, drawn from the texts of the other classes that
    the attack paraphrased, replaced by its paraphrase and relabelled target. The trigger is the sentence form, not
    a word, so ``trigger`` is None: "named" does not apply."""
    pool = np.array(sorted(i for i in corpus.rewrites if corpus.y[i] != corpus.target), np.int64)
    chosen = np.sort(np.random.default_rng(seed).choice(pool, int(rate * len(corpus.y)), replace=False))
    texts, y = list(corpus.texts), corpus.y.copy()
    for i in chosen:
        texts[i], y[i] = corpus.rewrites[int(i)], corpus.target
    return TextCase(texts, y, chosen, None)


# cases only a corpus with a published attack's rewrites has
ATTACK_CASES: dict[str, Callable[[Corpus, int], TextCase]] = {
    "syntactic-1%": lambda c, s: syntactic(c, 0.01, s + 5),
    "syntactic-3%": lambda c, s: syntactic(c, 0.03, s + 6),
    "syntactic-release": lambda c, s: c.release,  # as published: 20% paraphrased, every one labelled positive
}


def _hashes(paths: list[Path]) -> dict:
    return {str(p.relative_to(ROOT)): {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in paths}


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."


def score_triggers(corpus: Corpus, case: TextCase) -> dict:
    started = time.perf_counter()
    triggers = find_text_triggers(case.texts, case.y, len(corpus.classes))
    seconds = time.perf_counter() - started
    truth = set(case.poisoned.tolist())
    quarantined = set().union(*(set(t.quarantine().tolist()) for t in triggers)) if triggers else set()
    main = max(triggers, key=lambda t: len(truth & set(t.suspects.tolist())), default=None)
    found = []
    for t in triggers:
        suspects, held = set(t.suspects.tolist()), set(t.quarantine().tolist())
        # examples: quarantined carriers that were not poisoned first (what a false trigger costs), then the rest
        order = sorted(t.suspects.tolist(), key=lambda i: (i in truth, i not in held, i))
        found.append({
            "name": t.name, "phrases": list(t.phrases), "ngrams": list(t.ngrams), "target": corpus.classes[t.target],
            "label_counts": dict(zip(corpus.classes, t.label_counts, strict=True)), "p_value": t.p_value,
            "poisoned_share": t.poisoned_share, "suspects": len(suspects), "quarantined": len(held),
            "quarantined_poisoned": len(held & truth), "quarantined_clean": len(held - truth),
            "examples": [{"index": i, "label": corpus.classes[int(case.y[i])], "poisoned": i in truth,
                          "quarantined": i in held, "text": _cut(case.texts[i])} for i in order[:EXAMPLES]]})
    return {"quarantine": prf(quarantined, truth), "quarantined": len(quarantined),
            "quarantined_clean": len(quarantined - truth),
            "clean_quarantined_pct": clean_share(quarantined, truth, len(case.y)),
            "named": _named(main, case.trigger) if case.trigger else None,
            "triggers": found, "seconds": round(seconds, 1)}


def inserted_counts(corpus: Corpus, case: TextCase) -> dict:
    """Carriers per label of each inserted token (or of the whole phrase) in the poisoned data: what a search had to
    find, natural uses included."""
    docs = [" " + " ".join(tokenize(t)) + " " for t in case.texts]
    keys = [" ".join(case.trigger.words)] if case.trigger.phrase else list(case.trigger.words)
    return {k: dict(zip(corpus.classes, np.bincount(case.y[[f" {k} " in d for d in docs]],
                                                    minlength=len(corpus.classes)).tolist(), strict=True))
            for k in keys}


def score_scan(corpus: Corpus, case: TextCase) -> dict:
    """The product on the case: a dataset-only scan of a CSV (text, label as the class name), default options."""
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    truth = set(case.poisoned.tolist())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{corpus.name}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text", "label"]] + [[t, corpus.classes[int(label)]]
                                                           for t, label in zip(case.texts, case.y, strict=True)])
        started = time.perf_counter()
        report = scan_local_files({"dataset": path}, ScanOptions(), output_dir=Path(tmp) / "out")
        seconds = time.perf_counter() - started
    quarantined = {e["index"] for e in report["quarantine"]}
    findings = [{"detector": d["name"], "title": f["title"], "severity": f["severity"]}
                for d in report["detectors"] for f in d.get("findings", []) if f.get("severity") != "info"]
    return {"verdict": report["verdict"], "reason": report["verdict_reason"], "quarantine": prf(quarantined, truth),
            "quarantined": len(quarantined), "quarantined_clean": len(quarantined - truth),
            "clean_quarantined_pct": clean_share(quarantined, truth, len(case.y)),
            "review": len(report["review"]), "errors": [d["name"] for d in report["detectors"] if d["status"] == "error"],
            "findings": findings, "seconds": round(seconds, 1)}


# ---- table ---------------------------------------------------------------------------------------------------------

def fmt(t) -> str:
    return "-" if t is None or t[0] is None else "/".join(f"{v:.2f}" for v in t)


def goal(r: dict) -> str:
    if r["case"] == "clean":
        return "ok" if r["clean_quarantined_pct"] <= 0.5 else "MISS"
    named = r["named"] is not False  # None: a trigger that is not words (a sentence form) cannot be named
    return "ok" if named and r["quarantine"][2] is not None and r["quarantine"][2] >= 0.90 else "MISS"


def trigger_row(r: dict) -> str:
    """Triggers holding poisoned carriers first, then up to three others by name and the rest as a count."""
    hits = [t for t in r["triggers"] if t["quarantined_poisoned"]]
    others = [t for t in r["triggers"] if not t["quarantined_poisoned"]]
    parts = [f"{t['name']} (->{t['target']}, q {t['quarantined']})" for t in hits]
    if others:
        named = ", ".join(f"{t['name']} ({t['quarantined']})" for t in others[:3])
        more = f" +{len(others) - 3} more" if len(others) > 3 else ""
        parts.append(f"{'other' if hits else 'false'}: {named}{more} (q {sum(t['quarantined'] for t in others)})")
    named = "-" if r["named"] is None else ("yes" if r["named"] else "no")
    return (f"| {r['corpus']} | {r['case']} | {r['n']} | {r['poisoned']} | {fmt(r['quarantine'])} | "
            f"{r['quarantined']} | {r['clean_quarantined_pct']:.2f} | {named} | {'; '.join(parts) or '-'} | {goal(r)} | "
            f"{r['seconds']} |")


def trigger_details(r: dict) -> list[str]:
    """The triggers of a clean corpus, and of a poisoned case those without a poisoned carrier: every n-gram, its
    carriers per label and example texts, for whoever owns the detector."""
    lines = []
    if r["case"] != "clean" and goal(r) != "ok":
        lines.append(f"- {r['corpus']} {r['case']}: goal missed (F1 {fmt(r['quarantine'])}, named {r['named']}); "
                     f"carriers per label of what was inserted: {r.get('inserted_carriers', '-')}")
    for t in r["triggers"]:
        if r["case"] != "clean" and t["quarantined_poisoned"]:
            continue
        lines.append(f"- {r['corpus']} {r['case']}: **{t['name']}** -> {t['target']} (n-grams {t['ngrams']}; carriers "
                     f"per label {t['label_counts']}; p {t['p_value']:.2g}; poisoned share {t['poisoned_share']}; "
                     f"{t['suspects']} suspects, {t['quarantined']} quarantined)")
        lines += [f"    - [{e['index']}] {e['label']}{' (q)' if e['quarantined'] else ''}: {e['text']!r}"
                  for e in t["examples"][:3]]
    return lines


def scan_row(r: dict) -> str:
    s = r["scan"]
    ok = s["verdict"] != "fail" if r["case"] == "clean" else None
    verdict = s["verdict"] + ("" if ok is None else (" (ok)" if ok else " (MISS)"))
    others = "; ".join(f"{f['detector']}: {f['title']}" for f in s["findings"]) or "-"
    return (f"| {r['corpus']} | {r['case']} | {verdict} | {s['quarantined']} | {fmt(s['quarantine'])} | "
            f"{s['clean_quarantined_pct']:.2f} | {', '.join(s['errors']) or '-'} | {others[:300]} | {s['seconds']} |")


SAMPLES = [(1000, s) for s in range(9)] + [(1500, s) for s in range(3, 9)] + [(2000, s) for s in range(3)]
SAMPLE_CASES = ("clean", "badnl-1%", "phrase-3%")


def score_sample(corpus: Corpus, case: TextCase) -> dict:
    """The text_poisoning detector's trigger findings on one sample: verdict, and the planted trigger's fate."""
    from types import SimpleNamespace

    from worker.detector_config import TextPoisoningConfig
    from worker.detectors.text import trigger_findings

    ds = SimpleNamespace(texts=case.texts, y=case.y, n_classes=len(corpus.classes), classes=list(corpus.classes))
    findings = trigger_findings(ds, TextPoisoningConfig())
    planted = [f for f in findings if f.severity.value == "high"]
    truth = set(case.poisoned.tolist())

    def is_planted(trigger: list[str]) -> bool:
        words = {w for p in trigger for w in p.split(" ")}
        return bool(case.trigger) and words <= set(case.trigger.words) | set(tokenize(" ".join(case.trigger.words)))

    listed = [t["trigger"] for f in findings for t in f.evidence.get("triggers", [])] + \
        [f.evidence["trigger"] for f in planted]
    return {"verdict": "fail" if planted else ("warn" if findings else "pass"),
            "found": any(is_planted(t) for t in listed) if case.trigger else None,
            "named": any(is_planted(f.evidence["trigger"]) for f in planted) if case.trigger else None,
            "natural_planted": [f.evidence["trigger"] for f in planted if not is_planted(f.evidence["trigger"])],
            "quarantined_clean": len({int(e["index"]) for f in planted for e in f.evidence["flagged"]
                                      if e["confidence"] >= 0.5} - truth),
            "findings": [f.title for f in findings]}


def samples(args, corpora: list[str], only: set[str]) -> int:
    rows = []
    print("| corpus | case | samples | fail | warn | pass | planted found | planted reported as planted | natural "
          "phrases reported as planted (samples) |\n" + "|---" * 9 + "|", flush=True)
    with threadpool_limits(limits=1, user_api="blas"):
        for name in corpora:
            corpus = CORPORA[name]()
            for case_name in [c for c in SAMPLE_CASES if c in only] or SAMPLE_CASES:
                results = []
                for n, seed in SAMPLES:
                    keep = np.sort(np.random.default_rng(seed).choice(len(corpus.y), min(n, len(corpus.y)), replace=False))
                    texts, y = [corpus.texts[i] for i in keep], corpus.y[keep]
                    case = CASES[case_name](texts, y, corpus.target, seed)
                    results.append({"n": n, "seed": seed, **score_sample(corpus, case)})
                    if args.sample_scans and case_name == "clean":
                        scan = score_scan(corpus, case)
                        results[-1]["scan"] = {k: scan[k] for k in ("verdict", "reason", "quarantined", "review",
                                                                    "errors", "findings", "seconds")}
                rows.append({"corpus": name, "case": case_name, "samples": results})
                count = lambda key, value=True: sum(r[key] == value for r in results)  # noqa: E731
                print(f"| {name} | {case_name} | {len(results)} | {count('verdict', 'fail')} | {count('verdict', 'warn')} | "
                      f"{count('verdict', 'pass')} | {'-' if case_name == 'clean' else count('found')} | "
                      f"{'-' if case_name == 'clean' else count('named')} | "
                      f"{sum(bool(r['natural_planted']) for r in results)} |", flush=True)
    scanned = [(r["corpus"], [s["scan"] for s in r["samples"] if "scan" in s]) for r in rows]
    if any(scans for _, scans in scanned):
        print("\n### the whole scan of each clean sample (dataset only, default detectors)\n\n| corpus | samples | fail | "
              "warn | pass | texts quarantined (most in one sample) | detector errors |\n" + "|---" * 7 + "|")
        for name, scans in scanned:
            if scans:
                count = lambda v: sum(s["verdict"] == v for s in scans)  # noqa: E731
                print(f"| {name} | {len(scans)} | {count('fail')} | {count('warn')} | {count('pass')} | "
                      f"{sum(s['quarantined'] for s in scans)} ({max(s['quarantined'] for s in scans)}) | "
                      f"{sum(len(s['errors']) for s in scans)} |", flush=True)
    write_result(args, "text-samples", {"versions": versions(), "samples": SAMPLES, "rows": rows})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help=f"comma-separated corpus and/or case names (corpora: {', '.join(CORPORA)}; "
                    f"cases: {', '.join([*CASES, *ATTACK_CASES])}); the whole-scan runs follow the cases selected".replace("%", "%%"))
    ap.add_argument("--no-pipeline", action="store_true", help="skip the whole-product scans")
    ap.add_argument("--samples", action="store_true", help="seeded small samples of each corpus, the detector's rule")
    ap.add_argument("--sample-scans", action="store_true", help="with --samples: also scan each clean sample with the "
                    "whole product (dataset only, default detectors)")
    ap.add_argument("--csv", type=Path, help="also a labelled CSV of one's own, as corpus 'csv' (run alone with "
                    "--only csv)")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--target", help="with --csv: the label the planted triggers force (default: the last, sorted)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if args.csv:
        CORPORA["csv"] = lambda: load_csv(args.csv, args.text_column, args.label_column, args.target)
    only = set(filter(None, args.only.split(",")))
    unknown = only - set(CORPORA) - set(CASES) - set(ATTACK_CASES)
    if unknown:
        ap.error(f"unknown names {sorted(unknown)}")
    corpora = [c for c in CORPORA if c in only] or list(CORPORA)
    if args.samples:
        return samples(args, corpora, only)
    chosen = [c for c in [*CASES, *ATTACK_CASES] if c in only] or [*CASES, *ATTACK_CASES]

    rows, meta = [], {}
    print("\n### trigger search (worker.text_triggers.find_text_triggers)\n\n| corpus | case | n | poisoned | "
          "quarantine P/R/F1 | quarantined | clean q% | named | triggers found (->target, q = quarantined) | goal | "
          "s |\n" + "|---" * 11 + "|", flush=True)
    with threadpool_limits(limits=1, user_api="blas"):  # small problems: BLAS threads only contend on 2 shared cores
        for name in corpora:
            corpus = CORPORA[name]()
            meta[name] = {"domain": corpus.domain, "n": len(corpus.y), "classes": list(corpus.classes),
                          "per_class": dict(zip(corpus.classes, np.bincount(corpus.y).tolist(), strict=True)),
                          "target": corpus.classes[corpus.target], **corpus.source}
            for case_name in [c for c in chosen if c in CASES or corpus.rewrites]:
                case = CASES[case_name](corpus.texts, corpus.y, corpus.target, args.seed) if case_name in CASES \
                    else ATTACK_CASES[case_name](corpus, args.seed)
                row = {"corpus": name, "case": case_name, "n": len(case.y), "poisoned": len(case.poisoned),
                       "target": corpus.classes[corpus.target], **score_triggers(corpus, case)}
                if case.trigger:
                    row["inserted_carriers"] = inserted_counts(corpus, case)
                if not args.no_pipeline and case_name in PIPELINE_CASES:
                    row["scan"] = score_scan(corpus, case)
                rows.append(row)
                print(trigger_row(row), flush=True)
    details = [line for r in rows for line in trigger_details(r)]
    if details:
        print("\n### details: goals missed, triggers without a poisoned carrier (every trigger of a clean corpus)\n\n" + "\n".join(details))
    if any("scan" in r for r in rows):
        print("\n### the whole scan (worker.local.scan_local_files, dataset only, default detectors)\n\n| corpus | case | "
              "verdict | quarantined | quarantine P/R/F1 | clean q% | detector errors | non-info findings | s |\n"
              + "|---" * 9 + "|")
        for r in rows:
            if "scan" in r:
                print(scan_row(r))
    misses = [f"{r['corpus']} {r['case']}" for r in rows if goal(r) != "ok"]
    misses += [f"{r['corpus']} {r['case']} (whole scan: fail)" for r in rows
               if r["case"] == "clean" and r.get("scan", {}).get("verdict") == "fail"]
    print(f"\ngoals missed: {', '.join(misses) or 'none'}")
    write_result(args, "text-corpora", {"versions": versions(), "corpora": meta, "rows": rows, "goals_missed": misses})
    return 0


if __name__ == "__main__":
    sys.exit(main())
