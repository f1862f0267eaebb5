"""Delivery rows as the dispatcher changes them: claim the due ones, record each attempt. Callers commit.

A claim is a conditional UPDATE of the lease, so several dispatchers (one per worker) share the outbox and each
delivery is attempted by one of them at a time.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.models import Report, Scan, Webhook, WebhookAttempt, WebhookDelivery


@dataclass(frozen=True)
class Due:
    delivery_id: uuid.UUID
    target: str  # webhook | mlflow
    webhook_id: uuid.UUID | None
    scan_id: uuid.UUID
    url: str | None  # the webhook's
    secret: str | None
    body: str
    attempts: int
    created_at: datetime


def claim_due(session: Session, now: datetime, lease_s: float, limit: int,
              busy_webhooks: set[uuid.UUID] = frozenset()) -> list[Due]:
    """Lease up to ``limit`` due deliveries, none to the endpoints in ``busy_webhooks`` (those that already hold as
    many attempts as one endpoint may: a slow receiver must not take every sender)."""
    stmt = (select(WebhookDelivery.id, WebhookDelivery.target, WebhookDelivery.webhook_id, WebhookDelivery.scan_id,
                   Webhook.url, Webhook.secret,
                   WebhookDelivery.body, WebhookDelivery.attempts, WebhookDelivery.created_at)
            .outerjoin(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                   or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    if busy_webhooks:
        stmt = stmt.where(or_(WebhookDelivery.webhook_id.is_(None), WebhookDelivery.webhook_id.not_in(busy_webhooks)))
    claimed = []
    for row in session.execute(stmt).all():
        took = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == row.id, WebhookDelivery.status == "pending",
                   or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now))
            .values(leased_until=now + timedelta(seconds=lease_s))).rowcount == 1
        if took:
            claimed.append(Due(row.id, row.target, row.webhook_id, row.scan_id, row.url, row.secret, row.body,
                               row.attempts, row.created_at))
    return claimed


def record_attempt(session: Session, delivery_id: uuid.UUID, *, at: datetime, duration_ms: float, status_code: int | None,
                   error: str | None, outcome: str, next_attempt_at: datetime | None) -> bool:
    """``outcome``: delivered, failed (gave up) or pending (``next_attempt_at`` set). False when the delivery is gone
    (its webhook was deleted meanwhile): nothing is written."""
    values = {"attempts": WebhookDelivery.attempts + 1, "status": outcome, "leased_until": None}
    if outcome == "pending":
        values["next_attempt_at"] = next_attempt_at
    else:
        values["finished_at"] = at
    if session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)).rowcount != 1:
        return False
    session.add(WebhookAttempt(delivery_id=delivery_id, attempted_at=at, duration_ms=round(duration_ms, 1),
                               status_code=status_code, error=error[:300] if error else None))
    return True


def retry_now(session: Session, webhook_id: uuid.UUID, now: datetime) -> int:
    """The endpoint answered again: its deliveries waiting out a backoff go now, not up to an hour later."""
    stmt = (update(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == "pending",
                   WebhookDelivery.next_attempt_at > now)
            .values(next_attempt_at=now))
    return session.execute(stmt).rowcount


def scan_outcome(session: Session, scan_id: uuid.UUID) -> tuple[Scan, str]:
    """The ended scan and its verdict's reason (the report's, or why the scan did not finish)."""
    scan = session.get(Scan, scan_id)
    report = session.get(Report, scan_id) if scan.status == "succeeded" else None
    reason = (report.body.get("verdict_reason") or "") if report else f"the scan {scan.status}: {scan.error or 'no reason given'}"
    return scan, reason
