"""The reaper: no scan stays queued or running forever.

A scan whose last sign of life (``heartbeat_at``) is older than its deadline is dispatched again,
or failed with a reason once it has been dispatched ``max_attempts`` times. The filesystem
transport has no visibility timeout, and a message can be lost between commit and enqueue,
so this is what guarantees progress.
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import Scan, ScanStatus, utcnow
from app.scans.state import transition
from app.settings import Settings

log = logging.getLogger(__name__)
Enqueue = Callable[[str, str], None]


def reap_stuck_scans(session: Session, settings: Settings, enqueue: Enqueue, now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    deadlines = {ScanStatus.queued: settings.queued_timeout_s, ScanStatus.running: settings.running_timeout_s}
    counts = {"requeued": 0, "failed": 0}
    for status, timeout in deadlines.items():
        stale = session.execute(
            select(Scan.id, Scan.attempts, Scan.queue).where(Scan.status == status, Scan.heartbeat_at < now - timedelta(seconds=timeout))
        ).all()
        for scan_id, attempts, queue in stale:
            still_stale = (Scan.heartbeat_at < now - timedelta(seconds=timeout),)  # a worker may have written progress since
            if attempts >= settings.max_attempts:
                reason = (
                    f"Gave up after {attempts} dispatches: the scan was {status} with no progress for over {timeout} s "
                    "(worker crashed or was killed, or no worker serves its queue). Check the worker logs, then start a new scan."
                )
                if transition(session, scan_id, ScanStatus.failed, only_from={status}, where=still_stale, error=reason, stage="failed"):
                    counts["failed"] += 1
                    log.warning("reaper: failed scan %s: %s", scan_id, reason)
                session.commit()
                continue
            if _redispatch(session, scan_id, status, attempts, still_stale, now):
                session.commit()
                enqueue(str(scan_id), queue)  # after commit, as everywhere
                counts["requeued"] += 1
                log.warning("reaper: re-enqueued scan %s (%s with no progress for over %s s; dispatch %d)", scan_id, status, timeout, attempts + 1)
            else:
                session.rollback()
    return counts


def _redispatch(session: Session, scan_id, status: ScanStatus, attempts: int, still_stale: tuple, now: datetime) -> bool:
    """Back to queued with one more attempt, if the row is still as we read it."""
    values = {"attempts": attempts + 1, "stage": "requeued", "percent": 0.0, "heartbeat_at": now}
    if status == ScanStatus.running:
        return transition(session, scan_id, ScanStatus.queued, only_from={ScanStatus.running}, where=still_stale, **values)
    # queued -> queued is not a status change, only a new dispatch
    stmt = update(Scan).where(Scan.id == scan_id, Scan.status == ScanStatus.queued, Scan.attempts == attempts, *still_stale).values(**values)
    return session.execute(stmt).rowcount == 1
