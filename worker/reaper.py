"""The reaper: no scan stays queued or running forever.

- running, no heartbeat for ``running_timeout_s`` (its worker died): back to queued and re-sent,
  or failed with a reason once it has been started ``max_attempts`` times;
- queued, not sent for ``queued_timeout_s``: sent again when its message may be lost (between commit and
  enqueue, a broker that lost its queue), and failed with a reason once it has waited ``queued_max_wait_s`` for
  any worker (e.g. no worker serves its queue). Where the broker tells how many messages wait in a queue, only as
  many of the oldest silent scans are re-sent as the queue is short of its queued scans: a backlog is not a loss.
  Each scan is sent at most once per timeout, however many reapers run.

A duplicate message is harmless: the claim only takes a queued scan. The reaper runs on a schedule of its own
(``Reaper``: a thread in every API process, or ``poisonscan reap``), never behind scans in a worker's queue.
"""

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.models import ScanStatus, utcnow
from app.scans import repository
from app.settings import Settings

log = logging.getLogger(__name__)
Enqueue = Callable[[str, str], None]
QueueDepth = Callable[[str], int | None]  # messages waiting in a broker queue; None when the broker cannot tell


def reap_stuck_scans(session: Session, settings: Settings, enqueue: Enqueue, now: datetime | None = None,
                     queue_depth: QueueDepth = lambda _queue: None) -> dict[str, int]:
    now = now or utcnow()
    counts = {"requeued": 0, "failed": 0}
    resend = _reap_running(session, settings, now, counts) + _reap_queued(session, settings, now, counts, queue_depth)
    session.commit()
    for scan_id, queue in resend:  # after commit, as everywhere
        try:
            enqueue(scan_id, queue)
            log.warning("reaper: re-sent scan %s to queue %s", scan_id, queue)
        except Exception as exc:  # the broker is down: the scan stays queued and is tried again one timeout later
            log.warning("reaper: could not re-send scan %s (%s); trying again later", scan_id, exc)
    counts["requeued"] = len(resend)
    return counts


def _reap_running(session, settings, now, counts) -> list[tuple[str, str]]:
    cutoff = now - timedelta(seconds=settings.running_timeout_s)
    resend = []
    for scan_id, attempts, queue, _created in repository.silent_since(session, ScanStatus.running, cutoff):
        if attempts >= settings.max_attempts:
            reason = (
                f"Gave up after {attempts} attempt(s): each time the worker stopped reporting progress for over "
                f"{settings.running_timeout_s} s (crashed, killed, or out of memory). Check the worker logs, then start a new scan."
            )
            counts["failed"] += _fail(session, scan_id, ScanStatus.running, cutoff, reason)
        elif repository.requeue_silent(session, scan_id, cutoff, now):
            resend.append((str(scan_id), queue))
    return resend


def _reap_queued(session, settings, now, counts, queue_depth: QueueDepth) -> list[tuple[str, str]]:
    cutoff = now - timedelta(seconds=settings.queued_timeout_s)
    silent = repository.silent_since(session, ScanStatus.queued, cutoff)
    missing = _missing_messages(session, {queue for _, _, queue, _ in silent}, queue_depth)
    resend = []
    for scan_id, _attempts, queue, created in silent:
        if created < now - timedelta(seconds=settings.queued_max_wait_s):
            reason = (f"No worker started this scan within {settings.queued_max_wait_s} s: check that a worker serves "
                      f"the '{queue}' queue, then start a new scan.")
            counts["failed"] += _fail(session, scan_id, ScanStatus.queued, cutoff, reason)
        elif queue in missing and missing[queue] <= 0:
            continue  # every queued scan of this queue has its message waiting: a backlog, not a loss
        elif repository.mark_sent(session, scan_id, cutoff, now):
            if queue in missing:
                missing[queue] -= 1
            resend.append((str(scan_id), queue))
    return resend


def _missing_messages(session, queues: set[str], queue_depth: QueueDepth) -> dict[str, int]:
    """Per queue the broker can count: queued scans without a waiting message (at least). Queues it cannot count
    are left out, and their silent scans are all re-sent."""
    queued = repository.queued_per_queue(session)
    missing = {}
    for queue in queues:
        depth = queue_depth(queue)
        if depth is not None:
            missing[queue] = queued.get(queue, 0) - depth
    return missing


def _fail(session: Session, scan_id, status: ScanStatus, cutoff: datetime, reason: str) -> int:
    if repository.fail_silent(session, scan_id, status, cutoff, reason):
        log.warning("reaper: failed scan %s: %s", scan_id, reason)
        return 1
    return 0


class Reaper:
    """Runs ``reap_stuck_scans`` every ``reaper_interval_s`` in a daemon thread, with its own sessions: scans in a
    worker's queue never delay it, and an error (the database down) costs one pass, not the thread."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, enqueue: Enqueue,
                 queue_depth: QueueDepth) -> None:
        self.sessions, self.settings, self.enqueue, self.queue_depth = sessions, settings, enqueue, queue_depth
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval_s):
            try:
                with self.sessions() as session:
                    counts = reap_stuck_scans(session, self.settings, self.enqueue, queue_depth=self.queue_depth)
                if any(counts.values()):
                    log.info("reaper: %s", counts)
            except Exception as exc:  # noqa: BLE001  (the next pass tries again)
                log.warning("reaper: pass failed (%s: %s); next pass in %s s", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "", self.settings.reaper_interval_s)
