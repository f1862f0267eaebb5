"""Which training samples did a backdoor put into the model? Activation clustering and spectral signatures, per class,
with a decision layer that works when the poison is 1% or 60% of its class.

Plain numpy/scikit-learn over arrays (no TensorFlow here): the detector computes the activations, this decides.

Why not ART's wrappers as they are (measured on a BadNets MNIST victim, see bench/model_bench.py):
- ``ActivationDefence`` reads the last layer's output (the softmax, for a Keras model) and calls the smaller of two
  KMeans clusters poison. The poison is half of the target class or more at realistic rates, and KMeans (spherical,
  equal-size clusters) cuts the elongated poison cluster in two. Its defaults flag almost nothing right.
- ``SpectralSignatureDefense`` removes the top 1.5 * p of *every* class and scores against uncentred features.
We use ART's building blocks where they are right - ``reduce_dimensionality`` (PCA) and
``SpectralSignatureDefense.spectral_signature_scores`` (fed centred features) - and decide ourselves:
1. per class, the representation (PCA of the penultimate layer, joined with PCA of the layer before it) is split in two
   by a full-covariance Gaussian mixture, which fits elongated clusters of any relative size;
2. the poison side is the one whose *inputs* look like other classes (kNN label disagreement in input space): a dirty-
   label backdoor relabels samples of other classes, and a clean class's samples look like their own class;
3. a class is a backdoor target only when that disagreement gap is large and the two sides are well apart; otherwise
   its natural sub-clusters (two ways to write a 7) are left alone;
4. in a target class, the boundary is then learned (logistic regression on the representation) from seeds that both
   kinds of evidence agree on: poison side with inputs like other classes, clean side with inputs like the class. This
   fixes the mixture's boundary when the poison is 1% of the class (it takes in clean samples) and when a source class
   sits next to the target in the representation (poisoned 6s among clean 0s).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from worker.robust import OUTLIER_Z, centre_and_spread

PCA_DIMS = 10
GAP_MIN = 0.25  # poison side's input-space label disagreement minus the other side's
DISAGREE_MIN = 0.30  # the poison side's inputs must mostly look like other classes
SEPARATION_MIN = 0.10  # silhouette of the two-way split
MIN_SIDE = 5  # samples: below this a "cluster" is not evidence of anything
NEIGHBOURS = 10
PROBES_PER_SIDE = 300  # samples per side whose input-space neighbours are looked up
REFERENCE_ROWS = 50_000  # neighbours are searched among at most this many rows
SILHOUETTE_ROWS = 2_000
SEED_CLEAN_MAX = 0.1  # clean seed: at most 1 of its 10 input neighbours in other classes
SEED_POISON_MIN = 0.5  # poison seed: at least 5 of its 10 input neighbours in other classes


@dataclass
class ClassResult:
    label: int
    size: int
    suspicious: bool
    reason: str
    sides: list[dict] = field(default_factory=list)  # per GMM component: size, input disagreement
    silhouette: float = 0.0
    poison_side: int | None = None
    flagged: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # dataset indices
    spectral_flagged: int = 0
    moved_by_refinement: int = 0  # samples whose side the learned boundary changed
    flagged_spectral: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # positions in the class
    agreement: float | None = None  # Jaccard of activation clustering's and spectral signatures' flags
    spectral_scores: dict = field(default_factory=dict)
    gap: float = 0.0  # poison side's input-space label disagreement minus the other side's
    robust_z: float = 0.0  # the gap's modified z-score against every class's gap (MAD)

    @property
    def stands_out(self) -> bool:
        """Suspicious *and* unlike the other classes: one class of relabelled samples among clean ones. When every
        class splits this way (random label noise, naturally confusable classes), none stands out."""
        return self.suspicious and self.robust_z > OUTLIER_Z


@dataclass
class Analysis:
    classes: list[ClassResult]
    suspicion: np.ndarray  # (n,) in [0, 1]: posterior of the poison side for samples of suspicious classes, else 0
    methods: dict[int, list[str]]  # dataset index -> methods that flagged it

    @property
    def flagged(self) -> np.ndarray:
        return np.array(sorted(self.methods), dtype=np.int64)

    @property
    def flagged_classes(self) -> set[int]:
        """Classes whose samples the activation analysis flagged."""
        return {c.label for c in self.classes if c.suspicious}


@contextlib.contextmanager
def _seeded(seed: int):
    """ART's reduce_dimensionality takes no random_state; PCA's randomized solver then draws from numpy's global RNG."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def reduce(rep: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """Centred PCA projection (ART's building block), scaled so that each representation weighs the same when joined."""
    from art.defences.detector.poison.activation_defence import reduce_dimensionality

    centred = rep - rep.mean(axis=0)
    if centred.shape[1] <= dims or len(centred) <= dims:
        reduced = centred
    else:
        with _seeded(seed):
            reduced = reduce_dimensionality(centred, nb_dims=dims, reduce="PCA")
    scale = np.sqrt(reduced.var(axis=0).sum()) or 1.0
    return (reduced / scale).astype(np.float64)


def spectral_scores(rep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ART's spectral signature score on *centred* features (ART projects the uncentred ones), and the signed projection."""
    from art.defences.detector.poison.spectral_signature_defense import SpectralSignatureDefense

    centred = rep - rep.mean(axis=0)
    scores = SpectralSignatureDefense.spectral_signature_scores(centred)[:, 0]
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return scores, centred @ vt[0]


