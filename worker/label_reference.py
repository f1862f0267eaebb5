"""Label flips judged against a trusted reference (ATLAS AML.T0020): the labelled holdout set a user uploads.

Without a reference, a targeted flip that moves a large share of one class (half of the spam relabelled ham) is the
data's own definition of that class: a model trained on it learns the flips, and nothing in the data contradicts them
(``worker.label_evidence`` says why). A clean labelled sample from a trusted source breaks the tie. A judge trained
on the reference alone reads the dataset; for each ordered pair (given label t, content read as s) the dataset's count
is compared with what the judge's own misreadings predict: its cross-validated confusion on the reference, with the
uncertainty of a small reference carried by a beta-binomial (uniform prior on the misreading rate), Bonferroni over
the k(k-1) pairs. Annotation errors are flips too, and a curated reference has fewer of them than the data, so a pair
counts as poisoning only when its excess flips also pass NATURAL_NOISE_SHARE of the samples labelled with its given
label (annotation errors are a share of what was annotated: SMS spam's first 1,600 messages hold 19 spam-like texts
labelled ham beyond what the judge predicts, 1.4% of the ham).

Each sample of a poisoned pair gets the posterior that its label was flipped: a prior from the pair's excess, and the
judge's temperature-scaled probabilities of its content as s against as t (each divided by the reference's share of
that class when the judge learnt the reference's priors).

Pure functions over features and labels: no detector, Celery or database import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import betabinom
from sklearn.model_selection import StratifiedKFold

from worker.label_evidence import NATURAL_NOISE_SHARE

REFERENCE_ALPHA = 0.01  # family-wise, over the k(k-1) (given, read as) pairs
MIN_PER_CLASS = 5  # reference samples a class needs for its misreading rate to mean anything


@dataclass(frozen=True)
class ReferencePair:
    """Samples labelled ``given`` whose content the reference judge reads as ``read_as``, beyond its misreadings."""

    given: int
    read_as: int
    observed: int  # dataset samples labelled ``given`` that the judge reads as ``read_as``
    expected: float  # what the judge's misreading rate on the reference predicts
    p_value: float  # beta-binomial upper tail, Bonferroni-adjusted
    excess_share: float  # (observed - expected) / the samples labelled ``given``
    poisoned: bool
    rows: np.ndarray  # the observed samples
    posterior: np.ndarray  # per row: the probability that its label was flipped


@dataclass(frozen=True)
class ReferenceCheck:
    pairs: list[ReferencePair]  # every pair with more observed than expected, strongest first
    reference_size: int
    judge_accuracy: float  # cross-validated on the reference
    skipped_classes: list[int]  # classes with fewer than MIN_PER_CLASS reference samples (not judged)

    @property
    def poisoned(self) -> list[ReferencePair]:
        return [p for p in self.pairs if p.poisoned]


def check_against_reference(data_features, y: np.ndarray, ref_features, ref_y: np.ndarray, n_classes: int,
                            make_judge, *, balanced: bool = False, seed: int = 0) -> ReferenceCheck:
    """Judge the dataset's labels ``y`` by a model trained on the reference (``ref_features``, ``ref_y``, labels in the
    same 0..n_classes-1 coding). ``make_judge()`` returns a fresh unfitted classifier with ``predict_proba``; the
    features may be dense or sparse, in one space for both. ``balanced``: the judge weighs classes equally, so its
    probabilities carry a uniform prior rather than the reference's class shares."""
    y, ref_y = np.asarray(y, np.int64), np.asarray(ref_y, np.int64)
    ref_counts = np.bincount(ref_y, minlength=n_classes)
    judged = ref_counts >= MIN_PER_CLASS
    folds = int(min(5, ref_counts[judged].min())) if judged.sum() >= 2 else 0
    if folds < 2:
        return ReferenceCheck([], len(ref_y), float("nan"), [int(c) for c in np.flatnonzero(~judged)])
    ref_logits = np.zeros((len(ref_y), n_classes))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(ref_y, ref_y):
        ref_logits[test] = _log_probs(make_judge().fit(ref_features[train], ref_y[train]), ref_features[test], n_classes)
    temperature = _temperature(ref_logits, ref_y)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(confusion, (ref_y, ref_logits.argmax(axis=1)), 1)
    judge = make_judge().fit(ref_features, ref_y)
    probs = _softmax(_log_probs(judge, data_features, n_classes) / temperature)
    read = probs.argmax(axis=1)
    given_counts = np.bincount(y, minlength=n_classes)
    prior = np.full(n_classes, 1.0 / n_classes) if balanced else np.maximum(ref_counts / ref_counts.sum(), 1e-12)
    tests = int(judged.sum() * (judged.sum() - 1))
    pairs = []
    for t in np.flatnonzero(judged):
        for s in np.flatnonzero(judged):
            rows = np.flatnonzero((y == t) & (read == s))
            if s == t or not len(rows):
                continue
            misread = confusion[t, s]
            expected = given_counts[t] * (misread + 1) / (ref_counts[t] + 2)
            if len(rows) <= expected:
                continue
            p = float(min(1.0, tests * betabinom.sf(len(rows) - 1, given_counts[t], misread + 1,
                                                    ref_counts[t] - misread + 1)))
            excess = len(rows) - expected
            share = excess / given_counts[t]
            flip_prior = min(1.0, excess / len(rows))
            as_s, as_t = probs[rows, s] / prior[s], probs[rows, t] / prior[t]
            posterior = flip_prior * as_s / np.maximum(flip_prior * as_s + (1 - flip_prior) * as_t, 1e-300)
            pairs.append(ReferencePair(int(t), int(s), len(rows), float(expected), p, float(share),
                                       bool(p <= REFERENCE_ALPHA and share >= NATURAL_NOISE_SHARE), rows, posterior))
    accuracy = float((ref_logits.argmax(axis=1) == ref_y).mean())
    pairs.sort(key=lambda q: (not q.poisoned, q.p_value, -q.observed))
    return ReferenceCheck(pairs, len(ref_y), accuracy, [int(c) for c in np.flatnonzero(~judged)])


def _log_probs(model, features, n_classes: int) -> np.ndarray:
    out = np.full((features.shape[0], n_classes), -np.inf)
    out[:, model.classes_] = np.log(np.clip(model.predict_proba(features), 1e-12, 1.0))
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _temperature(log_probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature under which the judge's cross-validated probabilities fit the reference's labels best (grid
    search: one parameter, and robust to classes the judge never gives)."""
    finite = np.where(np.isfinite(log_probs), log_probs, -30.0)
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 41))
    losses = [-np.log(np.clip(_softmax(finite / t)[np.arange(len(y)), y], 1e-12, 1)).mean() for t in grid]
    return float(grid[int(np.argmin(losses))])
