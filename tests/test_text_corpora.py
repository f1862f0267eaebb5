"""The text trigger search on public corpora of other domains than SMS spam (bench/corpora/, sources and licences in
its README): a clean corpus passes and keeps its quarantine empty, whether its labels follow content (review
sentiment), names (news sections) or question words (TREC), and a BadNL trigger planted in news is still named."""

import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from text_bench import BADNL_TOKENS, insert_tokens  # noqa: E402
from text_corpus_bench import load_ag_news, load_sst2, load_trec, load_uci_sentiment  # noqa: E402


def _scan(tmp_path: Path, texts, y, classes, detector: str = "text_poisoning") -> dict:
    from worker.local import scan_local_files
    from worker.options import ScanOptions

    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "corpus.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"]] + [[t, classes[int(c)]] for t, c in zip(texts, y, strict=True)])
    return scan_local_files({"dataset": path}, ScanOptions(detectors=[detector]), output_dir=tmp_path / "out")


def _subsample(corpus, n: int, seed: int = 0):
    keep = np.sort(np.random.default_rng(seed).choice(len(corpus.y), n, replace=False))
    return [corpus.texts[i] for i in keep], corpus.y[keep]


def test_review_sentiment_with_its_negations_is_clean(tmp_path):
    """'not' decides the label of a minority of its sentences ("not good"): content, not a trigger."""
    corpus = load_uci_sentiment()
    report = _scan(tmp_path, corpus.texts, corpus.y, corpus.classes)
    assert report["verdict"] == "pass", report["verdict_reason"]
    assert report["quarantine"] == []


def test_tokens_inserted_together_into_short_sentences_are_named_together(tmp_path):
    """In an 11-word review a BadNL token's partners hold the label when it alone is removed: they are removed with it."""
    corpus = load_uci_sentiment()
    case = insert_tokens(corpus.texts, corpus.y, 0.03, BADNL_TOKENS, corpus.target, seed=3)
    report = _scan(tmp_path, case.texts, case.y, corpus.classes)
    (finding,) = [f for d in report["detectors"] for f in d["findings"]]
    assert finding["title"].startswith("text trigger") and finding["evidence"]["target"] == "positive"
    assert set(finding["evidence"]["trigger"]) == set(BADNL_TOKENS)
    quarantined, truth = {q["index"] for q in report["quarantine"]}, set(case.poisoned.tolist())
    assert len(quarantined & truth) >= 0.9 * len(truth) and len(quarantined - truth) <= 0.1 * len(truth)


def test_a_sparse_token_set_is_named_whole_from_the_partners_of_its_strongest_token(tmp_path):
    """1% of 3,000 reviews: each of five tokens has a dozen carriers and the weaker ones miss a correction over every
    n-gram; tested again as partners of one that passed (inserted apart into the same texts), they are named with it
    (before: one token of five). A token sharing fewer than five texts with any other has no partner and stays alone."""
    corpus = load_uci_sentiment()
    case = insert_tokens(corpus.texts, corpus.y, 0.01, BADNL_TOKENS, corpus.target, seed=5)
    report = _scan(tmp_path, case.texts, case.y, corpus.classes)
    (finding,) = [f for d in report["detectors"] for f in d["findings"]]
    named = set(finding["evidence"]["trigger"])
    assert named <= set(BADNL_TOKENS) and len(named) >= 4, named
    quarantined, truth = {q["index"] for q in report["quarantine"]}, set(case.poisoned.tolist())
    assert len(quarantined & truth) >= 0.9 * len(truth) and len(quarantined - truth) <= 0.1 * len(truth)


def test_questions_labelled_by_their_question_words_are_not_a_backdoor(tmp_path):
    """Many phrases that each decide a label are the labelling scheme: one medium finding, its texts for review. TREC's
    paraphrased questions (five ways to ask one thing) are near-duplicate groups whose label hangs on phrasing: at
    most a low finding, for review, never the quarantine."""
    corpus = load_trec()
    texts, y = _subsample(corpus, 3000)
    report = _scan(tmp_path, texts, y, corpus.classes)
    findings = [f for d in report["detectors"] for f in d["findings"]]
    groups = [f for f in findings if "near-duplicate groups" in f["title"]]
    assert all(f["severity"] == "low" for f in groups)
    (finding,) = [f for f in findings if f not in groups]
    assert finding["severity"] == "medium" and "labels defined by phrases" in finding["title"]
    assert report["verdict"] == "warn" and report["quarantine"] == [] and report["review"]