class InputNeighbours:
    """Labels of each probe's nearest neighbours in input space, from a bounded reference sample."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, seed: int, direction: np.ndarray | None = None,
                 rows: np.ndarray | None = None):
        from sklearn.neighbors import NearestNeighbors

        if rows is None:
            rows = np.arange(len(labels))
            if len(rows) > REFERENCE_ROWS:
                rows = np.sort(np.random.default_rng(seed).choice(rows, size=REFERENCE_ROWS, replace=False))
        self.rows, self.labels, self.features, self.direction, self.seed = rows, labels, features, direction, seed
        self.index = NearestNeighbors(n_neighbors=NEIGHBOURS + 1, algorithm="brute").fit(self._view(rows))

    def _view(self, rows: np.ndarray) -> np.ndarray:
        x = self.features[rows].astype(np.float32)
        if self.direction is not None:
            x -= np.outer(x @ self.direction, self.direction)
        return x

    def without(self, direction: np.ndarray) -> "InputNeighbours":
        """The same search with one input-space direction projected out of every sample."""
        norm = float(np.linalg.norm(direction))
        unit = (direction / norm).astype(np.float32) if norm > 0 else None
        return InputNeighbours(self.features, self.labels, self.seed, unit, self.rows)

    def disagreement(self, probes: np.ndarray, label: int) -> float:
        """Share of the probes' neighbours (themselves excluded) whose label is not ``label``."""
        per_probe = self.per_sample(probes, label)
        return float(per_probe.mean()) if len(per_probe) else 0.0

    def _nearest(self, probes: np.ndarray) -> np.ndarray:
        """Rows of each probe's NEIGHBOURS nearest reference samples, the probe itself excluded (when the reference is
        a subsample the probe may not be in it, and then its first NEIGHBOURS hits all count)."""
        _, hits = self.index.kneighbors(self._view(probes))
        neighbour_rows = self.rows[hits]
        others_first = np.argsort(neighbour_rows == probes[:, None], axis=1, kind="stable")
        return np.take_along_axis(neighbour_rows, others_first, axis=1)[:, :NEIGHBOURS]

    def labelled_share(self, probes: np.ndarray, labels: list[int]) -> float:
        """Share of the probes' nearest neighbours (themselves excluded, NEIGHBOURS each) labelled with one of ``labels``."""
        return float(np.isin(self.labels[self._nearest(probes)], labels).mean()) if len(probes) else 0.0

    def per_sample(self, probes: np.ndarray, label: int, block: int = 4096) -> np.ndarray:
        """Per probe, the share of its nearest neighbours (itself excluded) whose label is not ``label``."""
        out = np.empty(len(probes), dtype=np.float32)
        for start in range(0, len(probes), block):  # bounded memory for the distance blocks
            nearest = self._nearest(probes[start:start + block])
            out[start:start + block] = (self.labels[nearest] != label).mean(axis=1)
        return out


