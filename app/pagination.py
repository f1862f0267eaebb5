"""Keyset pagination cursors, newest first: an opaque token of the last row's (created_at, id)."""

import base64
import binascii
import json
import uuid
from datetime import datetime

from app.problems import Problem


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), uuid.UUID(last_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Problem(400, "Invalid cursor", "The cursor is not one this API returned; start again without ?cursor=.") from exc
