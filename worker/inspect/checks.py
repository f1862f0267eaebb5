"""The static structure check of each content kind: one module per format, one entry each here."""

from collections.abc import Callable
from pathlib import Path

from worker.findings import Finding

StructureCheck = Callable[[Path], list[Finding]]


def structure_check(kind: str) -> StructureCheck | None:
    """The static structure check for a content kind, or None when the kind has no structure of its own to check."""
    # imported on use: h5py/onnx are not needed by the API
    from worker.inspect import (
        gguf,
        jinja,
        keras,
        onnx,
        safetensors,
        savedmodel,
        yaml_tags,
    )

    return {"safetensors": safetensors.check_safetensors, "keras": keras.check_keras_archive,
            "hdf5": keras.check_keras_h5, "onnx": onnx.check_onnx, "savedmodel": savedmodel.check_savedmodel,
            "gguf": gguf.check_gguf, "jinja": jinja.check_jinja_file, "hf_json": jinja.check_hf_json,
            "yaml": yaml_tags.check_yaml}.get(kind)
