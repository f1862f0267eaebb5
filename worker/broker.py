"""Celery configuration: queues ``cpu`` and ``gpu``, at-least-once delivery, bounded task lifetimes.

The API builds an instance with ``make_celery(settings)`` only to send tasks by name, so it
never imports the detectors or TensorFlow; the worker's instance lives in ``worker.celery_app``.
"""

from typing import TYPE_CHECKING

from app.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

RUN_SCAN = "poisonscan.run_scan"
QUEUES = ("cpu", "gpu")


def make_celery(settings: Settings, *, with_tasks: bool = False) -> "Celery":
    from celery import Celery  # imported here: the API builds its instance only when it first sends a task
    from kombu import Exchange, Queue

    app = Celery("poisonscan", broker=settings.celery_broker_url)
    app.conf.update(
        task_acks_late=True,  # ack after the task ran: a worker that dies mid-scan leaves the message for another
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # scans are long; don't let one worker hoard several
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_hard_time_limit_s,
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,  # TensorFlow leaks; recycle children
        task_ignore_result=True,  # results live in the database, not in a result backend
        task_default_queue="cpu",
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.uses_filesystem_broker:
        queue_dir, processed, control = (settings.broker_dir / d for d in ("queue", "processed", "control"))
        for d in (queue_dir, processed, control):
            d.mkdir(parents=True, exist_ok=True)
        app.conf.broker_transport_options = {
            "data_folder_in": str(queue_dir), "data_folder_out": str(queue_dir),
            "processed_folder": str(processed), "store_processed": False,
            "control_folder": str(control),  # kombu's default is ./control, relative to wherever the process started
        }
        # The filesystem transport has no fanout, so remote control (inspect/ping) is off in the embedded mode.
        app.conf.worker_enable_remote_control = False
    else:
        # Redis re-delivers unacked messages after this; it must exceed the hard limit or a slow scan runs twice.
        # Socket timeouts: a frozen broker (SIGSTOP, a dead link) fails a publish instead of hanging it; a worker's
        # blocking pop waits 1 s at a time, well inside them.
        timeout = settings.broker_timeout_s if not with_tasks else max(settings.broker_timeout_s, 10.0)
        app.conf.broker_transport_options = {"visibility_timeout": settings.task_hard_time_limit_s + 600,
                                             "socket_timeout": timeout, "socket_connect_timeout": timeout}
    app.conf.broker_connection_timeout = settings.broker_timeout_s
    # One quick retry: the caller (the API, the reaper) keeps the scan queued and the reaper sends it again later.
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
    if with_tasks:
        app.conf.imports = ("worker.tasks",)
    return app


def enqueue_scan(app: "Celery", scan_id: str, queue: str) -> None:
    app.send_task(RUN_SCAN, args=[scan_id], queue=queue)


def queue_depth(app: "Celery", queue: str) -> int | None:
    """Messages waiting in ``queue`` (not those a worker holds), or None when the broker cannot say."""
    try:
        with app.connection_for_write() as conn:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
    except Exception:  # noqa: BLE001  (the caller then assumes nothing about the queue)
        return None


def broker_reachable(app: "Celery") -> tuple[bool, str]:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return True, "ok"
    except Exception as exc:  # any transport error means "not ready"
        return False, f"broker check failed: {type(exc).__name__}: {exc}"

