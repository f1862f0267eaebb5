"""Built-in detectors; importing this package registers them."""

from worker.detectors import data, formats, integrity, model, serialization, signing, weights  # noqa: F401
