"""A short-lived, per-process memo of what polling a scan answers: (ETag, JSON body or None when only the ETag was
read) per (tenant, scan).

Dashboards poll the same scans many times a second between them; within ``ttl_s`` the answer is served from memory,
on the event loop, with no thread and no database round trip. A running scan's progress is therefore at most
``ttl_s`` old (progress is written every 0.5 s or more anyway); a finished scan never changes, so it is kept longer.
"""

import threading
import time
import uuid
from collections import OrderedDict

FINISHED_TTL_FACTOR = 30  # succeeded, failed and canceled are final states


class PollCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: OrderedDict[tuple[str, uuid.UUID], tuple[float, str, bytes | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str, scan_id: uuid.UUID) -> tuple[str, bytes | None] | None:
        if self.ttl_s <= 0:
            return None
        with self._lock:
            entry = self._entries.get((tenant, scan_id))
            if entry is None or entry[0] < time.monotonic():
                return None
            return entry[1], entry[2]

    def put(self, tenant: str, scan_id: uuid.UUID, etag: str, body: bytes | None, finished: bool) -> None:
        if self.ttl_s <= 0:
            return
        expires = time.monotonic() + self.ttl_s * (FINISHED_TTL_FACTOR if finished else 1)
        with self._lock:
            self._entries[(tenant, scan_id)] = (expires, etag, body)
            self._entries.move_to_end((tenant, scan_id))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, tenant: str, scan_id: uuid.UUID) -> None:
        """After a change made through this process (a cancel): its next poll reads the database."""
        with self._lock:
            self._entries.pop((tenant, scan_id), None)
