"""The job adapter and the reaper, in-process, on SQLite and PostgreSQL."""

import hashlib
import uuid
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select

from app.artifacts.store import ArtifactStore
from tests.datasets_util import blobs
from app.models import Artifact, Finding, Report, Scan, ScanStatus, utcnow
from app.scans.state import transition
from worker.jobs import ProgressWriter, ScanStopped, execute_scan, store_result
from worker.reaper import reap_stuck_scans


@pytest.fixture
def dataset(settings, tmp_path):
    path = tmp_path / "d.npz"
    x, y = blobs()
    np.savez(path, x=x, y=y)
    writer = ArtifactStore(settings.artifacts_dir).writer(10**6)
    writer.write(path.read_bytes())
    sha, size, _ = writer.commit()
    return {"dataset": {"sha256": sha, "filename": "d.npz", "kind": "npz", "size": size}}


def new_scan(sessions, inputs, **values) -> uuid.UUID:
    with sessions() as session:
        defaults = {"tenant": f"jobs-{uuid.uuid4().hex[:6]}", "options": {}, "status": "queued", "stage": "queued",
                    "attempts": 0, "queue": "cpu"}
        scan = Scan(percent=0, inputs=inputs, **(defaults | values))
        session.add(scan)
        session.commit()
        return scan.id


def load(sessions, scan_id) -> Scan:
    with sessions() as session:
        return session.get(Scan, scan_id)


def test_execute_claims_once_and_stores_everything(sessions, settings, dataset):
    scan_id = new_scan(sessions, dataset)
    assert execute_scan(scan_id, sessions, settings) == "succeeded"
    assert execute_scan(scan_id, sessions, settings) == "skipped"  # duplicate delivery
    scan = load(sessions, scan_id)
    assert (scan.status, scan.verdict, scan.percent, scan.attempts) == ("succeeded", "pass", 100.0, 1)
    with sessions() as session:
        report = session.get(Report, scan_id).body
        stored = session.scalar(select(func.count()).select_from(Finding).where(Finding.scan_id == scan_id))
    assert stored == sum(len(d["findings"]) for d in report["detectors"]) > 0


