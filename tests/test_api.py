"""The API in-process (TestClient) on both configurations: uploads, scans, errors, tenancy."""

import hashlib
import json
import pickle

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.models import Scan
from app.scans.state import transition

PROBLEM = "application/problem+json"


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def key(tenant_key):
    return tenant_key("api")[1]


def hdr(key):
    return {"X-API-Key": key}


def npz_bytes(tmp_path) -> bytes:
    p = tmp_path / "ds.npz"
    np.savez(p, x=np.random.default_rng(0).random((8, 3)), y=np.array([0, 1] * 4))
    return p.read_bytes()


def upload(api, key, data: bytes, filename="f.bin", **params):
    return api.post("/v1/artifacts", content=data, params={"filename": filename, **params}, headers=hdr(key) | {"content-type": "application/octet-stream"})


def assert_problem(resp, status, text=""):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert text.lower() in (body["title"] + " " + body["detail"]).lower()
    return body


def store_files(settings):
    return sorted(p.name for p in settings.artifacts_dir.rglob("*") if p.is_file())


def test_upload_is_content_addressed_and_idempotent(api, key, tmp_path, settings):
    data = npz_bytes(tmp_path)
    first = upload(api, key, data, "train.npz")
    assert first.status_code == 201
    body = first.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest() and body["size"] == len(data) and body["kind"] == "npz"
    assert first.headers["location"] == f"/v1/artifacts/{body['sha256']}"
    again = upload(api, key, data, "train.npz")
    assert again.status_code == 200 and again.json()["sha256"] == body["sha256"]
    assert store_files(settings) == [body["sha256"]]  # stored once, no temp file left
    assert api.get(f"/v1/artifacts/{body['sha256']}", headers=hdr(key)).json()["filename"] == "train.npz"


def test_multipart_upload_and_expected_hash(api, key):
    data = pickle.dumps({"w": 1})
    sha = hashlib.sha256(data).hexdigest()
    resp = api.post("/v1/artifacts", files={"file": ("model.pkl", data)}, params={"expected_sha256": sha}, headers=hdr(key))
    assert resp.status_code == 201 and resp.json() | {"created_at": None} == {
        "sha256": sha, "size": len(data), "filename": "model.pkl", "kind": "pickle", "created_at": None, "links": {"self": f"/v1/artifacts/{sha}", "content": f"/v1/artifacts/{sha}/content"}}


def test_bad_uploads_keep_nothing(api, key, settings):
    assert_problem(upload(api, key, b""), 400, "empty")
    assert_problem(upload(api, key, b"x" * 100, expected_sha256="0" * 64), 422, "mismatch")
    # over the 1 MiB test limit: announced by Content-Length, and streamed without one
    assert_problem(upload(api, key, b"x" * (2 * 1024 * 1024)), 413)
    chunks = (b"y" * 65536 for _ in range(40))
    resp = api.post("/v1/artifacts", content=chunks, headers=hdr(key) | {"content-type": "application/octet-stream"})
    assert_problem(resp, 413, "exceeds")
    assert_problem(api.post("/v1/artifacts", files={"file": ("big.bin", b"z" * (2 * 1024 * 1024))}, headers=hdr(key)), 413)
    assert_problem(api.post("/v1/artifacts", files={"other": ("a.bin", b"abc")}, headers=hdr(key)), 400, "file")
    assert store_files(settings) == []


def test_authentication(api, settings):
    assert_problem(api.get("/v1/scans"), 401, "API key required")
    assert_problem(api.get("/v1/scans", headers=hdr("psk_wrong")), 401, "invalid")


