"""The worker's Celery app: ``celery -A worker.celery_app worker -Q gpu -c 1``.

Besides the scans, each worker's main process runs the webhook dispatcher (a thread; POISONSCAN_WEBHOOKS_IN_WORKER)
and, where POISONSCAN_WORKER_METRICS_PORT is set, serves the metrics of all its processes.
"""

import logging
import os

from app.settings import get_settings

_settings = get_settings()
# Before anything imports prometheus_client: the pool processes then write their metrics where the reader sums them.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_settings.resolved_metrics_dir))

from celery.signals import worker_init, worker_ready, worker_shutdown  # noqa: E402

from worker.broker import make_celery  # noqa: E402

celery_app = make_celery(_settings, with_tasks=True)
log = logging.getLogger("poisonscan.worker")
_dispatcher = None


@worker_init.connect
def _clear_metrics(**_) -> None:
    from worker.metrics import clear

    clear(_settings.resolved_metrics_dir)


@worker_ready.connect
def _start_side_services(**_) -> None:
    global _dispatcher
    if _settings.worker_metrics_port:
        from prometheus_client import start_http_server

        from worker.metrics import multiprocess_registry

        start_http_server(_settings.worker_metrics_port, registry=multiprocess_registry(_settings.resolved_metrics_dir))
        log.info("worker metrics on port %s", _settings.worker_metrics_port)
    if _settings.webhooks_in_worker:
        from app.webhooks.dispatcher import Dispatcher

        _dispatcher = Dispatcher(_own_sessions(), _settings).start()


@worker_shutdown.connect
def _stop_side_services(**_) -> None:
    if _dispatcher is not None:
        _dispatcher.stop()


def _own_sessions():
    """An engine of the dispatcher's own: pool processes forked later must not inherit its open connections."""
    from sqlalchemy.orm import sessionmaker

    from app.db import make_engine

    return sessionmaker(make_engine(_settings.sqlalchemy_url, pool_size=2), expire_on_commit=False)
