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
