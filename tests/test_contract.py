"""The OpenAPI document is exact: schemathesis, every check (`st run --checks all`), against the live service.

The service runs in this process (uvicorn in a thread, on a free port), on the embedded configuration and on
PostgreSQL + Redis, with no worker: scans stay queued. Two tenants with a key each (the check
`object_level_authorization` replays one tenant's reads as the other); artifacts of every role, scans in every state
and their ETags give the generated requests real values to reach (schemathesis dictionaries), besides the ones they
make up. `st run` runs its phases (examples, coverage, fuzzing, stateful) with a fixed seed and a bounded number of
examples per operation, and must exit 0: no failure, no error. What the configuration adds to schemathesis's defaults,
and why, is said where it is set (here and in tests/contract_hooks.py).
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from sqlalchemy import delete
from sqlalchemy.orm import sessionmaker

from app.auth import create_key
from app.db import make_engine
from app.main import create_app
from app.migrate import upgrade
from app.models import Webhook
from app.scans import repository
from app.settings import Settings
from tests.conftest import CONFIGS
from tests.contract_hooks import SEMANTIC_REFUSALS, expected_statuses
from tests.stack import free_port

ST = [sys.executable, "-m", "schemathesis.cli"]  # the `st` command of this environment
HOOKS = Path(__file__).with_name("contract_hooks.py")
# Per operation and phase: the run takes well under a minute on two cores. A deeper run, another seed:
# POISONSCAN_CONTRACT_EXAMPLES=300 POISONSCAN_CONTRACT_SEED=7 pytest tests/test_contract.py
MAX_EXAMPLES = int(os.environ.get("POISONSCAN_CONTRACT_EXAMPLES", 30))
SEED = int(os.environ.get("POISONSCAN_CONTRACT_SEED", 20250113))
ST_TIMEOUT_S = 120 + 8 * MAX_EXAMPLES
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]


class ServerThread:
    """uvicorn serving ``app`` in a thread of this process (no signal handlers: it is not the main thread)."""

    def __init__(self, app, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="contract-api", daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def _npz(path: Path, **arrays) -> bytes:
    np.savez(path, **arrays)
    return path.read_bytes()


def _seed(base_url: str, key: str, other_key: str, sessions, tmp_path: Path) -> dict[str, list[str]]:
    """Artifacts of every role, and scans queued, succeeded (with a report), failed and canceled: the values the
    generated requests draw their ids from."""
    rng = np.random.default_rng(0)
    files = {
        "dataset.npz": _npz(tmp_path / "d.npz", x=rng.random((20, 3)), y=np.array([0, 1] * 10)),
        "trigger.npz": _npz(tmp_path / "t.npz", pattern=np.ones((4, 4)), mask=np.zeros((4, 4))),
        "model.pkl": pickle.dumps({"w": [0.5, 0.25]}),
        "signature.json": json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}).encode(),
        "key.pem": b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
    }
    sha = {}
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as client:
        for name, data in files.items():
            resp = client.post("/v1/artifacts", params={"filename": name}, content=data,
                               headers={"content-type": "application/octet-stream"})
            assert resp.status_code in (200, 201), resp.text
            sha[name] = resp.json()["sha256"]
        scans = []
        for _ in range(4):
            resp = client.post("/v1/scans", json={"model": sha["model.pkl"], "dataset": sha["dataset.npz"]})
            assert resp.status_code == 202, resp.text
            scans.append(uuid.UUID(resp.json()["id"]))
        queued, succeeded, failed, canceled = scans
        assert client.post(f"/v1/scans/{canceled}/cancel").status_code == 200
        cursor = client.get("/v1/scans", params={"limit": 1}).json()["next_cursor"]
        assert cursor
        hook = client.post("/v1/webhooks", json={"url": "https://8.8.8.8/hook"})
        assert hook.status_code == 201, hook.text
    with httpx.Client(base_url=base_url, headers={"X-API-Key": other_key}, timeout=30) as client:
        resp = client.post("/v1/artifacts", params={"filename": "other.bin"}, content=b"the other tenant's bytes",
                           headers={"content-type": "application/octet-stream"})
        assert resp.status_code == 201, resp.text
    with sessions() as session:
        for scan_id in (succeeded, failed):
            assert repository.claim(session, scan_id) is not None
        assert repository.fail_running(session, failed, "the contract test failed it")
        assert repository.store_result(session, succeeded, _report(succeeded, sha), "1.0", None, None)
        session.commit()
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30) as client:
        etags = [client.get(f"/v1/scans/{scan_id}").headers["etag"] for scan_id in (succeeded, failed)]  # final states
    return {
        "datasets": [sha["dataset.npz"]], "models": [sha["model.pkl"], sha["dataset.npz"]],
        "triggers": [sha["trigger.npz"]], "signatures": [sha["signature.json"]], "pems": [sha["key.pem"]],
        "artifacts": list(sha.values()), "scans": [str(s) for s in scans], "cursors": [cursor],
        "etags": etags + [", ".join(etags)], "webhooks": [hook.json()["id"]],
    }


def _forget_webhooks(sessions, tenants: list[str]) -> None:
    """The run's database is shared: the hooks the run registered, and the deliveries of the scans it ended, must
    not be left for later tests' dispatchers to send."""
    with sessions() as session:
        session.execute(delete(Webhook).where(Webhook.tenant.in_(tenants)))  # deliveries and attempts cascade
        session.commit()


