"""Tokenised texts held once, and the frequent n-grams of a corpus counted without spelling them out as strings.

A million short texts are some 30 million tokens. Held as lists of Python strings they cost about 60 bytes a token
(every regex match is a new ``str``), and counting their n-grams as joined strings (scikit-learn's ``CountVectorizer``)
builds a dictionary of every distinct n-gram before ``min_df`` prunes it. Here a token is an int32 into a vocabulary
(4 bytes), a text is a slice of one flat array, and an n-gram is an int64 key: the ranks of its words among the
frequent tokens, in base F (the number of frequent tokens). N-grams are counted level by level, and an n-gram is
counted only where both of its (n-1)-grams are frequent (a text that holds it holds them: apriori), chunk by chunk of
texts, so no stage holds every n-gram of the corpus. Nothing here knows about labels beyond counting texts per label.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

CHUNK_TEXTS = 50_000  # texts whose n-grams are keyed at once: bounds every transient array to a few million entries
KEY_BITS = 63  # an n-gram key must fit an int64


class TokenCorpus:
    """Texts as token ids: ``corpus[i]`` is text i's words (a tuple, built on demand), ``len(corpus)`` the texts."""

    def __init__(self, word_ids: dict[str, int], ids: np.ndarray, offsets: np.ndarray):
        self.vocabulary = np.array(list(word_ids), dtype=object)  # id -> word (the dict's order is the ids')
        self.word_ids = word_ids  # word -> id
        self.ids = ids  # int32, every text's tokens one after another
        self.offsets = offsets  # int64, len(texts) + 1: text i is ids[offsets[i]:offsets[i + 1]]

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenize: Callable[[str], list[str]]) -> TokenCorpus:
        word_ids: dict[str, int] = {}
        ids, offsets = array("i"), array("q", [0])  # growable int32 / int64: no per-text Python list is kept
        for text in texts:
            ids.extend([word_ids.setdefault(w, len(word_ids)) for w in tokenize(text)])
            offsets.append(len(ids))
        return cls(word_ids, np.frombuffer(ids, dtype=np.int32), np.frombuffer(offsets, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i) -> tuple[str, ...]:
        return tuple(self.vocabulary[self.ids[self.offsets[i]:self.offsets[i + 1]]])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def first_of_each(self) -> np.ndarray:
        """Indices of the first text of each distinct token sequence (64-bit hashes of the id slices)."""
        hashes = np.fromiter((hash(self.ids[a:b].tobytes()) for a, b in zip(self.offsets[:-1], self.offsets[1:])),
                             dtype=np.int64, count=len(self))
        order = np.argsort(hashes, kind="stable")  # the first text of each hash comes first
        starts = np.concatenate(([True], hashes[order][1:] != hashes[order][:-1]))
        return np.sort(order[starts])

    def gather(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tokens of ``texts`` laid end to end: (ids, row of each token in ``texts``, start of each row)."""
        texts = np.asarray(texts, dtype=np.int64)
        lengths = self.offsets[texts + 1] - self.offsets[texts]
        starts = np.concatenate(([0], np.cumsum(lengths)))
        rows = np.repeat(np.arange(len(texts)), lengths)
        flat = np.arange(starts[-1], dtype=np.int64) - starts[rows] + self.offsets[texts][rows]
        return self.ids[flat], rows, starts


@dataclass
class NgramIndex:
    """The frequent n-grams of a corpus (1..max_n words, in at least ``min_df`` texts), each a feature index.

    Features are ordered by length, then by key; ``counts[f]`` holds the texts carrying feature f, per label.
    """

    corpus: TokenCorpus
    rank: np.ndarray  # per vocabulary id: rank among the frequent tokens, or -1
    frequent_ids: np.ndarray  # rank -> vocabulary id
    levels: list[np.ndarray]  # per length n (index n-1): sorted int64 keys of the frequent n-grams of that length
    counts: np.ndarray  # (features, labels) texts carrying each n-gram, per label

    @property
    def base(self) -> int:
        return max(len(self.frequent_ids), 1)

    def __post_init__(self):
        self._index_levels()

    def _index_levels(self) -> None:
        self.first = np.concatenate(([0], np.cumsum([len(k) for k in self.levels])))  # each length's first feature
        self.feature_lengths = np.repeat(np.arange(1, len(self.levels) + 1), [len(k) for k in self.levels])

    def __len__(self) -> int:
        return int(self.first[-1])

    @classmethod
    def build(cls, corpus: TokenCorpus, max_n: int, min_df: int, labels: np.ndarray | None = None,
              n_labels: int = 1) -> NgramIndex:
        labels = np.zeros(len(corpus), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        token_counts = _count_tokens(corpus, labels, n_labels)
        frequent = np.flatnonzero(token_counts.sum(axis=1) >= min_df)
        rank = np.full(len(corpus.vocabulary), -1, dtype=np.int64)
        rank[frequent] = np.arange(len(frequent))
        index = cls(corpus, rank, frequent, [np.arange(len(frequent), dtype=np.int64)], token_counts[frequent])
        # the largest n whose keys fit an int64 (three words need fewer than 2**21 frequent tokens)
        max_n = min(max_n, max(1, int((KEY_BITS - 1) // math.log2(max(index.base, 2)))))
        counts = [index.counts]
        for n in range(2, max_n + 1):
            keys, level_counts = index._count_level(n, labels, n_labels)
            keep = level_counts.sum(axis=1) >= min_df
            if not keep.any():
                break
            index.levels.append(keys[keep])
            counts.append(level_counts[keep])
        index.counts = np.concatenate(counts)
        index._index_levels()
        return index

    def _count_level(self, n: int, labels: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
        """Texts per label carrying each n-gram of length ``n`` whose two (n-1)-grams are frequent."""
        keys, counts = np.empty(0, np.int64), np.empty((0, n_labels), np.int32)
        for texts in _chunks(len(self.corpus)):
            ids, rows, _ = self.corpus.gather(texts)
            level_keys, positions = self._keys(ids, rows, n, known=n - 1)
            chunk_keys, chunk_counts = _per_text_counts(level_keys, rows[positions], labels[texts], n_labels)
            keys, counts = _merge(keys, counts, chunk_keys, chunk_counts)
        return keys, counts

    def _keys(self, ids: np.ndarray, rows: np.ndarray, n: int, known: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys of the n-grams of length ``n`` starting at each token position (and those positions) whose
        sub-n-grams of length ``known`` are frequent; the n-grams of length ``known`` or less must also be."""
        ranks = self.rank[ids]
        keys, valid = ranks, ranks >= 0
        for m in range(2, n + 1):
            starts = np.arange(len(ranks) - m + 1)
            ok = valid[starts] & valid[starts + 1] & (rows[starts] == rows[starts + m - 1])
            keys = np.where(ok, keys[starts] * self.base + ranks[starts + m - 1], -1)
            valid = ok & (_find(self.levels[m - 1], keys) >= 0) if m <= known else ok
        positions = np.flatnonzero(valid)
        return keys[positions], positions

    def occurrences(self, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every occurrence of an indexed n-gram in ``texts``, the texts' tokens laid end to end: (row in ``texts``,
        feature, position of its first token) and where each row starts."""
        ids, rows, starts = self.corpus.gather(texts)
        out_rows, out_features, out_positions = [], [], []
        for n in range(1, len(self.levels) + 1):
            keys, positions = self._keys(ids, rows, n, known=n)
            out_rows.append(rows[positions])
            out_features.append(_find(self.levels[n - 1], keys) + self.first[n - 1])
            out_positions.append(positions)
        return np.concatenate(out_rows), np.concatenate(out_features), np.concatenate(out_positions), starts

    def feature(self, words: tuple[str, ...]) -> int:
        """The feature index of n-gram ``words``, or -1 when it is not indexed."""
        if not 1 <= len(words) <= len(self.levels):
            return -1
        if len(words) == 1:  # a word's feature is its rank among the frequent tokens
            return int(self.rank[self.corpus.word_ids[words[0]]]) if words[0] in self.corpus.word_ids else -1
        key = 0
        for w in words:
            r = self.rank[self.corpus.word_ids[w]] if w in self.corpus.word_ids else -1
            if r < 0:
                return -1
            key = key * self.base + int(r)
        found = int(_find(self.levels[len(words) - 1], np.array([key], dtype=np.int64))[0])
        return found + int(self.first[len(words) - 1]) if found >= 0 else -1

    def words(self, feature: int) -> tuple[str, ...]:
        n = int(np.searchsorted(self.first, feature, side="right"))
        key = int(self.levels[n - 1][feature - self.first[n - 1]])
        ranks = []
        for _ in range(n):
            key, r = divmod(key, self.base)
            ranks.append(r)
        return tuple(self.corpus.vocabulary[self.frequent_ids[ranks[::-1]]])


def _chunks(n: int) -> Iterable[np.ndarray]:
    for start in range(0, n, CHUNK_TEXTS):
        yield np.arange(start, min(start + CHUNK_TEXTS, n))


def _find(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each key in ``sorted_keys``, or -1."""
    if not len(sorted_keys):
        return np.full(len(keys), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, at, -1)


def _count_tokens(corpus: TokenCorpus, labels: np.ndarray, n_labels: int) -> np.ndarray:
    counts = np.zeros((len(corpus.vocabulary), n_labels), dtype=np.int32)
    for texts in _chunks(len(corpus)):
        ids, rows, _ = corpus.gather(texts)
        keys, key_counts = _per_text_counts(ids.astype(np.int64), rows, labels[texts], n_labels)
        counts[keys] += key_counts
    return counts


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting: numpy 2's hashing ``unique`` is several times slower on millions of int64 keys."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values, kind="stable")
    starts = np.concatenate(([True], values[order][1:] != values[order][:-1])) if len(values) else np.empty(0, bool)
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return values[order][starts], inverse


def once_per_row(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (key, row) pairs without repeats, sorted by key then row: a key repeated in one text counts once."""
    order = np.lexsort((rows, keys))
    keys, rows = keys[order], rows[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]) | (rows[1:] != rows[:-1])
    return keys[first], rows[first]


def _per_text_counts(keys: np.ndarray, rows: np.ndarray, row_labels: np.ndarray, n_labels: int):
    """Distinct keys and, per label, the rows (texts) carrying each: a key repeated in one text counts once."""
    keys, rows = once_per_row(keys, rows)
    distinct, inverse = _unique_inverse(keys)
    counts = np.zeros((len(distinct), n_labels), dtype=np.int32)
    np.add.at(counts, (inverse, row_labels[rows]), 1)
    return distinct, counts


def _merge(keys_a, counts_a, keys_b, counts_b):
    keys, inverse = _unique_inverse(np.concatenate((keys_a, keys_b)))
    counts = np.zeros((len(keys), counts_a.shape[1]), dtype=np.int32)
    np.add.at(counts, inverse, np.concatenate((counts_a, counts_b)))
    return keys, counts
