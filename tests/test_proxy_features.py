"""worker.proxy.features_for on large tabular arrays: standardized block by block, as StandardScaler would."""

import numpy as np
from sklearn.preprocessing import StandardScaler

from worker import proxy


def test_blockwise_standardization_matches_standard_scaler(monkeypatch):
    monkeypatch.setattr(proxy, "STANDARDIZE_BLOCK", 1_000)  # 5,500 rows: six blocks, the last one short
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5_500, 6)) * [1, 2, 3, 0, 50, 7] + [3, -1, 0, 4, 100, 0]).astype(np.float32)
    got = proxy.features_for(x, "tabular")
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.allclose(got, StandardScaler().fit_transform(x), atol=1e-5)
    assert np.all(got[:, 3] == 0)  # a constant column stays zero


def test_the_logistic_proxy_returns_the_probabilities_of_the_strength_it_chose():
    """A small set (logistic proxy): ``fit_proxy`` tries every C once and hands back the winner's out-of-fold
    probabilities, the same as a fresh cross-validation at that C, with progress through all of them."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    features = proxy.features_for(x, "tabular")
    seen: list[tuple[str, float]] = []
    probs, C = proxy.fit_proxy(features, y, progress=lambda stage, frac: seen.append((stage, frac)))
    assert C in proxy.LOGISTIC_C
    assert np.array_equal(probs, proxy.cross_val_probs(features, y, C=C))
    assert len(seen) == 5 * len(proxy.LOGISTIC_C) and seen[-1][1] == 1.0
    assert all(a[1] < b[1] for a, b in zip(seen, seen[1:])) and seen[0][0].startswith(f"C={proxy.LOGISTIC_C[0]} ")


def test_a_set_large_enough_for_the_mlp_has_no_logistic_strength():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3_000, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    probs, C = proxy.fit_proxy(x, y)  # five folds train on 2,400 rows each
    assert C is None and probs.shape == (3_000, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
