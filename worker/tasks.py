"""Celery tasks: thin adapters from a message to ``worker.jobs`` and ``worker.reaper``."""

import logging
import uuid

from app.db import get_sessionmaker
from app.settings import get_settings
from worker.broker import RUN_SCAN
from worker.celery_app import celery_app
from worker.jobs import ClaimFailed, ScanInterrupted, execute_scan

log = logging.getLogger(__name__)
CLAIM_RETRY_S = (2, 5, 10, 20, 30)  # backoff while the database is away; then the reaper's timeout takes over


@celery_app.task(name=RUN_SCAN, bind=True, max_retries=len(CLAIM_RETRY_S))
def run_scan(self, scan_id: str) -> str:
    try:
        return execute_scan(uuid.UUID(scan_id), get_sessionmaker(), get_settings())
    except (ClaimFailed, ScanInterrupted) as exc:
        # The database did not take the claim or a later write: send the message again (retry publishes a copy
        # before this one is acknowledged), so a database blip never drops or fails a scan.
        delay = CLAIM_RETRY_S[min(self.request.retries, len(CLAIM_RETRY_S) - 1)]
        log.warning("%s; delivering it again in %s s", exc, delay)
        raise self.retry(exc=exc, countdown=delay) from exc
