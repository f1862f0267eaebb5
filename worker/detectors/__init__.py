"""Built-in detectors; importing this package registers them."""

from worker.detectors import formats, integrity, serialization, signing, weights  # noqa: F401
