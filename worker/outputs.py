"""Files a scan produces (reconstructed triggers, the cleaned dataset, the retrained model).

Detectors write them through an ``OutputSink`` into a folder and refer to them by name in their evidence; the report
lists them under ``outputs``. The worker then stores each one as an artifact of the scan's tenant (downloadable from
``/v1/artifacts/{sha256}/content``, and scannable again); a local scan leaves them in its output folder.
"""

import hashlib
import io
import re
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


class OutputSink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: list[dict] = []

    def add(self, name: str, data: bytes, *, media_type: str, description: str) -> str:
        """Write ``data`` as ``name`` (a plain file name, unique in the scan) and return the name."""
        path = self.reserve(name)
        path.write_bytes(data)
        return self.register(name, media_type=media_type, description=description)

    def reserve(self, name: str) -> Path:
        """The path to write ``name`` to (for writers that want a path, e.g. Keras); call ``register`` after."""
        if not _NAME.match(name) or any(e["name"] == name for e in self.entries):
            raise ValueError(f"bad or duplicate output name {name!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / name

    def register(self, name: str, *, media_type: str, description: str) -> str:
        path = self.folder / name
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        self.entries.append({"name": name, "media_type": media_type, "description": description,
                             "size": path.stat().st_size, "sha256": digest.hexdigest(), "path": str(path)})
        return name


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Arrays as an uncompressed .npz in memory (readable with ``allow_pickle=False``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
