"""Plot data for the HTML report that the JSON report does not hold, written once per scan as ``figures.npz`` (one of
the scan's outputs; small, and readable with ``np.load(..., allow_pickle=False)``). Every array is optional:

  projection_index        (p,) int64      dataset rows drawn in the activation projections: per plotted class at most
                                          POINTS_PER_CLASS, its quarantined rows first (up to half), the rest a seeded sample
  projection_class        (p,) int64      the row's class, as a position in ``projection_classes``
  projection_xy           (p, 2) float32  the row's penultimate activations (centred in its class) on the class's top two
                                          singular directions; the first is the spectral signature direction (the
                                          row's spectral score, ART's, is the magnitude of its first coordinate)
  projection_quarantined  (p,) bool       the row is in the report's quarantine
  projection_classes      (c,) str        the plotted classes (at most PLOTTED_CLASSES), those with quarantined rows first
  projection_class_sizes  (c,) int64      samples of each plotted class
  projection_class_quarantined (c,) int64  of them in the quarantine
  thumbnail_pixels        (m, h, w[, 3]) uint8  the most suspicious samples of an image dataset, most suspicious first
  thumbnail_index         (m,) int64      their dataset rows
  thumbnail_label         (m,) str        their labels as uploaded
  thumbnail_confidence    (m,) float32    quarantine confidence, or for a review entry its poisoning confidence or
                                          its remarks' highest score (nan when it has none)
  thumbnail_list          (m,) str        "quarantine" or "review"

Plain numpy (scikit-learn's randomized SVD): no detector is imported. The model layer computes ``class_projections``
while it holds the activations; the pipeline writes the file with ``figures_npz`` once the report's lists are final.
"""

import io
import math

import numpy as np

FIGURES_NAME = "figures.npz"
POINTS_PER_CLASS = 400
PLOTTED_CLASSES = 12
THUMBNAILS = 32
THUMBNAIL_SIDE = 64  # pixels: larger images are subsampled to at most this
LABEL_CHARS = 100


def class_projections(penultimate: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per row, (n, 2) float32: its activations, centred in its class, on the class's top two singular directions."""
    from sklearn.utils.extmath import randomized_svd

    out = np.zeros((len(labels), 2), np.float32)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        centred = penultimate[rows].reshape(len(rows), -1).astype(np.float32)
        centred -= centred.mean(axis=0)
        components = min(2, *centred.shape)
        if len(rows) < 2 or not centred.any():
            continue
        _, _, vt = randomized_svd(centred, components, random_state=seed)
        out[rows, :components] = centred @ vt.T
    return out


def figures_npz(ds, projection: np.ndarray | None, report: dict, seed: int = 0) -> bytes | None:
    """``figures.npz`` for a scan whose dataset ``ds`` was loaded (None: it was not) and whose model layer computed
    ``projection`` (``class_projections``; None: it did not run); None when there is nothing to draw."""
    if ds is None:
        return None
    arrays = {}
    if projection is not None:
        arrays |= _projection_arrays(ds, projection, report, seed)
    if ds.kind == "images":
        arrays |= _thumbnail_arrays(ds, report)
    if not arrays:
        return None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _projection_arrays(ds, projection: np.ndarray, report: dict, seed: int) -> dict:
    quarantined = np.zeros(len(ds.y), bool)
    quarantined[[e["index"] for e in report.get("quarantine", []) if e["index"] < len(ds.y)]] = True
    per_class = np.bincount(ds.y[quarantined], minlength=ds.n_classes)
    present = [c for c in range(ds.n_classes) if (ds.y == c).any()]
    plotted = sorted(present, key=lambda c: (-per_class[c], c))[:PLOTTED_CLASSES]
    rng = np.random.default_rng(seed)
    rows, positions = [], []
    for position, c in enumerate(plotted):
        members = np.flatnonzero(ds.y == c)
        flagged = _sample(members[quarantined[members]], POINTS_PER_CLASS // 2, rng)
        rest = _sample(members[~quarantined[members]], POINTS_PER_CLASS - len(flagged), rng)
        chosen = np.sort(np.concatenate([flagged, rest]))
        rows.append(chosen)
        positions.append(np.full(len(chosen), position, np.int64))
    rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
    return {"projection_index": rows.astype(np.int64), "projection_class": np.concatenate(positions or [np.empty(0, np.int64)]),
            "projection_xy": projection[rows], "projection_quarantined": quarantined[rows],
            "projection_classes": np.array([_text(ds.classes[c]) for c in plotted], dtype=str),
            "projection_class_sizes": np.array([(ds.y == c).sum() for c in plotted], dtype=np.int64),
            "projection_class_quarantined": per_class[plotted].astype(np.int64)}


def _sample(rows: np.ndarray, n: int, rng) -> np.ndarray:
    return np.sort(rng.choice(rows, size=n, replace=False)) if len(rows) > n else rows


def _thumbnail_arrays(ds, report: dict) -> dict:
    picks = [p for p in most_suspicious(report, THUMBNAILS) if p[0] < len(ds.y)]
    if not picks:
        return {}
    rows = np.array([index for index, _, _ in picks], dtype=np.int64)
    return {"thumbnail_pixels": _as_uint8_images(ds.x, rows), "thumbnail_index": rows,
            "thumbnail_label": np.array([_text(ds.classes[ds.y[i]]) for i in rows], dtype=str),
            "thumbnail_confidence": np.array([confidence for _, confidence, _ in picks], dtype=np.float32),
            "thumbnail_list": np.array([which for _, _, which in picks], dtype=str)}


def most_suspicious(report: dict, n: int) -> list[tuple[int, float, str]]:
    """(index, confidence, list) of the ``n`` most suspicious samples: the quarantine by confidence, then the review
    list (poisoning candidates under the threshold first, then data-quality remarks by their highest score)."""
    quarantine = sorted(report.get("quarantine", []), key=lambda e: (-e["confidence"], e["index"]))
    picks = [(e["index"], float(e["confidence"]), "quarantine") for e in quarantine[:n]]
    review = [(e["index"], _review_confidence(e), "review") for e in report.get("review", [])]
    review.sort(key=lambda p: (-(p[1] if not math.isnan(p[1]) else -1.0), p[0]))
    return picks + review[:n - len(picks)]


def _review_confidence(entry: dict) -> float:
    if entry.get("poisoning_confidence") is not None:
        return float(entry["poisoning_confidence"])
    scores = [r["score"] for r in entry.get("reasons", []) if isinstance(r.get("score"), int | float)]
    return float(max(scores)) if scores else float("nan")


def _as_uint8_images(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows as 8-bit grey (h, w) or RGB (h, w, 3) images, at most THUMBNAIL_SIDE pixels a side; float images are
    scaled by the dataset's value range (one range for all, so brightness compares across thumbnails)."""
    images = x[rows]
    if images.ndim == 4:
        images = images[..., :3] if images.shape[-1] >= 3 else images[..., 0]
    step = math.ceil(max(images.shape[1:3]) / THUMBNAIL_SIDE)
    images = images[:, ::step, ::step]
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    sample = x[:10_000]
    lo, hi = float(np.min(sample)), float(np.max(sample))
    scaled = (images.astype(np.float32) - lo) / max(hi - lo, 1e-12)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _text(label) -> str:
    return str(label)[:LABEL_CHARS]
