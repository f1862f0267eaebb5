"""Static inspection of artifacts, one module per format: parse bytes, never load; return findings.

Nothing here imports a detector, Celery, the database or TensorFlow. Detectors (``worker.detectors``) ask this
package what a file holds; ``worker.inspect.formats`` identifies the kind from content alone.

The interface is small: ``structure_check(kind)`` gives the per-format check (``path -> list[Finding]``) of a
kind, and ``archives.Walker`` finds every pickle stream through every container layer.
"""

from collections.abc import Callable
from pathlib import Path

from worker.findings import Finding

StructureCheck = Callable[[Path], list[Finding]]


def structure_check(kind: str) -> StructureCheck | None:
    """The static structure check for a content kind, or None when the kind has no structure of its own to check."""
    # imported on use: h5py/onnx are not needed by the API
    from worker.inspect import gguf, jinja, keras, onnx, safetensors, savedmodel, yaml_tags

    return {"safetensors": safetensors.check_safetensors, "keras": keras.check_keras_archive,
            "hdf5": keras.check_keras_h5, "onnx": onnx.check_onnx, "savedmodel": savedmodel.check_savedmodel,
            "gguf": gguf.check_gguf, "jinja": jinja.check_jinja_file, "hf_json": jinja.check_hf_json,
            "yaml": yaml_tags.check_yaml}.get(kind)
