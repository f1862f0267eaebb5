"""Webhooks: Standard Webhooks signatures, SSRF refusal, the outbox written with the scan's end, the dispatcher's
retries and attempt log, and events from a real worker (both configurations) to a real local receiver."""

import json
import time
import uuid
from datetime import datetime, timedelta

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import save_file
from sqlalchemy import delete, select
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks import WebhookVerificationError

from app.main import create_app
from app.models import Scan, ScanStatus, Webhook, WebhookAttempt, WebhookDelivery
from app.scans import repository
from app.scans.state import transition
from app.webhooks.addresses import UnsafeWebhookUrl, is_public, parse, resolve
from app.webhooks.dispatcher import Dispatcher
from app.webhooks.signing import new_secret, signed_headers
from tests.conftest import CONFIGS
from tests.stack import Stack, free_port, wait_for_scan
from tests.webhook_receiver import Receiver



def test_signatures_verify_with_the_standard_webhooks_library():
    secret, body = new_secret(), '{"type":"scan.succeeded","data":{"verdict":"pass"}}'
    assert secret.startswith("whsec_")
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    assert headers["webhook-signature"].startswith("v1,")
    assert StandardWebhook(secret).verify(body, headers)["data"]["verdict"] == "pass"  # an independent implementation
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(body.replace("pass", "fail"), headers)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost:8080/hook", "http://0x7f000001/", "http://2130706433/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/",
    "https://192.168.0.10/", "http://172.16.5.5/", "http://100.64.0.1/", "http://[fc00::1]/", "http://[fe80::1]/",
    "http://0.0.0.0/", "http://224.0.0.1/",
])
def test_non_public_addresses_are_refused_unless_the_operator_allows_them(url):
    with pytest.raises(UnsafeWebhookUrl, match="non-public address"):
        resolve(parse(url), allow_private=False)
    if "224.0.0.1" not in url and "0.0.0.0" not in url and "fe80" not in url:
        assert resolve(parse(url), allow_private=True)


@pytest.mark.parametrize("url,why", [("ftp://example.com/", "https://"), ("https://user:pw@8.8.8.8/", "credentials"),
                                     ("https://8.8.8.8:99999/", "port"), ("https:///path", "no host")])
def test_malformed_webhook_urls_are_refused(url, why):
    with pytest.raises(UnsafeWebhookUrl, match=why):
        resolve(parse(url), allow_private=False)


def test_public_addresses_pass():
    assert is_public("8.8.8.8") and is_public("2606:4700:4700::1111")
    assert resolve(parse("https://8.8.8.8/hook"), allow_private=False) == "8.8.8.8"


@pytest.fixture
def api(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def test_webhooks_are_per_tenant_and_show_the_secret_once(api, tenant_key):
    _, key = tenant_key("hooks")
    _, other = tenant_key("other")
    refused = api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers={"X-API-Key": key})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert "non-public address" in refused.json()["detail"]
    bad_event = api.post("/v1/webhooks", json={"url": "https://8.8.8.8/h", "events": ["scan.exploded"]},
                         headers={"X-API-Key": key})
    assert bad_event.status_code == 422

    created = api.post("/v1/webhooks", json={"url": "https://8.8.8.8/hook", "events": ["scan.failed"],
                                             "description": "CI gate"}, headers={"X-API-Key": key})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["scan.failed"]
    assert created.headers["location"] == f"/v1/webhooks/{hook['id']}"
    listed = api.get("/v1/webhooks", headers={"X-API-Key": key}).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert api.get(f"/v1/webhooks/{hook['id']}", headers={"X-API-Key": other}).status_code == 404
    assert api.get("/v1/webhooks", headers={"X-API-Key": other}).json()["items"] == []
    assert api.delete(f"/v1/webhooks/{hook['id']}", headers={"X-API-Key": other}).status_code == 404
    assert api.get(f"/v1/webhooks/{hook['id']}/deliveries", headers={"X-API-Key": key}).json() == \
        {"items": [], "next_cursor": None}
    assert api.delete(f"/v1/webhooks/{hook['id']}", headers={"X-API-Key": key}).status_code == 204
    assert api.get(f"/v1/webhooks/{hook['id']}", headers={"X-API-Key": key}).status_code == 404


