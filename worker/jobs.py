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
            moved = repository.record_progress(session, self.scan_id, stage, percent)
            session.commit()
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
    when the claim could not be written (the task re-delivers the message)."""
    scan = claim(scan_id, sessions)
    if scan is None:  # duplicate delivery, canceled, or already done: nothing to do
        log.info("scan %s not claimable; skipping", scan_id)
        return "skipped"
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
