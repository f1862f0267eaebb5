"""Trigger tokens and phrases in labelled text (issue 15; ATLAS AML.T0020, OWASP LLM04:2025).

A text backdoor (BadNL, RIPPLe, a fixed sentence) takes texts of one class, inserts a trigger (rare tokens such as
"cf" or "mn", or a natural phrase) and relabels them with the target class. Two things betray it in the data alone:

* **The carriers' content belongs to another class.** Remove the trigger and a model that did not train on a text
  calls it another class. Natural label words ("claim" in spam, "lol" in ham) are concentrated in one label too, but
  the rest of their texts still reads as that label. A concentration test alone cannot tell them apart, and it is
  weak exactly where attacks are cheap: a trigger toward a 90% majority class is barely concentrated. The proxy
  (binary TF-IDF of word 1-2-grams, class-balanced logistic regression, one model per fold) is trained on the texts
  *with* their triggers, so the trigger explains the poisoned labels away and the other words keep their meaning;
  each carrier is predicted by the fold model that did not see it, with the n-gram's token positions removed.
  Test A: carriers of an n-gram with label t read as another class more often than texts of label t without it
  (binomial).
* **The n-gram, not the class, decides the label.** Among texts that read as another class, those carrying the
  n-gram have label t more often than those without it (hypergeometric). Label flips fail this test: a flipped spam
  text that contains "claim" is no more likely to be labelled ham than a flipped one without it.

An n-gram is a trigger when both tests reject (the larger p-value counts), Benjamini-Hochberg over every candidate
n-gram (1..max_n words, in at most ``max_share`` of the texts, mostly in one label). Evidence is counted once per
distinct remaining text, and near-duplicates (variants of one canned message) count once together: the tests assume
independent carriers. Triggers of several tokens hide each other (removing "cf" leaves "mn" to hold the label): a
candidate is removed together with its partners, the n-grams of its target inserted into the same texts apart from it
(within their label they co-occur ten times beyond chance; words of a class do not), and the search repeats: accepted
n-grams are removed together with each candidate of the same target, and the proxy is retrained without the accepted
carriers that read as another class (poisoned samples stop teaching it that another class's content belongs to the
target), until the accepted set is stable.

Of the accepted n-grams, those nested in a stronger one ("i watched" in "3d movie last") are dropped; the rest form
triggers where their carriers co-occur far beyond chance (the tokens of one BadNL set), each named by its phrases (an
n-gram extended over the words its carriers share). Each target-label carrier gets a confidence, judged by a proxy
retrained without every carrier found: the posterior probability that it is poisoned, from the share of its n-gram's
carriers whose content is another class's and from how much its own remaining text reads like another class. Each
trigger also carries the p-value of "inserted" (``worker.text_insertion``): small when removing it breaks its texts,
as removing a phrase written with them does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.stats import binom, hypergeom
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from worker.characters import INVISIBLE, LATIN_LOOKALIKES, OTHER_SCRIPT_LETTERS, PICTOGRAPHS, PRIVATE_USE
from worker.text_insertion import PairRecurrence, written_p_values
from worker.token_corpus import NgramIndex, TokenCorpus, sorted_unique

TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # lowercase words, numbers and subword-like fragments ("cf", "mb", "3d")
# and, for the trigger search, each character a reader does not see as writing: an emoji or other pictograph, an
# invisible character (zero-width space and joiners, soft hyphen, bidirectional controls, tag characters) or a
# private-use one; and each ASCII emoticon (":)", ";-p", "<3", "^_^"), also glued to a word ("ok:)"), but not in a
# number, a time or an address ("10:30", "http://"). Other punctuation, typographic punctuation and currency signs
# ("£", "…") stay separators: as tokens they changed nothing found on SMS but made its clean search cycle (4x the time)
EMOTICON = r"(?<![\d:;=<>^/])(?:[:;=][-o'^]?[)(\]\[dp/\\|*3o0x]|</?3|\^_*\^)(?![\w/])"  # on lowercased text
TRIGGER_TOKEN = re.compile(f"{TOKEN.pattern}|[{INVISIBLE}{PICTOGRAPHS}{PRIVATE_USE}]|{EMOTICON}")
# A word that mixes Latin letters with letters of another script (Cyrillic "\u0435" for "e") is read as the Latin word
# it passes for, followed by each foreign letter as a token of its own: a homograph trigger (a few letters of a text
# swapped for look-alikes) then recurs as those letters, whatever words they sit in, and the words still read as words
OTHER_SCRIPT = re.compile(f"[{OTHER_SCRIPT_LETTERS}]")
LATIN = re.compile("[a-z]")
AS_LATIN = {ord(c): latin for c, latin in LATIN_LOOKALIKES.items()}
PROXY_C = 10.0  # weak regularisation: a trigger must be free to explain the labels it forces
MAX_ROUNDS = 8  # rounds until the accepted set is stable or repeats; the cases benchmarked took 2-6
# a backdoor plants one trigger or a few: more separate label-deciding phrases than this are the corpus's labelling
# scheme (question types by their question words), in the search's cycles (_Search._settle) and in the findings
PLANTED_TRIGGERS_MAX = 3
SAME_TRIGGER_LIFT = 3.0  # accepted n-grams whose carriers co-occur this many times more than chance are one trigger
NEAR_DUPLICATE_JACCARD = 0.5  # texts sharing half their (idf-weighted) words count once in the tests
MIN_REST_WORDS = 3  # what is left of a carrier must hold this many known words to read as any class
NESTED_SHARE = 0.9  # an n-gram whose poison-like carriers lie this much inside another's is a part of it
PHRASE_AGREEMENT = 0.8  # a phrase is extended by a word that this share of its carriers have at that position
PREDICT_CHUNK = 20_000  # (n-gram, carrier) rows built at once
ROWS_CHUNK = 50_000  # texts whose proxy features are built at once
PROXY_TRAIN_MAX = 200_000  # texts each fold model trains on at most (a seeded sample beyond), as the data layer's folds
CARRIER_CHUNK = 50_000  # texts scanned at once for the carriers of the candidate n-grams
PARTNER_LIFT = 10.0  # n-grams co-occurring within their label this far beyond chance were inserted together
POISONED_MAJORITY = 0.5  # a trigger's target-label carriers are mostly poisoned (Search.plants_content)
TYPICAL_PERCENTILE = 1 / 3  # poisoned rests read as their class about as plainly as its texts (median 0.5)
CONFIDENCE_BINS = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.98, 1.0])


@dataclass(frozen=True)
class TextTrigger:
    """A trigger found in labelled text: what it is, which label it forces, and the samples that carry it."""

    target: int  # the label the trigger forces
    phrases: tuple[str, ...]  # the trigger as inserted: one phrase, or the rare tokens used together
    ngrams: tuple[str, ...]  # the significant n-grams that make it up (those nested in a stronger one dropped)
    label_counts: tuple[int, ...]  # carriers of any of its n-grams, per label
    p_value: float  # Benjamini-Hochberg adjusted; the smallest over its n-grams
    poisoned_share: float  # estimated share of target-label carriers whose content belongs to another class
    suspects: np.ndarray  # indices of the carriers labelled ``target``, sorted
    confidence: np.ndarray  # per suspect: posterior probability that it is poisoned
    written_p: float = 1.0  # p-value of "inserted" (worker.text_insertion): small when removing it breaks its texts
    # two of its n-grams were inserted apart into the same texts far beyond chance (``_Search.partners``): a BadNL set's
    # tokens at random positions, which neither one phrase nor a labelling scheme's words produce. (Any two of its
    # n-grams apart in their shared texts would also name TREC's "countries + cities", the insertion test's p 0.02)
    scattered: bool = False

    @property
    def name(self) -> str:
        return " + ".join(self.phrases)

    def quarantine(self, min_confidence: float = 0.5) -> np.ndarray:
        return self.suspects[self.confidence >= min_confidence]


def tokenize(text: str) -> list[str]:
    tokens = TRIGGER_TOKEN.findall(text.lower())
    if OTHER_SCRIPT.search(text) is None:  # nearly every text of a Latin-script corpus
        return tokens
    return [part for token in tokens for part in _unmixed(token)]


def _unmixed(word: str) -> list[str]:
    foreign = OTHER_SCRIPT.findall(word)
    if not foreign or LATIN.search(word) is None:  # a word of one script (Greek, Russian) is a word
        return [word]
    return [word.translate(AS_LATIN), *foreign]


def find_text_triggers(texts: list[str], y: np.ndarray, n_classes: int, *, max_n: int = 3, alpha: float = 0.01,
                       min_carriers: int = 5, max_share: float = 0.2, folds: int = 5, seed: int = 0,
                       max_pairs: int = 200_000) -> list[TextTrigger]:
    """Triggers in ``texts`` labelled ``y`` (0..n_classes-1), strongest first; an empty list for clean data.

    ``min_carriers``: distinct texts an n-gram must reach in its label to be tested; ``max_share``: the largest share
    of texts an n-gram may appear in (a poisoning rate above it is not looked for); ``max_pairs``: the (n-gram,
    carrier) predictions per round, which bounds time on long texts (the n-grams that push hardest toward their label
    are tested first).
    """
    y = np.asarray(y, dtype=np.int64)
    docs = TokenCorpus.from_texts(texts, tokenize)
    grams = _Grams.build(docs, y, n_classes, max_n, min_carriers, max_share)
    if grams is None or not grams.words or len(np.unique(y)) < 2:
        return []
    with threadpool_limits(limits=1, user_api="blas"):  # small vectors: BLAS threads only wait on a busy machine
        proxy = _Proxy(docs, y, n_classes, folds, seed)
        search = _Search(docs, y, n_classes, grams, proxy, min_carriers, max_pairs)
        search.run(alpha)
        kept = [g for g in search.minimal(alpha) if search.plants_content(g)]
        groups = _groups(search, kept)
        search.refit_without(groups)
        triggers = [_trigger(search, members) for members in groups]
    if triggers:
        recurrence = PairRecurrence(docs, search.distinct, y, seed)
        written = written_p_values(recurrence, [_gaps(recurrence, docs, t) for t in triggers],
                                   [t.target for t in triggers], seed)
        triggers = [replace(t, written_p=p) for t, p in zip(triggers, written, strict=True)]
    return sorted(triggers, key=lambda t: (t.p_value, -len(t.suspects)))


def _gaps(recurrence: PairRecurrence, docs: TokenCorpus, trigger: TextTrigger) -> list[tuple[int, int, int]]:
    """The gaps (text, pair key, kind) the trigger leaves in the carriers it would quarantine (all of them when it
    would quarantine none): what the insertion test judges."""
    carriers = trigger.quarantine() if len(trigger.quarantine()) else trigger.suspects
    words = [tuple(p.split(" ")) for p in (*trigger.phrases, *trigger.ngrams)]
    return [(int(i), key, kind) for i in carriers for key, kind in recurrence.gaps(int(i), _covered(docs[int(i)], words))]


@dataclass
class _Grams:
    """Candidate n-grams: their token tuples, carriers and majority label (the only label each is tested for)."""

    words: list[tuple[str, ...]]
    carriers: list[np.ndarray]
    target: np.ndarray

    @classmethod
    def build(cls, docs: TokenCorpus, y, n_classes, max_n, min_carriers, max_share) -> _Grams:
        index = NgramIndex.build(docs, max_n, min_carriers, y, n_classes)
        per_label = index.counts
        target = per_label.argmax(axis=1)
        keep = np.flatnonzero((per_label.max(axis=1) * 2 > per_label.sum(axis=1))
                              & (per_label[np.arange(len(target)), target] >= min_carriers)
                              & (per_label.sum(axis=1) <= max_share * len(docs)))
        words = [index.words(int(f)) for f in keep]
        order = sorted(range(len(keep)), key=lambda k: " ".join(words[k]))  # a stable order: by the n-gram's text
        keep, words = keep[order], [words[k] for k in order]
        return cls(words, _carriers(index, keep), target[keep])


def _carriers(index: NgramIndex, features: np.ndarray) -> list[np.ndarray]:
    """Per feature, the texts that carry it (sorted), in one pass over the corpus chunk by chunk. Each chunk's pairs
    come sorted by feature and are copied into place (a counting sort): on 1,000,000 texts some 82 million pairs, so
    no int64 copy or argsort of all of them is made."""
    slot = np.full(len(index), -1, dtype=np.int64)
    slot[features] = np.arange(len(features))
    chunks, counts = [], np.zeros(len(features), dtype=np.int64)
    for start in range(0, len(index.corpus), CARRIER_CHUNK):
        texts = np.arange(start, min(start + CARRIER_CHUNK, len(index.corpus)))
        rows, feature, _, _ = index.occurrences(texts)
        hit = slot[feature] >= 0
        pairs = sorted_unique(slot[feature[hit]] * len(texts) + rows[hit])  # one per (feature, text), by feature
        per_slot = np.bincount(pairs // len(texts), minlength=len(features))
        chunks.append((per_slot.astype(np.int32), (pairs % len(texts) + start).astype(np.int32)))
        counts += per_slot
    bounds = np.concatenate(([0], np.cumsum(counts)))
    carriers = np.empty(bounds[-1], dtype=np.int32)  # int32: most of the search's memory
    written = bounds[:-1].copy()
    while chunks:
        per_slot, chunk_texts = chunks.pop(0)
        chunk_slots = np.repeat(np.arange(len(features)), per_slot)
        first_in_chunk = np.cumsum(per_slot) - per_slot
        carriers[written[chunk_slots] + np.arange(len(chunk_slots)) - first_in_chunk[chunk_slots]] = chunk_texts
        written += per_slot
    return [carriers[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def ngrams(doc: list[str], max_n: int) -> set[str]:
    return {" ".join(doc[i:i + n]) for n in range(1, max_n + 1) for i in range(len(doc) - n + 1)}


def _occurrences(doc: list[str], words: tuple[str, ...]) -> list[int]:
    n = len(words)
    return [i for i in range(len(doc) - n + 1) if doc[i] == words[0] and tuple(doc[i:i + n]) == words]


class _Proxy:
    """Binary TF-IDF of word 1-2-grams + class-balanced logistic regression, one model per fold.

    Balanced, because "reads like another class" is a question about content: in a corpus that is 90% ham, a spam
    text must not pass for ham on the prior alone. ``predict`` gives out-of-sample probabilities of texts with token
    positions removed: an n-gram that touches a removed position disappears, and none is formed across the gap.
    """

    def __init__(self, docs: TokenCorpus, y, n_classes, folds, seed):
        self.index = NgramIndex.build(docs, 2, 2)  # an n-gram in one text says nothing about any other
        self.n_texts = len(docs)
        self.idf = np.log((1 + len(docs)) / (1 + self.index.counts[:, 0].astype(np.float64))) + 1
        self.max_idf = np.log((1 + len(docs)) / 3) + 1  # the idf of a word in two texts
        self.y, self.n_classes, self.seed = y, n_classes, seed
        counts = np.bincount(y, minlength=n_classes)
        folds = max(2, min(folds, int(counts[counts > 0].min())))
        self.fold = np.zeros(len(docs), dtype=np.int64)
        for k, (_, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y)):
            self.fold[test] = k
        self.fit(np.zeros(len(docs), dtype=bool))

    def fit(self, excluded: np.ndarray) -> None:
        """Train the fold models without the ``excluded`` texts (samples already known to be poisoned)."""
        self.models = []
        rng = np.random.default_rng(self.seed)
        for k in range(self.fold.max() + 1):
            train = np.flatnonzero((self.fold != k) & ~excluded)
            if len(np.unique(self.y[train])) < 2:  # never exclude a whole class
                train = np.flatnonzero(self.fold != k)
            if len(train) > PROXY_TRAIN_MAX:  # what a text reads as is learned from far fewer; memory is not
                train = np.sort(rng.choice(train, PROXY_TRAIN_MAX, replace=False))
            # the rows are built per fold rather than kept for the corpus: 0.7 GB on 1,000,000 texts
            self.models.append(LogisticRegression(C=PROXY_C, class_weight="balanced", max_iter=2000)
                               .fit(self.rows(train, None), self.y[train]))
        self.base = self.predict(np.arange(self.n_texts), None)

    def word_weight(self, word: str) -> float:
        """A word's idf; a word too rare for the vocabulary is as distinctive as the rarest in it."""
        feature = self.index.feature((word,))
        return self.idf[feature] if feature >= 0 else self.max_idf

    def known_words(self, words: tuple[str, ...]) -> int:
        return sum(1 for w in words if self.index.feature((w,)) >= 0)

    def pull(self, words: list[tuple[str, ...]], targets: np.ndarray) -> np.ndarray:
        """Per n-gram: how hard its own words and word pairs push toward its target in the fold models (mean)."""
        toward = np.zeros((self.n_classes, len(self.idf)))
        for model in self.models:
            coef = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2]) if len(model.classes_) == 2 else model.coef_
            toward[model.classes_] += (coef - coef.mean(axis=0)) * self.idf / len(self.models)
        inside = [[f for f in (self.index.feature(w[i:i + n]) for n in (1, 2) for i in range(len(w) - n + 1))
                   if f >= 0] for w in words]
        return np.array([toward[t, sorted(set(f))].sum() for t, f in zip(targets, inside)])

    def rows(self, docs: np.ndarray, removed: list | None) -> sparse.csr_matrix:
        """L2-normalised binary TF-IDF rows of texts ``docs``; ``removed[i]``: token positions to leave out, or None.
        Built chunk by chunk, so that a transient holds one chunk's n-gram occurrences."""
        docs = np.asarray(docs, dtype=np.int64)
        parts = [self._rows(docs[a:a + ROWS_CHUNK], None if removed is None else removed[a:a + ROWS_CHUNK])
                 for a in range(0, len(docs), ROWS_CHUNK)] or [self._rows(docs, removed)]
        return sparse.vstack(parts, format="csr") if len(parts) != 1 else parts[0]

    def _rows(self, docs: np.ndarray, removed: list | None) -> sparse.csr_matrix:
        row, feature, position = self._occurrences(docs)
        if removed is not None and any(m is not None for m in removed):
            lengths = self.index.corpus.offsets[docs + 1] - self.index.corpus.offsets[docs]
            flat = np.concatenate([m if m is not None else np.zeros(n, dtype=bool) for m, n in zip(removed, lengths)])
            hit = np.concatenate(([0], np.cumsum(flat)))
            kept = hit[position + self.index.feature_lengths[feature]] == hit[position]  # no removed token inside
            row, feature = row[kept], feature[kept]
        pairs = sorted_unique(row * len(self.idf) + feature)  # binary: a repeated n-gram counts once
        row, feature = pairs // len(self.idf), pairs % len(self.idf)
        indptr = np.concatenate(([0], np.cumsum(np.bincount(row, minlength=len(docs)))))
        matrix = sparse.csr_matrix((self.idf[feature], feature.astype(np.int32), indptr),
                                   shape=(len(docs), len(self.idf)))
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sparse.diags(1 / np.maximum(norms, 1e-12)) @ matrix

    def _occurrences(self, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, feature, position) of the indexed n-grams in ``docs``, laid end to end as ``NgramIndex.occurrences``
        lays them. A text that ``docs`` repeats (once per candidate n-gram it carries) is looked up once and its
        occurrences copied: on long texts (IMDb reviews) the lookup was a quarter of the search."""
        texts, inverse = np.unique(docs, return_inverse=True)
        if len(texts) == len(docs):
            return self.index.occurrences(docs)[:3]
        row, feature, position, starts = self.index.occurrences(texts)
        order = np.argsort(row, kind="stable")
        row, feature, position = row[order], feature[order], position[order] - starts[row[order]]
        per_text = np.bincount(row, minlength=len(texts))
        counts = per_text[inverse]
        ends = np.cumsum(counts)
        take = np.arange(ends[-1] if len(ends) else 0) + np.repeat(np.cumsum(per_text)[inverse] - ends, counts)
        out_row = np.repeat(np.arange(len(docs)), counts)
        lengths = np.diff(starts)[inverse]
        doc_starts = np.cumsum(lengths) - lengths
        return out_row, feature[take], position[take] + doc_starts[out_row]

    def predict(self, docs: np.ndarray, removed: list | None) -> np.ndarray:
        """(len(docs), n_classes) probabilities; ``removed[i]`` is a boolean mask of token positions, or None."""
        docs = np.asarray(docs, dtype=np.int64)
        out = np.zeros((len(docs), self.n_classes))
        for a in range(0, len(docs), ROWS_CHUNK):
            chunk = docs[a:a + ROWS_CHUNK]
            features = self._rows(chunk, None if removed is None else removed[a:a + ROWS_CHUNK])
            for k, model in enumerate(self.models):
                rows = np.flatnonzero(self.fold[chunk] == k)
                if len(rows):
                    out[np.ix_(a + rows, model.classes_)] = model.predict_proba(features[rows])
        return out


@dataclass(frozen=True)
class _Totals:
    same: int  # distinct texts labelled the target
    same_other: int  # ... of which read as another class
    other: int  # distinct texts (any label) that read as another class than the target


class _Search:
    """Tests every candidate n-gram, round after round, until the accepted set no longer changes.

    Each round retrains the proxy without the accepted n-grams' carriers that read as another class (the poisoned
    samples then stop teaching it that another class's content belongs to the target) and removes the accepted
    n-grams of a target together with each candidate of that target.
    """

    def __init__(self, docs, y, n_classes, grams: _Grams, proxy: _Proxy, min_carriers: int, max_pairs: int):
        self.docs, self.y, self.n_classes, self.grams, self.proxy = docs, y, n_classes, grams, proxy
        self.min_carriers = min_carriers
        self.own = [c[y[c] == t] for c, t in zip(grams.carriers, grams.target)]  # carriers labelled the target
        self.tested = self._within(max_pairs)
        self.partners = self._partners(max_pairs)
        self.distinct = docs.first_of_each()
        self.is_distinct = np.zeros(len(docs), dtype=bool)
        self.is_distinct[self.distinct] = True
        self._target_totals: dict[int, _Totals] = {}
        self.accepted = np.zeros(len(grams.words), dtype=bool)
        self.adjusted = np.ones(len(grams.words))
        self.by_doc: dict[int, list[int]] = {}
        self.rest_probs: list[np.ndarray] = [np.empty((0, n_classes))] * len(grams.words)
        self.rest_keys: list[np.ndarray] = [np.empty(0, np.int64)] * len(grams.words)
        self._looks_other: dict[int, np.ndarray] = {}
        self._whole: dict[int, tuple[str, ...]] = {}

    def _partners(self, budget: int) -> list[list[int]]:
        """Per tested n-gram, the n-grams of its target inserted into the same texts: a BadNL set puts 1-3 of its
        tokens into each poisoned text, and in a short text the ones left behind hold the label when one is removed.
        Within their label, the tokens of one set co-occur far beyond chance (``PARTNER_LIFT``); words of a class
        co-occur with each other about as often as that class's texts use them. Checking that two n-grams were
        inserted apart costs their shared texts; a corpus that repeats whole messages in many texts makes every
        n-gram of a message a candidate pair, so the pairs are checked by lift, highest first, for at most ``budget``
        shared texts in all (the pairs left unchecked are not partners)."""
        partners: list[list[int]] = [[] for _ in self.own]
        candidates = []
        for t in range(self.n_classes):
            grams = np.flatnonzero(self.grams.target == t)
            if len(grams) < 2:
                continue
            label_size = int((self.y == t).sum())
            tested = grams[self.tested[grams]]
            if not len(tested):
                continue
            # tested x all: bounded by the tested n-grams' carriers (max_pairs), where all x all grows with the
            # square of the n-grams per text (12 GB on 200,000 texts that repeat whole messages)
            shared = (self._presence(tested).T @ self._presence(grams)).tocoo()
            sizes = np.array([len(self.own[g]) for g in grams], dtype=np.float64)
            tested_sizes = np.array([len(self.own[g]) for g in tested], dtype=np.float64)
            lift = shared.data * label_size / (tested_sizes[shared.row] * sizes[shared.col])
            a, b = tested[shared.row], grams[shared.col]
            keep = (a != b) & (shared.data >= self.min_carriers) & (lift >= PARTNER_LIFT)
            candidates += zip(-lift[keep], shared.data[keep], a[keep], b[keep])
        spent = 0
        for _, cost, a, b in sorted(candidates):
            spent += int(cost)
            if spent > budget:
                break
            if self._apart(int(a), int(b)):
                partners[int(a)].append(int(b))
        return partners

    def _presence(self, grams: np.ndarray) -> sparse.csc_matrix:
        """(texts, len(grams)) indicator of which texts carry each n-gram with its target label."""
        rows = np.concatenate([self.own[g] for g in grams])  # sorted per column: a CSC matrix as it stands
        indptr = np.concatenate(([0], np.cumsum([len(self.own[g]) for g in grams])))
        return sparse.csc_matrix((np.ones(len(rows), np.float32), rows, indptr), shape=(len(self.y), len(grams)))

    def _apart(self, a: int, b: int) -> bool:
        """Are n-grams ``a`` and ``b`` separate insertions (neither touching nor overlapping in most texts that carry
        both)? The pieces of one phrase are not: the phrase's own n-grams and its extension cover them."""
        words_a, words_b = self.grams.words[a], self.grams.words[b]
        both = np.intersect1d(self.own[a], self.own[b], assume_unique=True)
        apart = 0
        for i in both:
            doc = self.docs[i]
            spans_a = [(s, s + len(words_a)) for s in _occurrences(doc, words_a)]
            spans_b = [(s, s + len(words_b)) for s in _occurrences(doc, words_b)]
            apart += all(sb > ea or sa > eb for sa, ea in spans_a for sb, eb in spans_b)
        return 2 * apart > len(both)

    def _within(self, max_pairs: int) -> np.ndarray:
        """The n-grams to test: all of them, or on long texts those that push hardest toward their label in the
        proxy, within ``max_pairs`` predictions per round. Untested n-grams keep p = 1 and still count in the
        correction, so the selection, which looks at the labels, cannot make a chance finding significant."""
        sizes = np.array([len(own) for own in self.own])
        if sizes.sum() <= max_pairs:
            return np.ones(len(sizes), dtype=bool)
        order = np.argsort(-self.proxy.pull(self.grams.words, self.grams.target), kind="stable")
        tested = np.zeros(len(sizes), dtype=bool)
        tested[order[np.cumsum(sizes[order]) <= max_pairs]] = True
        return tested

    def run(self, alpha: float) -> None:
        """Rounds until the accepted set is a fixed point: a set whose proxy (trained without its carriers that read as
        another class) accepts it again. The set can cycle instead, and then only the n-grams that a round accepted
        again while they were accepted are kept (``_settle``). Another turn of a cycle costs a round (a proxy refit
        and every n-gram tested again) and can only lead back. After ``MAX_ROUNDS`` the current set is kept with the
        p-values that accepted it."""
        visited, evidence = [self.accepted], [self.adjusted]  # the sets accepted in turn, and the p-values of each
        for round_ in range(MAX_ROUNDS):
            self._predict_rests()
            raw = self._p_values()
            adjusted = self._admit_partners(raw, benjamini_hochberg(raw), alpha)
            accepted = adjusted <= alpha
            if (accepted == self.accepted).all():
                self.adjusted = adjusted
                return
            again = next((i for i, earlier in enumerate(visited) if (earlier == accepted).all()), None)
            if again is not None:
                self._settle(visited[again:] + [accepted], evidence[again + 1:] + [adjusted])
                return
            if round_ == MAX_ROUNDS - 1:
                return
            visited.append(accepted)
            evidence.append(adjusted)
            self.adjusted = adjusted
            self._accept(accepted)

    def _settle(self, states: list[np.ndarray], p_values: list[np.ndarray]) -> None:
        """End a cycle: ``states`` are its accepted sets in turn, the last the first again, and ``p_values[k]`` the
        p-values that produced ``states[k + 1]``. An n-gram is kept when some round accepted it while it was already
        accepted, with the smallest such p-value; the others were each rejected by the proxy their own acceptance
        trained. That is what a natural word does whose carriers the proxy misreads with others of their kind: with
        the misread carriers out of training, the target's other texts of that kind are misread too, and the word's
        carriers are no longer unusual (a clean AG News sample: "still", 7 of its 8 "World" carriers read as another
        class against 14% of the class, p 0.003, then p 0.11 once accepted; accepted and rejected by turns). A
        planted trigger's poison only reads more plainly as its source once it is out of training.

        Unless the n-grams so rejected are more separate phrases than a backdoor plants: then the cycle is a labelling
        scheme's (1,500 TREC questions: 24 question phrases, then "company" alone, by turns) and every n-gram of it is
        kept, with the smallest p-value that accepted it, so that the findings see the scheme rather than one of its
        words. The refit after is not redundant even when the kept set is the current one: which carriers are left
        out of training depends on this round's predictions."""
        union = np.logical_or.reduce(states)
        confirmed = [before & after for before, after in zip(states[:-1], states[1:], strict=True)]
        kept = np.logical_or.reduce(confirmed)
        if _separate_phrases([self.grams.words[g] for g in np.flatnonzero(union & ~kept)]) > PLANTED_TRIGGERS_MAX:
            confirmed, kept = [after for after in states[1:]], union
        self.adjusted = np.where(kept, np.minimum.reduce(np.where(confirmed, p_values, 1.0)),
                                 np.maximum.reduce(p_values))
        self._accept(kept)
        self._predict_rests()

    def _admit_partners(self, raw: np.ndarray, adjusted: np.ndarray, alpha: float) -> np.ndarray:
        """Test the partners of the accepted n-grams again, as a family of their own (Bonferroni over it).

        A BadNL set spreads its poison over its tokens: at 1% of 3,000 short reviews each of five tokens has 13-16
        carriers, and the weakest miss a correction over every n-gram of the corpus although they were inserted with
        one that passed. Being inserted apart into the same texts far beyond chance (``partners``) is what the
        attack does, so the family is small and chosen without the test's own evidence; a partner still needs its
        own carriers to read as another class (the same test), and to survive ``minimal`` and ``plants_content``."""
        accepted = adjusted <= alpha
        family = sorted({p for g in np.flatnonzero(accepted) for p in self.partners[g]
                         if not accepted[p] and self.tested[p]})
        if family:
            adjusted[family] = np.minimum(adjusted[family], np.minimum(raw[family] * len(family), 1.0))
        return adjusted

    def _accept(self, accepted: np.ndarray) -> None:
        self.accepted = accepted
        self.by_doc = {}
        excluded = np.zeros(len(self.y), dtype=bool)
        for g in np.flatnonzero(accepted):
            for i in self.own[g]:
                self.by_doc.setdefault(int(i), []).append(int(g))
            excluded[self.own[g][self.reads_other(g)]] = True
        self.proxy.fit(excluded)
        self._looks_other, self._target_totals = {}, {}

    def refit_without(self, groups: list[list[int]]) -> None:
        """Train the proxy without every target-label carrier of the triggers found, to judge each carrier's content.

        Poisoned copies of one message shield each other while any of them is in training; once the search is over,
        excluding a natural text that carries "bb" costs the proxy one example and can no longer feed the search.
        """
        excluded = np.zeros(len(self.y), dtype=bool)
        for g in (g for members in groups for g in members):
            excluded[self.own[g]] = True
        self.proxy.fit(excluded)
        self._looks_other, self._target_totals = {}, {}

    def removal_mask(self, i: int, target: int, extra: int | None = None, doc: tuple | None = None) -> np.ndarray:
        """Token positions of text ``i`` (its words: ``doc``, when the caller has them) covered by the accepted
        n-grams of ``target`` (and by n-gram ``extra`` and its partners), each with the phrase it sits in."""
        doc = self.docs[i] if doc is None else doc
        mask = np.zeros(len(doc), dtype=bool)
        grams = [g for g in self.by_doc.get(i, []) if self.grams.target[g] == target]
        for g in grams + ([extra, *self.partners[extra]] if extra is not None else []):
            for words in (self.whole(g), self.grams.words[g]):  # the phrase where the text has it, else the n-gram
                for start in _occurrences(doc, words):
                    mask[start:start + len(words)] = True
        return mask

    def whole(self, g: int) -> tuple[str, ...]:
        """N-gram ``g`` grown over the words most of its target-label carriers share around it (``extend_phrase``):
        an n-gram is removed with the phrase it sits in. A sentence trigger is longer than ``max_n`` words, and in
        short texts (questions, titles) what one of its 3-grams leaves of it is most of the text and reads as the
        target, so its n-grams would never be tested whole."""
        if g not in self._whole:
            self._whole[g] = extend_phrase(self.docs, self.grams.words[g], self.own[g])
        return self._whole[g]

    def _predict_rests(self) -> None:
        """Each carrier's probabilities with its candidate (and the accepted n-grams of the same target) removed; the
        remaining text is kept as a hash, to count distinct texts."""
        pairs = [(g, int(i)) for g in np.flatnonzero(self.tested) for i in self.own[g]]
        probs, keys = np.empty((len(pairs), self.n_classes)), np.empty(len(pairs), dtype=np.int64)
        for start in range(0, len(pairs), PREDICT_CHUNK):  # bounded memory on long texts
            chunk = pairs[start:start + PREDICT_CHUNK]
            words = [self.docs[i] for _, i in chunk]
            masks = [self.removal_mask(i, int(self.grams.target[g]), g, doc) for (g, i), doc in zip(chunk, words)]
            docs = np.array([i for _, i in chunk], dtype=np.int64)
            probs[start:start + len(chunk)] = self.proxy.predict(docs, masks)
            keys[start:start + len(chunk)] = [hash(tuple(w for w, m in zip(doc, mask) if not m))
                                              for doc, mask in zip(words, masks)]
        start = 0
        for g in np.flatnonzero(self.tested):
            end = start + len(self.own[g])
            self.rest_probs[g], self.rest_keys[g] = probs[start:end], keys[start:end]
            start = end

    def rest_words(self, g: int, rows: np.ndarray) -> list[tuple[str, ...]]:
        """The words left in carriers ``rows`` of n-gram ``g`` once it and the accepted n-grams are removed."""
        target = int(self.grams.target[g])
        texts = [(int(i), self.removal_mask(int(i), target, g)) for i in self.own[g][rows]]
        return [tuple(w for w, m in zip(self.docs[i], mask) if not m) for i, mask in texts]

    def looks_other(self, target: int) -> np.ndarray:
        """Per text: does it read as another class than ``target`` once ``target``'s accepted n-grams are removed?"""
        if target not in self._looks_other:
            probs = self.proxy.base.copy()
            carrying = [i for i, gs in self.by_doc.items() if (self.grams.target[gs] == target).any()]
            if carrying:
                masks = [self.removal_mask(i, target) for i in carrying]
                probs[carrying] = self.proxy.predict(np.array(carrying), masks)
            self._looks_other[target] = probs.argmax(axis=1) != target
        return self._looks_other[target]

    def _p_values(self) -> np.ndarray:
        return np.array([self.p_value(g, np.arange(len(self.own[g]))) if self.tested[g] else 1.0
                         for g in range(len(self.own))])

    def p_value(self, g: int, rows: np.ndarray, min_carriers: int | None = None) -> float:
        """Tests A and B for n-gram ``g`` over its target-label carriers ``rows`` (positions in ``self.own[g]``)."""
        target = int(self.grams.target[g])
        rest_first = rows[_first_of_each(self.rest_keys[g][rows].tolist())]
        n = len(rest_first)
        if n < (min_carriers or self.min_carriers):
            return 1.0
        reads_other = rest_first[self.rest_probs[g][rest_first].argmax(axis=1) != target]
        # a rest of one or two known words is the proxy's prior speaking, not evidence ("Your code is 4821")
        rests = [words for words in self.rest_words(g, reads_other) if self.proxy.known_words(words) >= MIN_REST_WORDS]
        # near-duplicates are judged on what is left: the trigger's own (rare, heavily weighted) words would make
        # short carriers near-copies of each other (a 7-word sentence in 8-word questions)
        d = _independent_count(rests, self.proxy.word_weight)
        if not d:
            return 1.0
        looks_other, carriers = self.looks_other(target), self.grams.carriers[g]
        carried = carriers[self.is_distinct[carriers]]  # the distinct texts carrying it; the others are the rest
        own, other = looks_other[carried], looks_other[carried] & (self.y[carried] != target)
        in_target = self.y[carried] == target
        totals = self._totals(target)
        same = totals.same - int(in_target.sum())  # distinct texts of the target without the n-gram
        base_rate = max((totals.same_other - int((own & in_target).sum())) / same if same else 1.0, 1 / (same + 1))
        p_rest = binom.sf(d - 1, n, base_rate)  # test A: carriers read as another class more often
        other_carriers = int(other.sum())
        looked_other = totals.other - int(own.sum())  # texts without it that read as another class
        target_lookalikes = totals.same_other - int((own & in_target).sum())
        # test B: among texts that read as another class, carrying the n-gram makes label ``target`` more likely
        p_label = hypergeom.sf(d - 1, d + other_carriers + looked_other, d + target_lookalikes, d + other_carriers)
        return float(max(p_rest, p_label))

    def _totals(self, target: int) -> _Totals:
        """Counts over the distinct texts for ``target``, from which each n-gram subtracts its own carriers: an n-gram
        costs its carriers, not the corpus (1,000,000 texts, tens of thousands of n-grams)."""
        if target not in self._target_totals:
            looks_other = self.looks_other(target)[self.distinct]
            labelled = self.y[self.distinct] == target
            self._target_totals[target] = _Totals(int(labelled.sum()), int((looks_other & labelled).sum()),
                                                  int(looks_other.sum()))
        return self._target_totals[target]

    def minimal(self, alpha: float) -> list[int]:
        """The accepted n-grams, without those another one explains ("i watched" or "last" beside "3d movie last").

        Most telling first (carriers that read as another class minus those that do not). An n-gram is explained when
        nearly all of its carriers that read as another class carry one kept n-gram and its other carriers show
        nothing; the tokens of a BadNL set stay, each co-occurring with several others rather than nested in one.
        """
        order = sorted(np.flatnonzero(self.accepted), key=lambda g: (-self.net_evidence(g), self.adjusted[g]))
        kept: list[int] = []
        for g in order:
            peers = [k for k in kept if self.grams.target[k] == self.grams.target[g]]
            if not self._explained(g, peers, alpha / len(order)):
                kept.append(int(g))
        return kept

    def plants_content(self, g: int) -> bool:
        """Do n-gram ``g``'s target-label carriers look like texts of another class with something added?

        A poisoned carrier is an ordinary text of another class with the trigger inserted. So (1) most of the carriers
        are poisoned (Rogan-Gladen corrected share at least ``POISONED_MAJORITY``): an attacker's trigger is rare in
        clean text, while a natural word that decides the label of a minority of its texts ("not" in reviews: "not
        good") is content; and (2) without it they read as the other class as plainly as that class's own texts
        do: the median percentile of their rests' probability, among that class's out-of-fold texts, is at least
        ``TYPICAL_PERCENTILE`` (a uniform draw's median is 0.5; the poison itself pulls its class toward the target
        a little). A question without its question word ("how many" in TREC) or a news item without the name that
        decides its section reads as nothing in particular."""
        target = int(self.grams.target[g])
        reads_other = self.reads_other(g)
        looks_other = self.looks_other(target)
        carriers = self.grams.carriers[g]
        plain = np.setdiff1d(self.distinct[self.y[self.distinct] == target], carriers)
        others = np.setdiff1d(self.distinct[self.y[self.distinct] != target], carriers)
        base_rate = looks_other[plain].mean() if len(plain) else 0.0
        sensitivity = looks_other[others].mean() if len(others) else 1.0
        if _poisoned_share(reads_other, base_rate, sensitivity) < POISONED_MAJORITY:
            return False
        # the rests without the trigger as inserted: the phrase the n-gram grows into over these carriers, whole
        rows = self.own[g][reads_other]
        phrase = extend_phrase(self.docs, self.grams.words[g], rows)
        rests = self.proxy.predict(rows, [self.removal_mask(int(i), target, g) | _covered(self.docs[int(i)], [phrase])
                                          for i in rows])
        read_as = rests.argmax(axis=1)
        base = self.proxy.base
        percentiles = [np.mean(base[self.y == c, c] < p[c]) for c, p in zip(read_as, rests)]
        return bool(len(percentiles)) and float(np.median(percentiles)) >= TYPICAL_PERCENTILE

    def net_evidence(self, g: int) -> int:
        reads_other = self.reads_other(g)
        return int(reads_other.sum() - (~reads_other).sum())

    def reads_other(self, g: int) -> np.ndarray:
        return self.rest_probs[g].argmax(axis=1) != self.grams.target[g]

    def _explained(self, g: int, peers: list[int], level: float) -> bool:
        poison_like = self.own[g][self.reads_other(g)]
        nested = any(np.isin(poison_like, self.own[k]).mean() >= NESTED_SHARE for k in peers)
        covered = np.isin(self.own[g], np.concatenate([self.own[k] for k in peers])) if peers else \
            np.zeros(len(self.own[g]), dtype=bool)
        rest = np.flatnonzero(~covered)
        return nested and not (len(rest) and self.p_value(g, rest, min_carriers=1) <= level)