def test_a_tenant_has_a_bounded_number_of_webhooks(settings, tenant_key):
    _, key = tenant_key("many")
    with TestClient(create_app(settings.model_copy(update={"max_webhooks_per_tenant": 2}))) as api:
        codes = [api.post("/v1/webhooks", json={"url": f"https://8.8.8.8/{i}"}, headers={"X-API-Key": key}).status_code
                 for i in range(3)]
    assert codes == [201, 201, 409]


# ----------------------------------------------------------------------------------------- the outbox

TENANT_PREFIX = "webhook-test-"  # hooks this module writes straight into the database


@pytest.fixture
def forget_hooks(sessions):
    """The PostgreSQL database is the whole run's: no delivery of this test may be left for another's dispatcher."""
    yield
    with sessions() as session:
        session.execute(delete(Webhook).where(Webhook.tenant.startswith(TENANT_PREFIX)))
        session.commit()


def _hook(session, tenant: str, url: str, events=("scan.succeeded", "scan.failed", "scan.canceled")) -> Webhook:
    hook = Webhook(tenant=tenant, url=url, events=list(events), secret=new_secret())
    session.add(hook)
    session.commit()
    return hook


def _running_scan(session, tenant: str) -> uuid.UUID:
    scan = Scan(tenant=tenant, status=ScanStatus.queued, queue="cpu", inputs={"model": {"sha256": "ab" * 32,
                "filename": "<m>.pt"}}, options={})
    session.add(scan)
    session.commit()
    assert repository.claim(session, scan.id)
    session.commit()
    return scan.id


def _deliveries(session, scan_id) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.scan_id == scan_id)))


def test_the_scans_end_and_its_events_commit_together(sessions, forget_hooks):
    tenant = f"{TENANT_PREFIX}outbox-{uuid.uuid4().hex[:8]}"
    closed = f"http://127.0.0.1:{free_port()}"
    with sessions() as session:
        all_events = _hook(session, tenant, f"{closed}/all")
        _hook(session, tenant, f"{closed}/failures", events=("scan.failed",))
        _hook(session, f"{tenant}-other", f"{closed}/other")
        done, dropped, canceled = (_running_scan(session, tenant) for _ in range(3))

        report = {"verdict": "pass", "detectors": [], "outputs": []}
        assert repository.store_result(session, done, report, "1.0", tenant, None)
        session.commit()
        assert transition(session, dropped, ScanStatus.failed, error="boom")
        session.rollback()  # the failure never committed: neither did its event
        assert transition(session, canceled, ScanStatus.canceled, error="canceled by the user")
        session.commit()

        succeeded = _deliveries(session, done)
        assert [(d.webhook_id, d.event_type, d.status) for d in succeeded] == [(all_events.id, "scan.succeeded", "pending")]
        body = json.loads(succeeded[0].body)
        assert body["type"] == "scan.succeeded" and body["data"]["verdict"] == "pass"
        assert body["data"]["links"]["report"] == f"/v1/scans/{done}/report"
        assert body["data"]["inputs"]["model"]["filename"] == "<m>.pt"
        assert _deliveries(session, dropped) == []
        assert [d.event_type for d in _deliveries(session, canceled)] == ["scan.canceled"]


# ----------------------------------------------------------------------------------------- the dispatcher

def _dispatcher(sessions, settings, **overrides) -> Dispatcher:
    values = {"webhook_allow_private": True, "webhook_backoff_base_s": 0.2, "webhook_timeout_s": 2.0} | overrides
    return Dispatcher(sessions, settings.model_copy(update=values), max_parallel=4)


def _one_event(sessions, receiver_url: str) -> tuple[Webhook, uuid.UUID]:
    tenant = f"{TENANT_PREFIX}{uuid.uuid4().hex[:8]}"
    with sessions() as session:
        hook = _hook(session, tenant, receiver_url)
        scan_id = _running_scan(session, tenant)
        assert repository.store_result(session, scan_id, {"verdict": "fail", "detectors": [], "outputs": []}, "1.0",
                                       tenant, None)
        session.commit()
    return hook, scan_id


