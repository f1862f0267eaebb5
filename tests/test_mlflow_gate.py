"""The MLflow registry gate against a real MLflow tracking server with a model registry, started here on a free port
(SQLite backend, artifacts served by the server): `poisonscan mlflow-gate` and POST /v1/integrations/mlflow/scans.
Nothing here loads a model: the malicious pickle would create the canary file if anything ever did."""

import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app.auth import create_key
from app.db import make_engine
from app.main import create_app
from app.models import Report, WebhookDelivery
from app.webhooks.dispatcher import Dispatcher
from tests.conftest import make_settings
from tests.payloads import Payload
from tests.processes import descendants, stop_groups
from tests.stack import BIN, Stack, free_port, wait_until_ready
from worker.jobs import execute_scan

MLFLOW = Path(sys.executable).with_name("mlflow")
SERVER_START_S = 90


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} is missing: install the mlflow extra (pip install -e '.[test,mlflow]'; ./run test does it)")
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    argv = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "artifacts"),
            "--serve-artifacts"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner and its consumers: unused here
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _wait_for_server(f"http://127.0.0.1:{port}", proc, folder / "server.log")
    finally:
        stop_groups({proc.pid}, set(descendants(proc.pid).values()), timeout_s=10)
        proc.wait()


def _wait_for_server(uri: str, proc: subprocess.Popen, log: Path) -> str:
    if not wait_until_ready(uri, SERVER_START_S, alive=lambda: proc.poll() is None, path="/health"):
        pytest.fail(f"mlflow server did not come up at {uri}:\n{log.read_text(errors='replace')[-3000:]}")
    return uri


@pytest.fixture(scope="module")
def registry(tracking_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register(registry, tmp_path: Path, files: dict[str, bytes], subfolder: str = "model") -> str:
    """A new registered model with one version whose source is ``subfolder`` of a run's artifacts; its models:/ URI."""
    run = registry.create_run("0")  # the Default experiment
    folder = tmp_path / f"upload-{uuid.uuid4().hex[:6]}"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if files:
        registry.log_artifacts(run.info.run_id, str(folder), "model")
    registry.set_terminated(run.info.run_id)
    name = f"m-{uuid.uuid4().hex[:8]}"
    registry.create_registered_model(name)
    version = registry.create_model_version(name, f"{run.info.artifact_uri}/{subfolder}", run_id=run.info.run_id)
    return f"models:/{name}/{version.version}"


def tags(registry, model_uri: str) -> dict[str, str]:
    name, version = model_uri.removeprefix("models:/").split("/")
    return {k: v for k, v in registry.get_model_version(name, version).tags.items() if k.startswith("poisonscan.")}


def safetensors_bytes(tmp_path: Path) -> bytes:
    from safetensors.numpy import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"dense.kernel": np.ones((4, 3), np.float32), "dense.bias": np.zeros(3, np.float32)}, str(path))
    return path.read_bytes()


def gate(model_uri: str, tracking_uri: str | None, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "POISONSCAN_MLFLOW_TRACKING_URI")}
    argv = [BIN, "mlflow-gate", "--model-uri", model_uri, "--out", str(out), "--format", "json", *extra]
    if tracking_uri:
        argv += ["--tracking-uri", tracking_uri]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_clean_version_passes_and_is_tagged_with_the_local_report(registry, tracking_uri, tmp_path):
    uri = register(registry, tmp_path, {"model.safetensors": safetensors_bytes(tmp_path), "MLmodel": b"flavors: {}\n"})
    name, version = uri.removeprefix("models:/").split("/")
    registry.set_registered_model_alias(name, "champion", version)
    done = gate(f"models:/{name}@champion", tracking_uri, tmp_path / "out")  # the version the alias names is tagged
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "pass" and report["inputs"][0]["kind"] == "folder"
    assert tags(registry, uri) == {"poisonscan.verdict": "pass", "poisonscan.reason": report["verdict_reason"],
                                   "poisonscan.report": str((tmp_path / "out" / "report.json").resolve())}
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report


def test_malicious_pickle_fails_and_the_tags_do_not_mix_two_scans(registry, tracking_uri, tmp_path, canary):
    uri = register(registry, tmp_path, {"model.pkl": pickle.dumps(Payload(canary), protocol=4)})
    name, version = uri.removeprefix("models:/").split("/")
    registry.set_model_version_tag(name, version, "poisonscan.scan_id", "an-earlier-scan")
    done = gate(uri, tracking_uri, tmp_path / "out", "--policy", '{"fail_at": "high"}')
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["verdict"] == "fail"
    found = tags(registry, uri)
    assert found["poisonscan.verdict"] == "fail" and "poisonscan.scan_id" not in found
    assert "critical" in found["poisonscan.reason"].lower() and len(found["poisonscan.reason"]) <= 500


def test_version_without_files_fails_closed(registry, tracking_uri, tmp_path):
    uri = register(registry, tmp_path, {"model.safetensors": safetensors_bytes(tmp_path)}, subfolder="missing")
    done = gate(uri, tracking_uri, tmp_path / "out")
    assert done.returncode == 1, done.stderr
    found = tags(registry, uri)
    assert found["poisonscan.verdict"] == "fail"
    assert f"the files of {uri} could not be downloaded" in found["poisonscan.reason"]


def test_gate_through_a_server_tags_the_servers_scan_and_report(registry, tracking_uri, tmp_path):
    uri = register(registry, tmp_path, {"model.safetensors": safetensors_bytes(tmp_path)})
    stack = Stack("embedded", tmp_path).start()
    try:
        done = gate(uri, tracking_uri, tmp_path / "out", "--server", stack.base_url, "--api-key", stack.api_key)
    finally:
        stack.stop()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "pass" and report["scan_id"]
    assert tags(registry, uri) == {"poisonscan.verdict": "pass", "poisonscan.reason": report["verdict_reason"],
                                   "poisonscan.scan_id": report["scan_id"],
                                   "poisonscan.report": f"{stack.base_url}/v1/scans/{report['scan_id']}/report"}


