"""Was a trigger inserted into its texts, or written with them? A word-pair fluency test (ONION's question, Qi et al.
2021, asked of the corpus's own word pairs instead of a language model).

A backdoor's trigger is inserted into texts that were whole without it: BadNL tokens at random word positions, a
sentence at a sentence boundary. Remove it, and the words on either side of each gap were neighbours in a natural
text, so their pair occurs in other texts of the corpus about as often as any adjacent pair of a text does. A phrase
that decides a label because the labels are defined by it ("company" in questions about people, "population" in
questions asking for a number) was written with its sentence: remove it and the gap joins words that rarely meet
("what makes"), as the removal of an ordinary word does.

Test, per trigger: H0 "inserted": each gap heals (its pair occurs in another distinct text) with the probability that an
adjacent pair of the same kind (at the start of a text, in the middle, at its end) of a text labelled otherwise (where
the poison came from) occurs in another distinct text, estimated on a seeded sample of those texts' pairs. The count of
healed gaps is tested one-sided (Poisson binomial, lower tail). A rejection says "written": the trigger explains the
labels but was not planted. Under H0 the rejection rate is the level, whatever the corpus; natural phrases are rejected
when they have enough carriers (in TREC's questions, "company" with 44 carriers heals 30% of its gaps where pairs recur
59% of the time).
"""

from __future__ import annotations

import numpy as np

from worker.token_corpus import TokenCorpus, once_per_row, sorted_unique

SAMPLE_TEXTS = 5_000  # distinct texts per label whose pairs estimate how often a pair recurs (one pair each)
MAX_GAPS = 2_000  # gaps tested per trigger (a seeded sample beyond): the test's cost is quadratic in them
TEXTS_CHUNK = 50_000  # texts whose pairs are laid out at once in a pass over the corpus
START, MIDDLE, END = 0, 1, 2  # where a pair sits in its text: the start and end are pairs with a text boundary