def test_anonymous_only_when_enabled(tmp_path, request):
    from tests.conftest import make_settings

    settings = make_settings("embedded", tmp_path, request, allow_anonymous=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/scans").status_code == 200


def test_revoked_key_is_refused(api, sessions, tenant_key):
    from app.auth import revoke_key

    _, key = tenant_key()
    assert api.get("/v1/scans", headers=hdr(key)).status_code == 200
    with sessions() as session:
        assert revoke_key(session, key[:12])
    assert_problem(api.get("/v1/scans", headers=hdr(key)), 401)


def start_scan(api, key, **body):
    return api.post("/v1/scans", json=body, headers=hdr(key))


def test_scan_lifecycle_in_the_api(api, key, tmp_path, sessions):
    ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
    resp = start_scan(api, key, dataset=ds, options={"policy": {"fail_at": "critical"}})
    assert resp.status_code == 202, resp.text
    scan = resp.json()
    assert resp.headers["location"] == f"/v1/scans/{scan['id']}"
    # every detector applies: the model layer trains a proxy network on the dataset, TensorFlow work for the gpu queue
    assert scan["status"] == "queued" and scan["attempts"] == 0 and scan["queue"] == "gpu"
    data_only = start_scan(api, key, dataset=ds, options={"detectors": ["data_poisoning"]}).json()
    assert data_only["queue"] == "cpu"
    assert scan["inputs"]["dataset"]["sha256"] == ds and scan["options"]["policy"]["fail_at"] == "critical"
    got = api.get(f"/v1/scans/{scan['id']}", headers=hdr(key)).json()
    assert got["links"]["report"].endswith("/report") and got["timings"]["started_at"] is None
    assert_problem(api.get(f"/v1/scans/{scan['id']}/report", headers=hdr(key)), 409, "queued")
    canceled = api.post(f"/v1/scans/{scan['id']}/cancel", headers=hdr(key))
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert_problem(api.post(f"/v1/scans/{scan['id']}/cancel", headers=hdr(key)), 409, "canceled")


def test_scan_with_files_directly(api, key, tmp_path):
    files = {"dataset": ("d.npz", npz_bytes(tmp_path)), "model": ("m.pkl", pickle.dumps([1]))}
    resp = api.post("/v1/scans", files=files, data={"options": json.dumps({"detectors": ["artifact_integrity"]})}, headers=hdr(key))
    assert resp.status_code == 202, resp.text
    assert set(resp.json()["inputs"]) == {"model", "dataset"} and resp.json()["options"]["detectors"] == ["artifact_integrity"]
    wrong = api.post("/v1/scans", files={"dataset": ("d.npz", b"abc")}, data={"dataset_sha256": "1" * 64}, headers=hdr(key))
    assert_problem(wrong, 422, "mismatch")
    bad_options = api.post("/v1/scans", files={"dataset": ("d.npz", npz_bytes(tmp_path))}, data={"options": "{oops"}, headers=hdr(key))
    assert_problem(bad_options, 400, "not valid JSON")
    unknown_field = api.post("/v1/scans", files={"dataset": ("d.npz", npz_bytes(tmp_path))}, data={"colour": "red"}, headers=hdr(key))
    assert_problem(unknown_field, 422, "unexpected multipart fields")


def test_bad_scan_requests(api, key, tmp_path):
    ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
    model = upload(api, key, pickle.dumps([1]), "m.pkl").json()["sha256"]
    assert_problem(api.post("/v1/scans", content=b"{not json", headers=hdr(key) | {"content-type": "application/json"}), 400, "json")
    assert_problem(start_scan(api, key), 422, "nothing to scan")
    assert_problem(start_scan(api, key, dataset=ds, options={"turbo": True}), 422, "extra")
    assert_problem(start_scan(api, key, dataset=ds, options={"detectors": ["no_such_detector"]}), 422, "unknown detector")
    assert_problem(start_scan(api, key, dataset=ds, options={"policy": {"fail_at": "apocalyptic"}}), 422)
    assert_problem(start_scan(api, key, dataset=ds, colour="red"), 422)
    assert_problem(start_scan(api, key, dataset="f" * 64), 422, "does not exist")
    assert_problem(start_scan(api, key, dataset="not-a-hash"), 422)
    assert_problem(start_scan(api, key, dataset=model), 422, "wrong kind of dataset")
    table = upload(api, key, b"a,b,label\n1,2,0\n", "t.csv").json()["sha256"]
    # a model of any kind is scanned (not refused): what poisonscan cannot understand fails the scan with a reason
    assert start_scan(api, key, model=table).status_code == 202
    assert_problem(api.post("/v1/scans", content=b"x", headers=hdr(key) | {"content-type": "text/plain"}), 415)


def test_unknown_ids(api, key):
    assert_problem(api.get(f"/v1/artifacts/{'a' * 64}", headers=hdr(key)), 404)
    assert_problem(api.get("/v1/artifacts/xyz", headers=hdr(key)), 422)
    assert_problem(api.get("/v1/scans/00000000-0000-0000-0000-000000000000", headers=hdr(key)), 404)
    assert_problem(api.get("/v1/scans/not-a-uuid", headers=hdr(key)), 422)
    assert_problem(api.get("/v1/no/such/route", headers=hdr(key)), 404)
    assert_problem(api.get("/v1/scans", params={"cursor": "garbage!"}, headers=hdr(key)), 400, "cursor")
    assert_problem(api.get("/v1/scans", params={"status": "exploded"}, headers=hdr(key)), 422)


def test_tenant_isolation(api, tenant_key, tmp_path):
    _, alice = tenant_key("alice")
    _, bob = tenant_key("bob")
    ds = upload(api, alice, npz_bytes(tmp_path), "d.npz").json()["sha256"]
    scan = start_scan(api, alice, dataset=ds).json()
    assert_problem(api.get(f"/v1/artifacts/{ds}", headers=hdr(bob)), 404)
    assert_problem(api.get(f"/v1/scans/{scan['id']}", headers=hdr(bob)), 404)
    assert_problem(api.get(f"/v1/scans/{scan['id']}/report", headers=hdr(bob)), 404)
    assert_problem(api.post(f"/v1/scans/{scan['id']}/cancel", headers=hdr(bob)), 404)
    assert_problem(start_scan(api, bob, dataset=ds), 422, "does not exist")
    assert api.get("/v1/scans", headers=hdr(bob)).json()["items"] == []
    # Bob uploading the same bytes gets his own artifact, Alice's stays hers
    assert upload(api, bob, npz_bytes(tmp_path), "mine.npz").status_code == 201
    assert api.get(f"/v1/artifacts/{ds}", headers=hdr(alice)).json()["filename"] == "d.npz"
    assert api.get(f"/v1/scans/{scan['id']}", headers=hdr(alice)).status_code == 200


def test_list_filters_and_cursor_pagination(api, key, tmp_path, sessions):
    ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
    ids = [start_scan(api, key, dataset=ds).json()["id"] for _ in range(5)]
    api.post(f"/v1/scans/{ids[0]}/cancel", headers=hdr(key))
    seen, cursor = [], None
    while True:
        page = api.get("/v1/scans", params={"limit": 2} | ({"cursor": cursor} if cursor else {}), headers=hdr(key)).json()
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]  # newest first, each exactly once
    canceled = api.get("/v1/scans", params={"status": "canceled"}, headers=hdr(key)).json()["items"]
    assert [s["id"] for s in canceled] == [ids[0]]
    assert api.get("/v1/scans", params={"verdict": "fail"}, headers=hdr(key)).json()["items"] == []


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "up", "broker": "up"}


