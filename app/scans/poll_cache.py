"""A short-lived, per-process memo of what polling a scan answers: (ETag, JSON body) per (tenant, scan).

Dashboards poll the same scans many times a second between them. Within ``ttl_s`` the answer is served from
memory, on the event loop, with no thread and no database round trip; when it expires, the first poll reads the
database and every poll that arrives meanwhile waits for that one read (no stampede of identical queries). A running
scan's progress is therefore at most ``ttl_s`` old (progress is written every 0.5 s or more anyway); a finished
scan never changes, so it is kept longer.
"""

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

FINISHED_TTL_FACTOR = 30  # succeeded, failed and canceled are final states
Fetch = Callable[[], tuple[str, bytes, bool]]  # blocking: (ETag, body, finished)


class PollCache:
    """Used from the event loop only (no locks needed)."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: OrderedDict[tuple[str, uuid.UUID], tuple[float, str, bytes]] = OrderedDict()
        self._reading: dict[tuple[str, uuid.UUID], asyncio.Future] = {}

    async def answer(self, tenant: str, scan_id: uuid.UUID, fetch: Fetch) -> tuple[str, bytes]:
        key = (tenant, scan_id)
        entry = self._entries.get(key)
        if entry is not None and entry[0] >= time.monotonic():
            return entry[1], entry[2]
        if key in self._reading:
            etag, body, _ = await asyncio.shield(self._reading[key])
            return etag, body
        reading = asyncio.ensure_future(run_in_threadpool(fetch))
        self._reading[key] = reading
        try:
            etag, body, finished = await asyncio.shield(reading)
        finally:
            self._reading.pop(key, None)
        self._remember(key, etag, body, finished)
        return etag, body

    def _remember(self, key, etag: str, body: bytes, finished: bool) -> None:
        if self.ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic() + self.ttl_s * (FINISHED_TTL_FACTOR if finished else 1), etag, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, tenant: str, scan_id: uuid.UUID) -> None:
        """After a change made through this process (a cancel): its next poll reads the database."""
        self._entries.pop((tenant, scan_id), None)
