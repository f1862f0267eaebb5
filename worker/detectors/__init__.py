"""Built-in detectors; importing this package registers them."""

from worker.detectors import data, formats, integrity, serialization, signing, weights  # noqa: F401
