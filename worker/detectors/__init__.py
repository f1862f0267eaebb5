"""Built-in detectors; importing this package registers them."""

from worker.detectors import formats, integrity  # noqa: F401
