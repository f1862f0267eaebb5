"""Sends webhook deliveries: a thread in each worker process (or `poisonscan webhooks-dispatch`), apart from scans.

Each pass claims the due deliveries (``repository.claim_due``) and sends them on a small thread pool, at most
``per_endpoint`` at a time to one endpoint, so a receiver that is down or slow holds at most its own attempts, never a
scan and never the other endpoints. When an endpoint answers again, its other deliveries waiting out a backoff are
sent at once. An attempt that gets
no 2xx is retried with exponential backoff (doubling from ``webhook_backoff_base_s`` up to ``webhook_backoff_max_s``,
with jitter) until ``webhook_retry_window_s`` after the event, then the delivery is marked failed. Every attempt is
recorded. Redirects are not followed: a 3xx is a failed attempt (following one could lead to a private address).
"""

import json
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.models import utcnow
from app.settings import Settings
from app.webhooks import repository
from app.webhooks.addresses import UnsafeWebhookUrl, parse, resolve
from app.webhooks.events import message_id
from app.webhooks.signing import signed_headers

log = logging.getLogger("poisonscan.webhooks")
USER_AGENT = "poisonscan-webhooks/1"


class Dispatcher:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings, max_parallel: int = 8,
                 per_endpoint: int = 2) -> None:
        self.sessions, self.settings = sessions, settings
        self.max_parallel, self.per_endpoint = max_parallel, per_endpoint
        self._stop = threading.Event()
        self._in_flight = 0
        self._per_webhook: dict[uuid.UUID, int] = {}  # attempts in flight per endpoint
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="webhook-send")
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._http = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False,
                                  headers={"user-agent": USER_AGENT})

    def start(self) -> "Dispatcher":
        self._thread.start()
        log.info("webhook dispatcher started (every %s s, %s in parallel)", self.settings.webhook_poll_s, self.max_parallel)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)  # an unsent claim is freed when its lease ends

    def run_forever(self) -> None:
        self._run()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.webhook_poll_s):
            try:
                self.dispatch_due()
            except Exception as exc:  # noqa: BLE001  (a database blip: try again next pass)
                log.warning("webhook pass failed (%s: %s); next pass in %s s", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "", self.settings.webhook_poll_s)

    def dispatch_due(self) -> int:
        """Claim what is due (as many as there are free senders) and hand it to the pool; returns how many."""
        with self._lock:
            free = self.max_parallel - self._in_flight
            busy = {w for w, n in self._per_webhook.items() if n >= self.per_endpoint}
        if free <= 0:
            return 0
        lease_s = self.settings.webhook_timeout_s * 4 + 30
        with self.sessions() as session:
            due = repository.claim_due(session, utcnow(), lease_s, free, busy)
            session.commit()
        for item in due:
            self._count(item, +1)
            self._pool.submit(self._send_and_record, item)
        return len(due)

    def _count(self, due: repository.Due, step: int) -> None:
        with self._lock:
            self._in_flight += step
            if due.webhook_id is not None:
                left = self._per_webhook.get(due.webhook_id, 0) + step
                if left > 0:
                    self._per_webhook[due.webhook_id] = left
                else:
                    self._per_webhook.pop(due.webhook_id, None)

    def _send_and_record(self, due: repository.Due) -> None:
        try:
            at = utcnow()
            started = time.perf_counter()
            send = self.attempt if due.target == "webhook" else self.tag_registry
            status_code, error, permanent = send(due)
            duration_ms = (time.perf_counter() - started) * 1000
            outcome, next_at = ("failed", None) if permanent else self._outcome(due, status_code, utcnow())
            if outcome != "delivered":
                log.warning("webhook delivery %s: attempt %s failed (%s); %s", due.delivery_id, due.attempts + 1,
                            error, f"next at {next_at:%H:%M:%S}" if next_at else "giving up")
            self._record(due, at, duration_ms, status_code, error, outcome, next_at)
        except Exception:  # noqa: BLE001  (the lease frees it for a later pass)
            log.exception("webhook delivery %s: could not record the attempt", due.delivery_id)
        finally:
            self._count(due, -1)

    def attempt(self, due: repository.Due) -> tuple[int | None, str | None, bool]:
        """(the receiver's status code or None, why it failed or None, whether retrying is pointless). Connects to the
        address that was checked."""
        try:
            target = parse(due.url)
            address = resolve(target, self.settings.webhook_allow_private)
        except UnsafeWebhookUrl as exc:
            return None, f"refused: {exc}", False  # a name may resolve elsewhere later
        host_in_url = f"[{address}]" if ":" in address else address
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        headers = signed_headers(due.secret, message_id(due.delivery_id), int(time.time()), due.body) | {"host": host_header}
        request = self._http.build_request("POST", f"{target.scheme}://{host_in_url}:{target.port}{target.path}",
                                           content=due.body.encode(), headers=headers,
                                           extensions={"sni_hostname": target.host})  # TLS verifies the name
        try:
            response = self._http.send(request, stream=True)  # the status is all we read: a slow body costs nothing
            response.close()
        except httpx.TimeoutException:
            return None, f"timeout after {self.settings.webhook_timeout_s:g} s", False
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300], False
        if 200 <= response.status_code < 300:
            return response.status_code, None, False
        return response.status_code, f"HTTP {response.status_code}", False

    def tag_registry(self, due: repository.Due) -> tuple[int | None, str | None, bool]:
        """The verdict tags on the MLflow model version the scan came from; 200 stands for "written"."""
        from app.integrations.mlflow_gate import (BadModelUri, MlflowMissing, VersionNotFound, configured_tracking_uri,
                                                  scan_report_url, write_verdict_tags)

        tracking_uri = configured_tracking_uri()
        if tracking_uri is None:
            return None, "no MLflow tracking URI in the worker (set POISONSCAN_MLFLOW_TRACKING_URI as for the API)", True
        with self.sessions() as session:
            scan, reason = repository.scan_outcome(session, due.scan_id)
        try:
            write_verdict_tags(tracking_uri, json.loads(due.body)["model_uri"],
                               verdict=scan.verdict if scan.status == "succeeded" else "fail", reason=reason,
                               report_url=scan_report_url(self.settings.public_url, scan.id), scan_id=str(scan.id))
        except (BadModelUri, MlflowMissing, VersionNotFound) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300], True
        except Exception as exc:  # noqa: BLE001  (the registry is down or refused: retried with backoff)
            return None, f"{type(exc).__name__}: {exc}"[:300], False
        return 200, None, False

    def _outcome(self, due: repository.Due, status_code: int | None, now: datetime) -> tuple[str, datetime | None]:
        if status_code is not None and 200 <= status_code < 300:
            return "delivered", None
        give_up_at = due.created_at + timedelta(seconds=self.settings.webhook_retry_window_s)
        if now >= give_up_at:
            return "failed", None
        return "pending", min(now + timedelta(seconds=self.backoff_s(due.attempts + 1)), give_up_at)

    def backoff_s(self, attempts_done: int) -> float:
        delay = min(self.settings.webhook_backoff_base_s * 2 ** (attempts_done - 1), self.settings.webhook_backoff_max_s)
        return delay * random.uniform(0.8, 1.2)  # receivers coming back up are not hit by every sender at once

    def _record(self, due: repository.Due, at, duration_ms, status_code, error, outcome, next_at) -> None:
        with self.sessions() as session:
            try:
                repository.record_attempt(session, due.delivery_id, at=at, duration_ms=duration_ms,
                                          status_code=status_code, error=error, outcome=outcome, next_attempt_at=next_at)
                if outcome == "delivered" and due.webhook_id is not None:
                    repository.retry_now(session, due.webhook_id, utcnow())
                session.commit()
            except SQLAlchemyError:
                session.rollback()
                raise
