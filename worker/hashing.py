"""SHA-256 of files and folders, as the store, the CLI and the integrity detector compute it."""

import functools
import hashlib
import mmap
import os


def sha256_file(path) -> str:
    """SHA-256 of a file; hashed once per process for the same (path, size, mtime) so a local scan,
    which names its inputs by hash before the integrity detector runs, reads a big file only once."""
    if os.path.isdir(path):
        return sha256_tree(path)
    st = os.stat(path)
    return _sha256_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


def sha256_tree(root) -> str:
    """A folder's digest: SHA-256 over its sorted 'relative path, NUL, file SHA-256' lines (links are not followed)."""
    lines = [f"{name}\0{digest}\n" for name, digest in sorted(folder_manifest(root).items())]
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def folder_manifest(root) -> dict[str, str]:
    manifest = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            manifest[rel] = "link: not hashed" if os.path.islink(path) else sha256_file(path)
    return manifest


def forget_hashes() -> None:
    """A long-lived worker re-hashes every scan: the store must be re-verified each time."""
    _sha256_cached.cache_clear()


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        if size == 0:
            return hashlib.sha256().hexdigest()
        # One update over a read-only map: no copies through Python buffers (as fast as `openssl dgst` here).
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return hashlib.sha256(mm).hexdigest()
