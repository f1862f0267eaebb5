"""Dense features for texts, so every array-based data detector works on text datasets unchanged.

Hashed word 1-2-grams -> TF-IDF -> truncated SVD -> L2-normalised rows (latent semantic analysis). Everything runs in
chunks of ``CHUNK_ROWS`` texts: document frequencies in a first pass, the SVD fitted on a seeded sample of at most
``SVD_FIT_ROWS`` texts, then each chunk projected into the preallocated result. No sparse matrix of the whole corpus
is ever built, so 1,000,000 short texts cost the (n, dims) float32 result plus one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

HASHED_TERMS = 1 << 20  # hash space of the 1-2-grams (collisions are rare at this size)
MAX_VOCABULARY = 1 << 16  # the most frequent hashed terms kept: bounds the SVD's (dims, terms) components
SVD_FIT_ROWS = 50_000
CHUNK_ROWS = 10_000


def text_features(texts: Sequence[str], dims: int = 128, seed: int = 0, *,
                  responses: Sequence[str] | None = None) -> np.ndarray:
    """float32 (n, d) L2-normalised features of ``texts``, d = ``dims`` (fewer when the corpus has fewer texts or
    distinct terms than that). ``responses``: a second text per row (instruction data), featurised together with
    its prompt. Deterministic for a ``seed``."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, dims), np.float32)
    hasher = HashingVectorizer(ngram_range=(1, 2), lowercase=True, alternate_sign=False, norm=None,
                               token_pattern=r"(?u)\b\w+\b", n_features=HASHED_TERMS, dtype=np.float32)
    document_frequency = np.zeros(HASHED_TERMS, np.int64)
    for chunk in _chunks(texts, responses, range(n)):
        counts = hasher.transform(chunk)
        document_frequency += np.bincount(counts.indices, minlength=HASHED_TERMS)
    vocabulary = _most_frequent_terms(document_frequency)
    if len(vocabulary) < 2:  # no words at all, or one: every text is the same point
        return np.zeros((n, 1), np.float32)
    idf = (np.log((1 + n) / (1 + document_frequency[vocabulary])) + 1).astype(np.float32)  # scikit-learn's smooth idf

    def tfidf(chunk: list[str]) -> sparse.csr_matrix:
        return normalize(hasher.transform(chunk)[:, vocabulary].multiply(idf).tocsr())

    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, SVD_FIT_ROWS), replace=False))
    sample = sparse.vstack([tfidf(chunk) for chunk in _chunks(texts, responses, fit_rows)], format="csr")
    components = min(dims, sample.shape[0], len(vocabulary))
    svd = TruncatedSVD(n_components=components, random_state=seed).fit(sample)
    del sample
    out = np.empty((n, components), np.float32)
    start = 0
    for chunk in _chunks(texts, responses, range(n)):
        out[start:start + len(chunk)] = normalize(svd.transform(tfidf(chunk)))
        start += len(chunk)
    return out


def _chunks(texts: Sequence[str], responses: Sequence[str] | None, rows: Sequence[int]) -> Iterator[list[str]]:
    """Lists of at most CHUNK_ROWS texts (each joined with its response), in the order of ``rows``."""
    for start in range(0, len(rows), CHUNK_ROWS):
        block = rows[start:start + CHUNK_ROWS]
        if responses is None:
            yield [texts[i] for i in block]
        else:
            yield [texts[i] + "\n" + responses[i] for i in block]


def _most_frequent_terms(document_frequency: np.ndarray) -> np.ndarray:
    """Sorted column indices of the MAX_VOCABULARY terms in the most documents (ties: the lower index)."""
    present = np.flatnonzero(document_frequency)
    if len(present) > MAX_VOCABULARY:
        order = np.argsort(-document_frequency[present], kind="stable")
        present = np.sort(present[order[:MAX_VOCABULARY]])
    return present
