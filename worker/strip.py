"""STRIP (Gao et al., ACSAC 2019): an input carrying a trigger keeps its prediction when other images are laid over
it, so the entropy of the predictions over superimposed copies is low. Used to confirm the samples the model layer
flags: a poisoned training sample that really holds the backdoor's trigger has low STRIP entropy on this model."""

from collections.abc import Callable

import numpy as np

FALSE_REJECTION = 0.01  # the paper's operating point: 1% of clean inputs fall under the threshold


def strip_entropy(predict_proba: Callable[[np.ndarray], np.ndarray], x: np.ndarray, overlays: np.ndarray, lo: float,
                  hi: float, *, copies: int = 16, seed: int = 0) -> np.ndarray:
    """Mean prediction entropy (bits) of each input of ``x`` superimposed (added, saturating) on ``copies`` random
    clean ``overlays``."""
    rng = np.random.default_rng(seed)
    entropy = np.zeros(len(x))
    for start in range(0, len(x), 64):
        chunk = x[start:start + 64]
        picks = overlays[rng.integers(0, len(overlays), (len(chunk), copies))]
        blended = np.clip(chunk[:, None] + picks, lo, hi).reshape(-1, *x.shape[1:]).astype(np.float32)
        p = np.clip(predict_proba(blended), 1e-12, 1.0)
        h = -(p * np.log2(p)).sum(axis=1).reshape(len(chunk), copies)
        entropy[start:start + len(chunk)] = h.mean(axis=1)
    return entropy


def threshold(clean_entropy: np.ndarray) -> float:
    """The entropy under which an input counts as triggered: the 1% quantile of clean inputs' entropies."""
    return float(np.quantile(clean_entropy, FALSE_REJECTION))
