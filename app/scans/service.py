"""Scans: create (commit, then enqueue), read, list, cancel, report."""

import hashlib
import logging
import uuid
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.pagination import decode_cursor, encode_cursor
from app.models import Artifact, Report, Scan, ScanStatus, utcnow
from app.problems import Problem
from app.scans import repository
from app.scans.schemas import ScanOut, Timings
from app.scans.state import TERMINAL, transition
from worker.inspect.formats import wrong_kind_for_role
from worker.options import ScanOptions
from worker.catalog import default_registry

log = logging.getLogger(__name__)


def resolve_inputs(session: Session, tenant: str, refs: dict[str, str | None]) -> dict[str, Artifact]:
    """Look up the referenced artifacts for this tenant and check each is the right kind for its role."""
    if not (refs.get("model") or refs.get("dataset")):
        raise Problem(422, "Nothing to scan", "Give a model, a dataset, or both (artifact ids from POST /v1/artifacts).")
    found = {}
    for role, sha in refs.items():
        if not sha:
            continue
        row = artifacts.get(session, tenant, sha)
        if row is None:
            raise Problem(422, "Unknown artifact", f"The {role} artifact {sha} does not exist for this API key's tenant; upload it first.")
        if why := wrong_kind_for_role(role, row.kind):
            raise Problem(422, f"Wrong kind of {role}", f"Artifact {sha} {why}.")
        found[role] = row
    return found


def with_tenant_defaults(options: ScanOptions, tenant_config: dict[str, dict]) -> ScanOptions:
    """The tenant's detector_config under the scan's own: scalar settings of the scan win, lists are joined (a tenant's
    allowlist of pickle globals stays in force when a scan adds entries of its own)."""
    if not tenant_config:
        return options
    merged = {name: dict(settings) for name, settings in tenant_config.items()}
    for name, settings in options.detector_config.items():
        for key, value in settings.items():
            base = merged.setdefault(name, {}).get(key)
            merged[name][key] = sorted(set(base) | set(value)) if isinstance(base, list) and isinstance(value, list) else value
    try:
        return options.model_copy(update={"detector_config": ScanOptions(detector_config=merged).detector_config})
    except ValueError as exc:
        raise Problem(422, "Invalid detector settings", f"With this tenant's defaults the detector settings are invalid: {exc}") from exc


def create_scan(session: Session, tenant: str, found: dict[str, Artifact], options: ScanOptions,
                max_active: int | None = None, model_source: str | None = None) -> Scan:
    """``model_source``: where the server itself fetched the model from (an MLflow model version, which the worker
    tags with the verdict); recorded in the model's input."""
    if max_active is not None:
        _check_active_limit(session, tenant, max_active)
    inputs = {role: {"sha256": a.sha256, "filename": a.filename, "kind": a.kind, "size": a.size} for role, a in found.items()}
    if model_source is not None:
        inputs["model"]["source"] = model_source
    queue = default_registry().queue_for(set(found), options.detectors)  # roles present decide the detectors
    scan = Scan(
        tenant=tenant, status=ScanStatus.queued, queue=queue, stage="queued", percent=0.0, attempts=0,
        inputs=inputs, options=options.model_dump(mode="json"),
    )
    session.add(scan)
    session.commit()  # commit first: a worker must never receive a job whose row it cannot see
    return scan


def _check_active_limit(session: Session, tenant: str, max_active: int) -> None:
    """One tenant's backlog must not starve the others: refuse a new scan while it has ``max_active`` queued or
    running. (Two requests racing may both pass; the limit is a bound on a flood, not an exact quota.)"""
    active = session.scalar(select(func.count()).select_from(Scan).where(
        Scan.tenant == tenant, Scan.status.in_([ScanStatus.queued, ScanStatus.running])))
    if active >= max_active:
        raise Problem(429, "Too many active scans", f"This tenant has {active} scans queued or running (the limit is "
                      f"{max_active}); wait for some to finish, or cancel some.", headers={"Retry-After": "30"})


def mark_unsent(session: Session, scan_id: uuid.UUID, queued_timeout_s: float) -> None:
    repository.mark_unsent(session, scan_id, queued_timeout_s)
    session.commit()


def get_scan(session: Session, tenant: str, scan_id: uuid.UUID) -> Scan:
    scan = session.scalar(select(Scan).where(Scan.id == scan_id, Scan.tenant == tenant))
    if scan is None:
        raise Problem(404, "Scan not found", f"No scan {scan_id} for this API key's tenant.")
    return scan


