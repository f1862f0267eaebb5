"""Artifact filenames as clients send them: any Unicode name is kept exactly; control characters are refused."""

import unicodedata

from app.artifacts.store import UploadError

MAX_NAME_CHARS = 255


class InvalidName(UploadError):
    status = 422
    title = "Invalid filename"


def checked_filename(name: str | None) -> str | None:
    """The name without any directory part (a client may send a whole path), or None when there is none. A NUL or
    other control character is refused: it truncates names in C libraries, PostgreSQL cannot store it, and it can
    forge lines in logs and reports."""
    if not name:
        return None
    bad = sorted({f"U+{ord(ch):04X}" for ch in name if unicodedata.category(ch) == "Cc"})
    if bad:
        raise InvalidName(f"the filename contains control characters ({', '.join(bad)}); rename the file")
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if len(base) > MAX_NAME_CHARS:
        raise InvalidName(f"the filename is {len(base)} characters long; at most {MAX_NAME_CHARS} are kept")
    return base or None


def decode_header_param(raw: bytes) -> str:
    """A multipart header parameter's bytes (a field name, a filename): UTF-8, as browsers and HTTP libraries send it (RFC 7578 4.2), else
    Latin-1 for legacy clients; never a replacement character."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