def _report(scan_id: uuid.UUID, sha: dict[str, str]) -> dict:
    """A report as the pipeline builds it, with one finding that quarantines a sample and one data-quality remark."""
    from worker.findings import Finding, InputFile, ScanInputs, Severity
    from worker.options import ScanOptions
    from worker.pipeline import build_report

    evidence = {"flagged": [{"index": 3, "confidence": 0.9, "method": "cross_val", "attack": "label_flip"}],
                "review": [{"index": 5, "kind": "outlier", "score": 0.7}]}
    finding = Finding("label noise", Severity.medium, 0.6, "one sample's label disagrees", evidence=evidence).to_dict()
    finding |= {"technique": "AML.T0020", "technique_name": "", "detector": "data_poisoning", "layer": "data"}
    results = [{"name": "data_poisoning", "layer": "data", "technique": "AML.T0020", "status": "ok", "error": None,
                "findings": [finding], "duration_s": 0.1}]
    dataset = InputFile("dataset", Path(__file__), sha["dataset.npz"], "dataset.npz", "npz")
    return build_report(str(scan_id), ScanInputs(dataset=dataset), ScanOptions(), results)


def _config(tmp_path: Path, keys: dict[str, str], ids: dict[str, list[str]]) -> Path:
    wfc = tmp_path / "identities.json"
    wfc.write_text(json.dumps({"auth": [{"name": name, "fixedHeaders": [{"name": "X-API-Key", "value": key}]}
                                        for name, key in keys.items()]}))
    lines = [
        f"hooks = {json.dumps(str(HOOKS))}",
        "",
        "[auth.wfc]",
        f"path = {json.dumps(str(wfc))}",
        'user = "owner"',
        'peers = ["owner", "other"]',
        "",
        # schemathesis's statuses of a rejection, and 413: an invalid request that is also too large is refused for
        # its size before its contents are read.
        "[checks.negative_data_rejection]",
        f"expected-statuses = {json.dumps(REJECTED)}",
        "",
    ]
    # Real ids most of the time (made-up ones the rest): a made-up artifact or scan id only ever meets a 404.
    bindings = {"path.sha256": "artifacts", "path.scan_id": "scans", "query.cursor": "cursors",
                "body.model": "models", "body.dataset": "datasets", "body.holdout": "datasets",
                "body.trigger": "triggers", "body.signature": "signatures", "body.public_key": "pems",
                "body.certificate_chain": "pems", "header.If-None-Match": "etags",
                "path.webhook_id": "webhooks"}
    for name in sorted(set(bindings.values())):
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(ids[name])}", ""]
    lines.append("[parameters]")
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.8 }}' for key, name in bindings.items()]
    lines.append("")
    for method, path in SEMANTIC_REFUSALS:
        statuses = json.dumps(expected_statuses(method, path))
        lines += ["[[operations]]", f'include-method = "{method}"', f'include-path = "{path}"',
                  f"checks.positive_data_acceptance.expected-statuses = {statuses}", ""]
    config = tmp_path / "schemathesis.toml"
    config.write_text("\n".join(lines))
    return config


def _run_st(config: Path, base_url: str, tmp_path: Path) -> tuple[int, str]:
    args = [*ST, "--config-file", str(config), "run", f"{base_url}/openapi.json", "--checks", "all",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1", "--generation-database", "none",
            "--request-timeout", "30", "--no-color", "--report", "junit,ndjson",
            # how fast hypothesis generates data on a busy machine says nothing about the document
            "--suppress-health-check", "too_slow",
            "--report-dir", str(tmp_path / "report")]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "COLUMNS": "160"})
    try:
        out, _ = proc.communicate(timeout=ST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"schemathesis ran over {ST_TIMEOUT_S} s:\n{out[-6000:]}")
    (tmp_path / "schemathesis.log").write_text(out)
    return proc.returncode, out


@pytest.mark.timeout(ST_TIMEOUT_S + 60)
@pytest.mark.parametrize("config", CONFIGS)
def test_the_openapi_document_is_exact(config, tmp_path, request):
    # Schemathesis sends thousands of requests without a key or with a made-up one (ignored_auth) from one address:
    # under the default limit the valid keys would be answered 429 for most of the run. The 429 stays documented.
    # Many scans get created (every accepted POST /v1/scans): the active-scan limit is raised for the same reason.
    values = dict(data_dir=tmp_path / "data", max_upload_bytes=64 * 1024, reaper_in_api=False,
                  auth_failures_per_minute=1_000_000, max_active_scans_per_tenant=1_000_000)
    if config == "postgres":  # the suite's own database (tenants of this test's own) and Redis
        values |= {"database_url": request.getfixturevalue("pg_url"),
                   "broker_url": request.getfixturevalue("redis_url")}
    settings = Settings(**values)
    settings.resolved_data_dir.mkdir(parents=True)
    if config == "embedded":
        upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    run = uuid.uuid4().hex[:8]
    with sessions() as session:
        keys = {name: create_key(session, f"contract-{name}", f"contract-{name}-{run}")[1]
                for name in ("owner", "other")}
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    app = create_app(settings)
    try:
        with ServerThread(app, port):
            ids = _seed(base_url, keys["owner"], keys["other"], sessions, tmp_path)
            st_config = _config(tmp_path, keys, ids)
            code, out = _run_st(st_config, base_url, tmp_path)
    finally:
        _forget_webhooks(sessions, [f"contract-{name}-{run}" for name in keys])
        app.state.engine.dispose()
        engine.dispose()
    shown = "\n".join(line[:400] for line in out.splitlines() if line.strip())  # curl lines can hold whole bodies
    log = tmp_path / "schemathesis.log"
    assert code == 0, f"schemathesis found problems (exit {code}; in full: {log}):\n{shown[-20000:]}"
    summary = out[out.rfind("SUMMARY"):]
    operations = sum(len(item) for item in app.openapi()["paths"].values())
    assert f"Selected: {operations}/{operations}" in summary and f"Tested: {operations}" in summary, out[-5000:]