def test_readiness_reports_an_unreachable_broker(tmp_path, request):
    from tests.conftest import make_settings

    settings = make_settings("embedded", tmp_path, request, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        body = assert_problem(client.get("/readyz"), 503, "broker")
        assert body["checks"] == {"database": "up", "broker": "down"}
        assert "127.0.0.1" not in json.dumps(body) and "refused" not in json.dumps(body)  # nothing internal to anyone


def test_openapi_documents_every_operation_and_problem(api):
    spec = api.get("/openapi.json").json()
    ops = {(m.upper(), path) for path, item in spec["paths"].items() for m in item}
    assert {("POST", "/v1/artifacts"), ("GET", "/v1/artifacts/{sha256}"), ("POST", "/v1/scans"), ("GET", "/v1/scans"),
            ("GET", "/v1/scans/{scan_id}"), ("POST", "/v1/scans/{scan_id}/cancel"), ("GET", "/v1/scans/{scan_id}/report"),
            ("GET", "/healthz"), ("GET", "/readyz")} <= ops
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), (method, path)
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert list(resp["content"]) == ["application/problem+json"], (method, path, code)
    assert "ScanCreate" in spec["components"]["schemas"] and "Policy" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"


def test_state_transitions_are_conditional(sessions, tenant_key):
    from app.models import ScanStatus

    tenant, _ = tenant_key()
    with sessions() as session:
        scan = Scan(tenant=tenant, status="queued", queue="cpu", stage="queued", percent=0, attempts=1, inputs={}, options={})
        session.add(scan)
        session.commit()
        claim = dict(only_from={ScanStatus.queued})
        assert transition(session, scan.id, ScanStatus.running, **claim)
        assert not transition(session, scan.id, ScanStatus.running, **claim)  # a duplicate delivery claims nothing
        assert transition(session, scan.id, ScanStatus.succeeded)
        assert not transition(session, scan.id, ScanStatus.canceled)  # terminal stays terminal
        session.commit()
        session.refresh(scan)
        assert scan.status == "succeeded" and scan.finished_at is not None
        with pytest.raises(ValueError):
            transition(session, scan.id, ScanStatus.succeeded, only_from={ScanStatus.queued})  # not in the table


def test_tenant_defaults_join_the_scans_own_detector_config(tmp_path, request):
    from tests.conftest import make_settings

    tenant_config = {"anonymous": {"unsafe_serialization": {"allow_globals": ["teampkg.*"], "allow_pickle": True}}}
    settings = make_settings("embedded", tmp_path, request, allow_anonymous=True, tenant_detector_config=tenant_config)
    with TestClient(create_app(settings)) as client:
        sha = client.post("/v1/artifacts", params={"filename": "m.pkl"}, content=b"\x80\x02cteampkg.net\nNet\n)\x81.").json()["sha256"]
        resp = client.post("/v1/scans", json={"model": sha, "options": {"detector_config": {"unsafe_serialization": {"allow_globals": ["mine.Layer"]}}}})
        assert resp.status_code == 202, resp.text
        stored = resp.json()["options"]["detector_config"]["unsafe_serialization"]
        assert stored["allow_globals"] == ["mine.Layer", "teampkg.*"] and stored["allow_pickle"] is True
        bad = client.post("/v1/scans", json={"model": sha, "options": {"detector_config": {"unsafe_serialization": {"allow_globals": ["not a global!"]}}}})
        assert bad.status_code == 422 and "allow_globals" in bad.text