def analyze(reps: list[np.ndarray], labels: np.ndarray, input_features: np.ndarray, *, seed: int = 0,
            dims: int = PCA_DIMS, progress=None) -> Analysis:
    """``reps``: per representation layer, (n, d) activations; ``input_features``: (n, f) features of the raw inputs."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # many tiny matrix operations: threads only add contention
        return _analyze(reps, labels, input_features, seed, dims, progress)


def _analyze(reps, labels, input_features, seed, dims, progress) -> Analysis:
    neighbours = InputNeighbours(input_features, labels, seed)
    suspicion = np.zeros(len(labels), dtype=np.float32)
    methods: dict[int, list[str]] = {}
    results = []
    classes = np.unique(labels)
    for i, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        result = analyze_class(int(label), members, [r[members] for r in reps], neighbours, suspicion, methods, seed, dims)
        results.append(result)
        if progress:
            progress((i + 1) / len(classes))
    _relative_scores(results)
    return Analysis(results, suspicion, methods)


def _relative_scores(results: list[ClassResult]) -> None:
    """Each class's split statistic against the same statistic over all classes (median and MAD): a domain whose
    classes are naturally confusable raises them all, and none stands out."""
    if not results:
        return
    centre, spread = centre_and_spread([r.gap for r in results])
    spread = max(spread, 0.02)  # disagreement is measured on 300 probes: differences under 0.02 are noise
    for r in results:
        r.robust_z = round((r.gap - centre) / spread, 3)


def analyze_class(label: int, members: np.ndarray, reps: list[np.ndarray], neighbours: InputNeighbours,
                  suspicion: np.ndarray, methods: dict, seed: int, dims: int) -> ClassResult:
    if len(members) < 2 * MIN_SIDE:
        return ClassResult(label, len(members), False, f"too few samples ({len(members)}) to split")
    joined = np.hstack([reduce(r, dims, seed) for r in reps])
    posterior, side, silhouette = _split(joined, seed)
    neighbours = neighbours.without(_input_shift(neighbours.features, members, side))
    sides = _side_stats(members, side, neighbours, label, seed)
    result = ClassResult(label, len(members), False, "", sides, round(silhouette, 4))
    poison = int(np.argmax([s["input_disagreement"] for s in sides]))
    result.gap = round(sides[poison]["input_disagreement"] - sides[1 - poison]["input_disagreement"], 4)
    result.reason = _verdict_reason(sides, poison, silhouette)
    if not result.reason:
        result.suspicious, result.poison_side = True, poison
        _mark_poison(result, members, joined, reps[0], side == poison, posterior[:, poison], neighbours, suspicion, methods)
    return result


def _split(joined: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Two-component full-covariance mixture: per-sample posteriors, hard sides, and the split's silhouette."""
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(2, covariance_type="full", n_init=2, reg_covar=1e-4, tol=1e-3, random_state=seed).fit(joined)
    posterior = gmm.predict_proba(joined)
    side = posterior.argmax(axis=1)
    sub = np.random.default_rng(seed).choice(len(joined), size=min(SILHOUETTE_ROWS, len(joined)), replace=False)
    silhouette = float(silhouette_score(joined[sub], side[sub])) if len(np.unique(side[sub])) == 2 else 0.0
    return posterior, side, silhouette


def _input_shift(features: np.ndarray, members: np.ndarray, side: np.ndarray) -> np.ndarray:
    """The direction between the two sides' mean inputs. A trigger moves every poisoned input the same way (a patch, a
    blended pattern); taken out of the neighbour search, poisoned samples meet the classes they were taken from."""
    if not 0 < side.sum() < len(side):
        return np.zeros(features.shape[1], dtype=np.float32)
    return features[members[side == 1]].mean(axis=0) - features[members[side == 0]].mean(axis=0)


