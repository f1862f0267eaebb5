"""SCAn (worker/untangle.py) on synthetic representations: pure numpy, no model, seconds."""

import time

import numpy as np
import pytest

from worker.untangle import THRESHOLD, untangle

K, D, N = 10, 64, 1000  # classes, representation width, rows per class
TARGET, SOURCE, N_POISON = 7, 3, 150


def _world(seed: int):
    """Class means and a shared, anisotropic within-class noise (what SCAn's global model assumes)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2.0, (K, D))
    root = 0.7 * np.eye(D) + 0.5 * rng.normal(0, 1, (D, D)) / np.sqrt(D)
    return rng, means, root


def _clean(seed: int):
    rng, means, root = _world(seed)
    reps = np.concatenate([means[c] + rng.normal(size=(N, D)) @ root for c in range(K)])
    return reps, np.repeat(np.arange(K), N)


def _poisoned(seed: int, *, inside_target: bool = False, offset: float = 4.0):
    """Class TARGET keeps N - N_POISON of its own rows and gets N_POISON poisoned ones (a 15% minority): rows of
    class SOURCE (or, with ``inside_target``, of TARGET itself) moved by a fixed trigger offset of norm ``offset``
    (noise units) and labelled TARGET. Returns reps, labels and the poison mask."""
    rng, means, root = _world(seed)
    trigger = rng.normal(size=D)
    trigger *= offset / np.linalg.norm(trigger)
    parts, labels = [], []
    for c in range(K):
        n = N - N_POISON if c == TARGET else N
        parts.append(means[c] + rng.normal(size=(n, D)) @ root)
        labels.append(np.full(n, c))
    origin = means[TARGET if inside_target else SOURCE]
    parts.append(origin + rng.normal(size=(N_POISON, D)) @ root + trigger)
    labels.append(np.full(N_POISON, TARGET))
    reps, labels = np.concatenate(parts), np.concatenate(labels)
    poison = np.zeros(len(labels), bool)
    poison[-N_POISON:] = True
    # shuffle so that nothing depends on the poison being last
    order = rng.permutation(len(labels))
    return reps[order], labels[order], poison[order]


def _bimodal(seed: int, *, separation: float = 4.0):
    """Every class is an even mixture of two sub-styles, each class along its own direction, all at the same
    separation: every class splits well, none stands out."""
    rng, means, root = _world(seed)
    parts = []
    for c in range(K):
        style = rng.normal(size=D)
        style *= separation / 2 / np.linalg.norm(style)
        sign = np.where(rng.random(N) < 0.5, 1.0, -1.0)[:, None]
        parts.append(means[c] + rng.normal(size=(N, D)) @ root + sign * style)
    return np.concatenate(parts), np.repeat(np.arange(K), N)


def _f1(found: np.ndarray, truth: np.ndarray) -> float:
    hit = np.zeros(len(truth), bool)
    hit[found] = True
    return 2 * (hit & truth).sum() / (hit.sum() + truth.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_classes_are_not_flagged(seed):
    reps, labels = _clean(seed)
    result = untangle(reps, labels)
    assert result.targets == []
    assert result.threshold == pytest.approx(np.exp(2)) == THRESHOLD
    assert result.statistic.shape == result.anomaly.shape == (K,)
    assert np.all(np.isfinite(result.statistic)) and np.all(result.statistic > 0)
    assert np.all(result.anomaly < THRESHOLD)
    assert sorted(result.minority) == list(range(K))
    for c, rows in result.minority.items():  # the smaller subgroup, taken from the class itself
        assert 0 < len(rows) <= N / 2 and np.all(labels[rows] == c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_source_specific_poison_flags_the_target_and_recovers_the_poison(seed):
    reps, labels, poison = _poisoned(seed)
    result = untangle(reps, labels)
    assert result.targets == [TARGET]
    others = np.delete(result.anomaly, TARGET)
    assert result.anomaly[TARGET] > THRESHOLD > others.max()
    assert _f1(result.minority[TARGET], poison) >= 0.9


@pytest.mark.parametrize("seed", [0, 1])
def test_trigger_inside_the_target_class_is_found(seed):
    """Harder: the poison sits in the target class's own cluster, moved only by the trigger (6 noise units)."""
    reps, labels, poison = _poisoned(seed, inside_target=True, offset=6.0)
    result = untangle(reps, labels)
    assert result.targets == [TARGET]
    assert _f1(result.minority[TARGET], poison) >= 0.9


