"""Built-in detectors; importing this package registers them."""

from worker.detectors import data, formats, integrity, model, serialization, signing, structure, text  # noqa: F401
from worker.detectors import assessment  # noqa: F401  (after model: it reuses the model layer's analysis)
