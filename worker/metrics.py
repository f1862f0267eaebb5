"""The worker's metrics: scan and detector durations as Prometheus histograms.

Celery runs scans in pool processes, so these use prometheus_client's multiprocess mode: ``worker.celery_app`` sets
``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client, every process writes its own file there, and
a reader (``multiprocess_registry``) sums them: the API's /metrics when it shares the folder, or the worker's own
endpoint (POISONSCAN_WORKER_METRICS_PORT).
"""

from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

SCAN_SECONDS = Histogram(
    "poisonscan_scan_duration_seconds", "Time a worker spent on one scan attempt, from its claim to its end, by queue "
    "and outcome (succeeded, failed, stopped: canceled or re-queued, interrupted: a database error, run again)",
    ["queue", "outcome"], buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200))
DETECTOR_SECONDS = Histogram(
    "poisonscan_detector_duration_seconds", "Time one detector took in a scan that succeeded",
    ["detector"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800))


def observe_scan(queue: str, outcome: str, seconds: float, report: dict | None = None) -> None:
    SCAN_SECONDS.labels(queue=queue, outcome=outcome).observe(seconds)
    for entry in (report or {}).get("detectors", []):
        if not entry.get("skipped_because"):
            DETECTOR_SECONDS.labels(detector=entry["name"]).observe(entry.get("duration_s", 0.0))


def multiprocess_registry(folder: Path) -> CollectorRegistry:
    folder.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return registry


def clear(folder: Path) -> None:
    """A worker starting anew: the files of an earlier run's processes would be summed with this run's."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
