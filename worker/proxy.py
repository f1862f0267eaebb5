"""Features and out-of-sample predicted probabilities for the data layer.

Cleanlab finds mislabeled samples only from probabilities that a model produced for samples it
did not train on. We get them by K-fold cross-validation of a fast model on good features:
standardized raw features for tabular data, a PCA projection of the pixels for images (the
model layer adds the uploaded model's own embeddings).
"""

from collections.abc import Callable

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

Progress = Callable[[str, float], None]
MAX_PCA_FIT_ROWS = 20_000  # the projection is fitted on a sample: enough for its components, bounded in time
STANDARDIZE_BLOCK = 50_000  # rows standardized at once (beyond one block)


def features_for(x: np.ndarray, kind: str, *, components: int = 64, seed: int = 0) -> np.ndarray:
    """float32 (n, d) features: images are scaled to [0, 1] and projected with PCA; tabular data is standardized."""
    if kind == "images":
        flat = x.reshape(len(x), -1)
        scale = 255.0 if flat.dtype == np.uint8 else max(float(np.abs(flat).max()), 1.0)
        rng = np.random.default_rng(seed)
        sample = flat[rng.choice(len(flat), size=min(len(flat), MAX_PCA_FIT_ROWS), replace=False)].astype(np.float32) / scale
        pca = PCA(n_components=min(components, sample.shape[1], len(sample)), random_state=seed).fit(sample)
        out = np.empty((len(flat), pca.n_components_), dtype=np.float32)
        for start in range(0, len(flat), 10_000):  # project in blocks: never a float copy of all pixels at once
            out[start:start + 10_000] = pca.transform(flat[start:start + 10_000].astype(np.float32) / scale)
        return out  # not standardized: that would inflate the low-variance (noise) components
    flat = x.reshape(len(x), -1)
    if len(flat) <= STANDARDIZE_BLOCK:
        return StandardScaler().fit_transform(flat.astype(np.float32, copy=False)).astype(np.float32, copy=False)
    return _standardized_in_blocks(flat)


def _standardized_in_blocks(flat: np.ndarray) -> np.ndarray:
    """StandardScaler's result, computed block by block: its float64 temporaries of 1,000,000 x 128 are 1 GB."""
    blocks = range(0, len(flat), STANDARDIZE_BLOCK)
    mean = sum(flat[a:a + STANDARDIZE_BLOCK].sum(axis=0, dtype=np.float64) for a in blocks) / len(flat)
    var = sum(np.square(flat[a:a + STANDARDIZE_BLOCK] - mean).sum(axis=0) for a in blocks) / len(flat)
    scale = np.where(var > 0, np.sqrt(var), 1.0)  # a constant column stays 0, as StandardScaler leaves it
    out = np.empty(flat.shape, dtype=np.float32)
    for a in blocks:
        out[a:a + STANDARDIZE_BLOCK] = (flat[a:a + STANDARDIZE_BLOCK] - mean) / scale
    return out


# Regularization strengths of the logistic proxy, chosen per dataset on held-out data (``fit_proxy``).
LOGISTIC_C = (1.0, 0.3, 0.1, 0.03, 0.01)


def uses_logistic(name: str, n_rows: int) -> bool:
    return name == "logistic" or (name == "auto" and n_rows < 2_000)


def make_model(name: str, n_rows: int, seed: int, C: float = 1.0):
    if uses_logistic(name, n_rows):
        return LogisticRegression(C=C, max_iter=500)
    if name in ("mlp", "auto"):
        return MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, batch_size=256, learning_rate_init=2e-3,
                             max_iter=40, early_stopping=True, n_iter_no_change=4, random_state=seed)
    raise ValueError(f"unknown proxy model {name!r}; use 'auto', 'logistic' or 'mlp'")


def fit_proxy(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, model: str = "auto", seed: int = 0,
              progress: Progress | None = None) -> tuple[np.ndarray, float | None]:
    """The proxy's out-of-sample probabilities, and the logistic C chosen for them (None when the proxy is the MLP).

    The logistic proxy's C is the one with the lowest out-of-sample Brier score. The label tests downstream trust the
    proxy's small probabilities (``worker.label_evidence``): temperature scaling fixes its overall sharpness, not the
    confident mistakes of an overfitted model. A logistic regression at C=1 on 1,000 short questions (128 dimensions,
    six classes) extrapolates: it gives correct labels probabilities under 0.01 ("When do you plant winter wheat ?",
    NUM, read as LOC), twice as many as its calibrated probabilities allow, which the random-flip test took for
    poisoning. Choosing C on held-out data, as any model's regularization is chosen, removes that. The score is
    Brier's, not the log loss: both are proper, but a flipped label costs the log loss without bound, so 10% of the
    labels flipped pulled C to the weakest model tried (0.01 on 2,000 SMS), which then missed the flips into the
    minority class; Brier's cost per label is at most 2 (it chose 0.03 there)."""
    if not uses_logistic(model, _train_rows(labels, folds)):
        return cross_val_probs(features, labels, folds=folds, model=model, seed=seed, progress=progress), None
    truth = np.eye(int(labels.max()) + 1)[labels]
    best: tuple[float, float, np.ndarray] | None = None
    for j, c in enumerate(LOGISTIC_C):
        def step(stage: str, frac: float, j=j, c=c) -> None:
            if progress:
                progress(f"C={c} {stage}", (j + frac) / len(LOGISTIC_C))
        probs = cross_val_probs(features, labels, folds=folds, model=model, seed=seed, C=c, progress=step)
        brier = float(np.square(probs - truth).sum(axis=1).mean())
        if best is None or brier < best[0]:  # the first C wins a tie
            best = (brier, c, probs)
    return best[2], best[1]


def _folds(labels: np.ndarray, folds: int) -> int:
    counts = np.bincount(labels)
    return max(2, min(folds, int(counts[counts > 0].min())))  # a class needs a member in every fold


def _train_rows(labels: np.ndarray, folds: int) -> int:
    folds = _folds(labels, folds)
    return len(labels) - len(labels) // folds


def cross_val_probs(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, model: str = "auto", seed: int = 0,
                    max_train_rows: int = 200_000, exclude: np.ndarray | None = None,
                    progress: Progress | None = None, C: float = 1.0) -> np.ndarray:
    """(n, k) probabilities, each row predicted by a model that never saw that row.

    ``exclude``: rows no fold trains on (they are still predicted): suspected flips, so that the model is not
    taught them.

    Each fold trains on at most ``max_train_rows`` rows (a random subset), so time stays bounded on huge sets;
    every row is still predicted out of sample.

    ``C``: the logistic proxy's regularization (``fit_proxy`` chooses it).
    """
    k = int(labels.max()) + 1
    folds = _folds(labels, folds)
    probs = np.zeros((len(labels), k), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rng = np.random.default_rng(seed)
    for i, (train, test) in enumerate(splitter.split(features, labels)):
        if exclude is not None and len(exclude):
            train = np.setdiff1d(train, exclude, assume_unique=True)
        if len(train) > max_train_rows:
            train = np.sort(rng.choice(train, size=max_train_rows, replace=False))
        clf = make_model(model, len(train), seed, C).fit(features[train], labels[train])
        probs[np.ix_(test, clf.classes_)] = clf.predict_proba(features[test])
        if progress:
            progress(f"fold {i + 1}/{folds}", (i + 1) / folds)
    # a class absent from one fold's training part gets probability 0 there; keep rows summing to 1
    probs = np.clip(probs, 1e-6, None)
    return probs / probs.sum(axis=1, keepdims=True)
