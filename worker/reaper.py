"""The reaper: no scan stays queued or running forever.

- running, no heartbeat for ``running_timeout_s`` (its worker died): back to queued and re-sent,
  or failed with a reason once it has been started ``max_attempts`` times;
- queued for ``queued_timeout_s`` since it was last sent: sent again (the message may have been
  lost between commit and enqueue, or with a filesystem broker), and failed with a reason once it
  has waited ``queued_max_wait_s`` for any worker (e.g. no worker serves its queue).

A duplicate message is harmless: the claim only takes a queued scan.
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
    counts = {"requeued": 0, "failed": 0}
    resend: list[tuple[str, str]] = []
    for scan_id, attempts, queue in _stale(session, ScanStatus.running, settings.running_timeout_s, now):
        still_stale = (Scan.heartbeat_at < now - timedelta(seconds=settings.running_timeout_s),)  # it may have moved since
        if attempts >= settings.max_attempts:
            reason = (
                f"Gave up after {attempts} attempt(s): each time the worker stopped reporting progress for over "
                f"{settings.running_timeout_s} s (crashed, killed, or out of memory). Check the worker logs, then start a new scan."
            )
            counts["failed"] += _fail(session, scan_id, ScanStatus.running, still_stale, reason)
        elif transition(session, scan_id, ScanStatus.queued, only_from={ScanStatus.running}, where=still_stale, stage="requeued", percent=0.0, heartbeat_at=now):
            resend.append((str(scan_id), queue))
    for scan_id, _attempts, queue, created in _stale(session, ScanStatus.queued, settings.queued_timeout_s, now, with_created=True):
        still_stale = (Scan.heartbeat_at < now - timedelta(seconds=settings.queued_timeout_s),)
        if created < now - timedelta(seconds=settings.queued_max_wait_s):
            reason = f"No worker started this scan within {settings.queued_max_wait_s} s: check that a worker serves the '{queue}' queue, then start a new scan."
            counts["failed"] += _fail(session, scan_id, ScanStatus.queued, still_stale, reason)
        elif session.execute(update(Scan).where(Scan.id == scan_id, Scan.status == ScanStatus.queued, *still_stale).values(heartbeat_at=now)).rowcount:
            resend.append((str(scan_id), queue))
    session.commit()
    for scan_id, queue in resend:  # after commit, as everywhere
        enqueue(scan_id, queue)
        log.warning("reaper: re-sent scan %s to queue %s", scan_id, queue)
    counts["requeued"] = len(resend)
    return counts


def _stale(session: Session, status: ScanStatus, timeout_s: int, now: datetime, with_created: bool = False):
    columns = [Scan.id, Scan.attempts, Scan.queue] + ([Scan.created_at] if with_created else [])
    return session.execute(select(*columns).where(Scan.status == status, Scan.heartbeat_at < now - timedelta(seconds=timeout_s))).all()


def _fail(session: Session, scan_id, status: ScanStatus, still_stale: tuple, reason: str) -> int:
    if transition(session, scan_id, ScanStatus.failed, only_from={status}, where=still_stale, error=reason, stage="failed"):
        log.warning("reaper: failed scan %s: %s", scan_id, reason)
        return 1
    return 0