def test_clean_reference_for_the_global_model():
    """The global model estimated on rows known clean (a subset without poison) still flags the target."""
    reps, labels, poison = _poisoned(0)
    clean_rows = np.flatnonzero(~poison)[::2]
    for reference in (clean_rows, np.isin(np.arange(len(labels)), clean_rows)):
        result = untangle(reps, labels, reference=reference)
        assert result.targets == [TARGET]
        assert _f1(result.minority[TARGET], poison) >= 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_naturally_bimodal_classes_are_not_flagged(seed):
    """Every class splits far better than a Gaussian class would (J well above the clean case's), so a fixed
    threshold on J would flag them all; compared with one another none is anomalous."""
    result = untangle(*_bimodal(seed))
    clean = untangle(*_clean(seed))
    assert np.min(result.statistic) > 1.5 * np.max(clean.statistic)
    assert result.targets == []
    assert np.all(result.anomaly < THRESHOLD)


def test_deterministic_for_a_seed():
    reps, labels, _ = _poisoned(4)
    first, second = untangle(reps, labels, seed=11), untangle(reps, labels, seed=11)
    np.testing.assert_array_equal(first.statistic, second.statistic)
    np.testing.assert_array_equal(first.anomaly, second.anomaly)
    assert first.targets == second.targets == [TARGET]
    assert first.minority.keys() == second.minority.keys()
    for c in first.minority:
        np.testing.assert_array_equal(first.minority[c], second.minority[c])
    other = untangle(reps, labels, seed=12)  # another seed: same verdict on data this clear
    assert other.targets == [TARGET]


def test_small_and_absent_classes_get_no_statistic():
    reps, labels = _clean(0)
    keep = (labels != 2) | (np.arange(len(labels)) % N < 10)  # class 2 keeps 10 rows
    keep &= labels != 5  # class 5 is absent
    result = untangle(reps[keep], labels[keep], min_class=20)
    assert np.isnan(result.statistic[[2, 5]]).all() and np.isnan(result.anomaly[[2, 5]]).all()
    assert 2 not in result.minority and 5 not in result.minority
    assert result.targets == []
    assert np.isfinite(np.delete(result.statistic, [2, 5])).all()


def test_rejects_malformed_input():
    reps, labels = _clean(0)
    with pytest.raises(ValueError):
        untangle(reps, labels[:-1])
    with pytest.raises(ValueError):
        untangle(reps, labels - 1)
    with pytest.raises(ValueError):
        untangle(reps, labels + 0.5)
    bad = reps.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        untangle(bad, labels)
    with pytest.raises(ValueError):
        untangle(reps, labels, reference=np.ones(3, bool))
    with pytest.raises(ValueError):
        untangle(reps, labels, reference=np.flatnonzero(labels == 0))  # one class: no global model


def test_fast_on_20000_by_128():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 2000)
    reps = rng.normal(0, 3, (10, 128))[labels] + rng.normal(size=(20000, 128))
    start = time.perf_counter()
    result = untangle(reps, labels)
    assert time.perf_counter() - start < 10
    assert result.targets == []


def test_a_pca_fitted_on_a_sample_finds_the_same_target(monkeypatch):
    """Past PCA_FIT_MAX rows (200,000) the PCA is fitted on a seeded sample and every row projected in blocks, with
    float32 activations never copied whole to float64: the target and its poison are found as with all rows."""
    from worker import untangle as module

    reps, labels, poison = _poisoned(0)
    monkeypatch.setattr(module, "PCA_FIT_MAX", len(reps) // 3)
    monkeypatch.setattr(module, "PCA_BLOCK", 97)
    result = untangle(reps.astype(np.float32), labels)
    assert result.targets == [TARGET] and _f1(result.minority[TARGET], poison) >= 0.9


def test_statistics_accumulated_in_blocks_are_those_of_all_rows_at_once(monkeypatch):
    """Past STATS_BLOCK rows the reference's sums and scatter are accumulated, and the rows whitened in place, block by
    block (no copy of every row): the statistic is that of one block, up to rounding, and so are target and split."""
    from worker import untangle as module

    reps, labels, poison = _poisoned(0)
    reference = np.flatnonzero(~poison)[::2]
    whole = untangle(reps, labels, reference=reference)
    monkeypatch.setattr(module, "STATS_BLOCK", 97)
    blocks = untangle(reps, labels, reference=reference)
    assert np.allclose(blocks.statistic, whole.statistic, rtol=1e-9)
    assert blocks.targets == whole.targets == [TARGET]
    assert np.array_equal(blocks.minority[TARGET], whole.minority[TARGET])
