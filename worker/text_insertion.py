"""Was a trigger inserted into its texts, or written with them? A word-pair fluency test (ONION's question, Qi et al.
2021, asked of the corpus's own word pairs instead of a language model).

A backdoor's trigger is inserted into texts that were whole without it: BadNL tokens at random word positions, a
sentence at a sentence boundary. Remove it, and the words on either side of each gap were neighbours in a natural
text, so their pair occurs in other texts of the corpus about as often as any adjacent pair of a text does. A phrase
that decides a label because the labels are defined by it ("company" in questions about people, "population" in
questions asking for a number) was written with its sentence: remove it and the gap joins words that rarely meet
("what makes"), as the removal of an ordinary word does.

Test, per trigger: H0 "inserted": each gap heals (its pair occurs in another distinct text) with the probability that
an adjacent pair of the same kind (at the start of a text, in the middle, at its end) of a text labelled otherwise
(where the poison came from) occurs in another distinct text, estimated on a seeded sample of those texts' pairs. The count of healed gaps is tested one-sided (Poisson
binomial, lower tail). A rejection says "written": the trigger explains the labels but was not planted. Under H0 the
rejection rate is the level, whatever the corpus; natural phrases are rejected when they have enough carriers (in
TREC's questions, "company" with 44 carriers heals 30% of its gaps where pairs recur 59% of the time).
"""

from __future__ import annotations

import numpy as np

from worker.token_corpus import TokenCorpus

SAMPLE_TEXTS = 5_000  # distinct texts per label whose pairs estimate how often a pair recurs (one pair each)
MAX_GAPS = 2_000  # gaps tested per trigger (a seeded sample beyond): the test's cost is quadratic in them
START, MIDDLE, END = 0, 1, 2  # where a pair sits in its text: the start and end are pairs with a text boundary


class PairRecurrence:
    """How often the adjacent word pairs of a corpus occur in other distinct texts (text boundaries count as words)."""

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
        pairs = [self._pair(int(i), int(g)) for i, g in zip(sample, gaps)]
        self.sample_recurs = self.recurs([(int(i), key) for i, (key, _) in zip(sample, pairs)], own_copy=True)
        self.sample_kinds = np.array([kind for _, kind in pairs], dtype=np.int64)
        self.sample_labels = y[sample]

    def rates(self, target: int) -> np.ndarray:
        """Per kind (start, middle, end): how often a pair of a text labelled other than ``target`` occurs in another
        distinct text. Laplace-smoothed: a kind seldom sampled (one-word texts) decides nothing on its own."""
        other = self.sample_labels != target
        return np.array([(self.sample_recurs[other & (self.sample_kinds == k)].sum() + 1)
                         / ((other & (self.sample_kinds == k)).sum() + 2) for k in (START, MIDDLE, END)])

    def _pair(self, i: int, gap: int) -> tuple[int, int]:
        """The pair of words on either side of gap ``gap`` (0..len) of text ``i``, and where it sits."""
        ids = self.corpus.ids[self.corpus.offsets[i]:self.corpus.offsets[i + 1]]
        left = int(ids[gap - 1]) if gap > 0 else self.boundary_start
        right = int(ids[gap]) if gap < len(ids) else self.boundary_end
        return left * self.base + right, START if gap == 0 else END if gap == len(ids) else MIDDLE

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
        keys, owner = (laid[:-1] * self.base + laid[1:])[inside], owner[:-1][inside]
        order = np.lexsort((keys, owner))
        keys, owner = keys[order], owner[order]
        first = np.concatenate(([True], (keys[1:] != keys[:-1]) | (owner[1:] != owner[:-1])))
        return owner[first], keys[first]

    def recurs(self, queries: list[tuple[int, int]], own_copy: bool = False) -> np.ndarray:
        """Per (text, pair key): does the pair occur in a distinct text other than this one? ``own_copy``: the pair
        is this text's own (its distinct copy counts once among the texts carrying it)."""
        if not queries:
            return np.zeros(0, dtype=bool)
        wanted = np.unique(np.array([key for _, key in queries], dtype=np.int64))
        carrying = np.zeros(len(wanted), dtype=np.int64)
        for start in range(0, len(self.distinct), 50_000):
            _, keys = self.text_pairs(self.distinct[start:start + 50_000])
            at = np.searchsorted(wanted, keys)
            hit = at < len(wanted)
            hit[hit] = wanted[at[hit]] == keys[hit]
            carrying += np.bincount(at[hit], minlength=len(wanted))
        counts = carrying[np.searchsorted(wanted, [key for _, key in queries])]
        if own_copy:
            return counts >= 2
        # a healed pair may still occur elsewhere in the same text: then it is that text's, not another's
        own = np.array([key in set(self.text_pairs(np.array([i]))[1].tolist()) for i, key in queries], dtype=bool)
        return counts - own >= 1

    def gaps(self, i: int, removed: np.ndarray) -> list[tuple[int, int]]:
        """The gaps left in text ``i`` when its ``removed`` token positions go: (pair key, kind) per gap; a text
        removed whole leaves none."""
        if removed.all() or not removed.any():
            return []
        ids = self.corpus.ids[self.corpus.offsets[i]:self.corpus.offsets[i + 1]]
        edges = np.diff(np.concatenate(([0], removed.astype(np.int8), [0])))
        out = []
        for begin, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            left = int(ids[begin - 1]) if begin > 0 else self.boundary_start
            right = int(ids[end]) if end < len(ids) else self.boundary_end
            out.append((left * self.base + right, START if begin == 0 else END if end == len(ids) else MIDDLE))
        return out


def written_p_value(recurrence: PairRecurrence, gaps: list[tuple[int, int, int]], target: int, seed: int = 0) -> float:
    """P-value of H0 "inserted" for one trigger toward ``target``, from its ``gaps`` (text, pair key, kind): the chance
    that as few of them would heal if each healed at the rate of pairs of its kind in texts of the other labels."""
    if not gaps:
        return 1.0
    if len(gaps) > MAX_GAPS:
        keep = np.random.default_rng(seed).choice(len(gaps), MAX_GAPS, replace=False)
        gaps = [gaps[k] for k in sorted(keep)]
    healed = int(recurrence.recurs([(i, key) for i, key, _ in gaps]).sum())
    return poisson_binomial_cdf(healed, recurrence.rates(target)[[kind for _, _, kind in gaps]])


def poisson_binomial_cdf(k: int, probs: np.ndarray) -> float:
    """P(X <= k) for X a sum of independent Bernoulli(probs)."""
    dist = np.zeros(len(probs) + 1)
    dist[0] = 1.0
    for n, p in enumerate(probs, start=1):
        dist[1:n + 1] = dist[1:n + 1] * (1 - p) + dist[:n] * p
        dist[0] *= 1 - p
    return float(min(1.0, dist[:k + 1].sum()))
