"""Webhooks of a tenant: register (the URL's address checked), list, read, delete, list deliveries."""

import uuid

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from app.models import Webhook, WebhookAttempt, WebhookDelivery
from app.pagination import decode_cursor, encode_cursor
from app.problems import Problem
from app.webhooks.addresses import UnsafeWebhookUrl, parse, resolve
from app.webhooks.events import message_id
from app.webhooks.schemas import AttemptOut, DeliveryOut, WebhookCreate, WebhookOut
from app.webhooks.signing import new_secret


def check_url(url: str, allow_private: bool) -> None:
    """422 for a URL poisonscan will not send to (blocking: resolves the name; call it off the event loop)."""
    try:
        resolve(parse(url), allow_private)
    except UnsafeWebhookUrl as exc:
        raise Problem(422, "Webhook URL refused", f"{exc}.") from exc


def create(session: Session, tenant: str, body: WebhookCreate, max_per_tenant: int) -> Webhook:
    count = session.scalar(select(func.count()).select_from(Webhook).where(Webhook.tenant == tenant))
    if count >= max_per_tenant:
        raise Problem(409, "Too many webhooks", f"This tenant has {count} webhooks (the limit is {max_per_tenant}); "
                      "delete one first.")
    hook = Webhook(tenant=tenant, url=body.url, description=body.description, events=sorted(set(body.events)),
                   secret=new_secret())
    session.add(hook)
    session.commit()
    return hook


def get(session: Session, tenant: str, webhook_id: uuid.UUID) -> Webhook:
    hook = session.scalar(select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant == tenant))
    if hook is None:
        raise Problem(404, "Webhook not found", f"No webhook {webhook_id} for this API key's tenant.")
    return hook


def list_all(session: Session, tenant: str) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.tenant == tenant).order_by(Webhook.created_at)))


def remove(session: Session, tenant: str, webhook_id: uuid.UUID) -> None:
    """The webhook and its deliveries, pending ones included: nothing more is sent to it."""
    hook = get(session, tenant, webhook_id)
    delivery_ids = select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook.id)
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.delete(hook)
    session.commit()


def deliveries(session: Session, tenant: str, webhook_id: uuid.UUID, status: str | None, limit: int,
               cursor: str | None) -> tuple[list[DeliveryOut], str | None]:
    hook = get(session, tenant, webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if cursor:
        created, last_id = decode_cursor(cursor)
        stmt = stmt.where(or_(WebhookDelivery.created_at < created,
                              and_(WebhookDelivery.created_at == created, WebhookDelivery.id < last_id)))
    rows = list(session.scalars(stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    rows = rows[:limit]
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {r.id: [] for r in rows}
    if rows:
        for a in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(attempts))
                                 .order_by(WebhookAttempt.id)):
            attempts[a.delivery_id].append(a)
    return [_delivery_out(r, attempts[r.id]) for r in rows], next_cursor


def _delivery_out(row: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=row.id, webhook_id=message_id(row.id), event_type=row.event_type, scan_id=row.scan_id, status=row.status,
        attempts=row.attempts, created_at=row.created_at, finished_at=row.finished_at,
        next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
        attempt_log=[AttemptOut(attempted_at=a.attempted_at, duration_ms=a.duration_ms, status_code=a.status_code,
                                error=a.error) for a in attempts])


def to_out(hook: Webhook) -> WebhookOut:
    base = f"/v1/webhooks/{hook.id}"
    return WebhookOut(id=hook.id, url=hook.url, events=hook.events, description=hook.description,
                      created_at=hook.created_at, links={"self": base, "deliveries": f"{base}/deliveries"})