# What a poller sees change. Every change of a scan moves its heartbeat, so these cover them all.
_VERSION_COLUMNS = (Scan.status, Scan.stage, Scan.percent, Scan.attempts, Scan.verdict, Scan.heartbeat_at, Scan.finished_at)


def poll_scan(sessions, tenant: str, scan_id: uuid.UUID) -> tuple[str, bytes, bool]:
    """(ETag, the scan as JSON, whether it is finished), in a session of its own (for the poll memo's thread)."""
    with sessions() as session:
        scan = get_scan(session, tenant, scan_id)
        return etag_of(scan), to_out(scan).model_dump_json().encode(), scan.status in TERMINAL


def etags(if_none_match: str) -> set[str]:
    return {t.strip() for t in if_none_match.split(",")}


def etag_of(scan: Scan) -> str:
    """A weak ETag of what a poller sees change."""
    values = (getattr(scan, c.key) for c in _VERSION_COLUMNS)
    raw = "|".join(v.isoformat() if isinstance(v, datetime) else str(v) for v in values)
    return f'W/"{hashlib.sha256(raw.encode()).hexdigest()[:20]}"'


def list_scans(session: Session, tenant: str, status: str | None, verdict: str | None, limit: int, cursor: str | None) -> tuple[list[Scan], str | None]:
    stmt = select(Scan).where(Scan.tenant == tenant)
    if status:
        stmt = stmt.where(Scan.status == status)
    if verdict:
        stmt = stmt.where(Scan.verdict == verdict)
    if cursor:
        created, last_id = decode_cursor(cursor)
        stmt = stmt.where(or_(Scan.created_at < created, and_(Scan.created_at == created, Scan.id < last_id)))
    rows = list(session.scalars(stmt.order_by(Scan.created_at.desc(), Scan.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


def cancel_scan(session: Session, tenant: str, scan_id: uuid.UUID) -> Scan:
    scan = get_scan(session, tenant, scan_id)
    if not transition(session, scan.id, ScanStatus.canceled, stage="canceled", error="canceled by the user"):
        session.rollback()
        session.refresh(scan)
        raise Problem(409, "Scan already finished", f"Scan {scan_id} is {scan.status}; only queued or running scans can be canceled.")
    session.commit()
    session.refresh(scan)
    return scan


def get_report(session: Session, tenant: str, scan_id: uuid.UUID) -> dict:
    scan = get_scan(session, tenant, scan_id)
    if scan.status != ScanStatus.succeeded:
        why = f" ({scan.error})" if scan.error else ""
        hint = "poll GET /v1/scans/{id} until it has succeeded" if scan.status not in TERMINAL else "it ended without a report"
        raise Problem(409, "Report not available", f"Scan {scan_id} is {scan.status}{why}; {hint}.", scan_status=scan.status)
    report = session.get(Report, scan.id)
    return report.body


def get_quarantine(session: Session, tenant: str, scan_id: uuid.UUID) -> dict:
    report = get_report(session, tenant, scan_id)
    items = report.get("quarantine", [])
    return {"scan_id": str(scan_id), "count": len(items), "min_confidence": report.get("quarantine_min_confidence"),
            "items": items}


def get_review(session: Session, tenant: str, scan_id: uuid.UUID) -> dict:
    report = get_report(session, tenant, scan_id)
    items = report.get("review", [])
    return {"scan_id": str(scan_id), "count": len(items), "items": items}


def to_out(scan: Scan) -> ScanOut:
    end = scan.finished_at or (utcnow() if scan.status == ScanStatus.running else None)
    timings = Timings(
        created_at=scan.created_at, started_at=scan.started_at, finished_at=scan.finished_at, last_progress_at=scan.heartbeat_at,
        queued_s=(scan.started_at - scan.created_at).total_seconds() if scan.started_at else None,
        run_s=(end - scan.started_at).total_seconds() if scan.started_at and end else None,
    )
    base = f"/v1/scans/{scan.id}"
    return ScanOut(
        id=scan.id, status=scan.status, stage=scan.stage, percent=round(scan.percent, 1), attempts=scan.attempts, queue=scan.queue,
        verdict=scan.verdict, error=scan.error, inputs=scan.inputs, options=scan.options, timings=timings,
        links={"self": base, "report": f"{base}/report", "sarif": f"{base}/report.sarif", "html": f"{base}/report.html",
               "bom": f"{base}/bom.json",
               "quarantine": f"{base}/quarantine", "review": f"{base}/review",
               "cancel": f"{base}/cancel"},
    )
