"""Robust statistics shared by the decision rules that judge one class (or class pair) against all the others."""

import numpy as np

MAD_SCALE = 1.4826  # the MAD of a normal distribution is 0.6745 sigma
OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut-off for modified z-scores (the MAD rule Neural Cleanse applies to norms)


def centre_and_spread(values: np.ndarray) -> tuple[float, float]:
    """Median and normal-consistent MAD of ``values``: the centre and scale of a modified z-score. Callers floor the
    spread at what their statistic's own noise allows (it is 0 when half the values are equal)."""
    values = np.asarray(values, dtype=np.float64)
    centre = float(np.median(values))
    return centre, MAD_SCALE * float(np.median(np.abs(values - centre)))
