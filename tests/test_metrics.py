"""GET /metrics (issue 14, metrics part): the Prometheus text format, parsed by prometheus_client's own parser."""

import uuid

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.auth import create_key
from app.main import create_app
from tests.test_api import hdr, npz_bytes, upload


def _samples(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize("config", ["embedded", "postgres"])
def test_metrics_count_requests_by_route_template_and_scans_by_status(tmp_path, request, config):
    from tests.conftest import make_settings

    with TestClient(create_app(make_settings(config, tmp_path, request, reaper_in_api=False))) as api:
        with api.app.state.sessionmaker() as session:
            key = create_key(session, "metrics", f"metrics-{uuid.uuid4().hex[:8]}")[1]
        ds = upload(api, key, npz_bytes(tmp_path), "d.npz").json()["sha256"]
        scans = [api.post("/v1/scans", json={"dataset": ds}, headers=hdr(key)).json()["id"] for _ in range(2)]
        for scan_id in scans:
            assert api.get(f"/v1/scans/{scan_id}", headers=hdr(key)).status_code == 200
        assert api.get(f"/v1/scans/{uuid.uuid4()}", headers=hdr(key)).status_code == 404
        answer = api.get("/metrics")  # no key: aggregate figures only, as scrapers expect
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        families = _samples(answer.text)
        requests = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
                    for s in families["poisonscan_api_requests"] if s.name.endswith("_total")}
        assert requests[("/v1/scans/{scan_id}", "GET", "200")] == 2  # the template, not the raw path
        assert requests[("/v1/scans/{scan_id}", "GET", "404")] == 1
        assert requests[("/v1/scans", "POST", "202")] == 2
        assert not any(scans[0] in route for route, _, _ in requests)
        queued = {s.labels["queue"]: s.value for s in families["poisonscan_queued_scans"]}
        assert set(queued) >= {"cpu", "gpu"} and sum(queued.values()) >= 2  # PostgreSQL's database is shared
        by_status = {(s.labels["status"], s.labels["verdict"]): s.value for s in families["poisonscan_scans"]}
        assert by_status[("queued", "")] == sum(queued.values())
        oldest = {s.labels["queue"]: s.value for s in families["poisonscan_oldest_queued_scan_age_seconds"]}
        assert all((oldest[q] > 0) == (queued[q] > 0) for q in queued)
        depth = {s.labels["queue"]: s.value for s in families["poisonscan_broker_queue_messages"]}
        assert sum(depth.values()) >= 2  # the two scans' messages wait in the real broker (no worker runs here)
        durations = [s for s in families["poisonscan_api_request_duration_seconds"]
                     if s.name.endswith("_count") and s.labels["route"] == "/v1/scans/{scan_id}"]
        assert durations and durations[0].value == 3
