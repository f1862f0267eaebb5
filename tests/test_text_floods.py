"""Near-duplicate floods (worker.text_floods): near-copies are grouped by MinHash, a group labelled against its content
is found by a judge that never trained on any large group, a natural template that reads as its label is left alone,
and through the whole scan the copies are quarantined and the scan fails."""

import numpy as np

from tests.test_text_scans import scan, sms, write_csv
from worker.text_floods import find_floods, minhash_signatures, near_duplicate_groups

FILLERS = ("pls", "now", "ok", "so", "just")


def near_copy(text: str, rng) -> str:
    """One or two small edits: a word dropped, a filler word inserted, or two neighbours swapped."""
    words = text.split()
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.integers(0, len(words) - 1))
        edit = int(rng.integers(0, 3))
        if edit == 0 and len(words) > 5:
            del words[k]
        elif edit == 1:
            words.insert(k, str(rng.choice(FILLERS)))
        else:
            words[k], words[k + 1] = words[k + 1], words[k]
    return " ".join(words)


def flood(texts: list[str], y: np.ndarray, sources: int, copies: int, source: int, label: int, seed: int = 0,
          word: str = ""):
    """``copies`` near-copies of each of ``sources`` long texts of class ``source`` (containing ``word``), labelled
    ``label``, appended."""
    rng = np.random.default_rng(seed)
    pool = [i for i in np.flatnonzero(y == source) if len(texts[i].split()) >= 12 and word in texts[i].lower()]
    added = [near_copy(texts[i], rng) for i in rng.choice(pool, sources, replace=False) for _ in range(copies)]
    poisoned = set(range(len(texts), len(texts) + len(added)))
    return texts + added, np.concatenate([y, np.full(len(added), label)]), poisoned


def test_near_copies_are_grouped_and_texts_sharing_only_common_words_are_not():
    rng = np.random.default_rng(1)
    base = "Congratulations you have won a free cruise to the Bahamas call 09061 now to claim your prize"
    copies = [near_copy(base, rng) for _ in range(8)]
    questions = [f"What is the first {w} of the year ?" for w in ("month", "holiday", "snowfall", "game", "sale")]
    filler = [f"message number {i} about topic {i * 7}" for i in range(200)]  # makes "what is the first" common
    filler += [f"what is the plan for {i}" for i in range(40)] + [f"the first of {i}" for i in range(40)]
    texts = copies + questions + filler
    groups = near_duplicate_groups(texts)
    together = [g for g in groups if 0 in g]
    assert len(together) == 1 and set(range(8)) <= set(together[0].tolist())
    assert not [g for g in groups if set(g.tolist()) & set(range(8, 13))]


def test_signatures_are_deterministic_and_texts_without_words_have_none():
    texts = ["free entry in a weekly competition", "", "!!!", "win a prize now today"]
    first, words = minhash_signatures(texts)
    second, _ = minhash_signatures(list(texts))
    assert (first == second).all() and words.tolist() == [True, False, False, True]


def test_a_flood_of_spam_copies_labelled_ham_is_found_and_a_clean_sample_has_none():
    texts, y = sms(1500)
    assert not [f for f in find_floods(texts, y, 2) if f.significant]
    flooded, labels, poisoned = flood(texts, y, sources=4, copies=20, source=1, label=0)
    floods = [f for f in find_floods(flooded, labels, 2) if f.significant]
    found = {int(i) for f in floods for i in f.members}
    # one of the four sources ("You will recieve your tone within the next 24hrs...") reads as ham to any content
    # model: labelling its copies ham contradicts nothing. The other three are found, and nothing else.
    assert len(found & poisoned) >= 0.75 * len(poisoned) and found <= poisoned, (len(found), len(found & poisoned))
    assert all(f.label == 0 and f.reads_as == 1 and f.confidence >= 0.5 for f in floods)


def test_copies_that_read_as_their_label_are_duplication_not_a_flood():
    texts, y = sms(1500)
    # prize spam copied and labelled spam (a prize message reads as spam to any content model)
    copied, labels, _ = flood(texts, y, sources=4, copies=20, source=1, label=1, word="prize")
    assert not find_floods(copied, labels, 2)


def test_a_flood_fails_the_scan_and_its_copies_are_quarantined(tmp_path):
    texts, y = sms(1500)
    flooded, labels, poisoned = flood(texts, y, sources=3, copies=25, source=1, label=0, seed=2, word="call")
    report = scan(write_csv(tmp_path / "sms.csv", flooded, labels), tmp_path / "out")
    assert report["verdict"] == "fail", report["verdict_reason"]
    (finding,) = [f for d in report["detectors"] for f in d["findings"] if f["title"].startswith("near-duplicate flood")]
    assert finding["severity"] == "high" and {g["label"] for g in finding["evidence"]["groups"]} == {"ham"}
    quarantined = {e["index"] for e in report["quarantine"] if "text_floods" in e["methods"]}
    assert len(quarantined & poisoned) >= 0.9 * len(poisoned) and quarantined <= poisoned
