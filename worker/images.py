"""PNG encoding for the images a scan produces (reconstructed trigger masks and patterns): zlib and struct only."""

import struct
import zlib

import numpy as np


def png_bytes(image: np.ndarray, lo: float = 0.0, hi: float = 1.0, *, scale: int = 1) -> bytes:
    """``image``: (H, W), (H, W, 1) or (H, W, 3) values in [lo, hi], written as 8-bit grey or RGB; each pixel becomes a
    ``scale`` x ``scale`` block so that a 28x28 trigger is visible."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"cannot write an image of shape {image.shape}; expected (H, W), (H, W, 1) or (H, W, 3)")
    a = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    pixels = np.round(a * 255).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
