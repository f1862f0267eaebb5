"""End to end on real processes, in both configurations: upload, scan, poll, report; the CLI's
exit codes; a worker killed with SIGKILL mid-scan."""

import hashlib
import json
import pickle

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import CONFIGS
from tests.datasets_util import blobs
from tests.stack import Stack, wait_for_scan


def stack_for(config, tmp_path, request, **env) -> Stack:
    urls = (request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")) if config == "postgres" else (None, None)
    return Stack(config, tmp_path, *urls, **env)


@pytest.fixture(params=CONFIGS)
def stack(request, tmp_path):
    s = stack_for(request.param, tmp_path, request)
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "inputs"
    d.mkdir()
    x, y = blobs()
    np.savez(d / "train.npz", x=x, y=y)
    save_file({"dense/kernel": np.ones((4, 3), np.float32)}, str(d / "model.safetensors"))
    (d / "model.pkl").write_bytes(pickle.dumps({"w": [0.5, 0.25]}))
    (d / "disguised.safetensors").write_bytes(pickle.dumps({"w": [0.5]}))
    return d


def upload(client, path):
    resp = client.post("/v1/artifacts", params={"filename": path.name}, content=path.read_bytes(), headers={"content-type": "application/octet-stream"})
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["sha256"]


def test_upload_scan_poll_report(stack, files):
    with stack.client() as client:
        model, dataset = upload(client, files / "model.pkl"), upload(client, files / "train.npz")
        resp = client.post("/v1/scans", json={"model": model, "dataset": dataset})
        assert resp.status_code == 202
        scan = wait_for_scan(client, resp.json()["id"])
        assert scan["status"] == "succeeded", stack.logs()
        assert scan["percent"] == 100.0 and scan["stage"] == "done" and scan["verdict"] == "warn"
        timings = scan["timings"]
        assert timings["started_at"] and 0 < timings["run_s"] and timings["queued_s"] >= 0
        assert timings["started_at"] >= timings["created_at"] and timings["finished_at"] >= timings["started_at"]
        report = client.get(scan["links"]["report"]).json()
    assert report["schema_version"] == "1.0" and report["scan_id"] == scan["id"]
    assert {i["role"]: i["sha256"] for i in report["inputs"]} == {"model": model, "dataset": dataset}
    titles = [f["title"] for d in report["detectors"] for f in d["findings"]]
    assert "model uses pickle serialization" in titles and "dataset SHA-256 verified" in titles
    assert report["verdict"] == "warn" and report["atlas"]["AML.T0010"] == "ML Supply Chain Compromise"
    data = next(d for d in report["detectors"] if d["name"] == "data_poisoning")
    assert data["status"] == "ok" and data["technique"] == "AML.T0020"  # the data layer ran in the worker
    model_layer = next(d for d in report["detectors"] if d["name"] == "backdoor_activations")
    assert model_layer["status"] == "ok" and "uploaded model not analysed: a proxy network was trained on the dataset" in titles  # a pickle is never loaded


def test_cli_submit_exit_codes(stack, files):
    def submit(*args):
        return stack.cli("submit", "--server", stack.base_url, "--api-key", stack.api_key, *args, check=False)

    ok = submit("--model", str(files / "model.safetensors"), "--dataset", str(files / "train.npz"), "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "pass"
    assert "%" in ok.stderr  # the progress bar
    disguised = submit("--model", str(files / "disguised.safetensors"), "--policy", '{"fail_at": "medium"}')
    assert disguised.returncode == 1, disguised.stderr
    assert "does not match its content" in disguised.stdout and "FAIL" in disguised.stdout
    wrong_kind = submit("--dataset", str(files / "model.pkl"))
    assert wrong_kind.returncode == 2 and "wrong kind of dataset" in wrong_kind.stderr.lower()
    bad_key = stack.cli("submit", "--server", stack.base_url, "--api-key", "psk_nope", "--dataset", str(files / "train.npz"), check=False)
    assert bad_key.returncode == 2 and "401" in bad_key.stderr
    assert "HTTP Request" not in ok.stderr + bad_key.stderr  # httpx's request log lines would break the progress bar


def test_local_scan_matches_the_service(stack, files):
    local = stack.cli("scan", "--model", str(files / "model.pkl"), "--dataset", str(files / "train.npz"), "--format", "json", check=False)
    assert local.returncode == 0
    remote = stack.cli("submit", "--server", stack.base_url, "--api-key", stack.api_key, "--model", str(files / "model.pkl"),
                       "--dataset", str(files / "train.npz"), "--format", "json", check=False)
    strip = lambda r: [(d["name"], [(f["title"], f["severity"]) for f in d["findings"]]) for d in json.loads(r.stdout)["detectors"]]  # noqa: E731
    assert strip(local) == strip(remote)


def test_files_a_scan_produces_are_downloaded_by_submit_and_written_by_scan(stack, files, tmp_path):
    config = json.dumps({"backdoor_assessment": {"remediate": "always", "nc_steps": 20, "proxy_epochs": 2, "retrain_epochs": 1}})
    common = ("--dataset", str(files / "train.npz"), "--detectors", "backdoor_assessment", "--detector-config", config, "--format", "json")
    remote = stack.cli("submit", "--server", stack.base_url, "--api-key", stack.api_key, "--out", str(tmp_path / "remote"), *common, check=False)
    local = stack.cli("scan", "--out", str(tmp_path / "local"), *common, check=False)
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    outputs = json.loads(remote.stdout)["outputs"]
    assert {o["name"] for o in outputs} == {"cleaned-dataset.npz", "retrained-model.keras", "figures.npz"}
    for o in outputs:  # downloaded through GET /v1/artifacts/{sha}/content, byte for byte
        assert hashlib.sha256((tmp_path / "remote" / o["name"]).read_bytes()).hexdigest() == o["sha256"]
        assert o["href"] == f"/v1/artifacts/{o['sha256']}/content"
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == sorted(o["name"] for o in outputs)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("max_attempts", [2, 1])
def test_worker_killed_mid_scan_is_never_stuck(config, max_attempts, tmp_path, request, files):
    """SIGKILL the worker (and its pool) while a scan runs: the reaper re-dispatches it to a new
    worker, or, with no attempts left, fails it with a reason."""
    # the test drives the reaper by hand (`poisonscan reap`): none runs in the API
    stack = stack_for(config, tmp_path, request, stage_delay_s=1.5, running_timeout_s=4, max_attempts=max_attempts,
                      reaper_in_api=False)
    try:
        stack.start(with_worker=False)
        first = stack.start_worker()
        with stack.client() as client:
            dataset = upload(client, files / "train.npz")
            scan_id = client.post("/v1/scans", json={"dataset": dataset}).json()["id"]
            wait_for_scan(client, scan_id, until=("running",), timeout=60)
            stack.kill_worker(first)
            stack.start_worker()
            import time

            time.sleep(5)  # past running_timeout_s with no heartbeat
            counts = json.loads(stack.cli("reap").stdout)
            scan = wait_for_scan(client, scan_id, timeout=60)
        # the PostgreSQL database is the run's: a scan an earlier test's stopped stack left running counts too
        if max_attempts == 2:
            assert counts["requeued"] >= 1, counts
            assert scan["status"] == "succeeded" and scan["attempts"] == 2, stack.logs()
        else:
            assert counts["failed"] >= 1, counts
            assert scan["status"] == "failed" and "Gave up after 1 attempt(s)" in scan["error"] and scan["attempts"] == 1
    finally:
        stack.stop()


@pytest.mark.parametrize("config", CONFIGS)
def test_cancel_a_running_scan(config, tmp_path, request, files):
    stack = stack_for(config, tmp_path, request, stage_delay_s=1.5)
    try:
        stack.start()
        with stack.client() as client:
            scan_id = client.post("/v1/scans", json={"dataset": upload(client, files / "train.npz")}).json()["id"]
            wait_for_scan(client, scan_id, until=("running",), timeout=60)
            assert client.post(f"/v1/scans/{scan_id}/cancel").json()["status"] == "canceled"
            # the worker notices at its next progress write and moves on to the next scan
            follow_up = client.post("/v1/scans", json={"dataset": upload(client, files / "train.npz")}).json()["id"]
            assert wait_for_scan(client, follow_up)["status"] == "succeeded", stack.logs()
            scan = client.get(f"/v1/scans/{scan_id}").json()
            assert scan["status"] == "canceled" and scan["verdict"] is None
            assert client.get(f"/v1/scans/{scan_id}/report").status_code == 409
    finally:
        stack.stop()