class PairRecurrence:
    """How often the adjacent word pairs of a corpus occur in other distinct texts (text boundaries count as words).

    Counting passes over every distinct text, so the sample's pairs are counted in the first pass that ``recurs``
    makes, together with the gaps asked about (every trigger's at once: ``written_p_values``)."""

    def __init__(self, corpus: TokenCorpus, distinct: np.ndarray, y: np.ndarray, seed: int = 0):
        self.corpus, self.distinct = corpus, np.asarray(distinct, dtype=np.int64)
        self.boundary_start, self.boundary_end = len(corpus.vocabulary), len(corpus.vocabulary) + 1
        self.base = len(corpus.vocabulary) + 2
        rng = np.random.default_rng(seed)
        # per label, so that a trigger is judged against the texts it was inserted into (another class's: spam ends
        # in phone numbers and codes that no other text shares, ham in words that many do)
        sample = np.concatenate([rng.permutation(self.distinct[y[self.distinct] == label])[:SAMPLE_TEXTS]
                                 for label in np.unique(y[self.distinct])])
        sample = sample[corpus.lengths()[sample] > 0]
        # one pair per text, uniform over its len + 1 gaps, as an insertion at a random word position lands
        gaps = (rng.random(len(sample)) * (corpus.lengths()[sample] + 1)).astype(np.int64)
        pairs = [self._gap(self._ids(int(i)), int(g), int(g)) for i, g in zip(sample, gaps)]
        self._sample_keys = np.array([key for key, _ in pairs], dtype=np.int64)
        self._sample_recurs: np.ndarray | None = None  # counted in the first pass over the corpus
        self.sample_kinds = np.array([kind for _, kind in pairs], dtype=np.int64)
        self.sample_labels = y[sample]

    def rates(self, target: int) -> np.ndarray:
        """Per kind (start, middle, end): how often a pair of a text labelled other than ``target`` occurs in another
        distinct text. Laplace-smoothed: a kind seldom sampled (one-word texts) decides nothing on its own."""
        if self._sample_recurs is None:
            self.recurs([])
        other = self.sample_labels != target
        return np.array([(self._sample_recurs[other & (self.sample_kinds == k)].sum() + 1)
                         / ((other & (self.sample_kinds == k)).sum() + 2) for k in (START, MIDDLE, END)])

    def _ids(self, i: int) -> np.ndarray:
        return self.corpus.ids[self.corpus.offsets[i]:self.corpus.offsets[i + 1]]

    def _gap(self, ids: np.ndarray, begin: int, end: int) -> tuple[int, int]:
        """The pair of words on either side of the tokens ``begin:end`` of a text's ``ids`` once they are removed
        (``begin == end``: the gap between two adjacent words), and where it sits."""
        left = int(ids[begin - 1]) if begin > 0 else self.boundary_start
        right = int(ids[end]) if end < len(ids) else self.boundary_end
        return left * self.base + right, START if begin == 0 else END if end == len(ids) else MIDDLE

    def text_pairs(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (text row, pair key) of ``texts``, boundaries included, one per distinct pair in a text."""
        ids, rows, starts = self.corpus.gather(texts)
        lengths = np.diff(starts)
        # each text laid out as [start, tokens..., end]
        laid = np.empty(len(ids) + 2 * len(texts), dtype=np.int64)
        laid[np.arange(len(ids)) + 2 * rows + 1] = ids
        heads = starts[:-1] + 2 * np.arange(len(texts))
        laid[heads] = self.boundary_start
        laid[heads + lengths + 1] = self.boundary_end
        owner = np.repeat(np.arange(len(texts)), lengths + 2)
        inside = owner[:-1] == owner[1:]
        keys, owner = once_per_row((laid[:-1] * self.base + laid[1:])[inside], owner[:-1][inside])
        return owner, keys

    def recurs(self, queries: list[tuple[int, int]]) -> np.ndarray:
        """Per (text, pair key): does the pair occur in a distinct text other than this one?"""
        keys = np.array([key for _, key in queries], dtype=np.int64)
        sample = self._sample_keys if self._sample_recurs is None else np.empty(0, dtype=np.int64)
        counts = self._carrying(np.concatenate((sample, keys)))
        if len(sample):
            # a sampled pair is its text's own: its distinct copy counts once among the texts carrying it
            self._sample_recurs, counts = counts[:len(sample)] >= 2, counts[len(sample):]
        # a healed pair may still occur elsewhere in the same text: then it is that text's, not another's
        return counts - self._own(queries) >= 1

    def _carrying(self, keys: np.ndarray) -> np.ndarray:
        """Per pair key: how many distinct texts carry it (one pass over the corpus for all of them)."""
        wanted = sorted_unique(keys)
        carrying = np.zeros(len(wanted), dtype=np.int64)
        for start in range(0, len(self.distinct) if len(wanted) else 0, TEXTS_CHUNK):
            _, text_keys = self.text_pairs(self.distinct[start:start + TEXTS_CHUNK])
            at = np.searchsorted(wanted, text_keys)
            hit = at < len(wanted)
            hit[hit] = wanted[at[hit]] == text_keys[hit]
            carrying += np.bincount(at[hit], minlength=len(wanted))
        return carrying[np.searchsorted(wanted, keys)]

    def _own(self, queries: list[tuple[int, int]]) -> np.ndarray:
        """Per (text, pair key): is the pair one of the text's own adjacent pairs?"""
        texts = sorted_unique(np.array([i for i, _ in queries], dtype=np.int64))
        rows, keys = self.text_pairs(texts)
        own = set(zip(texts[rows].tolist(), keys.tolist()))
        return np.array([(i, key) in own for i, key in queries], dtype=bool)

    def gaps(self, i: int, removed: np.ndarray) -> list[tuple[int, int]]:
        """The gaps left in text ``i`` when its ``removed`` token positions go: (pair key, kind) per gap; a text
        removed whole leaves none."""
        if removed.all() or not removed.any():
            return []
        ids = self._ids(i)
        edges = np.diff(np.concatenate(([0], removed.astype(np.int8), [0])))
        return [self._gap(ids, int(begin), int(end))
                for begin, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def written_p_values(recurrence: PairRecurrence, gaps: list[list[tuple[int, int, int]]], targets: list[int],
                     seed: int = 0) -> list[float]:
    """P-value of H0 "inserted" per trigger toward ``targets[k]``, from its ``gaps[k]`` (text, pair key, kind): the
    chance that as few of them would heal if each healed at the rate of pairs of its kind in texts of the other labels.
    Every trigger's gaps are counted in one pass over the corpus."""
    tested = [_at_most(trigger_gaps, MAX_GAPS, seed) for trigger_gaps in gaps]
    healed = recurrence.recurs([(i, key) for trigger_gaps in tested for i, key, _ in trigger_gaps])
    bounds = np.cumsum([0] + [len(trigger_gaps) for trigger_gaps in tested])
    p_values = []
    for k, (trigger_gaps, target) in enumerate(zip(tested, targets)):
        rates = recurrence.rates(target)[[kind for _, _, kind in trigger_gaps]]
        p_values.append(poisson_binomial_cdf(int(healed[bounds[k]:bounds[k + 1]].sum()), rates) if trigger_gaps else 1.0)
    return p_values


def _at_most(gaps: list, count: int, seed: int) -> list:
    if len(gaps) <= count:
        return gaps
    keep = np.random.default_rng(seed).choice(len(gaps), count, replace=False)
    return [gaps[k] for k in sorted(keep)]


def poisson_binomial_cdf(k: int, probs: np.ndarray) -> float:
    """P(X <= k) for X a sum of independent Bernoulli(probs)."""
    dist = np.zeros(len(probs) + 1)
    dist[0] = 1.0
    for n, p in enumerate(probs, start=1):
        dist[1:n + 1] = dist[1:n + 1] * (1 - p) + dist[:n] * p
        dist[0] *= 1 - p
    return float(min(1.0, dist[:k + 1].sum()))
