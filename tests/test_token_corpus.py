"""worker.token_corpus: tokens held once as ids, n-grams counted as integer keys. Checked against a brute-force count
over the same tokens (joined strings, as scikit-learn's CountVectorizer counts them)."""

import numpy as np
import pytest

from worker import token_corpus
from worker.text_triggers import ngrams, tokenize
from worker.token_corpus import NgramIndex, TokenCorpus


def _random_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    words = [f"w{k}" for k in range(40)]
    weights = 1 / np.arange(1, 41)  # Zipf-like: frequent and rare words, so that pruning matters
    texts = [" ".join(rng.choice(words, rng.integers(0, 12), p=weights / weights.sum())) for _ in range(n)]
    return texts, rng.integers(0, 3, n)


def _brute_force(texts, labels, max_n, min_df) -> dict[str, list[int]]:
    per_label: dict[str, list[int]] = {}
    for text, label in zip(texts, labels):
        for gram in ngrams(tokenize(text), max_n):
            per_label.setdefault(gram, [0, 0, 0])[label] += 1
    return {g: c for g, c in per_label.items() if sum(c) >= min_df}


def test_a_text_is_its_tokens_and_repeats_are_found():
    texts = ["Free entry, win cf now", "", "ok lar... joking", "Free entry, win cf now"]
    corpus = TokenCorpus.from_texts(texts, tokenize)
    assert len(corpus) == 4
    assert [corpus[i] for i in range(4)] == [tuple(tokenize(t)) for t in texts]
    assert corpus.first_of_each().tolist() == [0, 1, 2]
    assert corpus.lengths().tolist() == [5, 0, 3, 5]


@pytest.mark.parametrize("chunk", [7, 50_000])  # texts split across chunks count the same as in one
def test_ngram_counts_per_label_equal_a_brute_force_count(monkeypatch, chunk):
    monkeypatch.setattr(token_corpus, "CHUNK_TEXTS", chunk)
    texts, labels = _random_texts(300, seed=1)
    corpus = TokenCorpus.from_texts(texts, tokenize)
    index = NgramIndex.build(corpus, 3, 4, labels, 3)
    found = {" ".join(index.words(f)): index.counts[f].tolist() for f in range(len(index))}
    assert found == _brute_force(texts, labels, 3, 4)
    assert {len(g.split(" ")) for g in found} == {1, 2, 3}
    assert all(index.feature(index.words(f)) == f for f in range(len(index)))


def test_no_ngram_spans_two_texts():
    corpus = TokenCorpus.from_texts(["a b", "c d"] * 5, tokenize)
    index = NgramIndex.build(corpus, 2, 2)
    assert {" ".join(index.words(f)) for f in range(len(index))} == {"a", "b", "c", "d", "a b", "c d"}
    assert index.feature(("b", "c")) == -1 and index.feature(("unseen",)) == -1


def test_occurrences_name_each_ngram_where_it_starts():
    texts, labels = _random_texts(120, seed=2)
    corpus = TokenCorpus.from_texts(texts, tokenize)
    index = NgramIndex.build(corpus, 2, 3)
    chosen = np.array([5, 17, 3, 99])
    rows, features, positions, starts = index.occurrences(chosen)
    found = sorted((int(r), int(p - starts[r]), index.words(int(f))) for r, f, p in zip(rows, features, positions))
    expected = sorted((r, s, tuple(doc[s:s + n])) for r, doc in enumerate(corpus[i] for i in chosen)
                      for n in (1, 2) for s in range(len(doc) - n + 1) if index.feature(tuple(doc[s:s + n])) >= 0)
    assert found == expected and found


def test_an_empty_corpus_indexes_nothing():
    index = NgramIndex.build(TokenCorpus.from_texts([], tokenize), 3, 2)
    assert len(index) == 0 and index.counts.shape == (0, 1)
