"""Content-addressed artifact store on a local (or shared) folder.

Bytes stream into a temp file in the same folder tree while being hashed, then are renamed to
``<root>/<sha[:2]>/<sha>``: a reader never sees a half-written artifact, and the same bytes are
stored once however often they are uploaded.
"""

import hashlib
import os
import tempfile
from pathlib import Path


class UploadError(Exception):
    status = 400
    title = "Bad upload"


class EmptyUpload(UploadError):
    status = 400
    title = "Empty upload"


class UploadTooLarge(UploadError):
    status = 413
    title = "Upload too large"


class HashMismatch(UploadError):
    status = 422
    title = "SHA-256 mismatch"


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / ".incoming"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def writer(self, max_bytes: int) -> "StoreWriter":
        return StoreWriter(self, max_bytes)


class StoreWriter:
    """Hash-while-writing sink. ``write`` may be called from a worker thread; ``commit`` or ``discard`` ends it."""

    def __init__(self, store: ArtifactStore, max_bytes: int) -> None:
        self.store, self.max_bytes = store, max_bytes
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._tmp = Path(name)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise UploadTooLarge(f"The upload exceeds the limit of {self.max_bytes} bytes (POISONSCAN_MAX_UPLOAD_BYTES).")
        self._hash.update(data)
        self._file.write(data)

    def commit(self, expected_sha256: str | None = None) -> tuple[str, int, Path]:
        """Rename the bytes into place and return (sha256, size, path). Nothing is kept on error."""
        try:
            self._file.close()
            if self.size == 0:
                raise EmptyUpload("The upload has no bytes; send the file's content in the request body.")
            sha = self._hash.hexdigest()
            if expected_sha256 and expected_sha256.lower() != sha:
                raise HashMismatch(f"The uploaded bytes hash to {sha}, not to the expected {expected_sha256.lower()}; nothing was stored.")
            final = self.store.path_for(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                self._tmp.unlink()
            else:
                os.replace(self._tmp, final)
            return sha, self.size, final
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)
