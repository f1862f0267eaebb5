"""Run one scan job against the database: claim, run the pipeline, store the result.

The Celery task is a thin wrapper around ``execute_scan``; tests call it directly too.
"""

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts.store import ArtifactStore
from app.models import Artifact, Finding, Report, Scan, ScanStatus, utcnow
from app.scans.state import transition
from app.settings import Settings
from worker.findings import InputFile, InputRejected, ScanInputs
from worker.hashing import forget_hashes
from worker.inspect.formats import sniff
from worker.options import ScanOptions
from worker.pipeline import REPORT_SCHEMA_VERSION, PipelineStopped, run_pipeline

log = logging.getLogger(__name__)


class ScanStopped(PipelineStopped):
    """The scan left ``running`` under us (canceled, or re-queued by the reaper): stop quietly."""


class InputMissing(Exception):
    pass


class ProgressWriter:
    """Writes (stage, percent) and the heartbeat; raises ScanStopped if the scan is no longer ours."""

    def __init__(self, sessions: sessionmaker[Session], scan_id: uuid.UUID, min_interval_s: float = 0.5) -> None:
        self.sessions, self.scan_id, self.min_interval_s = sessions, scan_id, min_interval_s
        self._last_stage, self._last_write = None, 0.0

    def __call__(self, stage: str, percent: float) -> None:
        now = time.monotonic()
        if stage == self._last_stage and now - self._last_write < self.min_interval_s:
            return
        with self.sessions() as session:
            stmt = (
                update(Scan)
                .where(Scan.id == self.scan_id, Scan.status == ScanStatus.running)
                .values(stage=stage[:64], percent=min(max(percent, 0.0), 100.0), heartbeat_at=utcnow())
            )
            moved = session.execute(stmt).rowcount
            session.commit()
        if not moved:
            raise ScanStopped(f"scan {self.scan_id} is no longer running")
        self._last_stage, self._last_write = stage, now


def execute_scan(scan_id: uuid.UUID, sessions: sessionmaker[Session], settings: Settings) -> str:
    """Returns what happened: 'succeeded', 'failed', 'stopped' or 'skipped' (not claimable)."""
    with sessions() as session:
        claimed = transition(
            session, scan_id, ScanStatus.running, only_from={ScanStatus.queued},
            started_at=utcnow(), stage="starting", percent=0.0, attempts=Scan.attempts + 1,
        )
        session.commit()
        if not claimed:  # duplicate delivery, canceled, or already done: nothing to do
            log.info("scan %s not claimable; skipping", scan_id)
            return "skipped"
        scan = session.get(Scan, scan_id)
    forget_hashes()
    output_dir = settings.artifacts_dir / ".incoming" / f"outputs-{scan_id}-{scan.attempts}"  # same disk as the store
    try:
        inputs = load_inputs(scan.inputs, settings.artifacts_dir)
        options = ScanOptions.model_validate(scan.options)
        report = run_pipeline(inputs, options, scan_id=str(scan_id), progress=ProgressWriter(sessions, scan_id),
                              stage_delay_s=settings.stage_delay_s, output_dir=output_dir)
        return store_result(sessions, scan_id, report, tenant=scan.tenant, store=ArtifactStore(settings.artifacts_dir))
    except ScanStopped:
        log.info("scan %s stopped (canceled or re-queued)", scan_id)
        return "stopped"
    except Exception as exc:  # anything else fails the scan with a reason instead of leaving it running
        log.exception("scan %s failed", scan_id)
        return fail_scan(sessions, scan_id, reason_for(exc))
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def reason_for(exc: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return "The scan exceeded its time limit (POISONSCAN_TASK_SOFT_TIME_LIMIT_S); scan smaller inputs or raise the limit."
    if isinstance(exc, InputMissing | InputRejected):
        return str(exc)
    return f"Internal error while scanning: {type(exc).__name__}: {exc}. The worker log has the traceback."


def load_inputs(inputs: dict, artifacts_dir: Path) -> ScanInputs:
    files = {}
    for role, info in inputs.items():
        path = artifacts_dir / info["sha256"][:2] / info["sha256"]
        if not path.is_file():
            raise InputMissing(f"The {role} artifact {info['sha256']} is missing from the artifact store ({artifacts_dir}); upload it again.")
        files[role] = InputFile(role, path, info["sha256"], info.get("filename"), info.get("kind"), info.get("expected_sha256"))
    return ScanInputs(**files)


def fail_scan(sessions: sessionmaker[Session], scan_id: uuid.UUID, reason: str) -> str:
    with sessions() as session:
        moved = transition(session, scan_id, ScanStatus.failed, only_from={ScanStatus.running}, error=reason, stage="failed")
        session.commit()
    return "failed" if moved else "stopped"


def store_result(sessions: sessionmaker[Session], scan_id: uuid.UUID, report: dict, *, tenant: str | None = None,
                 store: ArtifactStore | None = None) -> str:
    """Findings, report, the files the scan produced (as the tenant's artifacts) and the final status in one
    transaction: all of it lands, or none. (A file moved into the content-addressed store without its row is
    invisible, and the next store of the same bytes reuses it.)"""
    with sessions() as session:
        if not transition(session, scan_id, ScanStatus.succeeded, only_from={ScanStatus.running}, verdict=report["verdict"], stage="done", percent=100.0):
            session.rollback()  # canceled or re-queued while we ran: keep nothing
            return "stopped"
        if report.get("outputs") and store is not None:
            publish_outputs(session, store, tenant, report["outputs"])
        session.add(Report(scan_id=scan_id, schema_version=REPORT_SCHEMA_VERSION, body=report))
        session.add_all(
            Finding(
                scan_id=scan_id, detector=f["detector"], layer=f["layer"], technique=f["technique"], severity=f["severity"],
                score=float(f["score"]), title=f["title"][:300], explanation=f["explanation"], evidence=f["evidence"],
            )
            for d in report["detectors"] for f in d["findings"]
        )
        session.commit()
    return "succeeded"


def publish_outputs(session: Session, store: ArtifactStore, tenant: str, outputs: list[dict]) -> None:
    """Move each produced file into the artifact store and register it for the tenant; the report entry gets the
    artifact id and its download link in place of the worker's local path."""
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
                    session.add(Artifact(tenant=tenant, sha256=sha, size=entry["size"], filename=entry["name"], kind=sniff(target, entry["name"])))
            except IntegrityError:
                pass  # the row exists now, which is all we need
        entry |= {"artifact": sha, "href": f"/v1/artifacts/{sha}/content"}
