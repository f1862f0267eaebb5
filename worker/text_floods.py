"""Near-duplicate floods in labelled text (issue 15; ATLAS AML.T0020, OWASP LLM04:2025).

A flood poisons by weight: the attacker writes a few texts of one class, makes many near-copies of each (a word
dropped, words swapped, punctuation changed) and labels them all with the target class. Cross-validation cannot see
it: every copy's siblings in the other folds vouch for its label, so Cleanlab's out-of-sample probabilities agree
with the flood. And several floods teach each other that their content belongs to the target.

So the judge must never see a flood. Near-duplicates are grouped with MinHash (word sets; locality-sensitive bands,
pairs confirmed by the signatures' agreement), every group of at least ``min_copies`` texts is held out *together*
and at once, and a TF-IDF logistic regression trained on everything else, temperature-scaled on its own
cross-validated probabilities, reads each group. A group whose label that judge gives a probability under one half
has a contradicted label: the label its content supports is another. Large groups that read as their label (a canned
spam template, "ok lor" a hundred times) are natural duplication, not poisoning, and are left alone.

A judge misreads some natural texts too, and more where labels hang on phrasing (question types) than on content.
Whether a contradicted group is poisoning is a conformal test: its label probability is ranked among the judge's
cross-validated probabilities of the corpus's own labels (how often a text of this corpus is misread that badly), and
Benjamini-Hochberg over every large group keeps the false discovery rate at FLOOD_FDR. The rest are for review.
Near-copies are grouped by the words that make a text itself, so the corpus's common words are left out of the
MinHash sets: unrelated questions share "what is the first"; copies of a message share its rarer words.

Pure functions over strings and labels: no detector, Celery or database import.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import minimize_scalar
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from worker.text_triggers import TOKEN, benjamini_hochberg

MINHASHES = 64
BAND_ROWS = 4  # 16 bands of 4: pairs at Jaccard 0.5 meet in some band with probability 0.65, at 0.7 with 0.99
NEAR_DUPLICATE_JACCARD = 0.5  # the same threshold as the trigger search's near-duplicates
FLOOD_MIN_COPIES = 5  # a group this large is held out of the judge's training
CONTRADICTED_BELOW = 0.5  # the judge's calibrated probability of the group's label under which the label is contradicted
FLOOD_FDR = 0.05  # false discovery rate over the large groups, for a contradicted group to count as poisoning
JUDGE_TRAIN_MAX = 200_000  # texts the judge trains on (a seeded sample beyond)
CALIBRATION_MAX = 20_000  # texts its temperature is fitted on, by 5-fold cross-validation
SIGNATURE_CHUNK = 2_000
COMMON_WORD_SHARE = 0.03  # words in more texts than this share (and than COMMON_WORD_MIN) are not a text's identity
COMMON_WORD_MIN = 10
MIN_IDENTITY_WORDS = 2  # texts with fewer uncommon words than this are too short to call copies of each other


@dataclass(frozen=True)
class Flood:
    """A group of near-duplicate texts whose shared label their content contradicts."""

    members: np.ndarray  # indices of the group's texts labelled ``label``, sorted
    label: int  # the label the flood carries
    reads_as: int  # the class the judge reads its content as
    size: int  # texts in the group, any label
    label_counts: tuple[int, ...]  # the group's texts per label
    confidence: float  # 1 - the judge's calibrated probability of ``label`` (median over the members)
    p_value: float  # conformal, Benjamini-Hochberg adjusted over every large group
    significant: bool  # p_value <= FLOOD_FDR: poisoning, not one of the judge's natural misreadings
    example: int  # index of the member the judge reads most plainly as ``reads_as``


def find_floods(texts: list[str], y: np.ndarray, n_classes: int, *, min_copies: int = FLOOD_MIN_COPIES,
                seed: int = 0) -> list[Flood]:
    """Large near-duplicate groups whose label their content contradicts: the significant ones (floods) first, then
    those the judge disputes about as often as it misreads natural texts (for review); largest first within each."""
    y = np.asarray(y, dtype=np.int64)
    groups = near_duplicate_groups(texts, seed=seed)
    large = [g for g in groups if len(g) >= min_copies]
    if not large:
        return []
    held_out = np.zeros(len(texts), dtype=bool)
    held_out[np.concatenate(large)] = True
    if len(np.unique(y[~held_out])) < 2:
        return []  # nothing left to judge by: the data is all duplicates of one class
    with threadpool_limits(limits=1, user_api="blas"):
        probs, reference = _judge(texts, y, n_classes, np.flatnonzero(~held_out), np.flatnonzero(held_out), seed)
    label_probs = [_label_prob(g, y, probs, n_classes) for g in large]
    # conformal p-value: how many of the judge's own cross-validated texts give their label as little probability
    p_values = np.array([(np.searchsorted(reference, p, side="right") + 1) / (len(reference) + 1) for _, p in label_probs])
    adjusted = benjamini_hochberg(p_values)
    floods = [_flood(g, label, p, q, y, probs, n_classes) for g, (label, p), q in zip(large, label_probs, adjusted,
                                                                                      strict=True)
              if p < CONTRADICTED_BELOW]
    return sorted(floods, key=lambda f: (not f.significant, -len(f.members)))


def near_duplicate_groups(texts: list[str], *, seed: int = 0) -> list[np.ndarray]:
    """Groups (sorted index arrays) of at least two texts whose word sets overlap by about NEAR_DUPLICATE_JACCARD or
    more, joined transitively. Texts without words are in no group."""
    signatures, has_words = minhash_signatures(texts, seed=seed)
    rows = np.flatnonzero(has_words)
    if len(rows) < 2:
        return []
    sig = signatures[rows]
    heads, tails = [], []
    for start in range(0, MINHASHES, BAND_ROWS):
        band = np.ascontiguousarray(sig[:, start:start + BAND_ROWS]).view(np.dtype((np.void, 4 * BAND_ROWS))).ravel()
        _, bucket, counts = np.unique(band, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts[bucket] >= 2)
        if not len(shared):
            continue
        order = shared[np.argsort(bucket[shared], kind="stable")]
        first = order[np.r_[True, bucket[order][1:] != bucket[order][:-1]]]
        head = first[np.searchsorted(bucket[first], bucket[order])]
        agree = (sig[order] == sig[head]).mean(axis=1) >= NEAR_DUPLICATE_JACCARD  # star check against the bucket's first
        keep = agree & (order != head)
        heads.append(head[keep])
        tails.append(order[keep])
    if not heads:
        return []
    head, tail = np.concatenate(heads), np.concatenate(tails)
    graph = sparse.coo_matrix((np.ones(len(head), np.int8), (head, tail)), shape=(len(rows), len(rows)))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    order = np.argsort(component, kind="stable")
    bounds = np.cumsum(sizes)[:-1]
    return [rows[members] for members in np.split(order, bounds) if len(members) >= 2]


def minhash_signatures(texts: list[str], *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, MINHASHES) uint32 MinHash signatures of the texts' identity words, and which texts have enough of them.

    Identity words are the lowercase words that are not common in the corpus: "what is the first" is shared by
    unrelated questions, while copies of one message share its rarer words. Multiply-shift hashing of CRC-32 word
    hashes: deterministic across processes (Python's ``hash`` is salted)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=MINHASHES, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=MINHASHES, dtype=np.uint64)
    out = np.full((len(texts), MINHASHES), np.iinfo(np.uint32).max, dtype=np.uint32)
    has_words = np.zeros(len(texts), dtype=bool)
    common = _common_words(texts)
    for start in range(0, len(texts), SIGNATURE_CHUNK):
        words = [_word_hashes(t) - common for t in texts[start:start + SIGNATURE_CHUNK]]
        sizes = np.array([len(w) if len(w) >= MIN_IDENTITY_WORDS else 0 for w in words])
        present = np.flatnonzero(sizes)
        words = [words[i] for i in present]
        has_words[start + present] = True
        if not len(present):
            continue
        flat = np.fromiter((h for w in words for h in w), dtype=np.uint64, count=int(sizes.sum()))
        hashed = ((a[:, None] * flat[None, :] + b[:, None]) >> np.uint64(32)).astype(np.uint32)
        offsets = np.concatenate(([0], np.cumsum(sizes[present])[:-1]))
        out[start + present] = np.minimum.reduceat(hashed, offsets, axis=1).T
    return out, has_words


def _word_hashes(text: str) -> set[int]:
    return {zlib.crc32(w.encode()) for w in TOKEN.findall(text.lower())}


def _common_words(texts: list[str]) -> set[int]:
    frequency: Counter[int] = Counter()
    for t in texts:
        frequency.update(_word_hashes(t))
    bar = max(COMMON_WORD_SHARE * len(texts), COMMON_WORD_MIN)
    return {w for w, c in frequency.items() if c > bar}


def _judge(texts: list[str], y: np.ndarray, n_classes: int, train: np.ndarray, judged: np.ndarray,
           seed: int) -> np.ndarray:
    """(n, n_classes) calibrated probabilities for the ``judged`` rows (zeros elsewhere), from a model trained only
    on ``train``."""
    rng = np.random.default_rng(seed)
    if len(train) > JUDGE_TRAIN_MAX:
        train = np.sort(rng.choice(train, JUDGE_TRAIN_MAX, replace=False))
    vectorizer = TfidfVectorizer(token_pattern=TOKEN.pattern, ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                 dtype=np.float32)
    features = vectorizer.fit_transform([texts[i] for i in train])
    temperature, reference = _temperature(features, y[train], n_classes, rng, seed)
    model = LogisticRegression(C=10.0, max_iter=2000).fit(features, y[train])
    out = np.zeros((len(texts), n_classes))
    out[judged] = _scaled(model, vectorizer.transform([texts[i] for i in judged]), n_classes, temperature)
    return out, reference


def _temperature(features, y: np.ndarray, n_classes: int, rng, seed: int) -> tuple[float, np.ndarray]:
    """The temperature that makes the judge's cross-validated probabilities fit the labels (negative log-likelihood).
    A weakly regularised model is overconfident; scaling keeps "probability under one half" meaning what it says."""
    rows = np.arange(len(y)) if len(y) <= CALIBRATION_MAX else np.sort(rng.choice(len(y), CALIBRATION_MAX, replace=False))
    counts = np.bincount(y[rows], minlength=n_classes)
    folds = min(5, int(counts[counts > 0].min()))
    if folds < 2:
        return 1.0, np.empty(0)
    logits = np.zeros((len(rows), n_classes))
    for fit, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows, y[rows]):
        model = LogisticRegression(C=10.0, max_iter=2000).fit(features[rows[fit]], y[rows[fit]])
        logits[test] = _logits(model, features[rows[test]], n_classes)
    labels = y[rows]

    def nll(t: float) -> float:
        z = logits / t
        z -= z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(labels)), labels] - np.log(np.exp(z).sum(axis=1))).mean())

    t = float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)
    z = logits / t
    z -= z.max(axis=1, keepdims=True)
    own = np.exp(z[np.arange(len(labels)), labels]) / np.exp(z).sum(axis=1)
    return t, np.sort(own)


def _logits(model: LogisticRegression, features, n_classes: int) -> np.ndarray:
    """Per-class log-odds up to a constant; classes the model never saw get -inf."""
    out = np.full((features.shape[0], n_classes), -np.inf)
    scores = model.decision_function(features)
    if len(model.classes_) == 2:
        out[:, model.classes_[0]], out[:, model.classes_[1]] = -scores / 2, scores / 2
    else:
        out[:, model.classes_] = scores
    return out


def _scaled(model, features, n_classes: int, temperature: float) -> np.ndarray:
    z = _logits(model, features, n_classes) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _label_prob(group: np.ndarray, y: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple[int, float]:
    """The group's label (its most common) and the judge's probability of it (median over the texts carrying it:
    near-copies, one piece of evidence)."""
    label = int(np.bincount(y[group], minlength=n_classes).argmax())
    return label, float(np.median(probs[group[y[group] == label], label]))


def _flood(group: np.ndarray, label: int, label_prob: float, p_value: float, y: np.ndarray, probs: np.ndarray,
           n_classes: int) -> Flood:
    members = np.sort(group[y[group] == label])
    reads = probs[members].mean(axis=0)
    reads[label] = -1.0
    reads_as = int(reads.argmax())
    return Flood(members=members, label=label, reads_as=reads_as, size=len(group),
                 label_counts=tuple(int(c) for c in np.bincount(y[group], minlength=n_classes)),
                 confidence=1.0 - label_prob, p_value=float(p_value), significant=bool(p_value <= FLOOD_FDR),
                 example=int(members[np.argmax(probs[members, reads_as])]))