def _run_until(dispatcher: Dispatcher, sessions, scan_id, status: str, timeout_s: float = 20) -> WebhookDelivery:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dispatcher.dispatch_due()
        with sessions() as session:
            row = _deliveries(session, scan_id)[0]
        if row.status == status:
            return row
        time.sleep(0.05)
    raise AssertionError(f"delivery still {row.status} after {timeout_s} s")


def test_deliveries_are_signed_retried_with_backoff_and_every_attempt_listed(settings, sessions, tenant_key, forget_hooks):
    with Receiver(status=503) as receiver:
        hook, scan_id = _one_event(sessions, receiver.url)
        dispatcher = _dispatcher(sessions, settings)
        deadline = time.monotonic() + 20
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            dispatcher.dispatch_due()
            time.sleep(0.05)
        receiver.status = 200
        delivered = _run_until(dispatcher, sessions, scan_id, "delivered")
    dispatcher.stop()

    got = receiver.received
    assert len(got) >= 4 and delivered.attempts == len(got)
    assert len({r.headers["webhook-id"] for r in got}) == 1  # one id across retries: receivers can drop duplicates
    for r in got:
        StandardWebhook(hook.secret).verify(r.body, r.headers)
        assert json.loads(r.body)["data"]["scan_id"] == str(scan_id)
    gaps = [b.at - a.at for a, b in zip(got, got[1:])]
    assert 0.1 < gaps[0] < gaps[2]  # 0.2 s, 0.4 s, 0.8 s (±20%, plus the polling): it backs off

    key = _key_for(sessions, hook.tenant)
    with TestClient(create_app(settings)) as api:
        page = api.get(f"/v1/webhooks/{hook.id}/deliveries", headers={"X-API-Key": key}).json()
    [item] = page["items"]
    assert item["status"] == "delivered" and item["webhook_id"] == got[0].headers["webhook-id"]
    assert [a["status_code"] for a in item["attempt_log"]] == [503] * (len(got) - 1) + [200]
    assert item["attempt_log"][0]["error"] == "HTTP 503" and item["attempt_log"][-1]["error"] is None


def _key_for(sessions, tenant: str) -> str:
    from app.auth import create_key

    with sessions() as session:
        return create_key(session, "reader", tenant)[1]


def test_a_delivery_gives_up_after_its_retry_window(settings, sessions, forget_hooks):
    port = free_port()  # nothing listens: connection refused
    hook, scan_id = _one_event(sessions, f"http://127.0.0.1:{port}/down")
    dispatcher = _dispatcher(sessions, settings, webhook_retry_window_s=1)
    failed = _run_until(dispatcher, sessions, scan_id, "failed")
    dispatcher.stop()
    assert failed.attempts >= 2 and failed.finished_at is not None
    assert failed.finished_at - failed.created_at >= timedelta(seconds=1)


def _attempt_errors(sessions, scan_id, at_least: int, timeout_s: float) -> list[str | None]:
    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            errors = session.scalars(select(WebhookAttempt.error).join(WebhookDelivery)
                                     .where(WebhookDelivery.scan_id == scan_id).order_by(WebhookAttempt.id)).all()
        if len(errors) >= at_least or time.monotonic() > deadline:
            return errors
        time.sleep(0.1)


def test_a_slow_receiver_times_out_and_holds_up_no_other_endpoint(settings, sessions, forget_hooks):
    with Receiver(delay_s=6) as slow, Receiver() as quick:
        _, slow_scan = _one_event(sessions, slow.url)
        _, quick_scan = _one_event(sessions, quick.url)
        dispatcher = _dispatcher(sessions, settings, webhook_timeout_s=1.5)
        dispatcher.dispatch_due()
        assert quick.wait_for(1, 3.0), "the quick receiver waited behind the slow one"
        assert _attempt_errors(sessions, quick_scan, 1, 3.0) == [None]
        assert _attempt_errors(sessions, slow_scan, 1, 10.0)[0] == "timeout after 1.5 s"
        dispatcher.stop()


