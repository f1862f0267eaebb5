"""The outbox side of webhooks: when a scan ends, one delivery row per subscribed endpoint (and one for the MLflow
registry when the scan came from a registered model version), written in the same
transaction as the status change (``app.scans.state.transition`` calls ``record_scan_ended``). The event is thus sent
only once the scan's result is committed, and is never lost to a crash between the two."""

import json
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Scan, Webhook, WebhookDelivery, utcnow
from app.integrations.mlflow_gate import model_uri_of
from app.settings import get_settings


def message_id(delivery_id: uuid.UUID) -> str:
    return f"msg_{delivery_id.hex}"


def record_scan_ended(session: Session, scan_id: uuid.UUID) -> int:
    """Queue ``scan.<status>`` for the scan's tenant's endpoints that want it, and the verdict tags of the registered
    model version it came from (if any); returns how many deliveries."""
    scan = session.get(Scan, scan_id, populate_existing=True)  # the row as the UPDATE just left it
    event_type = f"scan.{scan.status}"
    hooks = [h for h in session.scalars(select(Webhook).where(Webhook.tenant == scan.tenant)) if event_type in h.events]
    now = utcnow()
    pending = {"event_type": event_type, "scan_id": scan.id, "status": "pending", "attempts": 0, "created_at": now,
               "next_attempt_at": now}
    rows = []
    if hooks:
        body = json.dumps(_payload(scan, event_type), separators=(",", ":"))
        rows += [WebhookDelivery(target="webhook", webhook_id=h.id, body=body, **pending) for h in hooks]
    if model_uri := model_uri_of(scan.inputs or {}):
        rows.append(WebhookDelivery(target="mlflow", body=json.dumps({"model_uri": model_uri}), **pending))
    session.add_all(rows)
    return len(rows)


def _payload(scan: Scan, event_type: str) -> dict:
    base = (get_settings().public_url or "").rstrip("/") + f"/v1/scans/{scan.id}"
    links = {"scan": base}
    if scan.status == "succeeded":
        links |= {"report": f"{base}/report", "sarif": f"{base}/report.sarif", "bom": f"{base}/bom.json"}
    return {
        "type": event_type,
        "timestamp": (scan.finished_at or utcnow()).isoformat(),
        "data": {"scan_id": str(scan.id), "status": scan.status, "verdict": scan.verdict, "error": scan.error,
                 "inputs": {role: {"sha256": i.get("sha256"), "filename": i.get("filename")}
                            for role, i in (scan.inputs or {}).items()},
                 "links": links},
    }