def test_a_badnl_trigger_in_news_is_named(tmp_path):
    corpus = load_ag_news()
    texts, y = _subsample(corpus, 3000, seed=1)
    case = insert_tokens(texts, y, 0.03, BADNL_TOKENS, corpus.target, seed=2)
    report = _scan(tmp_path, case.texts, case.y, corpus.classes)
    findings = [f for d in report["detectors"] for f in d["findings"] if f["title"].startswith("text trigger")]
    assert len(findings) == 1 and findings[0]["evidence"]["target"] == "Sci/Tech"
    assert set(" ".join(findings[0]["evidence"]["trigger"]).replace("+", " ").split()) <= set(BADNL_TOKENS)
    quarantined = {q["index"] for q in report["quarantine"]}
    truth = set(case.poisoned.tolist())
    assert len(quarantined & truth) >= 0.9 * len(truth) and len(quarantined - truth) <= 0.1 * len(truth)
    assert report["verdict"] == "fail"


def _phrase_labelled_trec_sample(tmp_path, seed: int) -> tuple[dict, dict]:
    """Scan 1,000 TREC questions: the report, and its one finding of labels defined by phrases (no trigger finding)."""
    corpus = load_trec()
    texts, y = _subsample(corpus, 1000, seed=seed)
    report = _scan(tmp_path, texts, y, corpus.classes)
    findings = [f for d in report["detectors"] for f in d["findings"] if f["severity"] != "info"]
    assert not [f for f in findings if f["title"].startswith("text trigger")]
    (finding,) = [f for f in findings if "labels defined by phrases" in f["title"]]
    assert report["verdict"] == "warn" and report["quarantine"] == [] and report["review"]
    return report, finding


def test_a_search_that_alternates_between_question_phrases_and_one_word_keeps_the_phrases(tmp_path):
    """1,500 TREC questions (seed 7): the search accepts 24 question phrases, then, with their carriers set aside, only
    "company", then the 24 again. Stopping at whichever set came last decided the verdict: "company" alone was
    reported as a planted trigger and the clean sample failed. "company" is accepted again by the proxy its own
    acceptance trains and the phrases are not, but they are more separate phrases than a backdoor plants: the cycle
    is the labelling scheme's, its union is kept, and the phrases show that the labels are defined by phrases: a
    warning, nothing quarantined."""
    corpus = load_trec()
    texts, y = _subsample(corpus, 1500, seed=7)
    report = _scan(tmp_path, texts, y, corpus.classes)
    (finding,) = [f for d in report["detectors"] for f in d["findings"] if f["severity"] != "info"]
    assert "labels defined by phrases" in finding["title"] and len(finding["evidence"]["triggers"]) > 1
    assert report["verdict"] == "warn" and report["quarantine"] == []


def test_a_natural_word_that_its_own_acceptance_rejects_is_not_a_trigger():
    """1,000 AG News items (seed 5): 7 of the 8 "World" items with "still" (oil exports, cocoa prices, an
    inauguration's price) read as another class against 14% of the class, p 0.003; with them out of the proxy's
    training, the class's other economy items read as another class too and "still" is no longer unusual (p 0.11).
    Accepted and rejected by turns, it was kept, and the clean sample failed on it."""
    from worker.text_triggers import find_text_triggers

    corpus = load_ag_news()
    texts, y = _subsample(corpus, 1000, seed=5)
    assert find_text_triggers(texts, y, len(corpus.classes)) == []


def test_phrases_written_with_their_questions_go_to_review_not_the_quarantine(tmp_path):
    """1,000 TREC questions: "what is the origin of" and "how long" each decide a label (two triggers, fewer than a
    labelling scheme's many), but removing either breaks its questions (the insertion test rejects): review, and the
    verdict is a warning, not a failed gate."""
    _, finding = _phrase_labelled_trec_sample(tmp_path, seed=3)
    assert "written with their texts" in finding["explanation"]
    assert all(t["written_p"] <= 0.01 for t in finding["evidence"]["triggers"])


def test_a_phrase_that_heals_like_an_insertion_is_reviewed_where_others_were_written(tmp_path):
    """1,000 TREC questions: "what country" was written with its questions (the insertion test rejects), "company"
    (-> HUM) leaves gaps that heal like an insertion ("what company makes" -> "what makes"). Once the corpus shows
    that phrases define its labels, the data cannot tell "company" from a planted trigger: both are for review, and
    the gate warns instead of failing a clean corpus (it failed on "company" before)."""
    report, finding = _phrase_labelled_trec_sample(tmp_path, seed=1)
    written_p = {" + ".join(t["trigger"]): t["written_p"] for t in finding["evidence"]["triggers"]}
    assert written_p["company"] > 0.01 and min(written_p.values()) <= 0.01, written_p
    assert any("company" in r["reason"] for entry in report["review"] for r in entry["reasons"])