def test_deleting_a_webhook_drops_its_pending_deliveries(settings, sessions, tenant_key):
    port = free_port()
    hook, scan_id = _one_event(sessions, f"http://127.0.0.1:{port}/down")
    key = _key_for(sessions, hook.tenant)
    with TestClient(create_app(settings)) as api:
        assert api.delete(f"/v1/webhooks/{hook.id}", headers={"X-API-Key": key}).status_code == 204
    with sessions() as session:
        assert _deliveries(session, scan_id) == []


# ----------------------------------------------------------------------------------------- from a real worker

@pytest.fixture(params=CONFIGS)
def hooked_stack(request, tmp_path):
    urls = (request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")) \
        if request.param == "postgres" else (None, None)
    metrics_port = free_port()
    stack = Stack(request.param, tmp_path, *urls, webhook_allow_private="true", webhook_timeout_s=5,
                  webhook_poll_s=0.2, worker_metrics_port=metrics_port)
    stack.metrics_port = metrics_port
    try:
        yield stack.start()
    finally:
        stack.stop()


def _metric(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def test_scan_events_come_from_the_worker_signed_and_a_stalled_receiver_delays_no_scan(hooked_stack, tmp_path):
    model = tmp_path / "model.safetensors"
    save_file({"dense/kernel": np.ones((4, 3), np.float32)}, str(model))
    with Receiver() as quick, Receiver(delay_s=30) as stalled, hooked_stack.client() as client:
        hooks = [client.post("/v1/webhooks", json={"url": r.url}).json() for r in (quick, stalled)]
        sha = client.post("/v1/artifacts", params={"filename": "model.safetensors"}, content=model.read_bytes(),
                          headers={"content-type": "application/octet-stream"}).json()["sha256"]
        ids = [client.post("/v1/scans", json={"model": sha}).json()["id"] for _ in range(3)]
        scans = [wait_for_scan(client, i) for i in ids]
        assert all(s["status"] == "succeeded" for s in scans), hooked_stack.logs()

        got = quick.wait_for(3, 20)
        assert len(got) == 3, hooked_stack.logs()
        events = [StandardWebhook(hooks[0]["secret"]).verify(r.body, r.headers) for r in got]
        assert sorted(e["data"]["scan_id"] for e in events) == sorted(ids)
        assert {(e["type"], e["data"]["verdict"]) for e in events} == {("scan.succeeded", "pass")}
        # The stalled receiver holds each of its attempts for the 5 s timeout: had a scan waited on it, the next
        # scan (one worker, one at a time) would have started that much later.
        spans = sorted((s["timings"]["started_at"], s["timings"]["finished_at"]) for s in scans)
        gaps = [(datetime.fromisoformat(b[0]) - datetime.fromisoformat(a[1])).total_seconds()
                for a, b in zip(spans, spans[1:])]
        assert max(gaps) < 4, gaps
        assert stalled.wait_for(1, 10), "the stalled receiver got nothing"

        metrics = client.get("/metrics").text
        worker_metrics = httpx.get(f"http://127.0.0.1:{hooked_stack.metrics_port}/metrics").text
    for text in (metrics, worker_metrics):  # the API reads the worker's files; the worker serves them too
        assert _metric(text, "poisonscan_scan_duration_seconds_count", outcome="succeeded") == 3
        assert _metric(text, "poisonscan_detector_duration_seconds_count", detector="unsafe_serialization") == 3
        assert _metric(text, "poisonscan_scan_duration_seconds_sum") > 0


@pytest.mark.parametrize("url", ["http://[::1/", "https://exa\x00mple.com/", "https://" + "a" * 300 + ".com/",
                                 "https://no-such-host.invalid/"])
def test_urls_that_cannot_be_parsed_or_resolved_are_refused(url):
    with pytest.raises(UnsafeWebhookUrl):
        resolve(parse(url), allow_private=True)