def test_usage_errors_exit_2_with_what_to_do(registry, tracking_uri, tmp_path):
    uri = register(registry, tmp_path, {"model.safetensors": safetensors_bytes(tmp_path)})
    missing = uri.rsplit("/", 1)[0] + "/99"
    cases = [(missing, tracking_uri, "no such model version"),
             ("models:/just-a-name", tracking_uri, "models:/NAME/VERSION"),
             (uri, None, "--tracking-uri"), (uri, f"http://127.0.0.1:{free_port()}", "did not answer")]
    for model_uri, tracking, expected in cases:
        done = gate(model_uri, tracking, tmp_path / "out")
        assert done.returncode == 2 and expected in done.stderr, (model_uri, tracking, done.stderr)
        assert done.stdout == ""
    assert tags(registry, uri) == {}


@pytest.fixture
def api(tmp_path, request, monkeypatch, tracking_uri):
    monkeypatch.setenv("POISONSCAN_MLFLOW_TRACKING_URI", tracking_uri)
    settings = make_settings("embedded", tmp_path, request, public_url="https://scan.example.com/")
    app = create_app(settings)
    engine = make_engine(settings.sqlalchemy_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as session:
        _, key = create_key(session, "mlflow", f"mlflow-{uuid.uuid4().hex[:6]}")
    with TestClient(app, headers={"X-API-Key": key}) as client:
        yield client, sessions, settings
    engine.dispose()


def test_api_scans_a_version_as_a_tar_and_the_worker_tags_the_verdict(api, registry, tracking_uri, tmp_path, canary):
    client, sessions, settings = api
    clean = register(registry, tmp_path, {"model.safetensors": safetensors_bytes(tmp_path), "conf/MLmodel": b"a: 1\n"})
    evil = register(registry, tmp_path, {"data/model.pkl": pickle.dumps(Payload(canary), protocol=2)})
    for uri, verdict in ((clean, "pass"), (evil, "fail")):
        resp = client.post("/v1/integrations/mlflow/scans", json={"model_uri": uri, "options": {"detectors": [
            "format_identification", "unsafe_serialization", "model_structure"]}})
        assert resp.status_code == 202, resp.text
        scan = resp.json()
        assert resp.headers["location"] == f"/v1/scans/{scan['id']}"
        assert scan["inputs"]["model"]["source"] == uri and scan["inputs"]["model"]["kind"] == "tar"
        report_url = f"https://scan.example.com/v1/scans/{scan['id']}/report"
        assert tags(registry, uri) == {"poisonscan.verdict": "pending", "poisonscan.reason": "scan queued",
                                       "poisonscan.scan_id": scan["id"], "poisonscan.report": report_url}
        # The worker: the scan, then its dispatcher sends the outbox's verdict tags once the result has committed
        assert execute_scan(uuid.UUID(scan["id"]), sessions, settings) == "succeeded"
        with sessions() as session:
            reason = session.get(Report, uuid.UUID(scan["id"])).body["verdict_reason"]
            (tagging,) = session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.scan_id == uuid.UUID(scan["id"]), WebhookDelivery.target == "mlflow")).all()
        dispatcher = Dispatcher(sessions, settings)
        try:
            deadline = time.monotonic() + 30
            while delivery_status(sessions, tagging.id) == "pending" and time.monotonic() < deadline:
                dispatcher.dispatch_due()
                time.sleep(0.2)
        finally:
            dispatcher.stop()
        assert delivery_status(sessions, tagging.id) == "delivered"
        assert tags(registry, uri) == {"poisonscan.verdict": verdict, "poisonscan.reason": reason,
                                       "poisonscan.scan_id": scan["id"], "poisonscan.report": report_url}


def delivery_status(sessions, delivery_id) -> str:
    with sessions() as session:
        return session.get(WebhookDelivery, delivery_id).status


def test_api_refusals(api, registry, tmp_path, monkeypatch):
    client, _, settings = api
    post = lambda uri: client.post("/v1/integrations/mlflow/scans", json={"model_uri": uri})  # noqa: E731
    empty = register(registry, tmp_path, {"w.safetensors": b"x"}, subfolder="missing")
    too_large = register(registry, tmp_path, {"big.bin": b"\0" * (settings.max_upload_bytes + 1)})
    for uri, status, text in ((empty, 502, "could not be downloaded"), (too_large, 413, "upload limit")):
        resp = post(uri)
        assert resp.status_code == status and text in resp.json()["detail"], resp.text
        assert tags(registry, uri)["poisonscan.verdict"] == "fail"
    assert post(empty.rsplit("/", 1)[0] + "/42").json()["title"] == "Unknown model version"
    assert post("runs:/abc/model").status_code == 422
    monkeypatch.delenv("POISONSCAN_MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resp = post(empty)
    assert resp.status_code == 501 and "POISONSCAN_MLFLOW_TRACKING_URI" in resp.json()["detail"]


def test_without_a_registry_the_gate_is_neither_served_nor_documented(tmp_path, request, monkeypatch):
    for name in ("POISONSCAN_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(make_settings("embedded", tmp_path, request))) as client:
        assert not any(p.startswith("/v1/integrations/mlflow") for p in client.get("/openapi.json").json()["paths"])
        assert client.post("/v1/integrations/mlflow/scans", json={"model_uri": "models:/m/1"}).status_code in (401, 404)