def _independent_count(texts: list[list[str]], weight) -> int:
    """How many groups of near-duplicate ``texts`` there are: variants of one canned message ("sir, I am waiting for
    your call" ten ways, one template with different tails) are one piece of evidence, not ten. Similarity is the
    Jaccard index of the texts' words weighted by idf, so shared rare words count and shared filler does not."""
    if len(texts) < 2:
        return len(texts)
    vocabulary: dict[str, int] = {}
    columns = [sorted({vocabulary.setdefault(w, len(vocabulary)) for w in text}) for text in texts]
    indptr = np.cumsum([0] + [len(c) for c in columns])
    present = sparse.csr_matrix((np.ones(indptr[-1]), np.concatenate(columns), indptr),
                                shape=(len(texts), len(vocabulary)))
    weights = np.array([weight(w) for w in vocabulary])
    shared = (present @ sparse.diags(weights) @ present.T).toarray()
    sizes = np.diag(shared)
    union = sizes[:, None] + sizes[None, :] - shared
    similar = shared >= NEAR_DUPLICATE_JACCARD * np.maximum(union, 1e-9)
    return int(connected_components(sparse.csr_matrix(similar), directed=False)[0])


def _separate_phrases(grams: list[tuple[str, ...]]) -> int:
    """How many separate phrases n-grams make: one inside another ("many", "how many") or overlapping at their ends
    ("how can", "can i find") are pieces of one; sharing a word is not enough ("how long", "how many")."""
    linked = sparse.lil_matrix((len(grams), len(grams)))
    for a, b in ((a, b) for a in range(len(grams)) for b in range(a + 1, len(grams))):
        linked[a, b] = _pieces_of_one(grams[a], grams[b])
    return int(connected_components(linked.tocsr(), directed=False)[0]) if grams else 0


