"""Run one scan job against the database: claim, run the pipeline, store the result.

The Celery task is a thin wrapper around ``execute_scan``; tests call it directly too.
"""

import logging
import shutil
import time
import uuid
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts.store import ArtifactStore
from app.models import Scan
from app.scans import repository
from app.settings import Settings
from worker.findings import InputFile, InputRejected, ScanInputs
from worker.hashing import forget_hashes
from worker.metrics import observe_scan
from worker.options import ScanOptions
from worker.pipeline import REPORT_SCHEMA_VERSION, PipelineStopped, run_pipeline

log = logging.getLogger(__name__)


class ScanStopped(PipelineStopped):
    """The scan left ``running`` under us (canceled, or re-queued by the reaper): stop quietly."""


class DatabaseLost(PipelineStopped):
    """A write of the scan's state failed (the database went away mid-scan): the scan is not at fault and must run
    again, not fail. A PipelineStopped, so that no detector records it as its own error."""


class ScanInterrupted(Exception):
    """The scan went back to queued after a database error: the task delivers its message again."""


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
        try:
            with self.sessions() as session:
                moved = repository.record_progress(session, self.scan_id, stage, percent)
                session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseLost(f"progress of scan {self.scan_id} could not be written: {type(exc).__name__}") from exc
        if not moved:
            raise ScanStopped(f"scan {self.scan_id} is no longer running")
        self._last_stage, self._last_write = stage, now


class ClaimFailed(Exception):
    """The database did not take the claim: the message must be delivered again, not acknowledged."""


def claim(scan_id: uuid.UUID, sessions: sessionmaker[Session]) -> Scan | None:
    try:
        with sessions() as session:
            scan = repository.claim(session, scan_id)
            session.commit()
            return scan
    except SQLAlchemyError as exc:
        raise ClaimFailed(f"could not claim scan {scan_id}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def execute_scan(scan_id: uuid.UUID, sessions: sessionmaker[Session], settings: Settings) -> str:
    """Returns what happened: 'succeeded', 'failed', 'stopped' or 'skipped' (not claimable). Raises ClaimFailed
    when the claim could not be written, ScanInterrupted when a later write failed (the task re-delivers the
    message either way: a database blip never fails or loses a scan)."""
    scan = claim(scan_id, sessions)
    if scan is None:  # duplicate delivery, canceled, or already done: nothing to do
        log.info("scan %s not claimable; skipping", scan_id)
        return "skipped"
    started, outcome, report = time.monotonic(), "interrupted", None
    try:
        outcome, report = _run_claimed(scan, sessions, settings)
        return outcome
    finally:
        observe_scan(scan.queue, outcome, time.monotonic() - started, report if outcome == "succeeded" else None)


def _run_claimed(scan: Scan, sessions: sessionmaker[Session], settings: Settings) -> tuple[str, dict | None]:
    """(what happened, the report when there is one)."""
    scan_id = scan.id
    forget_hashes()
    output_dir = settings.artifacts_dir / ".incoming" / f"outputs-{scan_id}-{scan.attempts}"  # same disk as the store
    try:
        inputs = load_inputs(scan.inputs, settings.artifacts_dir)
        options = ScanOptions.model_validate(scan.options)
        report = run_pipeline(inputs, options, scan_id=str(scan_id), progress=ProgressWriter(sessions, scan_id),
                              stage_delay_s=settings.stage_delay_s, output_dir=output_dir)
        return store_result(sessions, scan_id, report, tenant=scan.tenant, store=ArtifactStore(settings.artifacts_dir)), report
    except ScanStopped:
        log.info("scan %s stopped (canceled or re-queued)", scan_id)
        return "stopped", None
    except (DatabaseLost, SQLAlchemyError) as exc:
        raise _interrupted(sessions, scan_id, exc) from exc
    except Exception as exc:  # anything else fails the scan with a reason instead of leaving it running
        log.exception("scan %s failed", scan_id)
        return fail_scan(sessions, scan_id, reason_for(exc)), None
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def _interrupted(sessions: sessionmaker[Session], scan_id: uuid.UUID, exc: Exception) -> ScanInterrupted:
    """Put the scan back in the queue (if the database takes it; else the reaper does, after its running timeout)."""
    log.warning("scan %s interrupted by a database error (%s); it runs again", scan_id, type(exc).__name__)
    try:
        with sessions() as session:
            requeued = repository.requeue_interrupted(session, scan_id)
            session.commit()
    except SQLAlchemyError:
        requeued = False
    return ScanInterrupted(f"scan {scan_id} interrupted by a database error ({type(exc).__name__}); "
                           + ("re-queued" if requeued else "left to the reaper"))


def reason_for(exc: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return "The scan exceeded its time limit (POISONSCAN_TASK_SOFT_TIME_LIMIT_S); scan smaller inputs or raise the limit."
    if isinstance(exc, InputMissing | InputRejected):
        return str(exc)
    # the type only: a message may hold internals (paths, SQL) the client has no business seeing; the log has them
    return f"Internal error while scanning ({type(exc).__name__}). The worker log has the details; retry the scan."


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
        moved = repository.fail_running(session, scan_id, reason)
        session.commit()
    return "failed" if moved else "stopped"


def store_result(sessions: sessionmaker[Session], scan_id: uuid.UUID, report: dict, *, tenant: str | None = None,
                 store: ArtifactStore | None = None) -> str:
    """Findings, report, the files the scan produced (as the tenant's artifacts) and the final status in one
    transaction: all of it lands, or none."""
    with sessions() as session:
        if not repository.store_result(session, scan_id, report, REPORT_SCHEMA_VERSION, tenant, store):
            session.rollback()  # canceled or re-queued while we ran: keep nothing
            return "stopped"
        session.commit()
    return "succeeded"
