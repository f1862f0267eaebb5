"""Scan rows as the worker and the reaper change them: claim, progress, result, failure, re-queue, re-send.

Every status change goes through ``app.scans.state.transition`` (a conditional UPDATE): two workers, a worker and a
cancel request, or a worker and the reaper can race, and exactly one wins. Callers own the session and commit.
"""

import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.artifacts.store import ArtifactStore
from app.models import Artifact, Finding, Report, Scan, ScanStatus, utcnow
from app.scans.state import transition
from worker.inspect.formats import sniff


def claim(session: Session, scan_id: uuid.UUID) -> Scan | None:
    """Take a queued scan for this worker: running, attempt counted. None when it is not queued (a duplicate
    delivery, canceled, done)."""
    if not transition(session, scan_id, ScanStatus.running, only_from={ScanStatus.queued}, started_at=utcnow(),
                      stage="starting", percent=0.0, attempts=Scan.attempts + 1):
        return None
    return session.get(Scan, scan_id)


def record_progress(session: Session, scan_id: uuid.UUID, stage: str, percent: float) -> bool:
    """Stage, percent and heartbeat of a running scan; False when it is no longer running (canceled, re-queued)."""
    stmt = (update(Scan).where(Scan.id == scan_id, Scan.status == ScanStatus.running)
            .values(stage=stage[:64], percent=min(max(percent, 0.0), 100.0), heartbeat_at=utcnow()))
    return session.execute(stmt).rowcount == 1


def requeue_interrupted(session: Session, scan_id: uuid.UUID) -> bool:
    """A running scan whose worker lost the database mid-scan goes back to queued, to run again."""
    return transition(session, scan_id, ScanStatus.queued, only_from={ScanStatus.running}, stage="requeued", percent=0.0)


def fail_running(session: Session, scan_id: uuid.UUID, reason: str) -> bool:
    return transition(session, scan_id, ScanStatus.failed, only_from={ScanStatus.running}, error=reason, stage="failed")


def store_result(session: Session, scan_id: uuid.UUID, report: dict, schema_version: str, tenant: str | None,
                 store: ArtifactStore | None) -> bool:
    """Succeeded, with its findings, report and produced files, in the caller's transaction; False (nothing
    written) when the scan is no longer running."""
    if not transition(session, scan_id, ScanStatus.succeeded, only_from={ScanStatus.running}, verdict=report["verdict"],
                      stage="done", percent=100.0):
        return False
    if report.get("outputs") and store is not None:
        publish_outputs(session, store, tenant, report["outputs"])
    session.add(Report(scan_id=scan_id, schema_version=schema_version, body=report))
    session.add_all(
        Finding(scan_id=scan_id, detector=f["detector"], layer=f["layer"], technique=f["technique"], severity=f["severity"],
                score=float(f["score"]), title=f["title"][:300], explanation=f["explanation"], evidence=f["evidence"])
        for d in report["detectors"] for f in d["findings"]
    )
    return True


def publish_outputs(session: Session, store: ArtifactStore, tenant: str, outputs: list[dict]) -> None:
    """Move each produced file into the artifact store and register it for the tenant; the report entry gets the
    artifact id and its download link in place of the worker's local path. (A file moved into the store without
    its row, should the transaction roll back, is invisible, and the next store of the same bytes reuses it.)"""
    for entry in outputs:
        path = Path(entry.pop("path"))
        sha = entry["sha256"]
        target = store.path_for(sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            path.unlink(missing_ok=True)
        else:
            os.replace(path, target)
        if session.get(Artifact, (tenant, sha)) is None:
            try:
                with session.begin_nested():  # a savepoint: a concurrent scan may register the same bytes first
                    session.add(Artifact(tenant=tenant, sha256=sha, size=entry["size"], filename=entry["name"],
                                         kind=sniff(target, entry["name"])))
            except IntegrityError:
                pass  # the row exists now, which is all we need
        entry |= {"artifact": sha, "href": f"/v1/artifacts/{sha}/content"}


# ------------------------------------------------------------------------------------------------ the reaper's

def silent_since(session: Session, status: ScanStatus, cutoff: datetime) -> list:
    """(id, attempts, queue, created_at) of the scans in ``status`` whose heartbeat (running: last progress; queued:
    last sent) is older than ``cutoff``, oldest first."""
    stmt = (select(Scan.id, Scan.attempts, Scan.queue, Scan.created_at)
            .where(Scan.status == status, Scan.heartbeat_at < cutoff).order_by(Scan.heartbeat_at))
    return session.execute(stmt).all()


def queued_per_queue(session: Session) -> dict[str, int]:
    rows = session.execute(select(Scan.queue, func.count()).where(Scan.status == ScanStatus.queued).group_by(Scan.queue))
    return dict(rows.all())


def requeue_silent(session: Session, scan_id: uuid.UUID, cutoff: datetime, now: datetime) -> bool:
    """A running scan whose worker stopped reporting goes back to queued (if it is still silent)."""
    return transition(session, scan_id, ScanStatus.queued, only_from={ScanStatus.running},
                      where=(Scan.heartbeat_at < cutoff,), stage="requeued", percent=0.0, heartbeat_at=now)


def fail_silent(session: Session, scan_id: uuid.UUID, status: ScanStatus, cutoff: datetime, reason: str) -> bool:
    return transition(session, scan_id, ScanStatus.failed, only_from={status}, where=(Scan.heartbeat_at < cutoff,),
                      error=reason, stage="failed")


def mark_sent(session: Session, scan_id: uuid.UUID, cutoff: datetime, now: datetime) -> bool:
    """Note that a queued scan's message goes out now; False when another reaper did it since ``cutoff`` (so each
    scan is sent at most once per timeout, however many reapers run)."""
    stmt = (update(Scan).where(Scan.id == scan_id, Scan.status == ScanStatus.queued, Scan.heartbeat_at < cutoff)
            .values(heartbeat_at=now))
    return session.execute(stmt).rowcount == 1


def mark_unsent(session: Session, scan_id: uuid.UUID, queued_timeout_s: float) -> None:
    """The broker refused or did not answer the first publish: date the scan's last sending one timeout back, so the
    reaper's next pass sends it instead of waiting a whole timeout."""
    session.execute(update(Scan).where(Scan.id == scan_id, Scan.status == ScanStatus.queued)
                    .values(heartbeat_at=utcnow() - timedelta(seconds=queued_timeout_s + 1)))
