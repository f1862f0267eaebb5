"""The API under frozen dependencies and hostile clients (issue 13): bounded waits, 503 + Retry-After, limits, names,
conditional polling, and the reaper on its own schedule. Real SQLite/PostgreSQL, real brokers (the filesystem
transport, Redis, and a TCP listener that accepts and never answers: a frozen Redis, as under SIGSTOP)."""

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.models import Scan, utcnow
from app.settings import Settings
from tests.conftest import make_settings
from tests.test_api import PROBLEM, assert_problem, hdr, npz_bytes, upload
from worker.broker import make_celery, queue_depth
from worker.reaper import reap_stuck_scans


@pytest.fixture
def frozen_port():
    """A port that accepts connections and never answers a byte: what a client sees of a SIGSTOPped server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _client(tmp_path, request, config="embedded", **overrides) -> TestClient:
    return TestClient(create_app(make_settings(config, tmp_path, request, **overrides)))


def _key(client) -> str:
    from app.auth import create_key

    with client.app.state.sessionmaker() as session:
        return create_key(session, "hard", f"hard-{uuid.uuid4().hex[:8]}")[1]


def test_a_frozen_broker_costs_a_scan_request_seconds_and_never_blocks_health(tmp_path, request, frozen_port):
    with _client(tmp_path, request, broker_url=f"redis://127.0.0.1:{frozen_port}/0", broker_timeout_s=1.0) as api:
        key = _key(api)
        ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
        with ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            posts = [pool.submit(api.post, "/v1/scans", json={"dataset": ds}, headers=hdr(key)) for _ in range(3)]
            time.sleep(0.2)
            health_started = time.monotonic()
            assert api.get("/healthz").status_code == 200
            assert time.monotonic() - health_started < 1.0
            answers = [p.result() for p in posts]
        assert time.monotonic() - started < 6.0  # each publish is bounded by broker_timeout_s, not by the freeze
        assert all(a.status_code == 202 for a in answers)  # the scan is committed and stays queued
        scan_id = answers[0].json()["id"]
        with api.app.state.sessionmaker() as session:
            scan = session.get(Scan, uuid.UUID(scan_id))
            # marked for the reaper's next pass rather than one queued timeout later
            assert scan.status == "queued" and scan.heartbeat_at < utcnow() - timedelta(seconds=600)


def test_readiness_answers_within_two_seconds_when_the_broker_is_frozen(tmp_path, request, frozen_port):
    with _client(tmp_path, request, broker_url=f"redis://127.0.0.1:{frozen_port}/0") as api:
        with ThreadPoolExecutor(20) as pool:
            started = time.monotonic()
            answers = list(pool.map(lambda _: api.get("/readyz"), range(20)))
            elapsed = time.monotonic() - started
        assert elapsed < 2.5
        for answer in answers:
            body = assert_problem(answer, 503, "broker")
            assert body["checks"] == {"database": "up", "broker": "down"}
            assert answer.headers["retry-after"]
            assert str(frozen_port) not in answer.text


def test_database_down_is_503_with_retry_after_even_for_a_bad_key(tmp_path, request):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connections are refused
    settings = Settings(data_dir=tmp_path / "data", database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/x",
                        api_db_timeout_s=1.0, reaper_in_api=False)
    with TestClient(create_app(settings)) as api:
        for answer in (api.get("/v1/scans", headers=hdr("psk_not-a-key")), api.get("/v1/scans", headers=hdr("psk_other")),
                       upload(api, "psk_x", b"bytes", "f.bin")):
            body = assert_problem(answer, 503, "database")
            assert answer.headers["retry-after"] == "5" and "nothing was changed" in body["detail"].lower()
        assert api.get("/healthz").status_code == 200
        assert api.get("/readyz").json()["checks"] == {"database": "down", "broker": "up"}


def test_method_not_allowed_says_which_are(tmp_path, request):
    with _client(tmp_path, request) as api:
        answer = api.delete("/v1/scans")
        assert_problem(answer, 405)
        assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


@pytest.mark.parametrize("config", ["embedded", "postgres"])
def test_any_unicode_filename_is_kept_exactly_and_control_characters_are_refused(tmp_path, request, config):
    with _client(tmp_path, request, config) as api:
        key = _key(api)
        store = api.app.state.store.root
        for name in ("模型.safetensors", "modèle.npz", "données 😀.npz"):
            answer = api.post("/v1/artifacts", files={"file": (name, npz_bytes(tmp_path) + name.encode())}, headers=hdr(key))
            assert answer.status_code == 201 and answer.json()["filename"] == name, answer.text
            raw = upload(api, key, npz_bytes(tmp_path) + b"raw" + name.encode(), name)
            assert raw.status_code == 201 and raw.json()["filename"] == name
        stored = sorted(p for p in store.rglob("*") if p.is_file() and ".incoming" not in p.parts)
        for name in ("evil\x00.pkl", "tab\t.npz", "bell\x07.npz", "del\x7f.npz"):
            for answer in (_raw_multipart(api, "/v1/artifacts", "file", name, b"payload" + name.encode(), key),
                           upload(api, key, b"raw payload" + name.encode(), name),
                           _raw_multipart(api, "/v1/scans", "dataset", name, npz_bytes(tmp_path) + name.encode(), key)):
                assert_problem(answer, 422, "control characters")
        # nothing refused was kept: no bytes without a row
        assert sorted(p for p in store.rglob("*") if p.is_file() and ".incoming" not in p.parts) == stored
        assert not [p for p in (store / ".incoming").rglob("*") if p.is_file()]


def _raw_multipart(api, path: str, field: str, filename: str, data: bytes, key: str):
    """A multipart body with the filename's bytes as they are (HTTP libraries percent-encode control characters;
    a hostile client need not)."""
    boundary = "poisonscan-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="'.encode() + filename.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + f"\r\n--{boundary}--\r\n".encode())
    return api.post(path, content=body, headers=hdr(key) | {"content-type": f"multipart/form-data; boundary={boundary}"})


def test_multipart_text_fields_are_bounded_in_count(tmp_path, request):
    with _client(tmp_path, request) as api:
        key = _key(api)
        many = {f"f{i}": "x" * 100 for i in range(40)}
        answer = api.post("/v1/scans", files={"dataset": ("d.npz", npz_bytes(tmp_path))}, data=many, headers=hdr(key))
        assert_problem(answer, 400, "more than 32 text fields")
        big = api.post("/v1/scans", files={"dataset": ("d.npz", npz_bytes(tmp_path))}, data={"options": "x" * 70_000},
                       headers=hdr(key))
        assert_problem(big, 400, "over 65536 bytes")


def test_a_tenant_with_too_many_active_scans_gets_429(tmp_path, request):
    with _client(tmp_path, request, max_active_scans_per_tenant=2) as api:
        key, other = _key(api), _key(api)
        ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
        assert [api.post("/v1/scans", json={"dataset": ds}, headers=hdr(key)).status_code for _ in range(2)] == [202, 202]
        refused = api.post("/v1/scans", json={"dataset": ds}, headers=hdr(key))
        assert_problem(refused, 429, "too many active scans")
        assert int(refused.headers["retry-after"]) > 0
        theirs = upload(api, other, npz_bytes(tmp_path), "d.npz").json()["sha256"]
        assert api.post("/v1/scans", json={"dataset": theirs}, headers=hdr(other)).status_code == 202  # others unaffected


def test_repeated_bad_keys_are_throttled_but_a_valid_key_is_not(tmp_path, request):
    with _client(tmp_path, request, auth_failures_per_minute=5) as api:
        key = _key(api)
        assert api.get("/v1/scans", headers=hdr(key)).status_code == 200  # known to this process
        codes = [api.get("/v1/scans", headers=hdr(f"psk_guess{i}")).status_code for i in range(8)]
        assert codes == [401] * 5 + [429] * 3
        throttled = api.get("/v1/scans", headers=hdr("psk_guess"))
        assert throttled.headers["content-type"].startswith(PROBLEM) and 0 < int(throttled.headers["retry-after"]) <= 60
        assert api.get("/v1/scans", headers=hdr(key)).status_code == 200


@pytest.mark.parametrize("config", ["embedded", "postgres"])
def test_polling_with_an_etag_gets_304_until_the_scan_changes(tmp_path, request, config):
    with _client(tmp_path, request, config) as api:
        key = _key(api)
        ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
        scan_id = api.post("/v1/scans", json={"dataset": ds}, headers=hdr(key)).json()["id"]
        first = api.get(f"/v1/scans/{scan_id}", headers=hdr(key))
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        unchanged = api.get(f"/v1/scans/{scan_id}", headers=hdr(key) | {"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
        assert api.post(f"/v1/scans/{scan_id}/cancel", headers=hdr(key)).status_code == 200
        changed = api.get(f"/v1/scans/{scan_id}", headers=hdr(key) | {"If-None-Match": etag})
        assert changed.status_code == 200 and changed.json()["status"] == "canceled" and changed.headers["etag"] != etag
        other = _key(api)  # another tenant learns nothing from an ETag
        assert api.get(f"/v1/scans/{scan_id}", headers=hdr(other) | {"If-None-Match": etag}).status_code == 404


# ------------------------------------------------------------------------------------------------ the reaper

def _queued(sessions, queue="cpu", silent_s=0.0, **values) -> uuid.UUID:
    with sessions() as session:
        scan = Scan(tenant="reaper", status="queued", stage="queued", queue=queue, percent=0, attempts=0, inputs={},
                    options={}, heartbeat_at=utcnow() - timedelta(seconds=silent_s), **values)
        session.add(scan)
        session.commit()
        return scan.id


def test_the_reaper_resends_only_what_the_queue_is_short_of(sessions, settings):
    silent = settings.queued_timeout_s + 60
    # a queue of its own: the PostgreSQL database is shared with the other tests of this run
    ids = [_queued(sessions, queue="reaper-test", silent_s=silent + i) for i in range(4)]  # ids[3] is the oldest
    sent = []

    def reap(depth):
        with sessions() as session:
            reap_stuck_scans(session, settings, lambda sid, q: q == "reaper-test" and sent.append(sid),
                             queue_depth=lambda q: depth if q == "reaper-test" else None)

    reap(4)  # a backlog: every queued scan has its message waiting
    assert sent == []
    reap(3)  # the broker lost one message: the oldest silent scan is re-sent
    assert sent == [str(ids[3])]
    reap(4)  # its message waits now: nothing more to send
    assert sent == [str(ids[3])]
    reap(None)  # a broker that cannot count: every silent scan is re-sent, but not one sent within the timeout
    assert sorted(sent) == sorted(str(i) for i in ids)
    reap(None)  # and a second reaper right after sends none of them again
    assert len(sent) == 4


def test_the_reaper_runs_in_the_api_on_its_own_schedule(tmp_path, request):
    """A queued scan whose message was lost (none in the broker's queue) is sent by the API's reaper thread, through
    the real filesystem broker, within a few of its intervals."""
    settings = make_settings("embedded", tmp_path, request, reaper_interval_s=1, queued_timeout_s=5)
    celery = make_celery(settings)
    with TestClient(create_app(settings)) as api:
        scan_id = _queued(api.app.state.sessionmaker, silent_s=60)
        deadline = time.monotonic() + 10
        while queue_depth(celery, "cpu") != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue_depth(celery, "cpu") == 1
        time.sleep(2.5)  # two more passes: the message is waiting now, so nothing more is sent
        assert queue_depth(celery, "cpu") == 1
        with api.app.state.sessionmaker() as session:
            assert session.get(Scan, scan_id).heartbeat_at > utcnow() - timedelta(seconds=10)


def test_a_change_made_elsewhere_reaches_pollers_within_the_poll_memo(tmp_path, request):
    from app.models import ScanStatus
    from app.scans.state import transition

    with _client(tmp_path, request, poll_cache_ttl_s=0.5) as api:
        key = _key(api)
        ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
        scan_id = api.post("/v1/scans", json={"dataset": ds}, headers=hdr(key)).json()["id"]
        assert api.get(f"/v1/scans/{scan_id}", headers=hdr(key)).json()["status"] == "queued"
        with api.app.state.sessionmaker() as session:  # a worker claims it, in another process as far as the API knows
            assert transition(session, uuid.UUID(scan_id), ScanStatus.running, stage="starting")
            session.commit()
        time.sleep(0.6)
        assert api.get(f"/v1/scans/{scan_id}", headers=hdr(key)).json()["status"] == "running"
