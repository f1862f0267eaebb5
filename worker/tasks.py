"""Celery tasks: thin adapters from a message to ``worker.jobs`` and ``worker.reaper``."""

import logging
import uuid

from app.db import get_sessionmaker
from app.settings import get_settings
from worker.broker import REAP, RUN_SCAN, enqueue_scan
from worker.celery_app import celery_app
from worker.jobs import execute_scan
from worker.reaper import reap_stuck_scans

log = logging.getLogger(__name__)


@celery_app.task(name=RUN_SCAN)
def run_scan(scan_id: str) -> str:
    return execute_scan(uuid.UUID(scan_id), get_sessionmaker(), get_settings())


@celery_app.task(name=REAP)
def reap() -> dict:
    with get_sessionmaker()() as session:
        return reap_stuck_scans(session, get_settings(), lambda sid, q: enqueue_scan(celery_app, sid, q))