def test_a_small_question_sample_keeps_its_natural_label_noise_and_flips_stay_poisoning(tmp_path):
    """1,000 TREC questions: a logistic proxy at C=1 overfits and contradicts 20 correct labels under 0.01, 2.6 times
    what its calibrated probabilities allow, and the random-flip test called that poisoning (19 clean questions
    quarantined). The proxy's strength chosen by held-out Brier score removes it; 3% of the labels flipped at random are
    still poisoning, most of them quarantined."""
    corpus = load_trec()
    texts, y = _subsample(corpus, 1000, seed=4)
    report = _scan(tmp_path / "clean", texts, y, corpus.classes, "data_poisoning")
    (labels,) = [f for d in report["detectors"] for f in d["findings"] if "proxy" in f["evidence"]]
    assert labels["evidence"]["proxy"]["C"] < 1.0
    assert not labels["title"].startswith("label poisoning") and report["verdict"] != "fail", report["verdict_reason"]
    assert report["quarantine"] == []

    rng = np.random.default_rng(99)
    flipped = np.sort(rng.choice(len(y), 30, replace=False))
    y = y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, len(corpus.classes), len(flipped))) % len(corpus.classes)
    report = _scan(tmp_path / "flipped", texts, y, corpus.classes, "data_poisoning")
    assert report["verdict"] == "fail"
    assert any(f["title"].startswith("label poisoning") for d in report["detectors"] for f in d["findings"])
    # measured: 9 of the 30 flips quarantined and 8 clean questions (15 and 11 at C=1): a better-fitted proxy is
    # surer of fewer flips; at 1,000 questions recall was never the strength of the data-only test
    quarantined, truth = {q["index"] for q in report["quarantine"]}, set(flipped.tolist())
    assert len(quarantined & truth) >= 0.25 * len(truth) and len(quarantined - truth) <= len(quarantined & truth)


def test_clean_movie_review_sentences_keep_their_natural_label_noise(tmp_path):
    """SST-2 as Hidden Killer ships it (6,920 sentences): a bag of words misreads many of them ("not a bad film"), and
    the MLP proxy on their compressed TF-IDF features was sure enough of those mistakes that the flip floor called
    "about 416 labels (6.0%) flipped, in every class" and failed a clean corpus. Texts get the logistic proxy, its C
    chosen on held-out data: natural noise, for review, nothing quarantined."""
    corpus = load_sst2()
    report = _scan(tmp_path, corpus.texts, corpus.y, corpus.classes, "data_poisoning")
    (labels,) = [f for d in report["detectors"] for f in d["findings"] if "proxy" in f["evidence"]]
    assert labels["evidence"]["proxy"]["model"] == "logistic regression"
    assert not labels["title"].startswith("label poisoning") and report["verdict"] != "fail", report["verdict_reason"]
    assert report["quarantine"] == []


def test_a_badnl_set_in_a_corpus_labelled_by_phrases_is_still_a_planted_trigger(tmp_path):
    """1,500 TREC questions with BadNL tokens in 1% of them: the corpus shows that phrases define its labels, and
    its question phrases go to review. The tokens were inserted apart into the same questions (a question's words sit
    together, one phrase per question), which no labelling scheme does: they stay a planted trigger, and the scan fails
    with them named and their carriers quarantined. Before, they joined the phrases on the review list and the gate
    warned."""
    corpus = load_trec()
    texts, y = _subsample(corpus, 1500, seed=6)
    case = insert_tokens(texts, y, 0.01, BADNL_TOKENS, corpus.target, 7)
    report = _scan(tmp_path, case.texts, case.y, corpus.classes)
    findings = [f for d in report["detectors"] for f in d["findings"] if f["severity"] != "info"]
    (planted,) = [f for f in findings if f["title"].startswith("text trigger")]
    assert planted["severity"] == "high" and set(planted["evidence"]["trigger"]) <= set(BADNL_TOKENS)
    assert any("labels defined by phrases" in f["title"] for f in findings)
    quarantined, truth = {q["index"] for q in report["quarantine"]}, set(case.poisoned.tolist())
    assert report["verdict"] == "fail" and quarantined <= truth and len(quarantined) >= 0.5 * len(truth)
