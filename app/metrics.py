"""GET /metrics in the Prometheus text format: the API's requests, and the scans as the database has them.

Request counts and durations are kept per API process (label ``route`` is the route template, never the raw path:
bounded label values). Scan counts, queue depth and the oldest queued scan's age are read at scrape time from the
database and the broker, so every API process reports the same deployment-wide figures and no worker needs to
export anything for them.
"""

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from app.models import Scan, ScanStatus, utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what Prometheus asks for by default


class RequestMetrics:
    """A pure ASGI middleware (no per-request task or body copy, unlike BaseHTTPMiddleware: polling stays cheap)."""

    def __init__(self, app, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("poisonscan_api_requests", "API requests answered", ["route", "method", "status"],
                                registry=registry)
        self.seconds = Histogram("poisonscan_api_request_duration_seconds", "Time to answer an API request",
                                 ["route", "method"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def tell(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tell)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.requests.labels(route, scope["method"], str(status[0])).inc()
            self.seconds.labels(route, scope["method"]).observe(time.perf_counter() - started)


class ScanCollector:
    """Gauges read at scrape time: scans per status and verdict, and per queue the queued scans, the oldest one's
    age and the broker's waiting messages."""

    def __init__(self, sessions, queue_depth: Callable[[str], int | None], queues: tuple[str, ...]) -> None:
        self.sessions, self.queue_depth, self.queues = sessions, queue_depth, queues

    def collect(self):
        scans = GaugeMetricFamily("poisonscan_scans", "Scans by status and verdict", labels=["status", "verdict"])
        queued = GaugeMetricFamily("poisonscan_queued_scans", "Scans waiting for a worker", labels=["queue"])
        oldest = GaugeMetricFamily("poisonscan_oldest_queued_scan_age_seconds", "Age of the oldest queued scan",
                                   labels=["queue"])
        depth = GaugeMetricFamily("poisonscan_broker_queue_messages", "Messages waiting in the broker's queue",
                                  labels=["queue"])
        with self.sessions() as session:
            for status, verdict, count in session.execute(
                    select(Scan.status, Scan.verdict, func.count()).group_by(Scan.status, Scan.verdict)):
                scans.add_metric([status, verdict or ""], count)
            waiting = {q: (n, first) for q, n, first in session.execute(
                select(Scan.queue, func.count(), func.min(Scan.created_at))
                .where(Scan.status == ScanStatus.queued).group_by(Scan.queue))}
        now = utcnow()
        for queue in sorted(set(self.queues) | set(waiting)):
            count, first = waiting.get(queue, (0, None))
            queued.add_metric([queue], count)
            oldest.add_metric([queue], (now - first).total_seconds() if first else 0.0)
            if (messages := self.queue_depth(queue)) is not None:
                depth.add_metric([queue], messages)
        yield from (scans, queued, oldest, depth)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
