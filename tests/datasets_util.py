"""Small learnable datasets for service tests: well-separated classes, so a clean set gets a clean verdict."""

import numpy as np


def blobs(n: int = 60, classes: int = 3, dims: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centers = np.eye(classes, dims) * 10.0
    return (centers[y] + rng.normal(size=(n, dims))).astype(np.float32), y