def _side_stats(members: np.ndarray, side: np.ndarray, neighbours: InputNeighbours, label: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    stats = []
    for s in (0, 1):
        inside = members[side == s]
        probes = rng.choice(inside, size=min(PROBES_PER_SIDE, len(inside)), replace=False)
        disagreement = neighbours.disagreement(probes, label) if len(inside) else 0.0
        stats.append({"size": int(len(inside)), "input_disagreement": round(disagreement, 4)})
    return stats


def _mark_poison(result: ClassResult, members, joined, penultimate, poison_side, posterior, neighbours, suspicion, methods) -> None:
    """A backdoor target class: learn the boundary, score and flag its samples, run spectral signatures beside."""
    looks_other = neighbours.per_sample(members, result.label)
    score = _refine(joined, poison_side, looks_other, posterior)
    poisoned = score >= 0.5
    _spectral(result, penultimate, poisoned)
    spectral_set = set(result.flagged_spectral.tolist())
    for j in np.flatnonzero(poisoned):
        methods[int(members[j])] = ["activation_clustering"] + (["spectral_signature"] if j in spectral_set else [])
    result.moved_by_refinement = int((poisoned != poison_side).sum())
    suspicion[members] = score
    result.flagged = members[poisoned]


def _refine(joined: np.ndarray, poison_side: np.ndarray, looks_other: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """Per-sample poison probability. The mixture's boundary is only roughly right when the poison is a small share of
    the class (at 1% it takes in clean samples too), so we learn the boundary from seeds the two kinds of evidence agree
    on - poison side and inputs like other classes; clean side and inputs like the class - and apply it to every sample."""
    from sklearn.linear_model import LogisticRegression

    positive = poison_side & (looks_other >= SEED_POISON_MIN)
    negative = ~poison_side & (looks_other <= SEED_CLEAN_MAX)
    if positive.sum() < MIN_SIDE or negative.sum() < MIN_SIDE:
        return posterior
    seeds = positive | negative
    clf = LogisticRegression(C=1.0, max_iter=500).fit(joined[seeds], positive[seeds])
    return clf.predict_proba(joined)[:, 1].astype(np.float32)


def _verdict_reason(sides: list[dict], poison: int, silhouette: float) -> str:
    """Why the class is *not* a backdoor target ("" when it is)."""
    gap = sides[poison]["input_disagreement"] - sides[1 - poison]["input_disagreement"]
    if min(s["size"] for s in sides) < MIN_SIDE:
        return "no second cluster"
    if sides[poison]["input_disagreement"] < DISAGREE_MIN or gap < GAP_MIN:
        return (f"both clusters look like the class itself (input-space label disagreement "
                f"{sides[0]['input_disagreement']:.2f} / {sides[1]['input_disagreement']:.2f})")
    if silhouette < SEPARATION_MIN:
        return f"the clusters are not apart (silhouette {silhouette:.2f})"
    return ""


def _spectral(result: ClassResult, rep: np.ndarray, poison_mask: np.ndarray) -> None:
    """Spectral signatures on the penultimate layer: the signed top-singular-vector projection, cut at the midpoint of
    the two sides' medians (a fixed top-1.5p cut is wrong when the poison is most of the class)."""
    scores, projection = spectral_scores(rep)
    if poison_mask.all() or not poison_mask.any():
        result.flagged_spectral = np.empty(0, dtype=np.int64)
        return
    hi, lo = np.median(projection[poison_mask]), np.median(projection[~poison_mask])
    cut = (hi + lo) / 2
    on_poison_side = projection > cut if hi > lo else projection < cut
    result.flagged_spectral = np.flatnonzero(on_poison_side)
    result.spectral_flagged = int(on_poison_side.sum())
    union = (on_poison_side | poison_mask).sum()
    result.agreement = round(float((on_poison_side & poison_mask).sum() / union), 4) if union else None
    q = np.quantile(scores, [0.5, 0.9, 0.99])
    result.spectral_scores = {"median": round(float(q[0]), 4), "p90": round(float(q[1]), 4), "p99": round(float(q[2]), 4),
                              "max": round(float(scores.max()), 4),
                              "median_poison_side": round(float(np.median(scores[poison_mask])), 4),
                              "median_clean_side": round(float(np.median(scores[~poison_mask])), 4)}
