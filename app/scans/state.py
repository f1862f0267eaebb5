"""The scan state machine: one table of allowed transitions, one function that applies it.

Every status change is a conditional UPDATE (``WHERE status IN (allowed sources)``), so two
workers, or a worker and a cancel request, can race and exactly one wins. A move to a terminal status also writes
the scan's webhook events (an outbox) in the same transaction.
"""

import uuid

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.models import Scan, ScanStatus, utcnow
from app.webhooks.events import record_scan_ended

Q, R, S, F, C = ScanStatus.queued, ScanStatus.running, ScanStatus.succeeded, ScanStatus.failed, ScanStatus.canceled

TRANSITIONS: dict[ScanStatus, frozenset[ScanStatus]] = {
    Q: frozenset({R, C, F}),  # claimed; canceled; failed by the reaper after too many dispatches
    R: frozenset({S, F, C, Q}),  # finished; failed; canceled; re-queued by the reaper when its worker died
    S: frozenset(),
    F: frozenset(),
    C: frozenset(),
}
TERMINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


def sources_for(target: ScanStatus) -> list[str]:
    return [str(s) for s, targets in TRANSITIONS.items() if target in targets]


def transition(
    session: Session, scan_id: uuid.UUID, target: ScanStatus, *, only_from: set[ScanStatus] | None = None, where: tuple = (), **values
) -> bool:
    """Move the scan to ``target`` if its current status allows it. Returns whether it moved.

    ``only_from`` narrows the allowed sources (e.g. a claim only takes ``queued``); ``where`` adds
    conditions (e.g. "still stale"). The caller commits.
    """
    allowed = sources_for(target)
    if only_from is not None:
        illegal = {str(s) for s in only_from} - set(allowed)
        if illegal:
            raise ValueError(f"transition {illegal} -> {target} is not in the table")
        allowed = [str(s) for s in only_from]
    values.setdefault("heartbeat_at", utcnow())
    if target in TERMINAL:
        values.setdefault("finished_at", utcnow())
    stmt = update(Scan).where(Scan.id == scan_id, Scan.status.in_(allowed), *where).values(status=str(target), **values)
    moved = session.execute(stmt).rowcount == 1
    if moved and target in TERMINAL:
        record_scan_ended(session, scan_id)  # the webhook outbox, in the transaction that ends the scan
    return moved