def test_files_a_scan_produces_become_the_tenants_downloadable_artifacts(sessions, settings, dataset, tenant_key):
    """Remediation's cleaned dataset and retrained model: stored as artifacts in the same transaction as the report,
    linked from it, and served by GET /v1/artifacts/{sha}/content to the scan's tenant only."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    tenant, key = tenant_key("outputs")
    _, other_key = tenant_key("other")
    config = {"remediate": "always", "nc_steps": 20, "proxy_epochs": 2, "retrain_epochs": 1}
    scan_id = new_scan(sessions, dataset, tenant=tenant,
                       options={"detectors": ["backdoor_assessment"], "detector_config": {"backdoor_assessment": config}})
    assert execute_scan(scan_id, sessions, settings) == "succeeded"
    with sessions() as session:
        report = session.get(Report, scan_id).body
        outputs = report["outputs"]
        rows = {a.sha256: a for a in session.scalars(select(Artifact).where(Artifact.tenant == tenant))}
    assert {o["name"] for o in outputs} == {"cleaned-dataset.npz", "retrained-model.keras", "figures.npz"}
    assert not (settings.artifacts_dir / ".incoming" / f"outputs-{scan_id}-1").exists()  # nothing left behind
    with TestClient(create_app(settings)) as api:
        for o in outputs:
            assert "path" not in o and o["href"] == f"/v1/artifacts/{o['sha256']}/content"
            assert rows[o["sha256"]].filename == o["name"]
            resp = api.get(o["href"], headers={"X-API-Key": key})
            assert resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == o["sha256"]
            assert api.get(o["href"], headers={"X-API-Key": other_key}).status_code == 404
    assert {rows[o["sha256"]].kind for o in outputs} == {"npz", "keras"}
    titles = [f["title"] for d in report["detectors"] for f in d["findings"]]
    assert "retrained without the quarantined samples (no backdoor target to re-test)" in titles  # blobs hold no backdoor


def test_missing_artifact_fails_with_a_reason(sessions, settings):
    scan_id = new_scan(sessions, {"dataset": {"sha256": "ab" * 32, "kind": "npz"}})
    assert execute_scan(scan_id, sessions, settings) == "failed"
    scan = load(sessions, scan_id)
    assert scan.status == "failed" and "missing from the artifact store" in scan.error and scan.finished_at


def test_cancel_stops_progress_and_nothing_is_stored(sessions, settings, dataset):
    scan_id = new_scan(sessions, dataset)
    with sessions() as session:
        transition(session, scan_id, ScanStatus.running, only_from={ScanStatus.queued})
        session.commit()
    progress = ProgressWriter(sessions, scan_id)
    progress("data:x", 10)
    assert load(sessions, scan_id).stage == "data:x"
    with sessions() as session:
        transition(session, scan_id, ScanStatus.canceled)
        session.commit()
    with pytest.raises(ScanStopped):
        progress("data:y", 50)
    assert store_result(sessions, scan_id, {"verdict": "pass", "detectors": []}) == "stopped"
    with sessions() as session:
        assert session.get(Report, scan_id) is None
    assert load(sessions, scan_id).status == "canceled"


def test_reaper(sessions, settings):
    sent = []
    now = utcnow()
    old = now - timedelta(seconds=settings.running_timeout_s + 60)
    queue = f"reaper-{uuid.uuid4().hex[:6]}"  # of its own: other tests' scans share the PostgreSQL database
    ours = lambda sid, q: q == queue and sent.append(sid)  # noqa: E731
    dead_worker = new_scan(sessions, {}, queue=queue, status="running", attempts=1, heartbeat_at=old)
    out_of_attempts = new_scan(sessions, {}, queue=queue, status="running", attempts=settings.max_attempts, heartbeat_at=old)
    alive = new_scan(sessions, {}, queue=queue, status="running", attempts=1, heartbeat_at=now)
    lost_message = new_scan(sessions, {}, queue=queue, heartbeat_at=now - timedelta(seconds=settings.queued_timeout_s + 60))
    no_worker = new_scan(sessions, {}, queue=queue, created_at=now - timedelta(days=2), heartbeat_at=now - timedelta(days=1))
    with sessions() as session:
        reap_stuck_scans(session, settings, ours, now=now)
    assert sorted(sent) == sorted([str(dead_worker), str(lost_message)])
    assert load(sessions, dead_worker).status == "queued" and load(sessions, dead_worker).stage == "requeued"
    assert load(sessions, out_of_attempts).status == "failed" and "Gave up" in load(sessions, out_of_attempts).error
    assert load(sessions, no_worker).status == "failed" and f"'{queue}' queue" in load(sessions, no_worker).error
    assert load(sessions, alive).status == "running" and load(sessions, lost_message).status == "queued"
    with sessions() as session:  # a second pass right away finds nothing new
        reap_stuck_scans(session, settings, ours, now=now)
    assert len(sent) == 2


def test_an_unusable_dataset_fails_the_scan_with_the_reason(sessions, settings, tmp_path):
    path = tmp_path / "nan.npz"
    x, y = blobs()
    x[3, 1] = np.nan
    np.savez(path, x=x, y=y)
    writer = ArtifactStore(settings.artifacts_dir).writer(10**6)
    writer.write(path.read_bytes())
    sha, size, _ = writer.commit()
    scan_id = new_scan(sessions, {"dataset": {"sha256": sha, "filename": "nan.npz", "kind": "npz", "size": size}})
    assert execute_scan(scan_id, sessions, settings) == "failed"
    scan = load(sessions, scan_id)
    assert scan.status == "failed" and "NaN" in scan.error and "row 3" in scan.error


def test_a_database_error_mid_scan_never_fails_the_scan(tmp_path, request):
    """The database refuses the worker's writes for a moment (SQLite locked by another connection, the worker waiting
    0.2 s): the scan is interrupted, not failed, and runs to the end once the database answers again."""
    import sqlite3
    import threading
    import time

    from app.db import make_engine
    from sqlalchemy.orm import sessionmaker
    from tests.conftest import make_settings
    from worker.jobs import ScanInterrupted

    settings = make_settings("embedded", tmp_path, request, stage_delay_s=0.3)
    writer = ArtifactStore(settings.artifacts_dir).writer(10**6)
    x, y = blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    writer.write((tmp_path / "d.npz").read_bytes())
    sha, size, _ = writer.commit()
    impatient = sessionmaker(make_engine(settings.sqlalchemy_url, timeout_s=0.2), expire_on_commit=False)
    scan_id = new_scan(impatient, {"dataset": {"sha256": sha, "filename": "d.npz", "kind": "npz", "size": size}})
    outcome = {}

    def run():
        try:
            outcome["result"] = execute_scan(scan_id, impatient, settings)
        except ScanInterrupted as exc:
            outcome["interrupted"] = str(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while load(impatient, scan_id).status != "running":
        time.sleep(0.05)
    lock = sqlite3.connect(settings.resolved_data_dir / "poisonscan.db", timeout=5)
    lock.execute("BEGIN EXCLUSIVE")  # every other write now waits, and the worker gives up after 0.2 s
    worker.join(timeout=30)
    lock.rollback()
    lock.close()
    assert "interrupted" in outcome, outcome
    scan = load(impatient, scan_id)
    assert scan.status in ("queued", "running") and scan.error is None  # never failed for the database's fault
    if scan.status == "running":  # its re-queue was refused too: the reaper's running timeout brings it back
        with impatient() as session:
            later = utcnow() + timedelta(seconds=settings.running_timeout_s + 1)
            assert reap_stuck_scans(session, settings, lambda sid, q: None, now=later)["requeued"] == 1
    assert execute_scan(scan_id, impatient, settings) == "succeeded"
    assert load(impatient, scan_id).attempts == 2