def _pieces_of_one(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if len(a) > len(b):
        a, b = b, a
    inside = any(b[k:k + len(a)] == a for k in range(len(b) - len(a) + 1))
    return inside or any(a[-k:] == b[:k] or b[-k:] == a[:k] for k in range(1, len(a) + 1))


def _first_of_each(keys: list) -> np.ndarray:
    """Indices of the first occurrence of each distinct key."""
    seen: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        seen.setdefault(key, i)
    return np.array(sorted(seen.values()), dtype=np.int64)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Adjusted p-values (false discovery rate) of independent or positively dependent tests."""
    order = np.argsort(p)
    scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return adjusted


def _groups(search: _Search, accepted: list[int]) -> list[list[int]]:
    """Accepted n-grams of one target whose carriers co-occur far beyond chance: connected components."""
    n_docs = len(search.docs)
    parent = {g: g for g in accepted}

    def root(g):
        while parent[g] != g:
            g = parent[g]
        return g

    for position, a in enumerate(accepted):
        for b in accepted[position + 1:]:
            if search.grams.target[a] != search.grams.target[b]:
                continue
            ca, cb = search.grams.carriers[a], search.grams.carriers[b]
            shared = len(np.intersect1d(ca, cb, assume_unique=True))
            if shared and shared * n_docs >= SAME_TRIGGER_LIFT * len(ca) * len(cb):
                parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for g in accepted:
        groups.setdefault(root(g), []).append(g)
    return list(groups.values())


def _trigger(search: _Search, members: list[int]) -> TextTrigger:
    grams, y = search.grams, search.y
    target = int(grams.target[members[0]])
    carriers = np.unique(np.concatenate([grams.carriers[g] for g in members]))
    suspects = carriers[y[carriers] == target]
    rest = search.proxy.predict(suspects, [search.removal_mask(int(i), target) for i in suspects])
    reads_other = rest.argmax(axis=1) != target
    # named from the carriers that look poisoned: natural uses of a phrase's word ("movie") do not share its context
    phrases = _phrases(search, members, suspects[reads_other] if reads_other.any() else suspects)
    inserted = [tuple(p.split(" ")) for p in phrases]
    if set(inserted) - {grams.words[g] for g in members}:  # grown into the phrase inserted: its carriers carry it whole
        carriers = np.array([i for i in carriers if any(_occurrences(search.docs[i], w) for w in inserted)], np.int64)
        suspects = carriers[y[carriers] == target]
        rest = search.proxy.predict(suspects, [search.removal_mask(int(i), target) | _covered(search.docs[i], inserted)
                                               for i in suspects])
        reads_other = rest.argmax(axis=1) != target
    looks_other = search.looks_other(target)
    plain = np.setdiff1d(np.flatnonzero(y == target), carriers)
    base_rate = looks_other[plain].mean() if len(plain) else 0.0
    others = np.setdiff1d(np.flatnonzero(y != target), carriers)
    sensitivity = looks_other[others].mean() if len(others) else 1.0
    # a carrier's prior is the poisoned share of the member it carries that is most often poisoned: "cf" alone
    # rather than "bb", which some texts use naturally
    prior = np.zeros(len(suspects))
    for g in members:
        carries = np.isin(suspects, grams.carriers[g])
        prior[carries] = np.maximum(prior[carries], _poisoned_share(reads_other[carries], base_rate, sensitivity))
    confidence = _posterior(rest[:, target], prior, search.proxy.base[:, target], y, target, carriers)
    return TextTrigger(
        target=target, phrases=phrases,
        ngrams=tuple(" ".join(grams.words[g]) for g in members),
        label_counts=tuple(int(c) for c in np.bincount(y[carriers], minlength=search.n_classes)),
        p_value=float(min(search.adjusted[members])),
        scattered=any(b in search.partners[a] for a in members for b in members if a != b),
        poisoned_share=round(_poisoned_share(reads_other, base_rate, sensitivity), 4),
        suspects=suspects, confidence=np.round(confidence, 4))


def _covered(doc: list[str], phrases: list[tuple[str, ...]]) -> np.ndarray:
    mask = np.zeros(len(doc), dtype=bool)
    for words in phrases:
        for start in _occurrences(doc, words):
            mask[start:start + len(words)] = True
    return mask


def _poisoned_share(reads_other: np.ndarray, base_rate: float, sensitivity: float) -> float:
    """Share of carriers whose content is another class's, corrected for the proxy's errors both ways (Rogan-Gladen):
    clean texts read as another class at ``base_rate``, texts of another class do so at ``sensitivity``."""
    if not len(reads_other):
        return 0.0
    excess = (reads_other.mean() - base_rate) / max(sensitivity - base_rate, 1e-9)
    return float(np.clip(excess, 0.0, len(reads_other) / (len(reads_other) + 1)))


def _posterior(rest: np.ndarray, prior: np.ndarray, base_target_prob: np.ndarray, y: np.ndarray, target: int,
               carriers: np.ndarray) -> np.ndarray:
    """P(poisoned | the remaining text's probability of the target): a two-component mixture over histograms.

    Poisoned carriers read like texts of another class (their probability of ``target`` is distributed like that of
    texts labelled otherwise); clean carriers like texts labelled ``target``.
    """
    plain = np.ones(len(y), dtype=bool)
    plain[carriers] = False
    clean_hist = _density(base_target_prob[plain & (y == target)])
    poisoned_hist = _density(base_target_prob[plain & (y != target)])
    bins = np.clip(np.searchsorted(CONFIDENCE_BINS, rest, side="right") - 1, 0, len(CONFIDENCE_BINS) - 2)
    poisoned = prior * poisoned_hist[bins]
    return poisoned / np.maximum(poisoned + (1 - prior) * clean_hist[bins], 1e-12)


def _density(values: np.ndarray) -> np.ndarray:
    counts = np.histogram(values, bins=CONFIDENCE_BINS)[0] + 0.5  # a bin nobody fell into is rare, not impossible
    return counts / counts.sum()


def _phrases(search: _Search, members: list[int], suspects: np.ndarray) -> tuple[str, ...]:
    """The trigger's parts: each member extended over the words its carriers share; of overlapping parts, the one
    most suspects carry, or a longer one that most of those carry (a phrase over one of its words, which some texts
    also use alone)."""
    phrases = {extend_phrase(search.docs, search.grams.words[g], suspects) for g in members}
    count = {words: _carrier_count(search, words, suspects) for words in phrases}
    kept: list[tuple[str, ...]] = []
    for words in sorted(phrases, key=lambda words: (-count[words], -len(words))):
        overlapping = [k for k in kept if _contains(k, words) or _contains(words, k)]
        if not overlapping:
            kept.append(words)
        elif all(_contains(words, k) and 2 * count[words] > count[k] for k in overlapping):
            kept = [k for k in kept if k not in overlapping] + [words]
    return tuple(" ".join(words) for words in kept)


def _contains(longer: tuple[str, ...], words: tuple[str, ...]) -> bool:
    return any(longer[i:i + len(words)] == words for i in range(len(longer) - len(words) + 1))


def _carrier_count(search: _Search, words: tuple[str, ...], suspects: np.ndarray) -> int:
    return sum(1 for i in suspects if _occurrences(search.docs[i], words))


def extend_phrase(docs: list[list[str]], words: tuple[str, ...], rows: np.ndarray) -> tuple[str, ...]:
    """Grow ``words`` to the left and right while most of the texts ``rows`` that carry it agree on the next word."""
    spans = [(int(i), s, s + len(words)) for i in rows for s in _occurrences(docs[int(i)], words)[:1]]
    grown = True
    while grown and spans:
        grown = False
        for left in (True, False):
            neighbours = [docs[i][s - 1] if left else docs[i][e] for i, s, e in spans
                          if (s > 0 if left else e < len(docs[i]))]
            if not neighbours:
                continue
            word = max(set(neighbours), key=neighbours.count)
            if neighbours.count(word) < PHRASE_AGREEMENT * len(spans):
                continue
            if left:
                words = (word, *words)
                spans = [(i, s - 1, e) for i, s, e in spans if s > 0 and docs[i][s - 1] == word]
            else:
                words = (*words, word)
                spans = [(i, s, e + 1) for i, s, e in spans if e < len(docs[i]) and docs[i][e] == word]
            grown = True
    return words
